//! The ops of a BERT training step over flat buffers, one trait for every device.
//!
//! The tape in `autograd.rs` works on [`Tensor`]s on the CPU. A GPU step wants something else:
//! buffers that live on the device, fixed shapes known up front, the forward and backward of each
//! layer written out side by side (llm.c's shape), no host work per op. [`Device`] is that
//! vocabulary: each method is one coarse op (a Linear, a fused residual-add + LayerNorm, fused
//! attention over a fused QKV buffer, cross-entropy...), forward or backward, on row-major
//! buffers whose sizes are passed explicitly. `bert::step` writes the BERT pretraining step once
//! against it; [`Cpu`] runs it with the engine's SIMD kernels (and is what the step is tested with,
//! against the tape's gradients), [`cuda::Cuda`] (feature `cuda`) with the CUDA kernels.
//!
//! Conventions: matrices are row-major; a Linear weight is `(out, in)` as PyTorch stores it;
//! gradients named `d*` passed as `&mut` are accumulated into (`+=`), buffers returned are new.
//! Dropout masks are the engine's ([`crate::dropout`]): element `i` of a tensor with seed `s`,
//! the same on every device, so a step gives the same masks on the CPU and the GPU.

use crate::error::Result;
use crate::gelu::Gelu;

mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod profile;

pub use cpu::{Cpu, CpuBf16, CpuKind, CpuOptim};
pub use profile::Profiled;

/// Saved state of [`Device::layernorm`] for its backward: the normalised input h and per-row
/// mean and 1/std.
pub struct LnSaved<B, S = B> {
    pub h: B,
    pub mean: S,
    pub rstd: S,
}

/// The shape of one attention call, `heads` x `head_dim` = hidden. Padded: `batch` sequences
/// of `seq` tokens, the first `lens[b]` of sequence b valid keys. Packed: sequence b is
/// `lens[b]` tokens, back to back, and `seq` is the longest (the dropout index's stride).
#[derive(Clone, Debug)]
pub struct AttnDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub lens: Vec<usize>,
    pub packed: bool,
}

impl AttnDims {
    pub fn tokens(&self) -> usize {
        if self.packed {
            self.lens.iter().sum()
        } else {
            self.batch * self.seq
        }
    }
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// One device's implementation of the step's ops. See the module comment for conventions.
pub trait Device {
    /// A flat buffer of activations (f32, or bf16 in a mixed-precision device).
    type Buf;
    /// A flat f32 buffer: master weights, gradients, losses, norms, LayerNorm statistics.
    type Grad;
    /// A weight as the forward reads it (a reference to an f32 buffer, or to an f32 master and
    /// its bf16 copy).
    type W<'a>: Copy
    where
        Self: 'a;
    /// Weights for inference alone (no gradients, no moments).
    type Weights;
    /// Row or token indices on the device.
    type Ids;
    /// What attention keeps for its backward.
    type AttnSaved;

    fn upload(&self, x: &[f32]) -> Result<Self::Buf>;
    fn download(&self, x: &Self::Buf) -> Result<Vec<f32>>;
    fn download_grad(&self, x: &Self::Grad) -> Result<Vec<f32>>;
    fn zeros_grad(&self, n: usize) -> Result<Self::Grad>;
    /// Weights from host values (step order), and views of them for a forward pass.
    fn weights(&self, values: &[Vec<f32>]) -> Result<Self::Weights>;
    fn weight_refs<'a>(&self, w: &'a Self::Weights) -> Vec<Self::W<'a>>;
    /// Indices, already validated by the caller against the tables they index.
    fn upload_ids(&self, x: &[i64]) -> Result<Self::Ids>;
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    fn len(&self, x: &Self::Buf) -> usize;

