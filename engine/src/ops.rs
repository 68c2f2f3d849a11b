//! Tensor-level ops: shape checks and dispatch to the kernels. Shapes in each doc comment.

use crate::elementwise::{binary, unary_inplace, BinOp, UnaryOp};
use crate::error::{Error, Result};
use crate::gelu::{gelu_inplace, Gelu};
use crate::gemm::{gemm_batched_with, MatMut, MatRef};
use crate::reduce::{reduce, ReduceOp};
use crate::simd::Isa;
use crate::tensor::{broadcast_shapes, Tensor};

/// Which GEMM kernel a matmul uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 products and sums.
    F32,
    /// Operands rounded to bf16, products summed in f32 (AVX512-BF16 where present).
    Bf16,
}

impl Tensor {
    fn new_like(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::from_vec(data, shape).expect("sizes agree")
    }

    /// A view of the last two dims as a GEMM operand: (rows, cols, rs, cs); needs f32.
    fn mat_strides(&self) -> (usize, usize, usize, usize) {
        let r = self.rank();
        (
            self.shape()[r - 2],
            self.shape()[r - 1],
            self.strides()[r - 2],
            self.strides()[r - 1],
        )
    }

    /// Matrix product. `a` (..., m, k) x `b` (..., k, n) -> (..., m, n); leading (batch)
    /// dimensions broadcast. 1-D operands are not promoted: give them a dimension of 1.
    /// Transposed or strided operands are used in place (no copy).
    pub fn matmul(&self, b: &Tensor) -> Result<Tensor> {
        self.matmul_with(b, Precision::F32)
    }

    /// [`Tensor::matmul`] with a choice of GEMM precision.
    pub fn matmul_with(&self, b: &Tensor, precision: Precision) -> Result<Tensor> {
        self.matmul_scaled(b, 1.0, precision)
    }

