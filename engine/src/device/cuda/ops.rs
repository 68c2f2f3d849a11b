//! The CUDA ops both GPU devices share, generic over the activation type `T` (f32 for
//! [`crate::device::cuda::Cuda`], bf16 for [`crate::device::cuda::CudaBf16`]): each allocates
//! its output and makes one or two launches. Master weights, LayerNorm parameters and
//! statistics, attention's log-sum-exp and losses are always f32.

use crate::device::{AdamHyper, AttnDims, LnSaved};
use crate::error::{Error, Result};
use crate::gelu::Gelu;
use kernels::adamw::{AdamStep, MultiAdamW};
use kernels::attention::{AttnBatch, AttnShape};
use kernels::blas::{Blas, GemmShape, Math};
use kernels::cudarc::driver::{CudaSlice, ValidAsZeroBits};
use kernels::gelu::GeluKind;
use kernels::{Elem, Gpu};

pub(crate) fn dev_err(e: kernels::Error) -> Error {
    Error::Device(e.to_string())
}

pub(crate) fn kind(g: Gelu) -> GeluKind {
    match g {
        Gelu::Erf => GeluKind::Erf,
        Gelu::Tanh => GeluKind::Tanh,
    }
}

pub(crate) fn drop_arg((p, seed): (f32, u64)) -> Option<(f32, u64)> {
    (p > 0.0).then_some((p, seed))
}

/// Attention's saved state: the per-(token, head) log-sum-exp and the batch's sequence tables.
pub struct CudaAttnSaved {
    pub(crate) lse: CudaSlice<f32>,
    pub(crate) batch: std::rc::Rc<AttnBatch>,
}

/// The element types the devices keep activations in.
pub(crate) trait Act: Elem + ValidAsZeroBits {}
impl Act for f32 {}
impl Act for half::bf16 {}

/// A zeroed buffer of `n` elements (at least one: a zero-length CUDA allocation is refused).
pub(crate) fn alloc<T: Act>(gpu: &Gpu, n: usize) -> Result<CudaSlice<T>> {
    gpu.stream()
        .alloc_zeros::<T>(n.max(1))
        .map_err(|e| Error::Device(format!("allocating {n} {} values: {e}", T::SUFFIX)))
}

/// An uninitialised buffer of `n` elements (at least one), for an output that the launch which
/// follows writes in full: a kernel whose every output element is checked against poisoned
/// buffers in engine/tests/cuda_ops/, or a GEMM with beta = 0 (cuBLAS then never reads C).
/// Saves the memset launch of [`alloc`], a third of all launches in a small model's step.
pub(crate) fn alloc_out<T: Act>(gpu: &Gpu, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: callers only pass the buffer to a launch that writes every element before
    // anything reads it (see above); stream-ordered allocation keeps it on this stream.
    unsafe { gpu.stream().alloc::<T>(n.max(1)) }
        .map_err(|e| Error::Device(format!("allocating {n} {} values: {e}", T::SUFFIX)))
}

/// A column of at least `n` ones, grown on demand (the k = 1 GEMM that broadcasts a bias over
/// the rows of a Linear layer's output): callers take a view of its first `n`.
pub(crate) fn ones<'a, T: Act>(
    gpu: &Gpu,
    cache: &'a mut Option<CudaSlice<T>>,
    n: usize,
    one: T,
) -> Result<&'a CudaSlice<T>> {
    if cache.as_ref().is_none_or(|o| o.len() < n) {
        let host = vec![one; n.next_power_of_two()];
        *cache = Some(
            gpu.stream()
                .clone_htod(&host)
                .map_err(|e| Error::Device(format!("copying ones to the GPU: {e}")))?,
        );
    }
    Ok(cache.as_ref().unwrap())
}

/// `y (rows,out) = x (rows,in) W^T + b` on `T` operands (f32 accumulation): a GEMM writing y
/// in full (beta 0), the bias first when there is one, broadcast by a k = 1 GEMM of a cached
/// column of ones against the bias row (any width, NSP's 2 included).
pub(crate) fn linear<T: Act>(
    gpu: &Gpu,
    blas: &Blas,
    math: Math,
    ones_cache: &std::cell::RefCell<Option<CudaSlice<T>>>,
    one: T,
    x: &CudaSlice<T>,
    w: &CudaSlice<T>,
    b: Option<&CudaSlice<T>>,
    rows: usize,
    inp: usize,
    out: usize,
) -> Result<CudaSlice<T>> {
    let mut y = alloc_out(gpu, rows * out)?;
    let beta = match b {
        Some(b) => {
            let mut cache = ones_cache.borrow_mut();
            let ones = ones(gpu, &mut cache, rows, one)?;
            blas.gemm(
                gpu,
                GemmShape::new(rows, out, 1),
                math,
                1.0,
                &ones.slice(0..rows),
                b,
                0.0,
                &mut y,
            )
            .map_err(dev_err)?;
            1.0
        }
        None => 0.0,
    };
    let s = GemmShape::new(rows, out, inp).trans_b();
    blas.gemm(gpu, s, math, 1.0, x, w, beta, &mut y)
        .map_err(dev_err)?;
    Ok(y)
}

