//! The tensor engine: a CPU tensor with hand-written SIMD kernels.
//!
//! Layout: one file per op family (`gemm.rs`, `softmax.rs`, ...), each written once against the
//! [`simd::Simd`] vocabulary and dispatched at run time to AVX-512, AVX2+FMA or portable code.
//! `reference.rs` holds the naive f64 definitions every kernel is tested against.

pub mod gemm;
pub mod reference;
pub mod simd;