    /// `alpha * (self @ b)`, the scale applied inside the GEMM (no extra pass).
    pub fn matmul_scaled(&self, b: &Tensor, alpha: f32, precision: Precision) -> Result<Tensor> {
        let a = self;
        a.require_f32("matmul")?;
        b.require_f32("matmul")?;
        let shape_err = |why: String| Error::Shape {
            op: "matmul",
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
            why,
        };
        if a.rank() < 2 || b.rank() < 2 {
            return Err(shape_err("both operands need at least 2 dimensions".into()));
        }
        let (m, k, _, _) = a.mat_strides();
        let (k2, n, _, _) = b.mat_strides();
        if k != k2 {
            return Err(shape_err(format!("inner dimensions {k} and {k2} differ")));
        }
        let batch_shape = broadcast_shapes(
            "matmul",
            &a.shape()[..a.rank() - 2],
            &b.shape()[..b.rank() - 2],
        )
        .map_err(|_| shape_err("batch dimensions do not broadcast".into()))?;
        let mut ashape = batch_shape.clone();
        ashape.extend([m, k]);
        let mut bshape = batch_shape.clone();
        bshape.extend([k, n]);
        let a = a.broadcast_to(&ashape)?;
        let b = b.broadcast_to(&bshape)?;
        let batch: usize = batch_shape.iter().product();
        let mut oshape = batch_shape.clone();
        oshape.extend([m, n]);
        let mut out = vec![0.0f32; batch * m * n];
        // The batch dimensions must collapse to one stride for the batched GEMM; when they do not
        // (e.g. a permuted 4-D view), fall back to a per-batch loop.
        let bs = |t: &Tensor| {
            collapse_batch_stride(&t.shape()[..t.rank() - 2], &t.strides()[..t.rank() - 2])
        };
        let (_, _, ars, acs) = a.mat_strides();
        let (_, _, brs, bcs) = b.mat_strides();
        let (ad, bd) = (a.raw_f32(), b.raw_f32());
        let isa = Isa::best();
        let threads = rayon::current_num_threads();
        match (bs(&a), bs(&b), precision) {
            // x @ W with a shared W and x's rows contiguous across the batch (a Linear layer on
            // (B, S, H)): one GEMM of batch * m rows, so W is packed once, not once per batch.
            (Some(abs), Some(0), Precision::F32) if batch > 1 && abs == m * ars => {
                let am = MatRef {
                    data: ad,
                    rows: batch * m,
                    cols: k,
                    rs: ars,
                    cs: acs,
                };
                let bm = MatRef {
                    data: bd,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                crate::gemm::gemm_with(
                    isa,
                    threads,
                    alpha,
                    am,
                    bm,
                    0.0,
                    MatMut::row_major(&mut out, batch * m, n),
                )?;
            }
            (Some(abs), Some(bbs), Precision::F32) => {
                let am = MatRef {
                    data: ad,
                    rows: m,
                    cols: k,
                    rs: ars,
                    cs: acs,
                };
                let bm = MatRef {
                    data: bd,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                gemm_batched_with(
                    isa,
                    threads,
                    batch,
                    alpha,
                    am,
                    abs,
                    bm,
                    bbs,
                    0.0,
                    MatMut::row_major(&mut out, m, n),
                    m * n,
                )?;
            }
            _ => {
                for (i, oc) in out.chunks_mut((m * n).max(1)).enumerate().take(batch) {
                    let ao = batch_offset(i, &batch_shape, &a.strides()[..a.rank() - 2]);
                    let bo = batch_offset(i, &batch_shape, &b.strides()[..b.rank() - 2]);
                    let am = MatRef {
                        data: &ad[ao..],
                        rows: m,
                        cols: k,
                        rs: ars,
                        cs: acs,
                    };
                    let bm = MatRef {
                        data: &bd[bo..],
                        rows: k,
                        cols: n,
                        rs: brs,
                        cs: bcs,
                    };
                    let cm = MatMut::row_major(oc, m, n);
                    match precision {
                        Precision::F32 => {
                            crate::gemm::gemm_with(isa, threads, alpha, am, bm, 0.0, cm)?
                        }
                        Precision::Bf16 => {
                            crate::gemm::bf16::gemm_bf16_with(isa, threads, alpha, am, bm, 0.0, cm)?
                        }
                    }
                }
            }
        }
        Ok(Tensor::new_like(&oshape, out))
    }

    /// A Linear layer: `x W^T + b` for x (..., in), w (out, in) as PyTorch stores it, b (out)
    /// -> (..., out). One GEMM over every row of x; the bias is written first as the GEMM's C
    /// (beta = 1), so it costs no pass of its own. W is read transposed in place.
    pub fn linear(&self, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_with(w, bias, Precision::F32)
    }

    /// [`Tensor::linear`] with a choice of GEMM precision (bf16 operands, f32 sums).
    pub fn linear_with(
        &self,
        w: &Tensor,
        bias: Option<&Tensor>,
        precision: Precision,
    ) -> Result<Tensor> {
        self.require_f32("linear")?;
        w.require_f32("linear")?;
        let err = |why: String| Error::Shape {
            op: "linear",
            lhs: self.shape().to_vec(),
            rhs: w.shape().to_vec(),
            why,
        };
        if w.rank() != 2 || self.rank() == 0 {
            return Err(err("x must be (..., in) and the weight (out, in)".into()));
        }
        let (nout, nin) = (w.shape()[0], w.shape()[1]);
        if *self.shape().last().unwrap() != nin {
            return Err(err(format!(
                "x has {} features, the weight takes {nin}",
                self.shape().last().unwrap()
            )));
        }
        if let Some(b) = bias {
            b.require_f32("linear")?;
            if b.shape() != [nout] {
                return Err(Error::Shape {
                    op: "linear",
                    lhs: w.shape().to_vec(),
                    rhs: b.shape().to_vec(),
                    why: format!("the bias must have shape [{nout}]"),
                });
            }
        }
        let x = self.contiguous();
        let w = if w.strides()[1] == 1 || w.strides()[0] == 1 {
            w.clone()
        } else {
            w.contiguous()
        };
        let rows = x.numel() / nin.max(1);
        let mut out: Vec<f32>;
        let beta = match bias {
            Some(b) => {
                let bv = b.contiguous();
                let bv = bv.as_slice().unwrap();
                // The bias as the GEMM's initial C, written on every thread (this buffer can be
                // the MLM head's rows x vocabulary).
                out = vec![0.0; rows * nout];
                if nout > 0 {
                    if rows * nout >= crate::rows::PAR_MIN_ELEMS * 4
                        && rayon::current_num_threads() > 1
                    {
                        use rayon::prelude::*;
                        out.par_chunks_mut(nout).for_each(|r| r.copy_from_slice(bv));
                    } else {
                        out.chunks_mut(nout).for_each(|r| r.copy_from_slice(bv));
                    }
                }
                1.0
            }
            None => {
                out = vec![0.0; rows * nout];
                0.0
            }
        };
        let mut shape = self.shape().to_vec();
        *shape.last_mut().unwrap() = nout;
        if rows > 0 && nout > 0 {
            // W^T (in, out): element (i, o) is w[o, i].
            let wt = MatRef {
                data: w.raw_f32(),
                rows: nin,
                cols: nout,
                rs: w.strides()[1],
                cs: w.strides()[0],
            };
            let (a, c) = (
                MatRef::row_major(x.as_slice().unwrap(), rows, nin),
                MatMut::row_major(&mut out, rows, nout),
            );
            let (isa, threads) = (Isa::best(), rayon::current_num_threads());
            match precision {
                Precision::F32 => crate::gemm::gemm_with(isa, threads, 1.0, a, wt, beta, c)?,
                Precision::Bf16 => {
                    crate::gemm::bf16::gemm_bf16_with(isa, threads, 1.0, a, wt, beta, c)?
                }
            }
        }
        Ok(Tensor::new_like(&shape, out))
    }

    /// Prepacks weights for repeated inference: see [`PackedLinear`].
    pub fn packed_linear(weights: &[&Tensor], biases: &[&Tensor]) -> Result<PackedLinear> {
        PackedLinear::new(weights, biases)
    }

    /// Elementwise `self (op) other` with broadcasting; result is dense.
    pub fn binary(&self, other: &Tensor, op: BinOp) -> Result<Tensor> {
        self.require_f32(op.name())?;
        other.require_f32(op.name())?;
        let shape = broadcast_shapes(op.name(), self.shape(), other.shape())?;
        let (a, b) = (self.broadcast_to(&shape)?, other.broadcast_to(&shape)?);
        let mut out = vec![0.0f32; shape.iter().product()];
        if !out.is_empty() {
            binary(
                Isa::best(),
                op,
                &shape,
                (a.raw_f32(), a.strides()),
                (b.raw_f32(), b.strides()),
                &mut out,
            );
        }
        Ok(Tensor::new_like(&shape, out))
    }
    pub fn add(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Add)
    }
    pub fn sub(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Sub)
    }
    pub fn mul(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Mul)
    }
    pub fn div(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Div)
    }
    pub fn maximum(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Max)
    }
    pub fn minimum(&self, o: &Tensor) -> Result<Tensor> {
        self.binary(o, BinOp::Min)
    }

    /// A unary map into a new dense tensor.
    pub fn map(&self, op: UnaryOp) -> Result<Tensor> {
        self.require_f32("map")?;
        let mut v = self.contiguous().to_vec();
        unary_inplace(Isa::best(), op, &mut v);
        Ok(Tensor::new_like(self.shape(), v))
    }
    /// `a * x + b`.
    pub fn affine(&self, a: f32, b: f32) -> Result<Tensor> {
        self.map(UnaryOp::Affine(a, b))
    }

    /// GELU (erf or tanh form), same shape.
    pub fn gelu(&self, kind: Gelu) -> Result<Tensor> {
        self.require_f32("gelu")?;
        let mut v = self.contiguous().to_vec();
        gelu_inplace(Isa::best(), &mut v, kind);
        Ok(Tensor::new_like(self.shape(), v))
    }

    /// Softmax over the last dimension. `mask`, when given, is added first and must broadcast
    /// to `self`'s shape (e.g. scores (B, H, S, S) with a key-padding mask (B, 1, 1, S)).
    pub fn softmax(&self, mask: Option<&Tensor>) -> Result<Tensor> {
        self.require_f32("softmax")?;
        if self.rank() == 0 {
            return Err(Error::Arg {
                op: "softmax",
                shape: vec![],
                why: "needs at least one dimension".into(),
            });
        }
        let x = self.contiguous();
        let cols = *x.shape().last().unwrap();
        let mut out = vec![0.0f32; x.numel()];
        let mask_view;
        let mut mask_offsets = Vec::new();
        let mask_arg = match mask {
            None => None,
            Some(m) => {
                m.require_f32("softmax")?;
                let mb = m.broadcast_to(self.shape()).map_err(|_| Error::Shape {
                    op: "softmax",
                    lhs: self.shape().to_vec(),
                    rhs: m.shape().to_vec(),
                    why: "the mask must broadcast to the scores".into(),
                })?;
                // Rows of the broadcast view are dense when its last stride is 1; otherwise
                // (a mask broadcast along the row) copy it once.
                mask_view = if mb.strides()[mb.rank() - 1] == 1 || cols <= 1 {
                    mb
                } else {
                    mb.contiguous()
                };
                let r = self.rank();
                let rows = x.numel() / cols.max(1);
                let mut idx = vec![0usize; r - 1];
                for _ in 0..rows {
                    mask_offsets.push(
                        (0..r - 1)
                            .map(|d| idx[d] * mask_view.strides()[d])
                            .sum::<usize>(),
                    );
                    for d in (0..r - 1).rev() {
                        idx[d] += 1;
                        if idx[d] < self.shape()[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
                Some((mask_view.raw_f32(), &mask_offsets[..]))
            }
        };
        crate::softmax::softmax_rows(Isa::best(), x.as_slice().unwrap(), cols, mask_arg, &mut out);
        Ok(Tensor::new_like(self.shape(), out))
    }

    /// Log-softmax over the last dimension, same shape (stable: `x - logsumexp(x)`).
    pub fn log_softmax(&self) -> Result<Tensor> {
        self.require_f32("log_softmax")?;
        let cols = *self.shape().last().ok_or_else(|| Error::Arg {
            op: "log_softmax",
            shape: vec![],
            why: "needs at least one dimension".into(),
        })?;
        let x = self.contiguous();
        let mut out = vec![0.0f32; x.numel()];
        crate::cross_entropy::log_softmax_rows(Isa::best(), x.as_slice().unwrap(), cols, &mut out);
        Ok(Tensor::new_like(self.shape(), out))
    }

    /// LayerNorm over the last dimension: x (..., d), gamma (d), beta (d) -> (..., d).
    pub fn layernorm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        self.require_f32("layernorm")?;
        let d = *self.shape().last().ok_or_else(|| Error::Arg {
            op: "layernorm",
            shape: vec![],
            why: "needs at least one dimension".into(),
        })?;
        for p in [gamma, beta] {
            if p.shape() != [d] {
                return Err(Error::Shape {
                    op: "layernorm",
                    lhs: self.shape().to_vec(),
                    rhs: p.shape().to_vec(),
                    why: format!("gamma and beta must have shape [{d}]"),
                });
            }
        }
        let x = self.contiguous();
        let mut out = vec![0.0f32; x.numel()];
        crate::layernorm::layernorm_rows(
            Isa::best(),
            x.as_slice().unwrap(),
            d,
            &gamma.to_vec(),
            &beta.to_vec(),
            eps,
            &mut out,
        );
        Ok(Tensor::new_like(self.shape(), out))
    }

    /// Reduces dimension `dim` (negative from the end). `keepdim` keeps it with size 1.
    pub fn reduce(&self, op: ReduceOp, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.require_f32("reduce")?;
        let d = self.norm_dim("reduce", dim)?;
        let x = self.contiguous();
        let outer: usize = self.shape()[..d].iter().product();
        let inner: usize = self.shape()[d + 1..].iter().product();
        let axis = self.shape()[d];
        let mut out = vec![0.0f32; outer * inner];
        reduce(
            Isa::best(),
            op,
            x.as_slice().unwrap(),
            outer,
            axis,
            inner,
            &mut out,
        );
        let mut shape = self.shape().to_vec();
        if keepdim {
            shape[d] = 1;
        } else {
            shape.remove(d);
        }
        Ok(Tensor::new_like(&shape, out))
    }
    pub fn sum(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dim, keepdim)
    }
    pub fn mean(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Mean, dim, keepdim)
    }
    pub fn max(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dim, keepdim)
    }

    /// Embedding lookup: table (vocab, dim), `ids` of any shape S -> (S..., dim).
    pub fn embedding(table: &Tensor, ids: &[i64], ids_shape: &[usize]) -> Result<Tensor> {
        table.require_f32("embedding")?;
        if table.rank() != 2 {
            return Err(Error::Arg {
                op: "embedding",
                shape: table.shape().to_vec(),
                why: "the table must be (vocab, dim)".into(),
            });
        }
        if ids_shape.iter().product::<usize>() != ids.len() {
            return Err(Error::Arg {
                op: "embedding",
                shape: ids_shape.to_vec(),
                why: format!("{} ids do not fill the ids shape", ids.len()),
            });
        }
        let (vocab, dim) = (table.shape()[0], table.shape()[1]);
        let t = table.contiguous();
        let mut out = vec![0.0f32; ids.len() * dim];
        crate::embedding::embedding_gather(t.as_slice().unwrap(), dim, ids, &mut out).map_err(
            |(at, id)| Error::Index {
                op: "embedding",
                index: id,
                size: vocab,
                at,
            },
        )?;
        let mut shape = ids_shape.to_vec();
        shape.push(dim);
        Ok(Tensor::new_like(&shape, out))
    }

    /// Mean cross-entropy of logits (N, C) against `targets` (N), skipping `ignore_index`.
    /// Returns the loss and each row's logsumexp (NaN on ignored rows) for the backward pass.
    pub fn cross_entropy(&self, targets: &[i64], ignore_index: i64) -> Result<(f32, Vec<f32>)> {
        self.require_f32("cross_entropy")?;
        if self.rank() != 2 || self.shape()[0] != targets.len() {
            return Err(Error::Shape {
                op: "cross_entropy",
                lhs: self.shape().to_vec(),
                rhs: vec![targets.len()],
                why: "logits must be (N, C) with N targets".into(),
            });
        }
        let c = self.shape()[1];
        let x = self.contiguous();
        let (loss, lse, _) = crate::cross_entropy::cross_entropy_rows(
            Isa::best(),
            x.as_slice().unwrap(),
            c,
            targets,
            ignore_index,
        )
        .map_err(|(at, t)| Error::Index {
            op: "cross_entropy",
            index: t,
            size: c,
            at,
        })?;
        Ok((loss, lse))
    }
}

