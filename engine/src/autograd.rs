//! Reverse-mode automatic differentiation: a define-by-run tape of coarse ops.
//!
//! A [`Var`] is a tensor plus, when it was computed by a recorded op, the op and its inputs.
//! Ops are coarse (matmul, layernorm, attention, cross-entropy, ...) with hand-derived
//! backward passes that live beside their forward kernels, so the tape costs nothing per
//! element. [`Var::backward`] walks the graph once in reverse topological order:
//! - each node's saved tensors are dropped as soon as its backward has run;
//! - gradients reaching a node from several uses are summed;
//! - leaves (parameters) accumulate into their `.grad()` across calls, which is gradient
//!   accumulation over micro-batches; [`Var::zero_grad`] clears it.
//!
//! Inside a [`no_grad`] scope nothing is recorded (inference, evaluation).

use crate::attention::{attention_backward, attention_forward, AttentionSaved};
use crate::elementwise::BinOp;
use crate::error::{Error, Result};
use crate::gelu::Gelu;
use crate::simd::Isa;
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

thread_local! {
    static NO_GRAD: Cell<bool> = const { Cell::new(false) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// While the returned guard lives, ops on this thread record nothing.
pub fn no_grad() -> NoGradGuard {
    NoGradGuard(NO_GRAD.with(|f| f.replace(true)))
}

/// Restores the previous recording state when dropped.
pub struct NoGradGuard(bool);
impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD.with(|f| f.set(self.0));
    }
}

/// Whether ops on this thread are being recorded (false inside [`no_grad`]).
pub fn is_recording() -> bool {
    recording()
}

fn recording() -> bool {
    !NO_GRAD.with(|f| f.get())
}

/// A tensor in the autograd graph. Cloning is cheap (reference-counted).
#[derive(Clone)]
pub struct Var(Rc<Node>);

struct Node {
    id: u64,
    value: RefCell<Tensor>,
    requires_grad: bool,
    /// The op that produced this value and its inputs; taken (freed) by backward.
    record: RefCell<Option<Record>>,
    /// Accumulated gradient of a leaf.
    grad: RefCell<Option<Tensor>>,
    /// Set when backward has taken `record`: the graph below this node is gone.
    consumed: Cell<bool>,
}

struct Record {
    inputs: Vec<Var>,
    op: Op,
}

/// Every differentiable op, with what its backward pass needs.
enum Op {
    MatMul,
    /// x W^T + b, inputs (x, w[, b]).
    Linear,
    Binary(BinOp),
    Affine(f32),
    Sum {
        dim: usize,
        keepdim: bool,
    },
    Mean {
        dim: usize,
        keepdim: bool,
    },
    Max {
        dim: usize,
    },
    Reshape,
    Permute(Vec<usize>),
    Narrow {
        dim: usize,
        start: usize,
    },
    BroadcastTo,
    Embedding {
        ids: Vec<i64>,
        /// The row that gets no gradient.
        pad: Option<usize>,
    },
    LayerNorm {
        mean: Vec<f32>,
        rstd: Vec<f32>,
    },
    Gelu(Gelu),
    Tanh,
    Relu,
    BceWithLogits {
        targets: Vec<f32>,
    },
    Softmax {
        y: Tensor,
    },
    CrossEntropy {
        targets: Vec<i64>,
        ignore: i64,
        lse: Vec<f32>,
        count: usize,
    },
    Dropout {
        p: f32,
        seed: u64,
    },
    Attention(AttentionSaved),
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var(#{}, {:?}, requires_grad={})",
            self.0.id,
            self.shape(),
            self.0.requires_grad
        )
    }
}

impl Var {
    fn make(value: Tensor, requires_grad: bool, record: Option<Record>) -> Var {
        let id = NEXT_ID.with(|c| {
            let v = c.get();
            c.set(v + 1);
            v
        });
        Var(Rc::new(Node {
            id,
            value: RefCell::new(value),
            requires_grad,
            record: RefCell::new(record),
            grad: RefCell::new(None),
            consumed: Cell::new(false),
        }))
    }

    /// A leaf that gradients flow to (a parameter).
    pub fn param(value: Tensor) -> Var {
        Self::make(value, true, None)
    }
    /// A leaf without gradient (an input, a mask).
    pub fn constant(value: Tensor) -> Var {
        Self::make(value, false, None)
    }

