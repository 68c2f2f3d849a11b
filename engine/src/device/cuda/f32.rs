//! [`Device`] on a CUDA GPU (feature `cuda`): buffers are `CudaSlice<f32>` on one stream, every
//! op one or two launches of the `kernels` crate, GEMMs through cuBLAS. Nothing here waits for
//! the GPU except [`Device::download`].
//!
//! This is the f32 mode: cuBLAS in plain f32 (`Math::F32`, the default) so that a step matches the
//! CPU's to rounding, or TF32 (`Math::Tf32`) for speed. Linear layers are a GEMM plus a k = 1 GEMM
//! of a ones column and the bias row (which broadcasts the bias for any width, NSP's 2 included).

use super::ops::{self, dev_err, CudaAttnSaved};
use crate::device::{AdamHyper, AttnDims, Device, LnSaved};
use crate::error::{Error, Result};
use crate::gelu::Gelu;
use kernels::adamw::{AdamTensor, MultiAdamW};
use kernels::blas::{Blas, Math};
use kernels::cudarc::driver::CudaSlice;
use kernels::Gpu;

/// A GPU with its cuBLAS handles.
pub struct Cuda {
    pub gpu: Gpu,
    pub blas: Blas,
    /// f32 GEMM math: exact f32 (default) or TF32 tensor cores.
    pub math: Math,
    /// A column of ones, grown on demand: the k = 1 GEMM that broadcasts a bias.
    ones: std::cell::RefCell<Option<CudaSlice<f32>>>,
    /// The last batch's attention tables, which every layer of a step shares.
    pub(crate) attn_batch: ops::AttnBatchCache,
}

impl Cuda {
    /// Device `ordinal`: loads the driver, makes a stream and the cuBLAS handles.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        let gpu = Gpu::new(ordinal).map_err(dev_err)?;
        let blas = Blas::new(&gpu).map_err(dev_err)?;
        Ok(Cuda {
            gpu,
            blas,
            math: Math::F32,
            ones: std::cell::RefCell::new(None),
            attn_batch: Default::default(),
        })
    }

    pub(crate) fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
        ops::alloc(&self.gpu, n)
    }
}

impl Device for Cuda {
    type Buf = CudaSlice<f32>;
    type Grad = CudaSlice<f32>;
    type W<'a> = &'a CudaSlice<f32>;
    type Weights = Vec<CudaSlice<f32>>;
    type Ids = CudaSlice<i32>;
    type AttnSaved = CudaAttnSaved;
    type Optim = MultiAdamW;