/// The single stride that walks a (possibly multi-dimensional) batch in row-major order, if any.
fn collapse_batch_stride(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let dims: Vec<(usize, usize)> = shape
        .iter()
        .zip(strides)
        .filter(|(&s, _)| s != 1)
        .map(|(&s, &st)| (s, st))
        .collect();
    match dims.as_slice() {
        [] => Some(0),
        [(_, st)] => Some(*st),
        _ => {
            let st = dims.last().unwrap().1;
            let mut expect = st;
            for &(s, stv) in dims.iter().rev() {
                if stv != expect {
                    return None;
                }
                expect = stv * s;
            }
            Some(st)
        }
    }
}

/// Storage offset of batch index `i` (row-major over `batch_shape`) given batch strides.
fn batch_offset(mut i: usize, batch_shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for d in (0..batch_shape.len()).rev() {
        off += (i % batch_shape[d]) * strides[d];
        i /= batch_shape[d];
    }
    off
}

/// Linear layers prepacked for inference: the weights (out_i, in) of one or more layers
/// sharing an input, stacked along `out` (e.g. the query, key and value projections, which then
/// run as one GEMM over the input), packed once into the GEMM's B layout, and their biases.
/// [`PackedLinear::forward`] writes `bias (+ residual)` as the GEMM's C and accumulates into it,
/// then applies the activation in place: one pass over the output besides the GEMM itself.
pub struct PackedLinear {
    packed: crate::gemm::PackedB,
    bias: Vec<f32>,
    nin: usize,
    nout: usize,
}

