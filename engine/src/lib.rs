//! The tensor engine: a CPU tensor with hand-written SIMD kernels.
//!
//! Layout: one file per op family (`gemm.rs`, `softmax.rs`, `layernorm.rs`, ...), each written
//! once against the [`simd::Simd`] vocabulary and dispatched at run time to AVX-512, AVX2+FMA or
//! portable code. `reference.rs` holds the naive f64 definitions every kernel is tested against;
//! `ops.rs` is the [`Tensor`] API over the kernels (shape checks, broadcasting, errors).

pub mod attention;
pub mod autograd;
pub mod cpu;
pub mod cross_entropy;
pub mod device;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod error;
pub mod gelu;
pub mod gemm;
pub mod layernorm;
pub mod ops;
pub mod optim;
pub mod reduce;
pub mod reference;
pub mod rng;
pub mod rows;
pub mod simd;
pub mod softmax;
pub mod tensor;

/// The CUDA kernels and launchers (feature `cuda`): NVRTC-compiled at run time, cuBLAS GEMMs.
#[cfg(feature = "cuda")]
pub use kernels as cuda;

pub use autograd::{no_grad, ParamStore, Var};
pub use elementwise::{BinOp, UnaryOp};
pub use error::{Error, Result};
pub use gelu::Gelu;
pub use ops::{PackedLinear, Precision};
pub use reduce::ReduceOp;
pub use tensor::{DType, Storage, Tensor};