/// `dx (rows,in) = dy (rows,out) W`.
pub(crate) fn linear_dx<T: Act>(
    gpu: &Gpu,
    blas: &Blas,
    math: Math,
    dy: &CudaSlice<T>,
    w: &CudaSlice<T>,
    rows: usize,
    inp: usize,
    out: usize,
) -> Result<CudaSlice<T>> {
    let mut dx = alloc_out(gpu, rows * inp)?;
    blas.gemm(
        gpu,
        GemmShape::new(rows, inp, out),
        math,
        1.0,
        dy,
        w,
        0.0,
        &mut dx,
    )
    .map_err(dev_err)?;
    Ok(dx)
}

/// `dW (out,in) += dy^T x` into f32, and `db += column sums of dy` when given.
pub(crate) fn linear_dw<T: Act>(
    gpu: &Gpu,
    blas: &Blas,
    math: Math,
    dy: &CudaSlice<T>,
    x: &CudaSlice<T>,
    rows: usize,
    inp: usize,
    out: usize,
    dw: &mut CudaSlice<f32>,
    db: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let s = GemmShape::new(out, inp, rows).trans_a();
    blas.gemm(gpu, s, math, 1.0, dy, x, 1.0, dw)
        .map_err(dev_err)?;
    if let Some(db) = db {
        kernels::reduce::column_sum(gpu, dy, db, out, 1.0).map_err(dev_err)?;
    }
    Ok(())
}

pub(crate) fn dropout<T: Act>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    p: f32,
    seed: u64,
) -> Result<CudaSlice<T>> {
    if p == 0.0 {
        return gpu
            .stream()
            .clone_dtod(x)
            .map_err(|e| Error::Device(format!("copying on the GPU: {e}")));
    }
    let mut y = alloc_out(gpu, x.len())?;
    kernels::dropout::dropout(gpu, x, &mut y, p, seed).map_err(dev_err)?;
    Ok(y)
}

pub(crate) fn gelu<T: Act>(gpu: &Gpu, x: &CudaSlice<T>, g: Gelu) -> Result<CudaSlice<T>> {
    let mut y = alloc_out(gpu, x.len())?;
    kernels::gelu::gelu_fwd(gpu, kind(g), x, &mut y).map_err(dev_err)?;
    Ok(y)
}

pub(crate) fn gelu_bwd<T: Act>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    dy: &CudaSlice<T>,
    g: Gelu,
) -> Result<CudaSlice<T>> {
    let mut dx = alloc_out(gpu, x.len())?;
    kernels::gelu::gelu_bwd(gpu, kind(g), x, &dy.slice(..), &mut dx).map_err(dev_err)?;
    Ok(dx)
}

pub(crate) fn add_into<T: Act>(gpu: &Gpu, acc: &mut CudaSlice<T>, x: &CudaSlice<T>) -> Result<()> {
    kernels::elementwise::axpby_inplace(gpu, acc, x, 1.0, 1.0).map_err(dev_err)
}

/// `h = dropout(x) + residual`, `y = LayerNorm(h)` with f32 gamma and beta.
#[expect(clippy::type_complexity)]
pub(crate) fn layernorm<T: Act>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    residual: Option<&CudaSlice<T>>,
    dropout: (f32, u64),
    gamma: &CudaSlice<f32>,
    beta: &CudaSlice<f32>,
    cols: usize,
    eps: f32,
) -> Result<(CudaSlice<T>, LnSaved<CudaSlice<T>, CudaSlice<f32>>)> {
    let n = x.len();
    let rows = n / cols.max(1);
    let mut y = alloc_out(gpu, n)?;
    let mut h = alloc_out(gpu, n)?;
    let mut mean = alloc_out(gpu, rows)?;
    let mut rstd = alloc_out(gpu, rows)?;
    let res = residual.map(|r| r.slice(..));
    kernels::layernorm::layernorm_fwd(
        gpu,
        x,
        res.as_ref(),
        gamma,
        beta,
        Some(&mut h.slice_mut(..)),
        &mut y,
        &mut mean,
        &mut rstd,
        cols,
        eps,
        drop_arg(dropout),
    )
    .map_err(dev_err)?;
    Ok((y, LnSaved { h, mean, rstd }))
}