impl PackedLinear {
    /// f32 weights: [`PackedLinear::new_with`] at [`Precision::F32`].
    pub fn new(weights: &[&Tensor], biases: &[&Tensor]) -> Result<Self> {
        Self::new_with(weights, biases, Precision::F32)
    }

    /// Packs the weights for a GEMM in `precision`: with [`Precision::Bf16`] they are rounded
    /// to bf16 once, here, and each forward rounds only its input (bf16 products, f32 sums, the
    /// bias, residual and activation in f32).
    pub fn new_with(weights: &[&Tensor], biases: &[&Tensor], precision: Precision) -> Result<Self> {
        let err = |why: String, shape: Vec<usize>| Error::Arg {
            op: "packed_linear",
            shape,
            why,
        };
        let nin = weights
            .first()
            .ok_or_else(|| err("needs at least one weight".into(), vec![]))?
            .shape()
            .get(1)
            .copied()
            .unwrap_or(0);
        let mut nout = 0;
        for w in weights {
            w.require_f32("packed_linear")?;
            if w.rank() != 2 || w.shape()[1] != nin {
                return Err(err(
                    format!("weights must all be (out, {nin})"),
                    w.shape().to_vec(),
                ));
            }
            nout += w.shape()[0];
        }
        let mut bias = Vec::with_capacity(nout);
        for b in biases {
            b.require_f32("packed_linear")?;
            bias.extend(b.to_vec());
        }
        if !biases.is_empty() && bias.len() != nout {
            return Err(err(
                format!("the biases hold {} values for {nout} outputs", bias.len()),
                vec![bias.len()],
            ));
        }
        if biases.is_empty() {
            bias = vec![0.0; nout];
        }
        // W^T stacked: (in, out), row-major; the weights are small next to the work they do.
        let mut wt = vec![0.0f32; nin * nout];
        let mut o0 = 0;
        for w in weights {
            let wv = w.contiguous();
            let wv = wv.as_slice().unwrap();
            let rows = w.shape()[0];
            for o in 0..rows {
                for i in 0..nin {
                    wt[i * nout + o0 + o] = wv[o * nin + i];
                }
            }
            o0 += rows;
        }
        let wt = MatRef::row_major(&wt, nin, nout);
        let packed = match precision {
            Precision::F32 => crate::gemm::PackedB::new(Isa::best(), wt)?,
            Precision::Bf16 => crate::gemm::PackedB::new_bf16(Isa::best(), wt)?,
        };
        Ok(PackedLinear {
            packed,
            bias,
            nin,
            nout,
        })
    }