    fn optim_new(&self, values: &[Vec<f32>], decay: Vec<f32>) -> Result<MultiAdamW> {
        let params = self.weights(values)?;
        if decay.len() != params.len() {
            return Err(Error::Arg {
                op: "optim_new",
                shape: vec![params.len(), decay.len()],
                why: "one weight decay per parameter tensor".into(),
            });
        }
        let tensors = params
            .into_iter()
            .zip(decay)
            .map(|(param, decay)| {
                Ok(AdamTensor {
                    grad: self.alloc(param.len())?,
                    param,
                    copy: None,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        MultiAdamW::new(&self.gpu, tensors).map_err(dev_err)
    }

    fn optim_parts<'a>(
        &self,
        o: &'a mut MultiAdamW,
    ) -> (Vec<&'a CudaSlice<f32>>, Vec<&'a mut CudaSlice<f32>>) {
        o.tensors
            .iter_mut()
            .map(|t| (&t.param, &mut t.grad))
            .unzip()
    }

    fn optim_zero_grads(&self, o: &mut MultiAdamW) -> Result<()> {
        for t in &mut o.tensors {
            self.gpu
                .stream()
                .memset_zeros(&mut t.grad)
                .map_err(|e| Error::Device(format!("zeroing gradients: {e}")))?;
        }
        Ok(())
    }

    fn optim_step(
        &self,
        o: &mut MultiAdamW,
        h: AdamHyper,
        max_norm: f32,
    ) -> Result<CudaSlice<f32>> {
        ops::optim_step(&self.gpu, o, h, max_norm)
    }

    fn optim_state(&self, o: &MultiAdamW) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>> {
        (0..o.tensors.len())
            .map(|i| {
                let (m, v) = o.moments(i);
                Ok((
                    self.download(&o.tensors[i].param)?,
                    self.download(m)?,
                    self.download(v)?,
                ))
            })
            .collect()
    }

    fn optim_set_moments(&self, o: &mut MultiAdamW, mv: Vec<(Vec<f32>, Vec<f32>)>) -> Result<()> {
        if mv.len() != o.tensors.len() {
            return Err(Error::Arg {
                op: "optim_set_moments",
                shape: vec![mv.len(), o.tensors.len()],
                why: "one (m, v) pair per parameter tensor".into(),
            });
        }
        let s = self.gpu.stream().clone();
        for (i, (hm, hv)) in mv.into_iter().enumerate() {
            let (m, v) = o.moments_mut(i);
            if hm.len() != m.len() || hv.len() != v.len() {
                return Err(Error::Arg {
                    op: "optim_set_moments",
                    shape: vec![hm.len(), m.len()],
                    why: format!("tensor {i}: moments of the wrong size"),
                });
            }
            s.memcpy_htod(&hm, m)
                .and_then(|_| s.memcpy_htod(&hv, v))
                .map_err(|e| Error::Device(format!("copying moments to the GPU: {e}")))?;
        }
        Ok(())
    }

    fn upload(&self, x: &[f32]) -> Result<CudaSlice<f32>> {
        self.gpu
            .stream()
            .clone_htod(x)
            .map_err(|e| Error::Device(format!("copying {} floats to the GPU: {e}", x.len())))
    }
    fn download(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.gpu
            .stream()
            .clone_dtoh(x)
            .map_err(|e| Error::Device(format!("copying {} floats from the GPU: {e}", x.len())))
    }
    fn upload_ids(&self, x: &[i64]) -> Result<CudaSlice<i32>> {
        let v: Vec<i32> = x
            .iter()
            .enumerate()
            .map(|(at, &i)| {
                i32::try_from(i).map_err(|_| Error::Index {
                    op: "upload_ids",
                    index: i,
                    size: i32::MAX as usize,
                    at,
                })
            })
            .collect::<Result<_>>()?;
        self.gpu
            .stream()
            .clone_htod(&v)
            .map_err(|e| Error::Device(format!("copying {} ids to the GPU: {e}", v.len())))
    }
    fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.alloc(n)
    }
    fn download_grad(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.download(x)
    }
    fn zeros_grad(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.alloc(n)
    }
    fn weights(&self, values: &[Vec<f32>]) -> Result<Vec<CudaSlice<f32>>> {
        values.iter().map(|v| self.upload(v)).collect()
    }
    fn weight_refs<'a>(&self, w: &'a Vec<CudaSlice<f32>>) -> Vec<&'a CudaSlice<f32>> {
        w.iter().collect()
    }
    fn len(&self, x: &CudaSlice<f32>) -> usize {
        x.len()
    }