pub(crate) fn layernorm_bwd<T: Act>(
    gpu: &Gpu,
    s: &LnSaved<CudaSlice<T>, CudaSlice<f32>>,
    dy: &CudaSlice<T>,
    gamma: &CudaSlice<f32>,
    cols: usize,
    dgamma: &mut CudaSlice<f32>,
    dbeta: &mut CudaSlice<f32>,
) -> Result<CudaSlice<T>> {
    let mut dx = alloc_out(gpu, dy.len())?;
    kernels::layernorm::layernorm_bwd(gpu, &s.h, dy, gamma, &s.mean, &s.rstd, &mut dx, cols)
        .map_err(dev_err)?;
    kernels::layernorm::layernorm_params_bwd(
        gpu, &s.h, dy, &s.mean, &s.rstd, dgamma, dbeta, cols, 1.0,
    )
    .map_err(dev_err)?;
    Ok(dx)
}

pub(crate) fn embed<T: Act>(
    gpu: &Gpu,
    ids: &CudaSlice<i32>,
    types: &CudaSlice<i32>,
    positions: Option<&CudaSlice<i32>>,
    word: &CudaSlice<T>,
    pos: &CudaSlice<T>,
    typ: &CudaSlice<T>,
    seq: usize,
    dim: usize,
) -> Result<CudaSlice<T>> {
    let mut y = alloc_out(gpu, ids.len() * dim)?;
    let pv = positions.map(|p| p.slice(..));
    kernels::embedding::bert_embed_fwd_at(
        gpu,
        ids,
        Some(&types.slice(..)),
        pv.as_ref(),
        word,
        pos,
        typ,
        &mut y,
        seq,
        dim,
        None,
    )
    .map_err(dev_err)?;
    Ok(y)
}

/// The three tables' gradients from dy `[tokens, dim]` in f32 (atomics for words and types;
/// positions deterministic when padded, atomics when packed); the word table's row `pad` gets
/// nothing from the lookup (saved before the scatter and put back after: what it holds already,
/// the tied decoder's gradient, stays).
pub(crate) fn embed_bwd(
    gpu: &Gpu,
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
    let pad = pad.filter(|&p| (p + 1) * dim <= dword.len());
    let err = |e| Error::Device(format!("embed_bwd: the pad row: {e}"));
    let saved = match pad {
        Some(p) => Some(
            gpu.stream()
                .clone_dtod(&dword.slice(p * dim..(p + 1) * dim))
                .map_err(err)?,
        ),
        None => None,
    };
    kernels::embedding::embedding_bwd(gpu, ids, dy, dword, dim).map_err(dev_err)?;
    if let (Some(p), Some(row)) = (pad, saved) {
        gpu.stream()
            .memcpy_dtod(&row, &mut dword.slice_mut(p * dim..(p + 1) * dim))
            .map_err(err)?;
    }
    kernels::embedding::embedding_bwd(gpu, types, dy, dtyp, dim).map_err(dev_err)?;
    match positions {
        Some(p) => kernels::embedding::embedding_bwd(gpu, p, dy, dpos, dim).map_err(dev_err),
        None => kernels::embedding::position_bwd(gpu, dy, dpos, seq, dim).map_err(dev_err),
    }
}

pub(crate) fn gather_rows<T: Act>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    rows: &CudaSlice<i32>,
    cols: usize,
) -> Result<CudaSlice<T>> {
    let mut y = alloc_out(gpu, rows.len() * cols)?;
    kernels::embedding::gather_rows(gpu, x, rows, &mut y, cols).map_err(dev_err)?;
    Ok(y)
}

pub(crate) fn argmax_rows<T: Act>(
    gpu: &Gpu,
    x: &CudaSlice<T>,
    rows: usize,
    cols: usize,
) -> Result<Vec<i64>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    if x.len() < rows * cols {
        return Err(Error::Arg {
            op: "argmax_rows",
            shape: vec![x.len(), rows, cols],
            why: "x must hold rows x cols values".into(),
        });
    }
    // SAFETY: the kernel writes one index per row, all `rows` of them.
    let mut out = unsafe { gpu.stream().alloc::<i32>(rows) }
        .map_err(|e| Error::Device(format!("allocating {rows} indices: {e}")))?;
    kernels::reduce::argmax_rows(gpu, &x.slice(0..rows * cols), &mut out, cols).map_err(dev_err)?;
    let host = gpu
        .stream()
        .clone_dtoh(&out)
        .map_err(|e| Error::Device(format!("copying {rows} indices from the GPU: {e}")))?;
    Ok(host.into_iter().map(i64::from).collect())
}

fn shape(d: &AttnDims, scale: f32) -> AttnShape {
    AttnShape {
        heads: d.heads,
        head_dim: d.head_dim,
        scale,
    }
}