    /// `y (rows,out) = x (rows,in) W^T + b`, W `(out,in)`, b `(out)`.
    fn linear(
        &self,
        x: &Self::Buf,
        w: Self::W<'_>,
        b: Option<Self::W<'_>>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<Self::Buf>;
    /// `dx (rows,in) = dy (rows,out) W`.
    fn linear_dx(
        &self,
        dy: &Self::Buf,
        w: Self::W<'_>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<Self::Buf>;
    /// `dw (out,in) += dy^T x`, `db (out) += column sums of dy`.
    fn linear_dw(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        rows: usize,
        inp: usize,
        out: usize,
        dw: &mut Self::Grad,
        db: Option<&mut Self::Grad>,
    ) -> Result<()>;

    /// `h = dropout(x) + residual` (either part optional: p = 0 skips the dropout), then
    /// `y = LayerNorm(h) * gamma + beta` over rows of `cols`. Returns y and the saved state.
    #[expect(clippy::type_complexity)]
    fn layernorm(
        &self,
        x: &Self::Buf,
        residual: Option<&Self::Buf>,
        dropout: (f32, u64),
        gamma: Self::W<'_>,
        beta: Self::W<'_>,
        cols: usize,
        eps: f32,
    ) -> Result<(Self::Buf, LnSaved<Self::Buf, Self::Grad>)>;
    /// Backward of [`Device::layernorm`] to h: returns dh (the residual's gradient; the
    /// caller applies the dropout mask for x's), accumulates dgamma, dbeta.
    fn layernorm_bwd(
        &self,
        saved: &LnSaved<Self::Buf, Self::Grad>,
        dy: &Self::Buf,
        gamma: Self::W<'_>,
        cols: usize,
        dgamma: &mut Self::Grad,
        dbeta: &mut Self::Grad,
    ) -> Result<Self::Buf>;

    /// `dropout(x)` with the engine's mask for `seed`; applied to a gradient it is the backward.
    fn dropout(&self, x: &Self::Buf, p: f32, seed: u64) -> Result<Self::Buf>;
    fn gelu(&self, x: &Self::Buf, kind: Gelu) -> Result<Self::Buf>;
    /// `dx = dy * gelu'(x)`.
    fn gelu_bwd(&self, x: &Self::Buf, dy: &Self::Buf, kind: Gelu) -> Result<Self::Buf>;
    fn tanh(&self, x: &Self::Buf) -> Result<Self::Buf>;
    /// `dx = dy * (1 - y^2)` from the forward's output y.
    fn tanh_bwd(&self, y: &Self::Buf, dy: &Self::Buf) -> Result<Self::Buf>;
    /// `acc += x`.
    fn add_into(&self, acc: &mut Self::Buf, x: &Self::Buf) -> Result<()>;

    /// BERT's embedding sum `(word[ids] + type[types]) + pos[p]`, `(tokens, dim)`; p is
    /// `positions[t]` when given (packed batches), else `t % seq`.
    fn embed(
        &self,
        ids: &Self::Ids,
        types: &Self::Ids,
        positions: Option<&Self::Ids>,
        word: Self::W<'_>,
        pos: Self::W<'_>,
        typ: Self::W<'_>,
        seq: usize,
        dim: usize,
    ) -> Result<Self::Buf>;
    /// Backward of [`Device::embed`]: accumulates into the three tables' gradients. The word
    /// table's row `pad` gets none (PyTorch's `padding_idx`, as HF's BERT embeddings have it:
    /// padding positions still reach the position and type tables).
    fn embed_bwd(
        &self,
        ids: &Self::Ids,
        types: &Self::Ids,
        positions: Option<&Self::Ids>,
        dy: &Self::Buf,
        seq: usize,
        dim: usize,
        pad: Option<usize>,
        dword: &mut Self::Grad,
        dpos: &mut Self::Grad,
        dtyp: &mut Self::Grad,
    ) -> Result<()>;

    /// Rows `x[rows[i]]` of x `(_, cols)`.
    fn gather_rows(&self, x: &Self::Buf, rows: &Self::Ids, cols: usize) -> Result<Self::Buf>;
    /// For each row of x `(rows, cols)`, the first column holding its largest value (NaNs never
    /// win; a row with nothing above -inf gives 0), on the host: a classifier's predictions,
    /// so that an evaluation moves indices rather than logits.
    fn argmax_rows(&self, x: &Self::Buf, rows: usize, cols: usize) -> Result<Vec<i64>>;
    /// `dx[rows[i]] += dy[i]`.
    fn scatter_add_rows(
        &self,
        dy: &Self::Buf,
        rows: &Self::Ids,
        cols: usize,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// Attention over a fused projection `qkv (tokens, 3, heads, head_dim)`: returns the
    /// context `(tokens, heads * head_dim)` (heads merged) and the saved state. `dropout` on
    /// the probabilities, mask index `((b * heads + h) * seq + i) * seq + j`.
    fn attention(
        &self,
        qkv: &Self::Buf,
        dims: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<(Self::Buf, Self::AttnSaved)>;
    /// Backward of [`Device::attention`]: `dqkv (tokens, 3, heads, head_dim)`.
    fn attention_bwd(
        &self,
        qkv: &Self::Buf,
        out: &Self::Buf,
        saved: &Self::AttnSaved,
        dout: &Self::Buf,
        dims: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<Self::Buf>;

    /// AdamW's state on the device: the parameters, their gradients and both moments.
    type Optim;
    /// Takes the parameters (step order) with their weight decay (0: none); zero gradients
    /// and moments.
    fn optim_new(&self, params: &[Vec<f32>], decay: Vec<f32>) -> Result<Self::Optim>;
    /// The parameters and their gradients, for a forward/backward pass.
    fn optim_parts<'a>(
        &self,
        o: &'a mut Self::Optim,
    ) -> (Vec<Self::W<'a>>, Vec<&'a mut Self::Grad>);
    fn optim_zero_grads(&self, o: &mut Self::Optim) -> Result<()>;
    /// One update: the gradients' global L2 norm is computed (returned, a one-element buffer:
    /// read it only where it is logged); when above `max_norm` they are scaled to it
    /// (`max_norm / (norm + 1e-6)`, as [`crate::optim::clip_grad_norm`]); then AdamW as
    /// [`crate::optim::AdamW::step`].
    fn optim_step(&self, o: &mut Self::Optim, h: AdamHyper, max_norm: f32) -> Result<Self::Grad>;
    /// Host copies of every tensor's (parameter, first moment, second moment).
    #[expect(clippy::type_complexity)]
    fn optim_state(&self, o: &Self::Optim) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>>;
    /// Replaces the moments (resuming), one (m, v) per tensor.
    fn optim_set_moments(&self, o: &mut Self::Optim, mv: Vec<(Vec<f32>, Vec<f32>)>) -> Result<()>;

    /// Mean cross-entropy of `logits (rows, classes)` against `targets` (all valid): returns
    /// the loss (a one-element buffer, left on the device) and `dlogits = dloss * d(mean)/dx`,
    /// written over the logits (taken by value: the MLM head's largest buffer is not copied).
    fn cross_entropy(
        &self,
        logits: Self::Buf,
        targets: &Self::Ids,
        rows: usize,
        classes: usize,
        dloss: f32,
    ) -> Result<(Self::Grad, Self::Buf)>;
}

/// AdamW hyper-parameters of one step; `bc1`, `bc2` the bias corrections (`1 - beta^t`, or 1).
#[derive(Clone, Copy, Debug)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}
