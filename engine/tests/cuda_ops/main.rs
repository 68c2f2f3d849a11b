//! The GPU check (feature `cuda`; one named command, `scripts/gpu-check`, run on a machine with
//! an NVIDIA GPU): every CUDA kernel against the CPU engine on fresh random inputs of several
//! sizes, outputs poisoned (NaN) before each launch so an unwritten element fails, every launch
//! synchronised and checked. Relative error ||gpu - cpu|| / ||cpu|| under 1e-5 in f32, 1e-2 in
//! bf16 (TF32 GEMMs: 2e-3, the matrix units' 10-bit operands).
//!
//! One module per kernel family, all on the one harness in `harness.rs`.
#![cfg(feature = "cuda")]

mod harness;

mod adamw;
mod attention;
mod cross_entropy;
mod elementwise;
mod embedding;
mod gemm;
mod norms;
mod reduce;
