//! [`Device`] on a CUDA GPU in bf16 mixed precision (feature `cuda`), the way BERT is trained on
//! tensor cores: activations bf16, every GEMM on bf16 operands with f32 accumulation (weight
//! gradients accumulated straight into f32 buffers), attention on the tensor-core kernels;
//! f32 master weights, gradients, AdamW moments, LayerNorm parameters and statistics, losses.
//! AdamW refreshes each weight's bf16 copy in the same launch that updates its master. No loss
//! scaling: bf16 has f32's exponent range.
//!
//! Where a kernel exists only in f32 (tanh for the pooler, the atomic scatter-adds of the
//! embedding and row gradients) the bf16 operand is widened to f32 first; those touch the
//! (B, H) pooler or small gathered rows, or run once per step.

use super::f32::Cuda;
use super::ops::{self, dev_err, CudaAttnSaved};
use crate::device::{AdamHyper, AttnDims, Device, LnSaved};
use crate::error::{Error, Result};
use crate::gelu::Gelu;
use half::bf16;
use kernels::adamw::{AdamTensor, MultiAdamW};
use kernels::blas::Math;
use kernels::cudarc::driver::CudaSlice;
use std::cell::RefCell;

/// The GPU in bf16 mixed precision. `inner` holds the context, stream and cuBLAS handles.
pub struct CudaBf16 {
    pub inner: Cuda,
    /// A column of ones (bf16), grown on demand: the k = 1 GEMM that broadcasts a bias.
    ones: RefCell<Option<CudaSlice<bf16>>>,
}

/// A weight as the bf16 forward reads it: the f32 master (LayerNorm's gamma and beta) and its
/// bf16 copy (GEMM operands, embedding tables).
#[derive(Clone, Copy)]
pub struct BfW<'a> {
    pub master: &'a CudaSlice<f32>,
    pub copy: &'a CudaSlice<bf16>,
}

fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{what}: {e}"))
}

impl CudaBf16 {
    pub fn new(ordinal: usize) -> Result<CudaBf16> {
        Ok(CudaBf16 {
            inner: Cuda::new(ordinal)?,
            ones: RefCell::new(None),
        })
    }

    fn gpu(&self) -> &kernels::Gpu {
        &self.inner.gpu
    }

    fn alloc(&self, n: usize) -> Result<CudaSlice<bf16>> {
        ops::alloc(self.gpu(), n)
    }

    fn to_f32(&self, x: &CudaSlice<bf16>) -> Result<CudaSlice<f32>> {
        let mut y = ops::alloc_out(self.gpu(), x.len())?;
        kernels::elementwise::cast_bf16_f32(self.gpu(), x, &mut y).map_err(dev_err)?;
        Ok(y)
    }

    fn to_bf16(&self, x: &CudaSlice<f32>) -> Result<CudaSlice<bf16>> {
        let mut y = ops::alloc_out(self.gpu(), x.len())?;
        kernels::elementwise::cast_f32_bf16(self.gpu(), x, &mut y).map_err(dev_err)?;
        Ok(y)
    }
}

impl Device for CudaBf16 {
    type Buf = CudaSlice<bf16>;
    type Grad = CudaSlice<f32>;
    type W<'a> = BfW<'a>;
    type Weights = Vec<(CudaSlice<f32>, CudaSlice<bf16>)>;
    type Ids = CudaSlice<i32>;
    type AttnSaved = CudaAttnSaved;
    type Optim = MultiAdamW;