/// The attention tables (sequence starts, rows and key counts on the GPU) of the last batch
/// seen, keyed by (packed, seq, lens): every layer of a step, forward and backward, uses the
/// same, so they are uploaded once per batch instead of once per layer.
pub(crate) type AttnBatchCache =
    std::cell::RefCell<Option<((bool, usize, Vec<usize>), std::rc::Rc<AttnBatch>)>>;

fn attn_batch(gpu: &Gpu, cache: &AttnBatchCache, d: &AttnDims) -> Result<std::rc::Rc<AttnBatch>> {
    let key = (d.packed, d.seq, d.lens.clone());
    if let Some((k, b)) = cache.borrow().as_ref() {
        if *k == key {
            return Ok(b.clone());
        }
    }
    let batch = std::rc::Rc::new(
        if d.packed {
            AttnBatch::packed(gpu, &d.lens)
        } else {
            AttnBatch::padded(gpu, d.seq, &d.lens)
        }
        .map_err(dev_err)?,
    );
    *cache.borrow_mut() = Some((key, batch.clone()));
    Ok(batch)
}

pub(crate) fn attention<T: Act>(
    gpu: &Gpu,
    cache: &AttnBatchCache,
    qkv: &CudaSlice<T>,
    d: &AttnDims,
    scale: f32,
    dropout: (f32, u64),
) -> Result<(CudaSlice<T>, CudaAttnSaved)> {
    let batch = attn_batch(gpu, cache, d)?;
    let mut o = alloc(gpu, d.tokens() * d.hidden())?;
    let mut lse = alloc(gpu, d.tokens() * d.heads)?;
    kernels::attention::attention_fwd::<T>(
        gpu,
        &batch,
        shape(d, scale),
        &qkv.slice(..),
        &mut o.slice_mut(..),
        &mut lse,
        drop_arg(dropout),
    )
    .map_err(dev_err)?;
    Ok((o, CudaAttnSaved { lse, batch }))
}

pub(crate) fn attention_bwd<T: Act>(
    gpu: &Gpu,
    qkv: &CudaSlice<T>,
    out: &CudaSlice<T>,
    saved: &CudaAttnSaved,
    dout: &CudaSlice<T>,
    d: &AttnDims,
    scale: f32,
    dropout: (f32, u64),
) -> Result<CudaSlice<T>> {
    let mut dqkv = alloc(gpu, qkv.len())?;
    kernels::attention::attention_bwd::<T>(
        gpu,
        &saved.batch,
        shape(d, scale),
        &qkv.slice(..),
        &out.slice(..),
        &saved.lse,
        &dout.slice(..),
        &mut dqkv.slice_mut(..),
        drop_arg(dropout),
    )
    .map_err(dev_err)?;
    Ok(dqkv)
}

/// Mean cross-entropy (f32, one element) and `dlogits` in the logits' type, written over the
/// logits by the fused kernel (forward and backward in one pass).
pub(crate) fn cross_entropy<T: Act>(
    gpu: &Gpu,
    mut logits: CudaSlice<T>,
    targets: &CudaSlice<i32>,
    rows: usize,
    classes: usize,
    dloss: f32,
) -> Result<(CudaSlice<f32>, CudaSlice<T>)> {
    let mut loss_rows = alloc::<f32>(gpu, rows)?;
    let mut lse = alloc::<f32>(gpu, rows)?;
    kernels::cross_entropy::cross_entropy_fused_inplace(
        gpu,
        &mut logits,
        targets,
        &mut loss_rows,
        &mut lse,
        classes,
        -100,
        dloss / rows.max(1) as f32,
    )
    .map_err(dev_err)?;
    let mut loss = alloc::<f32>(gpu, 1)?;
    kernels::reduce::sum(gpu, &loss_rows, &mut loss, 1.0 / rows.max(1) as f32, false)
        .map_err(dev_err)?;
    Ok((loss, logits))
}

/// Clipping's norm and scale on the device, then AdamW reading the scale: returns the norm.
pub(crate) fn optim_step(
    gpu: &Gpu,
    o: &mut MultiAdamW,
    h: AdamHyper,
    max_norm: f32,
) -> Result<CudaSlice<f32>> {
    let norm = {
        let ns = o.clip_grad_norm(gpu, max_norm).map_err(dev_err)?;
        gpu.stream()
            .clone_dtod(&ns.slice(0..1))
            .map_err(|e| Error::Device(format!("copying the gradient norm: {e}")))?
    };
    let step = AdamStep {
        lr: h.lr,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        bc1: h.bc1,
        bc2: h.bc2,
    };
    o.step(gpu, step, true).map_err(dev_err)?;
    Ok(norm)
}
