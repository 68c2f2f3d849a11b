//! [`Device`](super::Device) on a CUDA GPU (feature `cuda`), in two precisions that share one
//! set of launch wrappers. The imports run one way: `bf16.rs` -> `f32.rs` -> `ops.rs` ->
//! the `kernels` crate.
//!
//! - [`f32.rs`](f32): [`Cuda`], f32 buffers, cuBLAS in f32 or TF32;
//! - [`bf16.rs`](bf16): [`CudaBf16`], bf16 activations with f32 master weights and optimizer;
//! - `ops.rs`: the launches both precisions make, generic over the element type.

mod bf16;
mod f32;
mod ops;

pub use bf16::{BfW, CudaBf16};
pub use f32::Cuda;
pub use ops::CudaAttnSaved;