    fn upload(&self, x: &[f32]) -> Result<CudaSlice<bf16>> {
        let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        self.gpu()
            .stream()
            .clone_htod(&h)
            .map_err(|e| cuda_err(&format!("copying {} values to the GPU", x.len()), e))
    }
    fn download(&self, x: &CudaSlice<bf16>) -> Result<Vec<f32>> {
        let h = self
            .gpu()
            .stream()
            .clone_dtoh(x)
            .map_err(|e| cuda_err(&format!("copying {} values from the GPU", x.len()), e))?;
        Ok(h.iter().map(|v| v.to_f32()).collect())
    }
    fn download_grad(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.inner.download(x)
    }
    fn zeros_grad(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.inner.alloc(n)
    }
    fn weights(&self, values: &[Vec<f32>]) -> Result<Self::Weights> {
        values
            .iter()
            .map(|v| {
                let m = self.inner.upload(v)?;
                let c = self.to_bf16(&m)?;
                Ok((m, c))
            })
            .collect()
    }
    fn weight_refs<'a>(&self, w: &'a Self::Weights) -> Vec<BfW<'a>> {
        w.iter()
            .map(|(master, copy)| BfW { master, copy })
            .collect()
    }
    fn upload_ids(&self, x: &[i64]) -> Result<CudaSlice<i32>> {
        self.inner.upload_ids(x)
    }
    fn zeros(&self, n: usize) -> Result<CudaSlice<bf16>> {
        self.alloc(n)
    }
    fn len(&self, x: &CudaSlice<bf16>) -> usize {
        x.len()
    }

    fn optim_new(&self, values: &[Vec<f32>], decay: Vec<f32>) -> Result<MultiAdamW> {
        if decay.len() != values.len() {
            return Err(Error::Arg {
                op: "optim_new",
                shape: vec![values.len(), decay.len()],
                why: "one weight decay per parameter tensor".into(),
            });
        }
        let tensors = self
            .weights(values)?
            .into_iter()
            .zip(decay)
            .map(|((param, copy), decay)| {
                Ok(AdamTensor {
                    grad: self.inner.alloc(param.len())?,
                    param,
                    copy: Some(copy),
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        MultiAdamW::new(self.gpu(), tensors).map_err(dev_err)
    }
    fn optim_parts<'a>(
        &self,
        o: &'a mut MultiAdamW,
    ) -> (Vec<BfW<'a>>, Vec<&'a mut CudaSlice<f32>>) {
        o.tensors
            .iter_mut()
            .map(|t| {
                let w = BfW {
                    master: &t.param,
                    copy: t
                        .copy
                        .as_ref()
                        .expect("optim_new gives every tensor a bf16 copy"),
                };
                (w, &mut t.grad)
            })
            .unzip()
    }
    fn optim_zero_grads(&self, o: &mut MultiAdamW) -> Result<()> {
        self.inner.optim_zero_grads(o)
    }
    fn optim_step(
        &self,
        o: &mut MultiAdamW,
        h: AdamHyper,
        max_norm: f32,
    ) -> Result<CudaSlice<f32>> {
        ops::optim_step(self.gpu(), o, h, max_norm)
    }
    fn optim_state(&self, o: &MultiAdamW) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>> {
        self.inner.optim_state(o)
    }
    fn optim_set_moments(&self, o: &mut MultiAdamW, mv: Vec<(Vec<f32>, Vec<f32>)>) -> Result<()> {
        self.inner.optim_set_moments(o, mv)
    }

    fn linear(
        &self,
        x: &CudaSlice<bf16>,
        w: BfW<'_>,
        b: Option<BfW<'_>>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<CudaSlice<bf16>> {
        ops::linear(
            self.gpu(),
            &self.inner.blas,
            Math::F32,
            &self.ones,
            bf16::ONE,
            x,
            w.copy,
            b.map(|b| b.copy),
            rows,
            inp,
            out,
        )
    }

    fn linear_dx(
        &self,
        dy: &CudaSlice<bf16>,
        w: BfW<'_>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<CudaSlice<bf16>> {
        ops::linear_dx(
            self.gpu(),
            &self.inner.blas,
            Math::F32,
            dy,
            w.copy,
            rows,
            inp,
            out,
        )
    }

    fn linear_dw(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        rows: usize,
        inp: usize,
        out: usize,
        dw: &mut CudaSlice<f32>,
        db: Option<&mut CudaSlice<f32>>,
    ) -> Result<()> {
        ops::linear_dw(
            self.gpu(),
            &self.inner.blas,
            Math::F32,
            dy,
            x,
            rows,
            inp,
            out,
            dw,
            db,
        )
    }

    fn layernorm(
        &self,
        x: &CudaSlice<bf16>,
        residual: Option<&CudaSlice<bf16>>,
        dropout: (f32, u64),
        gamma: BfW<'_>,
        beta: BfW<'_>,
        cols: usize,
        eps: f32,
    ) -> Result<(CudaSlice<bf16>, LnSaved<CudaSlice<bf16>, CudaSlice<f32>>)> {
        ops::layernorm(
            self.gpu(),
            x,
            residual,
            dropout,
            gamma.master,
            beta.master,
            cols,
            eps,
        )
    }

    fn layernorm_bwd(
        &self,
        s: &LnSaved<CudaSlice<bf16>, CudaSlice<f32>>,
        dy: &CudaSlice<bf16>,
        gamma: BfW<'_>,
        cols: usize,
        dgamma: &mut CudaSlice<f32>,
        dbeta: &mut CudaSlice<f32>,
    ) -> Result<CudaSlice<bf16>> {
        ops::layernorm_bwd(self.gpu(), s, dy, gamma.master, cols, dgamma, dbeta)
    }

    fn dropout(&self, x: &CudaSlice<bf16>, p: f32, seed: u64) -> Result<CudaSlice<bf16>> {
        ops::dropout(self.gpu(), x, p, seed)
    }

    fn gelu(&self, x: &CudaSlice<bf16>, g: Gelu) -> Result<CudaSlice<bf16>> {
        ops::gelu(self.gpu(), x, g)
    }

    fn gelu_bwd(
        &self,
        x: &CudaSlice<bf16>,
        dy: &CudaSlice<bf16>,
        g: Gelu,
    ) -> Result<CudaSlice<bf16>> {
        ops::gelu_bwd(self.gpu(), x, dy, g)
    }

    fn tanh(&self, x: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
        let xf = self.to_f32(x)?;
        self.to_bf16(&self.inner.tanh(&xf)?)
    }

    fn tanh_bwd(&self, y: &CudaSlice<bf16>, dy: &CudaSlice<bf16>) -> Result<CudaSlice<bf16>> {
        let (yf, dyf) = (self.to_f32(y)?, self.to_f32(dy)?);
        self.to_bf16(&self.inner.tanh_bwd(&yf, &dyf)?)
    }

    fn add_into(&self, acc: &mut CudaSlice<bf16>, x: &CudaSlice<bf16>) -> Result<()> {
        ops::add_into(self.gpu(), acc, x)
    }

    fn embed(
        &self,
        ids: &CudaSlice<i32>,
        types: &CudaSlice<i32>,
        positions: Option<&CudaSlice<i32>>,
        word: BfW<'_>,
        pos: BfW<'_>,
        typ: BfW<'_>,
        seq: usize,
        dim: usize,
    ) -> Result<CudaSlice<bf16>> {
        ops::embed(
            self.gpu(),
            ids,
            types,
            positions,
            word.copy,
            pos.copy,
            typ.copy,
            seq,
            dim,
        )
    }

    fn embed_bwd(
        &self,
        ids: &CudaSlice<i32>,
        types: &CudaSlice<i32>,
        positions: Option<&CudaSlice<i32>>,
        dy: &CudaSlice<bf16>,
        seq: usize,
        dim: usize,
        pad: Option<usize>,
        dword: &mut CudaSlice<f32>,
        dpos: &mut CudaSlice<f32>,
        dtyp: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let dyf = self.to_f32(dy)?;
        ops::embed_bwd(
            self.gpu(),
            ids,
            types,
            positions,
            &dyf,
            seq,
            dim,
            pad,
            dword,
            dpos,
            dtyp,
        )
    }

    fn argmax_rows(&self, x: &CudaSlice<bf16>, rows: usize, cols: usize) -> Result<Vec<i64>> {
        ops::argmax_rows(self.gpu(), x, rows, cols)
    }

    fn gather_rows(
        &self,
        x: &CudaSlice<bf16>,
        rows: &CudaSlice<i32>,
        cols: usize,
    ) -> Result<CudaSlice<bf16>> {
        ops::gather_rows(self.gpu(), x, rows, cols)
    }

    fn scatter_add_rows(
        &self,
        dy: &CudaSlice<bf16>,
        rows: &CudaSlice<i32>,
        cols: usize,
        dx: &mut CudaSlice<bf16>,
    ) -> Result<()> {
        // f32 atomics into a zeroed f32 buffer, then one bf16 add into dx.
        let dyf = self.to_f32(dy)?;
        let mut acc = self.inner.alloc(dx.len())?;
        kernels::embedding::embedding_bwd(self.gpu(), rows, &dyf, &mut acc, cols)
            .map_err(dev_err)?;
        let accb = self.to_bf16(&acc)?;
        self.add_into(dx, &accb)
    }

    fn attention(
        &self,
        qkv: &CudaSlice<bf16>,
        d: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<(CudaSlice<bf16>, CudaAttnSaved)> {
        ops::attention(self.gpu(), &self.inner.attn_batch, qkv, d, scale, dropout)
    }

    fn attention_bwd(
        &self,
        qkv: &CudaSlice<bf16>,
        out: &CudaSlice<bf16>,
        saved: &CudaAttnSaved,
        dout: &CudaSlice<bf16>,
        d: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<CudaSlice<bf16>> {
        ops::attention_bwd(self.gpu(), qkv, out, saved, dout, d, scale, dropout)
    }

    fn cross_entropy(
        &self,
        logits: CudaSlice<bf16>,
        targets: &CudaSlice<i32>,
        rows: usize,
        classes: usize,
        dloss: f32,
    ) -> Result<(CudaSlice<f32>, CudaSlice<bf16>)> {
        ops::cross_entropy(self.gpu(), logits, targets, rows, classes, dloss)
    }
}