    fn linear(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: Option<&CudaSlice<f32>>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<CudaSlice<f32>> {
        ops::linear(
            &self.gpu, &self.blas, self.math, &self.ones, 1.0, x, w, b, rows, inp, out,
        )
    }

    fn linear_dx(
        &self,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<CudaSlice<f32>> {
        ops::linear_dx(&self.gpu, &self.blas, self.math, dy, w, rows, inp, out)
    }

    fn linear_dw(
        &self,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        rows: usize,
        inp: usize,
        out: usize,
        dw: &mut CudaSlice<f32>,
        db: Option<&mut CudaSlice<f32>>,
    ) -> Result<()> {
        ops::linear_dw(
            &self.gpu, &self.blas, self.math, dy, x, rows, inp, out, dw, db,
        )
    }

    fn layernorm(
        &self,
        x: &CudaSlice<f32>,
        residual: Option<&CudaSlice<f32>>,
        dropout: (f32, u64),
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        cols: usize,
        eps: f32,
    ) -> Result<(CudaSlice<f32>, LnSaved<CudaSlice<f32>>)> {
        ops::layernorm(&self.gpu, x, residual, dropout, gamma, beta, cols, eps)
    }

    fn layernorm_bwd(
        &self,
        s: &LnSaved<CudaSlice<f32>>,
        dy: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        cols: usize,
        dgamma: &mut CudaSlice<f32>,
        dbeta: &mut CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        ops::layernorm_bwd(&self.gpu, s, dy, gamma, cols, dgamma, dbeta)
    }

    fn dropout(&self, x: &CudaSlice<f32>, p: f32, seed: u64) -> Result<CudaSlice<f32>> {
        ops::dropout(&self.gpu, x, p, seed)
    }

    fn gelu(&self, x: &CudaSlice<f32>, g: Gelu) -> Result<CudaSlice<f32>> {
        ops::gelu(&self.gpu, x, g)
    }

    fn gelu_bwd(&self, x: &CudaSlice<f32>, dy: &CudaSlice<f32>, g: Gelu) -> Result<CudaSlice<f32>> {
        ops::gelu_bwd(&self.gpu, x, dy, g)
    }

    fn tanh(&self, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        let mut y = self.alloc(x.len())?;
        kernels::elementwise::tanh_fwd(&self.gpu, x, &mut y).map_err(dev_err)?;
        Ok(y)
    }

    fn tanh_bwd(&self, y: &CudaSlice<f32>, dy: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        let mut dx = self.alloc(y.len())?;
        kernels::elementwise::tanh_bwd(&self.gpu, y, dy, &mut dx).map_err(dev_err)?;
        Ok(dx)
    }

    fn add_into(&self, acc: &mut CudaSlice<f32>, x: &CudaSlice<f32>) -> Result<()> {
        ops::add_into(&self.gpu, acc, x)
    }

    fn embed(
        &self,
        ids: &CudaSlice<i32>,
        types: &CudaSlice<i32>,
        positions: Option<&CudaSlice<i32>>,
        word: &CudaSlice<f32>,
        pos: &CudaSlice<f32>,
        typ: &CudaSlice<f32>,
        seq: usize,
        dim: usize,
    ) -> Result<CudaSlice<f32>> {
        ops::embed(&self.gpu, ids, types, positions, word, pos, typ, seq, dim)
    }

    fn embed_bwd(
        &self,
        ids: &CudaSlice<i32>,
        types: &CudaSlice<i32>,
        positions: Option<&CudaSlice<i32>>,
        dy: &CudaSlice<f32>,
        seq: usize,
        dim: usize,
        pad: Option<usize>,
        dword: &mut CudaSlice<f32>,
        dpos: &mut CudaSlice<f32>,
        dtyp: &mut CudaSlice<f32>,
    ) -> Result<()> {
        ops::embed_bwd(
            &self.gpu, ids, types, positions, dy, seq, dim, pad, dword, dpos, dtyp,
        )
    }

    fn argmax_rows(&self, x: &CudaSlice<f32>, rows: usize, cols: usize) -> Result<Vec<i64>> {
        ops::argmax_rows(&self.gpu, x, rows, cols)
    }

    fn gather_rows(
        &self,
        x: &CudaSlice<f32>,
        rows: &CudaSlice<i32>,
        cols: usize,
    ) -> Result<CudaSlice<f32>> {
        ops::gather_rows(&self.gpu, x, rows, cols)
    }

    fn scatter_add_rows(
        &self,
        dy: &CudaSlice<f32>,
        rows: &CudaSlice<i32>,
        cols: usize,
        dx: &mut CudaSlice<f32>,
    ) -> Result<()> {
        kernels::embedding::embedding_bwd(&self.gpu, rows, dy, dx, cols).map_err(dev_err)
    }

    fn attention(
        &self,
        qkv: &CudaSlice<f32>,
        d: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<(CudaSlice<f32>, CudaAttnSaved)> {
        ops::attention(&self.gpu, &self.attn_batch, qkv, d, scale, dropout)
    }

    fn attention_bwd(
        &self,
        qkv: &CudaSlice<f32>,
        out: &CudaSlice<f32>,
        saved: &CudaAttnSaved,
        dout: &CudaSlice<f32>,
        d: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<CudaSlice<f32>> {
        ops::attention_bwd(&self.gpu, qkv, out, saved, dout, d, scale, dropout)
    }

    fn cross_entropy(
        &self,
        logits: CudaSlice<f32>,
        targets: &CudaSlice<i32>,
        rows: usize,
        classes: usize,
        dloss: f32,
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        ops::cross_entropy(&self.gpu, logits, targets, rows, classes, dloss)
    }
}
