//! GEMM through cuBLAS (f32, TF32, bf16 with f32 accumulation; transposes; strided batches for
//! attention) and cuBLASLt (bias and GELU epilogues), for row-major matrices.
//!
//! cuBLAS is column-major. A row-major `C[m, n] = op(A) op(B)` is the column-major
//! `C^T[n, m] = op(B)^T op(A)^T`, and a row-major matrix read column-major is its transpose, so
//! the call swaps the operands (B first), swaps m and n, and keeps each operand's transpose flag.

use crate::gpu::{Elem, Gpu};
use crate::{check, Error};
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// How f32 operands are multiplied: full f32 FMA, or TF32 tensor cores (10-bit mantissa
/// operands, f32 accumulation: about 3e-4 relative error). bf16 operands always accumulate in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Math {
    F32,
    Tf32,
}

/// A row-major GEMM: `C[m, n] = alpha op(A) op(B) + beta C` with A `[m, k]` (or `[k, m]` with
/// `trans_a`), B `[k, n]` (or `[n, k]` with `trans_b`), repeated over `batch` matrices stored
/// back to back (batch 1: a plain GEMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub batch: usize,
}

impl GemmShape {
    pub fn new(m: usize, n: usize, k: usize) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            batch: 1,
        }
    }
    pub fn trans_b(mut self) -> GemmShape {
        self.trans_b = true;
        self
    }
    pub fn trans_a(mut self) -> GemmShape {
        self.trans_a = true;
        self
    }
    pub fn batched(mut self, batch: usize) -> GemmShape {
        self.batch = batch;
        self
    }
    /// FLOPs: 2 m n k per matrix.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }
}

fn dtype<T: Elem>() -> sys::cudaDataType {
    if T::SUFFIX == "bf16" {
        sys::cudaDataType_t::CUDA_R_16BF
    } else {
        sys::cudaDataType_t::CUDA_R_32F
    }
}

fn op(t: bool) -> sys::cublasOperation_t {
    if t {
        sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// The cuBLAS and cuBLASLt handles of one GPU's stream.
pub struct Blas {
    blas: CudaBlas,
    lt: CudaBlasLT,
}

impl Blas {
    pub fn new(gpu: &Gpu) -> Result<Blas, Error> {
        Ok(Blas {
            blas: CudaBlas::new(gpu.stream().clone())?,
            lt: CudaBlasLT::new(gpu.stream().clone())?,
        })
    }

    /// `C = alpha op(A) op(B) + beta C` (row-major, see [`GemmShape`]); A and B of one element
    /// type (f32 or bf16), C f32 or bf16; `math` applies to f32 operands.
    pub fn gemm<TA: Elem, TC: Elem>(
        &self,
        gpu: &Gpu,
        s: GemmShape,
        math: Math,
        alpha: f32,
        a: &impl DevicePtr<TA>,
        b: &impl DevicePtr<TA>,
        beta: f32,
        c: &mut impl DevicePtrMut<TC>,
    ) -> Result<(), Error> {
        let kn = "gemm";
        let (sa, sb, sc) = (s.m * s.k, s.k * s.n, s.m * s.n);
        check::len(kn, "A", a.len(), s.batch * sa)?;
        check::len(kn, "B", b.len(), s.batch * sb)?;
        check::len(kn, "C", c.len(), s.batch * sc)?;
        let i = |what, v| check::i32_of(kn, what, v);
        let (m, n, k) = (i("m", s.m)?, i("n", s.n)?, i("k", s.k)?);
        let lda = if s.trans_a { m } else { k };
        let ldb = if s.trans_b { k } else { n };
        let compute = match (TA::SUFFIX, math) {
            ("f32", Math::F32) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ("f32", Math::Tf32) => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            _ => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        };
        let stream = gpu.stream();
        let (pa, _g1) = a.device_ptr(stream);
        let (pb, _g2) = b.device_ptr(stream);
        let (pc, _g3) = c.device_ptr_mut(stream);
        // SAFETY: lengths checked above against the shape; the handle is bound to `stream`.
        unsafe {
            result::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(s.trans_b),
                op(s.trans_a),
                n,
                m,
                k,
                (&alpha) as *const f32 as *const _,
                pb as *const _,
                dtype::<TA>(),
                ldb,
                sb as i64,
                pa as *const _,
                dtype::<TA>(),
                lda,
                sa as i64,
                (&beta) as *const f32 as *const _,
                pc as *mut _,
                dtype::<TC>(),
                n,
                sc as i64,
                i("batch", s.batch)?,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )?;
        }
        Ok(())
    }

    /// A Linear layer through cuBLASLt with its epilogue: `y[rows, out] = x[rows, in] W^T + bias`,
    /// W `[out, in]` (PyTorch's layout), bias `[out]`, optionally followed by GELU (cuBLASLt's
    /// GELU is the tanh form, BERT's `gelu_new`; for `gelu` (erf) use bias only, then
    /// `gelu::gelu_fwd`). f32 runs on TF32 tensor cores here (cuBLASLt's f32 compute type in
    /// cudarc), bf16 on bf16 tensor cores; both accumulate in f32.
    pub fn linear<T: Elem>(
        &self,
        gpu: &Gpu,
        x: &cudarc::driver::CudaView<'_, T>,
        w: &cudarc::driver::CudaView<'_, T>,
        bias: Option<&cudarc::driver::CudaView<'_, T>>,
        gelu_tanh: bool,
        y: &mut cudarc::driver::CudaViewMut<'_, T>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<(), Error>
    where
        CudaBlasLT: Matmul<T>,
    {
        let kn = "linear";
        let _ = gpu;
        check::len(kn, "x", x.len(), rows * inp)?;
        check::len(kn, "W", w.len(), out * inp)?;
        check::len(kn, "y", y.len(), rows * out)?;
        if let Some(b) = bias {
            check::len(kn, "bias", b.len(), out)?;
        }
        // Column-major: y^T[out, rows] = W[out, in] (W row-major read column-major is W^T,
        // so transpose it back) x^T[in, rows].
        let cfg = MatmulConfig {
            transa: true,
            transb: false,
            transc: false,
            m: out as u64,
            n: rows as u64,
            k: inp as u64,
            alpha: 1.0,
            lda: inp as i64,
            ldb: inp as i64,
            beta: 0.0,
            ldc: out as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        let act = gelu_tanh.then_some(cudarc::cublaslt::Activation::Gelu);
        // SAFETY: lengths checked above; cuBLASLt runs on the GPU's stream.
        unsafe { self.lt.matmul(cfg, w, x, y, bias, act.as_ref())? };
        Ok(())
    }
}