    /// The result of an op on `inputs`: recorded when recording is on and any input needs grad.
    fn from_op(value: Tensor, inputs: Vec<Var>, op: Op) -> Var {
        let needs = recording() && inputs.iter().any(|v| v.0.requires_grad);
        if needs {
            Self::make(value, true, Some(Record { inputs, op }))
        } else {
            Self::make(value, false, None)
        }
    }

    /// The current value (a cheap handle to the shared storage).
    pub fn value(&self) -> Tensor {
        self.0.value.borrow().clone()
    }
    /// Replaces a leaf's value (optimizers do this); the shape must not change.
    pub fn set_value(&self, t: Tensor) -> Result<()> {
        if t.shape() != self.shape() {
            return Err(Error::Shape {
                op: "set_value",
                lhs: self.shape(),
                rhs: t.shape().to_vec(),
                why: "a parameter keeps its shape".into(),
            });
        }
        *self.0.value.borrow_mut() = t;
        Ok(())
    }
    pub fn shape(&self) -> Vec<usize> {
        self.0.value.borrow().shape().to_vec()
    }
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// The gradient accumulated in a leaf by `backward` (None before any).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.borrow().clone()
    }
    /// Replaces the accumulated gradient (gradient clipping uses this).
    pub fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.borrow_mut() = g;
    }
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }
    /// A scalar's value.
    pub fn item(&self) -> f32 {
        self.value().to_vec()[0]
    }

    // ----- ops (each: forward now, backward recorded) --------------------------------------

    /// Batched matrix product, as [`Tensor::matmul`].
    pub fn matmul(&self, b: &Var) -> Result<Var> {
        Ok(Self::from_op(
            self.value().matmul(&b.value())?,
            vec![self.clone(), b.clone()],
            Op::MatMul,
        ))
    }
    /// A Linear layer, `x W^T + b` (see [`Tensor::linear`]): x (..., in), w (out, in), b (out).
    pub fn linear(&self, w: &Var, b: Option<&Var>) -> Result<Var> {
        let out = self
            .value()
            .linear(&w.value(), b.map(|b| b.value()).as_ref())?;
        let mut inputs = vec![self.clone(), w.clone()];
        inputs.extend(b.cloned());
        Ok(Self::from_op(out, inputs, Op::Linear))
    }
    fn binary(&self, b: &Var, op: BinOp) -> Result<Var> {
        Ok(Self::from_op(
            self.value().binary(&b.value(), op)?,
            vec![self.clone(), b.clone()],
            Op::Binary(op),
        ))
    }
    /// Elementwise sum with broadcasting.
    pub fn add(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Add)
    }
    pub fn sub(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Sub)
    }
    pub fn mul(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Mul)
    }
    pub fn div(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Div)
    }
    /// Elementwise maximum; the gradient goes to the larger operand (`self` on ties).
    pub fn maximum(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Max)
    }
    /// Elementwise minimum; the gradient goes to the smaller operand (`self` on ties).
    pub fn minimum(&self, b: &Var) -> Result<Var> {
        self.binary(b, BinOp::Min)
    }
    /// `a * x + b` with constants a, b.
    pub fn affine(&self, a: f32, b: f32) -> Result<Var> {
        Ok(Self::from_op(
            self.value().affine(a, b)?,
            vec![self.clone()],
            Op::Affine(a),
        ))
    }
    pub fn sum(&self, dim: isize, keepdim: bool) -> Result<Var> {
        let d = self.value().norm_dim("sum", dim)?;
        Ok(Self::from_op(
            self.value().sum(dim, keepdim)?,
            vec![self.clone()],
            Op::Sum { dim: d, keepdim },
        ))
    }
    pub fn mean(&self, dim: isize, keepdim: bool) -> Result<Var> {
        let d = self.value().norm_dim("mean", dim)?;
        Ok(Self::from_op(
            self.value().mean(dim, keepdim)?,
            vec![self.clone()],
            Op::Mean { dim: d, keepdim },
        ))
    }
    /// Maximum over `dim`; the gradient goes to the first position holding the maximum.
    pub fn max(&self, dim: isize, keepdim: bool) -> Result<Var> {
        let d = self.value().norm_dim("max", dim)?;
        Ok(Self::from_op(
            self.value().max(dim, keepdim)?,
            vec![self.clone()],
            Op::Max { dim: d },
        ))
    }
    /// Sum of every element, as a scalar.
    pub fn sum_all(&self) -> Result<Var> {
        self.reshape(&[self.value().numel()])?.sum(0, false)
    }
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        Ok(Self::from_op(
            self.value().reshape(shape)?,
            vec![self.clone()],
            Op::Reshape,
        ))
    }
    pub fn permute(&self, perm: &[usize]) -> Result<Var> {
        Ok(Self::from_op(
            self.value().permute(perm)?,
            vec![self.clone()],
            Op::Permute(perm.to_vec()),
        ))
    }
    pub fn transpose(&self, a: isize, b: isize) -> Result<Var> {
        let t = self.value();
        let (a, b) = (t.norm_dim("transpose", a)?, t.norm_dim("transpose", b)?);
        let mut perm: Vec<usize> = (0..t.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Var> {
        let d = self.value().norm_dim("narrow", dim)?;
        Ok(Self::from_op(
            self.value().narrow(dim, start, len)?,
            vec![self.clone()],
            Op::Narrow { dim: d, start },
        ))
    }
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var> {
        Ok(Self::from_op(
            self.value().broadcast_to(shape)?,
            vec![self.clone()],
            Op::BroadcastTo,
        ))
    }
    /// Embedding lookup of `ids` (shape `ids_shape`) in this (vocab, dim) table.
    pub fn embedding(&self, ids: &[i64], ids_shape: &[usize]) -> Result<Var> {
        self.embedding_padded(ids, ids_shape, None)
    }
    /// [`Var::embedding`] whose row `pad` gets no gradient (PyTorch's `padding_idx`).
    pub fn embedding_padded(
        &self,
        ids: &[i64],
        ids_shape: &[usize],
        pad: Option<usize>,
    ) -> Result<Var> {
        let out = Tensor::embedding(&self.value(), ids, ids_shape)?;
        Ok(Self::from_op(
            out,
            vec![self.clone()],
            Op::Embedding {
                ids: ids.to_vec(),
                pad,
            },
        ))
    }
    /// LayerNorm over the last dimension with learnable gamma and beta.
    pub fn layernorm(&self, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let x = self.value();
        let d = *x.shape().last().ok_or_else(|| Error::Arg {
            op: "layernorm",
            shape: vec![],
            why: "needs at least one dimension".into(),
        })?;
        let (g, b) = (gamma.value(), beta.value());
        for p in [&g, &b] {
            if p.shape() != [d] {
                return Err(Error::Shape {
                    op: "layernorm",
                    lhs: x.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                    why: format!("gamma and beta must have shape [{d}]"),
                });
            }
        }
        let xc = x.contiguous();
        let mut out = vec![0.0f32; xc.numel()];
        let (mean, rstd) = crate::layernorm::layernorm_rows(
            Isa::best(),
            xc.as_slice().unwrap(),
            d,
            &g.to_vec(),
            &b.to_vec(),
            eps,
            &mut out,
        );
        let out = Tensor::from_vec(out, x.shape())?;
        Ok(Self::from_op(
            out,
            vec![self.clone(), gamma.clone(), beta.clone()],
            Op::LayerNorm { mean, rstd },
        ))
    }
    pub fn gelu(&self, kind: Gelu) -> Result<Var> {
        Ok(Self::from_op(
            self.value().gelu(kind)?,
            vec![self.clone()],
            Op::Gelu(kind),
        ))
    }
    /// Elementwise tanh (BERT's pooler).
    pub fn tanh(&self) -> Result<Var> {
        Ok(Self::from_op(
            self.value().map(crate::UnaryOp::Tanh)?,
            vec![self.clone()],
            Op::Tanh,
        ))
    }
    /// Elementwise max(x, 0) (`hidden_act: relu`).
    pub fn relu(&self) -> Result<Var> {
        Ok(Self::from_op(
            self.value().map(crate::UnaryOp::Relu)?,
            vec![self.clone()],
            Op::Relu,
        ))
    }
    /// Mean binary cross-entropy of these logits against `targets` (same shape, values in
    /// [0, 1]), as PyTorch's `BCEWithLogitsLoss`: `max(x,0) - x t + log(1 + e^-|x|)`, a scalar.
    pub fn bce_with_logits(&self, targets: &Tensor) -> Result<Var> {
        let x = self.value();
        if x.shape() != targets.shape() {
            return Err(Error::Shape {
                op: "bce_with_logits",
                lhs: x.shape().to_vec(),
                rhs: targets.shape().to_vec(),
                why: "logits and targets must have the same shape".into(),
            });
        }
        let (xv, tv) = (x.to_vec(), targets.to_vec());
        let n = xv.len().max(1) as f64;
        let sum: f64 = xv
            .iter()
            .zip(&tv)
            .map(|(&x, &t)| {
                let x = x as f64;
                x.max(0.0) - x * t as f64 + (-x.abs()).exp().ln_1p()
            })
            .sum();
        Ok(Self::from_op(
            Tensor::scalar((sum / n) as f32),
            vec![self.clone()],
            Op::BceWithLogits { targets: tv },
        ))
    }
    /// Softmax over the last dimension after adding a constant mask (see [`Tensor::softmax`]).
    pub fn softmax(&self, mask: Option<&Tensor>) -> Result<Var> {
        let y = self.value().softmax(mask)?;
        Ok(Self::from_op(
            y.clone(),
            vec![self.clone()],
            Op::Softmax { y },
        ))
    }
    /// Mean cross-entropy of these logits (N, C) against `targets`, skipping `ignore`: a scalar.
    pub fn cross_entropy(&self, targets: &[i64], ignore: i64) -> Result<Var> {
        let x = self.value();
        let (loss, lse) = x.cross_entropy(targets, ignore)?;
        let count = targets.iter().filter(|&&t| t != ignore).count();
        Ok(Self::from_op(
            Tensor::scalar(loss),
            vec![self.clone()],
            Op::CrossEntropy {
                targets: targets.to_vec(),
                ignore,
                lse,
                count,
            },
        ))
    }
    /// Dropout with drop probability `p` and a counter-based mask from `seed`
    /// (identity when `p == 0`, e.g. in evaluation).
    pub fn dropout(&self, p: f32, seed: u64) -> Result<Var> {
        if p == 0.0 {
            return Ok(self.clone());
        }
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Arg {
                op: "dropout",
                shape: self.shape(),
                why: format!("p must be in [0, 1), got {p}"),
            });
        }
        let mut v = self.value().contiguous().to_vec();
        crate::dropout::dropout_inplace(&mut v, p, seed);
        Ok(Self::from_op(
            Tensor::from_vec(v, &self.shape())?,
            vec![self.clone()],
            Op::Dropout { p, seed },
        ))
    }
    /// Fused scaled-dot-product attention (see `attention.rs`): q (B,H,Sq,D), k (B,H,Sk,D),
    /// v (B,H,Sk,Dv), constant additive mask, dropout on the probabilities.
    pub fn attention(
        q: &Var,
        k: &Var,
        v: &Var,
        mask: Option<&Tensor>,
        scale: f32,
        dropout: f32,
        seed: u64,
    ) -> Result<Var> {
        let (out, saved) = attention_forward(
            &q.value(),
            &k.value(),
            &v.value(),
            mask,
            scale,
            dropout,
            seed,
        )?;
        Ok(Self::from_op(
            out,
            vec![q.clone(), k.clone(), v.clone()],
            Op::Attention(saved),
        ))
    }

    /// [`Var::attention`] with the heads merged back: returns (B,Sq,H*Dv). In inference (not
    /// recording, or nothing requires a gradient) with no dropout it runs the fused kernel
    /// [`crate::attention::attention_inference`], which never materialises the probabilities.
    pub fn attention_merged(
        q: &Var,
        k: &Var,
        v: &Var,
        mask: Option<&Tensor>,
        scale: f32,
        dropout: f32,
        seed: u64,
    ) -> Result<Var> {
        let grads = recording() && [q, k, v].iter().any(|x| x.0.requires_grad);
        if !grads && dropout == 0.0 {
            let out = crate::attention::attention_inference(
                &q.value(),
                &k.value(),
                &v.value(),
                mask,
                scale,
            )?;
            return Ok(Self::make(out, false, None));
        }
        let o = Self::attention(q, k, v, mask, scale, dropout, seed)?;
        let s = o.shape();
        o.permute(&[0, 2, 1, 3])?
            .reshape(&[s[0], s[2], s[1] * s[3]])
    }

    // ----- backward ------------------------------------------------------------------------

    /// Back-propagates from this scalar: every parameter it depends on gets d(self)/d(param)
    /// added to its gradient. The graph below is consumed (its saved tensors are freed).
    pub fn backward(&self) -> Result<()> {
        let v = self.value();
        if v.numel() != 1 {
            return Err(Error::Arg {
                op: "backward",
                shape: v.shape().to_vec(),
                why: "backward starts from a scalar".into(),
            });
        }
        self.backward_with(Tensor::full(v.shape(), 1.0))
    }

    /// Back-propagates `grad` (same shape as this value) through the graph.
    pub fn backward_with(&self, grad: Tensor) -> Result<()> {
        if !self.0.requires_grad {
            return Ok(());
        }
        // Reverse topological order by an iterative depth-first search.
        let mut order: Vec<Var> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack: Vec<(Var, bool)> = vec![(self.clone(), false)];
        while let Some((v, expanded)) = stack.pop() {
            if expanded {
                order.push(v);
                continue;
            }
            if !seen.insert(v.0.id) {
                continue;
            }
            if v.0.consumed.get() {
                return Err(Error::GraphConsumed);
            }
            stack.push((v.clone(), true));
            if let Some(rec) = v.0.record.borrow().as_ref() {
                for inp in &rec.inputs {
                    if inp.0.requires_grad && !seen.contains(&inp.0.id) {
                        stack.push((inp.clone(), false));
                    }
                }
            }
        }
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.0.id, grad);
        for v in order.iter().rev() {
            let Some(g) = grads.remove(&v.0.id) else {
                continue;
            };
            let rec = v.0.record.borrow_mut().take();
            if rec.is_some() {
                v.0.consumed.set(true);
            }
            match rec {
                None => {
                    // A leaf: accumulate.
                    let mut slot = v.0.grad.borrow_mut();
                    *slot = Some(match slot.take() {
                        Some(prev) => prev.add(&g)?,
                        None => g.contiguous(),
                    });
                }
                Some(Record { inputs, op }) => {
                    let input_grads = backward_op(&op, &inputs, &v.value(), &g)?;
                    for (inp, ig) in inputs.iter().zip(input_grads) {
                        if let (true, Some(ig)) = (inp.0.requires_grad, ig) {
                            let merged = match grads.remove(&inp.0.id) {
                                Some(prev) => prev.add(&ig)?,
                                None => ig,
                            };
                            grads.insert(inp.0.id, merged);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// `g` (broadcast shape) summed down to `shape`: the gradient of a broadcast.
pub fn sum_to_shape(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut t = g.clone();
    while t.rank() > shape.len() {
        t = t.sum(0, false)?;
    }
    for (d, &s) in shape.iter().enumerate() {
        if s == 1 && t.shape()[d] != 1 {
            t = t.sum(d as isize, true)?;
        }
    }
    Ok(t)
}

/// `g` placed into zeros of `shape` at `start..start+len` along `dim` (backward of narrow).
fn pad_narrow(g: &Tensor, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape[dim + 1..].iter().product();
    let (full, len) = (shape[dim], g.shape()[dim]);
    let gv = g.contiguous().to_vec();
    let mut out = vec![0.0f32; outer * full * inner];
    for o in 0..outer {
        let src = &gv[o * len * inner..(o + 1) * len * inner];
        out[(o * full + start) * inner..(o * full + start + len) * inner].copy_from_slice(src);
    }
    Tensor::from_vec(out, shape)
}

/// The gradient of each input of `op`, given the output value and its gradient `g`.
fn backward_op(op: &Op, inputs: &[Var], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let val = |i: usize| inputs[i].value();
    let isa = Isa::best();
    Ok(match op {
        Op::MatMul => {
            let (a, b) = (val(0), val(1));
            // dA = g b^T, dB = a^T g, then summed over any broadcast batch dimensions. When b is
            // a plain matrix shared by a batched a (x @ W), fold the batch into rows instead.
            let da = sum_to_shape(&g.matmul(&b.t()?)?, a.shape())?;
            let db = if b.rank() == 2 && a.rank() > 2 {
                let k = a.shape()[a.rank() - 1];
                let n = g.shape()[g.rank() - 1];
                a.reshape(&[usize::MAX, k])?
                    .t()?
                    .matmul(&g.reshape(&[usize::MAX, n])?)?
            } else {
                sum_to_shape(&a.t()?.matmul(g)?, b.shape())?
            };
            vec![Some(da), Some(db)]
        }
        Op::Linear => {
            // g (rows, out): dx = g W, dW = g^T x, db = column sums of g.
            let (x, w) = (val(0), val(1));
            let (nout, nin) = (w.shape()[0], w.shape()[1]);
            let g2 = g.reshape(&[usize::MAX, nout])?;
            let x2 = x.reshape(&[usize::MAX, nin])?;
            let dx = g2.matmul(&w)?.reshape(x.shape())?;
            let dw = g2.t()?.matmul(&x2)?;
            let mut grads = vec![Some(dx), Some(dw)];
            if inputs.len() == 3 {
                grads.push(Some(g2.sum(0, false)?));
            }
            grads
        }
        Op::Binary(bop) => {
            let (a, b) = (val(0), val(1));
            let (ga, gb) = match bop {
                BinOp::Add => (g.clone(), g.clone()),
                BinOp::Sub => (g.clone(), g.affine(-1.0, 0.0)?),
                BinOp::Mul => (g.mul(&b)?, g.mul(&a)?),
                BinOp::Div => (g.div(&b)?, g.mul(out)?.div(&b)?.affine(-1.0, 0.0)?),
                BinOp::Max | BinOp::Min => {
                    // The gradient goes to the operand that was selected (a on ties).
                    let shape = out.shape().to_vec();
                    let (av, bv, gv) = (
                        a.broadcast_to(&shape)?.to_vec(),
                        b.broadcast_to(&shape)?.to_vec(),
                        g.contiguous().to_vec(),
                    );
                    let pick_a: Vec<bool> = av
                        .iter()
                        .zip(&bv)
                        .map(|(x, y)| if *bop == BinOp::Max { x >= y } else { x <= y })
                        .collect();
                    let ga: Vec<f32> = gv
                        .iter()
                        .zip(&pick_a)
                        .map(|(g, &p)| if p { *g } else { 0.0 })
                        .collect();
                    let gb: Vec<f32> = gv
                        .iter()
                        .zip(&pick_a)
                        .map(|(g, &p)| if p { 0.0 } else { *g })
                        .collect();
                    (Tensor::from_vec(ga, &shape)?, Tensor::from_vec(gb, &shape)?)
                }
            };
            vec![
                Some(sum_to_shape(&ga, a.shape())?),
                Some(sum_to_shape(&gb, b.shape())?),
            ]
        }
        Op::Affine(a) => vec![Some(g.affine(*a, 0.0)?)],
        Op::Sum { dim, keepdim } | Op::Mean { dim, keepdim } => {
            let x = val(0);
            let gk = if *keepdim {
                g.clone()
            } else {
                g.unsqueeze(*dim)?
            };
            let mut gx = gk.broadcast_to(x.shape())?.contiguous();
            if matches!(op, Op::Mean { .. }) {
                gx = gx.affine(1.0 / x.shape()[*dim] as f32, 0.0)?;
            }
            vec![Some(gx)]
        }
        Op::Max { dim } => {
            // Route each output's gradient to the first argmax along `dim`.
            let x = val(0).contiguous();
            let (shape, d) = (x.shape().to_vec(), *dim);
            let (outer, axis, inner) = (
                shape[..d].iter().product::<usize>(),
                shape[d],
                shape[d + 1..].iter().product::<usize>(),
            );
            let (xv, gv) = (x.to_vec(), g.contiguous().to_vec());
            let mut dx = vec![0.0f32; xv.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |a: usize| (o * axis + a) * inner + i;
                    let best = (0..axis).fold(0, |b, a| if xv[at(a)] > xv[at(b)] { a } else { b });
                    dx[at(best)] = gv[o * inner + i];
                }
            }
            vec![Some(Tensor::from_vec(dx, &shape)?)]
        }
        Op::Reshape => vec![Some(g.reshape(val(0).shape())?)],
        Op::Permute(perm) => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(g.permute(&inv)?.contiguous())]
        }
        Op::Narrow { dim, start } => vec![Some(pad_narrow(g, val(0).shape(), *dim, *start)?)],
        Op::BroadcastTo => vec![Some(sum_to_shape(g, val(0).shape())?)],
        Op::Embedding { ids, pad } => {
            let t = val(0);
            let (vocab, dim) = (t.shape()[0], t.shape()[1]);
            let gv = g.contiguous();
            let mut dt =
                crate::embedding::embedding_backward(ids, gv.as_slice().unwrap(), dim, vocab);
            if let Some(p) = pad.filter(|&p| p < vocab) {
                dt[p * dim..(p + 1) * dim].fill(0.0);
            }
            vec![Some(Tensor::from_vec(dt, &[vocab, dim])?)]
        }
        Op::LayerNorm { mean, rstd } => {
            let (x, gamma) = (val(0).contiguous(), val(1));
            let d = gamma.numel();
            let gv = g.contiguous();
            let mut dx = vec![0.0f32; x.numel()];
            let (dg, db) = crate::layernorm::layernorm_backward_rows(
                isa,
                x.as_slice().unwrap(),
                gv.as_slice().unwrap(),
                d,
                &gamma.to_vec(),
                mean,
                rstd,
                &mut dx,
            );
            vec![
                Some(Tensor::from_vec(dx, x.shape())?),
                Some(Tensor::from_vec(dg, &[d])?),
                Some(Tensor::from_vec(db, &[d])?),
            ]
        }
        Op::Gelu(kind) => {
            let x = val(0).contiguous();
            let mut dx = g.contiguous().to_vec();
            crate::gelu::gelu_backward_inplace(isa, x.as_slice().unwrap(), &mut dx, *kind);
            vec![Some(Tensor::from_vec(dx, x.shape())?)]
        }
        Op::Tanh => {
            // d tanh = 1 - y^2
            let (y, gv) = (out.to_vec(), g.contiguous().to_vec());
            let dx = y.iter().zip(&gv).map(|(y, g)| g * (1.0 - y * y)).collect();
            vec![Some(Tensor::from_vec(dx, out.shape())?)]
        }
        Op::Relu => {
            let (y, gv) = (out.to_vec(), g.contiguous().to_vec());
            let dx = y
                .iter()
                .zip(&gv)
                .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
                .collect();
            vec![Some(Tensor::from_vec(dx, out.shape())?)]
        }
        Op::BceWithLogits { targets } => {
            // d/dx = (sigmoid(x) - t) / n
            let x = val(0);
            let scale = g.to_vec()[0] / targets.len().max(1) as f32;
            let dx = x
                .to_vec()
                .iter()
                .zip(targets)
                .map(|(&x, &t)| scale * (1.0 / (1.0 + (-x).exp()) - t))
                .collect();
            vec![Some(Tensor::from_vec(dx, x.shape())?)]
        }
        Op::Softmax { y } => {
            let cols = *y.shape().last().unwrap();
            let mut dx = vec![0.0f32; y.numel()];
            crate::softmax::softmax_backward_rows(
                isa,
                y.as_slice().unwrap(),
                &g.contiguous().to_vec(),
                cols,
                &mut dx,
            );
            vec![Some(Tensor::from_vec(dx, y.shape())?)]
        }
        Op::CrossEntropy {
            targets,
            ignore,
            lse,
            count,
        } => {
            let x = val(0).contiguous();
            let classes = x.shape()[1];
            let scale = if *count == 0 {
                0.0
            } else {
                g.to_vec()[0] / *count as f32
            };
            let mut dx = vec![0.0f32; x.numel()];
            crate::cross_entropy::cross_entropy_backward_rows(
                isa,
                x.as_slice().unwrap(),
                classes,
                lse,
                targets,
                *ignore,
                scale,
                &mut dx,
            );
            vec![Some(Tensor::from_vec(dx, x.shape())?)]
        }
        Op::Dropout { p, seed } => {
            let mut d = g.contiguous().to_vec();
            crate::dropout::dropout_inplace(&mut d, *p, *seed);
            vec![Some(Tensor::from_vec(d, g.shape())?)]
        }
        Op::Attention(saved) => {
            let (dq, dk, dv) = attention_backward(&val(0), &val(1), &val(2), saved, g)?;
            vec![Some(dq), Some(dk), Some(dv)]
        }
    })
}

/// Parameters by name, in a stable (sorted) order: what checkpoints and optimizers address.
#[derive(Default, Clone)]
pub struct ParamStore {
    params: BTreeMap<String, Var>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a parameter; errors if the name is taken.
    pub fn insert(&mut self, name: &str, value: Tensor) -> Result<Var> {
        if self.params.contains_key(name) {
            return Err(Error::Arg {
                op: "ParamStore::insert",
                shape: value.shape().to_vec(),
                why: format!("parameter '{name}' already exists"),
            });
        }
        let v = Var::param(value);
        self.params.insert(name.to_string(), v.clone());
        Ok(v)
    }
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.params.get(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.params.iter()
    }
    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    pub fn zero_grad(&self) {
        self.params.values().for_each(Var::zero_grad);
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.params.values().map(|v| v.value().numel()).sum()
    }
}