    pub fn out_features(&self) -> usize {
        self.nout
    }

    /// The precision its weights were packed in.
    pub fn precision(&self) -> Precision {
        if self.packed.is_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// `act(x W^T + b + residual)`: x (..., in) -> (..., out); `residual`, when given, has the
    /// output's shape (a transformer's skip connection, added for free with the bias).
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Option<Gelu>,
    ) -> Result<Tensor> {
        x.require_f32("linear")?;
        if x.rank() == 0 || *x.shape().last().unwrap() != self.nin {
            return Err(Error::Shape {
                op: "linear",
                lhs: x.shape().to_vec(),
                rhs: vec![self.nout, self.nin],
                why: format!("x must have {} features", self.nin),
            });
        }
        let x = x.contiguous();
        let rows = x.numel() / self.nin.max(1);
        let mut shape = x.shape().to_vec();
        *shape.last_mut().unwrap() = self.nout;
        let r = match residual {
            Some(r) => {
                if r.shape() != shape.as_slice() {
                    return Err(Error::Shape {
                        op: "linear",
                        lhs: shape,
                        rhs: r.shape().to_vec(),
                        why: "the residual must have the output's shape".into(),
                    });
                }
                Some(r.contiguous())
            }
            None => None,
        };
        // C starts as bias (+ residual), written in parallel row blocks straight into fresh
        // memory: no zeroing pass first (it cost as much as this fill, single-threaded, and
        // took all the first-touch page faults on one thread).
        let nout = self.nout.max(1);
        let n = rows * self.nout;
        let mut out: Vec<f32> = Vec::with_capacity(n);
        let fill = |(i, blk): (usize, &mut [std::mem::MaybeUninit<f32>])| {
            let rows_per = blk.len() / nout;
            for (j, row) in blk.chunks_exact_mut(nout).enumerate() {
                match &r {
                    Some(r) => {
                        let at = (i * rows_per + j) * nout;
                        let rr = &r.as_slice().unwrap()[at..at + nout];
                        for ((o, a), b) in row.iter_mut().zip(rr).zip(&self.bias) {
                            o.write(a + b);
                        }
                    }
                    None => {
                        for (o, b) in row.iter_mut().zip(&self.bias) {
                            o.write(*b);
                        }
                    }
                }
            }
        };
        let per = rows.div_ceil(rayon::current_num_threads() * 4).max(16) * nout;
        let spare = &mut out.spare_capacity_mut()[..n];
        if n >= 1 << 16 && rayon::current_num_threads() > 1 {
            use rayon::prelude::*;
            spare.par_chunks_mut(per).enumerate().for_each(fill);
        } else if n > 0 {
            fill((0, spare));
        }
        // SAFETY: every one of the n elements was written above (rows of nout each; `per` is a
        // multiple of nout, so each block holds whole rows).
        unsafe { out.set_len(n) };
        if rows > 0 && self.nout > 0 {
            crate::gemm::gemm_prepacked(
                rayon::current_num_threads(),
                1.0,
                MatRef::row_major(x.as_slice().unwrap(), rows, self.nin),
                &self.packed,
                1.0,
                MatMut::row_major(&mut out, rows, self.nout),
            )?;
        }
        if let Some(kind) = act {
            gelu_inplace(Isa::best(), &mut out, kind);
        }
        Ok(Tensor::new_like(&shape, out))
    }
}
