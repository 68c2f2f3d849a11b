//! [`Device`] on the CPU: buffers are `Vec<f32>`, each op the engine's SIMD kernels on all
//! rayon threads. What the hand-written step is tested with, against the tape's gradients.

use super::{AdamHyper, AttnDims, Device, LnSaved};
use crate::error::{Error, Result};
use crate::gelu::Gelu;
use crate::gemm::{MatMut, MatRef};
use crate::simd::Isa;
use crate::Precision;

/// One chunk of (parameter, first moment, second moment) and the gradient, for AdamW.
type Chunks<'a> = (((&'a mut [f32], &'a mut [f32]), &'a mut [f32]), &'a [f32]);

/// [`Cpu`]'s optimizer state.
pub struct CpuOptim {
    pub params: Vec<Vec<f32>>,
    pub grads: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    decay: Vec<f32>,
}

/// The CPU: buffers are `Vec<f32>`, ops are the engine's SIMD kernels on all rayon threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// The CPU with the Linear layers' three GEMMs (forward, dX, dW) in bf16: operands rounded to
/// bf16 as they are packed, f32 sums; every buffer, the parameters and AdamW stay f32 (mixed
/// precision as autocast does it). Faster than [`Cpu`] where `vdpbf16ps` issues at twice the
/// FMA rate (AMD Zen 4); elsewhere (no AVX512-BF16, or half-rate as on Sapphire Rapids) its
/// GEMMs run the f32 tile over rounded operands, about as fast as [`Cpu`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBf16;

/// What tells the two CPU devices apart: the Linear GEMMs' precision (one `Device` impl).
pub trait CpuKind: Copy + Sync + Send + 'static {
    const PRECISION: Precision;
}
impl CpuKind for Cpu {
    const PRECISION: Precision = Precision::F32;
}
impl CpuKind for CpuBf16 {
    const PRECISION: Precision = Precision::Bf16;
}

/// `C = alpha A B + beta C` on all threads, in `p`.
fn gemm_in(
    p: Precision,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) -> std::result::Result<(), crate::gemm::GemmError> {
    match p {
        Precision::F32 => crate::gemm::gemm(alpha, a, b, beta, c),
        Precision::Bf16 => crate::gemm::bf16::gemm_bf16(alpha, a, b, beta, c),
    }
}

fn len_err(op: &'static str, what: &str, got: usize, want: usize) -> Error {
    Error::Arg {
        op,
        shape: vec![got],
        why: format!("{what} has {got} elements, expected {want}"),
    }
}

fn need(op: &'static str, what: &str, x: &[f32], want: usize) -> Result<()> {
    if x.len() == want {
        Ok(())
    } else {
        Err(len_err(op, what, x.len(), want))
    }
}

/// `acc[i] += x[i]`, on every thread when large.
fn add_assign(acc: &mut [f32], x: &[f32]) {
    use rayon::prelude::*;
    if acc.len() < crate::rows::PAR_MIN_ELEMS {
        acc.iter_mut().zip(x).for_each(|(a, &b)| *a += b);
    } else {
        acc.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
    }
}

/// `out += column sums of x (rows, cols)`: partial sums over fixed 64-row blocks (on every
/// thread), added in block order, so the result does not depend on the thread count.
fn add_column_sums(x: &[f32], cols: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    let block = |b: &[f32]| {
        let mut s = vec![0.0f32; cols];
        for r in b.chunks_exact(cols) {
            s.iter_mut().zip(r).for_each(|(s, &v)| *s += v);
        }
        s
    };
    let parts: Vec<Vec<f32>> = if x.len() < crate::rows::PAR_MIN_ELEMS {
        x.chunks(64 * cols).map(block).collect()
    } else {
        x.par_chunks(64 * cols).map(block).collect()
    };
    for p in parts {
        add_assign(out, &p);
    }
}

impl<K: CpuKind> Device for K {
    type Buf = Vec<f32>;
    type Grad = Vec<f32>;
    type W<'a> = &'a Vec<f32>;
    type Weights = Vec<Vec<f32>>;
    type Ids = Vec<i64>;
    /// The attention probabilities (B, H, S, S) before dropout.
    type AttnSaved = Vec<f32>;
    type Optim = CpuOptim;

    fn optim_new(&self, params: &[Vec<f32>], decay: Vec<f32>) -> Result<CpuOptim> {
        let params = params.to_vec();
        if decay.len() != params.len() {
            return Err(Error::Arg {
                op: "optim_new",
                shape: vec![params.len(), decay.len()],
                why: "one weight decay per parameter tensor".into(),
            });
        }
        let zeros = |p: &Vec<Vec<f32>>| p.iter().map(|x| vec![0.0; x.len()]).collect::<Vec<_>>();
        Ok(CpuOptim {
            grads: zeros(&params),
            m: zeros(&params),
            v: zeros(&params),
            params,
            decay,
        })
    }

    fn optim_parts<'a>(&self, o: &'a mut CpuOptim) -> (Vec<&'a Vec<f32>>, Vec<&'a mut Vec<f32>>) {
        (o.params.iter().collect(), o.grads.iter_mut().collect())
    }

    fn optim_zero_grads(&self, o: &mut CpuOptim) -> Result<()> {
        for g in &mut o.grads {
            g.fill(0.0);
        }
        Ok(())
    }

    fn optim_step(&self, o: &mut CpuOptim, h: AdamHyper, max_norm: f32) -> Result<Vec<f32>> {
        let sq: f64 = o
            .grads
            .iter()
            .map(|g| crate::optim::sum_squares_f64(g))
            .sum();
        let norm = sq.sqrt() as f32;
        let gs = if norm > max_norm && norm.is_finite() {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        for i in 0..o.params.len() {
            let wd = o.decay[i];
            let (p, g, m, v) = (&mut o.params[i], &o.grads[i], &mut o.m[i], &mut o.v[i]);
            let update = |(((p, m), v), g): Chunks<'_>| {
                for j in 0..p.len() {
                    let gi = g[j] * gs;
                    p[j] -= h.lr * wd * p[j];
                    m[j] = h.beta1 * m[j] + (1.0 - h.beta1) * gi;
                    v[j] = h.beta2 * v[j] + (1.0 - h.beta2) * gi * gi;
                    p[j] -= h.lr * (m[j] / h.bc1) / ((v[j] / h.bc2).sqrt() + h.eps);
                }
            };
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(update);
        }
        Ok(vec![norm])
    }

    fn optim_state(&self, o: &CpuOptim) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>> {
        Ok((0..o.params.len())
            .map(|i| (o.params[i].clone(), o.m[i].clone(), o.v[i].clone()))
            .collect())
    }

    fn optim_set_moments(&self, o: &mut CpuOptim, mv: Vec<(Vec<f32>, Vec<f32>)>) -> Result<()> {
        if mv.len() != o.params.len()
            || mv
                .iter()
                .zip(&o.params)
                .any(|((m, v), p)| m.len() != p.len() || v.len() != p.len())
        {
            return Err(Error::Arg {
                op: "optim_set_moments",
                shape: vec![mv.len(), o.params.len()],
                why: "one (m, v) pair per parameter tensor, each of its size".into(),
            });
        }
        (o.m, o.v) = mv.into_iter().unzip();
        Ok(())
    }

    fn upload(&self, x: &[f32]) -> Result<Vec<f32>> {
        Ok(x.to_vec())
    }
    fn download(&self, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.clone())
    }
    fn download_grad(&self, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.clone())
    }
    fn zeros_grad(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn weights(&self, values: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        Ok(values.to_vec())
    }
    fn weight_refs<'a>(&self, w: &'a Vec<Vec<f32>>) -> Vec<&'a Vec<f32>> {
        w.iter().collect()
    }
    fn upload_ids(&self, x: &[i64]) -> Result<Vec<i64>> {
        Ok(x.to_vec())
    }
    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn len(&self, x: &Vec<f32>) -> usize {
        x.len()
    }

    fn linear(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: Option<&Vec<f32>>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<Vec<f32>> {
        let op = "device linear";
        need(op, "x", x, rows * inp)?;
        need(op, "W", w, out * inp)?;
        let mut y = vec![0.0; rows * out];
        let beta = match b {
            Some(b) => {
                need(op, "bias", b, out)?;
                for r in y.chunks_exact_mut(out) {
                    r.copy_from_slice(b);
                }
                1.0
            }
            None => 0.0,
        };
        gemm_in(
            K::PRECISION,
            1.0,
            MatRef::row_major(x, rows, inp),
            MatRef::row_major(w, out, inp).t(),
            beta,
            MatMut::row_major(&mut y, rows, out),
        )
        .map_err(|e| Error::Arg {
            op,
            shape: vec![rows, inp, out],
            why: e.to_string(),
        })?;
        Ok(y)
    }

    fn linear_dx(
        &self,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<Vec<f32>> {
        let op = "device linear_dx";
        need(op, "dy", dy, rows * out)?;
        need(op, "W", w, out * inp)?;
        let mut dx = vec![0.0; rows * inp];
        gemm_in(
            K::PRECISION,
            1.0,
            MatRef::row_major(dy, rows, out),
            MatRef::row_major(w, out, inp),
            0.0,
            MatMut::row_major(&mut dx, rows, inp),
        )
        .map_err(|e| Error::Arg {
            op,
            shape: vec![rows, inp, out],
            why: e.to_string(),
        })?;
        Ok(dx)
    }

    fn linear_dw(
        &self,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        rows: usize,
        inp: usize,
        out: usize,
        dw: &mut Vec<f32>,
        db: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let op = "device linear_dw";
        need(op, "dy", dy, rows * out)?;
        need(op, "x", x, rows * inp)?;
        need(op, "dW", dw, out * inp)?;
        gemm_in(
            K::PRECISION,
            1.0,
            MatRef::row_major(dy, rows, out).t(),
            MatRef::row_major(x, rows, inp),
            1.0,
            MatMut::row_major(dw, out, inp),
        )
        .map_err(|e| Error::Arg {
            op,
            shape: vec![rows, inp, out],
            why: e.to_string(),
        })?;
        if let Some(db) = db {
            need(op, "db", db, out)?;
            add_column_sums(dy, out, db);
        }
        Ok(())
    }

    fn layernorm(
        &self,
        x: &Vec<f32>,
        residual: Option<&Vec<f32>>,
        (p, seed): (f32, u64),
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        cols: usize,
        eps: f32,
    ) -> Result<(Vec<f32>, LnSaved<Vec<f32>>)> {
        let op = "device layernorm";
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(len_err(op, "x", x.len(), cols));
        }
        need(op, "gamma", gamma, cols)?;
        need(op, "beta", beta, cols)?;
        let mut h = x.clone();
        if p > 0.0 {
            crate::dropout::dropout_inplace(&mut h, p, seed);
        }
        if let Some(r) = residual {
            need(op, "residual", r, x.len())?;
            add_assign(&mut h, r);
        }
        let mut y = vec![0.0; h.len()];
        let (mean, rstd) =
            crate::layernorm::layernorm_rows(Isa::best(), &h, cols, gamma, beta, eps, &mut y);
        Ok((y, LnSaved { h, mean, rstd }))
    }

    fn layernorm_bwd(
        &self,
        s: &LnSaved<Vec<f32>>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        cols: usize,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        let op = "device layernorm_bwd";
        need(op, "dy", dy, s.h.len())?;
        need(op, "dgamma", dgamma, cols)?;
        need(op, "dbeta", dbeta, cols)?;
        let mut dx = vec![0.0; dy.len()];
        let (dg, db) = crate::layernorm::layernorm_backward_rows(
            Isa::best(),
            &s.h,
            dy,
            cols,
            gamma,
            &s.mean,
            &s.rstd,
            &mut dx,
        );
        self.add_into(dgamma, &dg)?;
        self.add_into(dbeta, &db)?;
        Ok(dx)
    }

    fn dropout(&self, x: &Vec<f32>, p: f32, seed: u64) -> Result<Vec<f32>> {
        let mut y = x.clone();
        if p > 0.0 {
            crate::dropout::dropout_inplace(&mut y, p, seed);
        }
        Ok(y)
    }

    fn gelu(&self, x: &Vec<f32>, kind: Gelu) -> Result<Vec<f32>> {
        let mut y = x.clone();
        crate::gelu::gelu_inplace(Isa::best(), &mut y, kind);
        Ok(y)
    }

    fn gelu_bwd(&self, x: &Vec<f32>, dy: &Vec<f32>, kind: Gelu) -> Result<Vec<f32>> {
        need("device gelu_bwd", "dy", dy, x.len())?;
        let mut dx = dy.clone();
        crate::gelu::gelu_backward_inplace(Isa::best(), x, &mut dx, kind);
        Ok(dx)
    }

    fn tanh(&self, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.iter().map(|v| v.tanh()).collect())
    }

    fn tanh_bwd(&self, y: &Vec<f32>, dy: &Vec<f32>) -> Result<Vec<f32>> {
        need("device tanh_bwd", "dy", dy, y.len())?;
        Ok(y.iter().zip(dy).map(|(y, d)| d * (1.0 - y * y)).collect())
    }

    fn add_into(&self, acc: &mut Vec<f32>, x: &Vec<f32>) -> Result<()> {
        need("device add_into", "x", x, acc.len())?;
        add_assign(acc, x);
        Ok(())
    }

    fn embed(
        &self,
        ids: &Vec<i64>,
        types: &Vec<i64>,
        positions: Option<&Vec<i64>>,
        word: &Vec<f32>,
        pos: &Vec<f32>,
        typ: &Vec<f32>,
        seq: usize,
        dim: usize,
    ) -> Result<Vec<f32>> {
        let op = "device embed";
        let tokens = ids.len();
        let whole = positions.map_or(seq > 0 && tokens.is_multiple_of(seq), |p| p.len() == tokens);
        if types.len() != tokens || !whole {
            return Err(Error::Arg {
                op,
                shape: vec![tokens, types.len(), seq],
                why: "ids, type ids and positions must cover the same tokens (whole sequences when padded)".into(),
            });
        }
        let max_pos = pos.len() / dim.max(1);
        let position = |t: usize| positions.map_or(t % seq.max(1), |p| p[t] as usize);
        if let Some(t) = (0..tokens).find(|&t| position(t) >= max_pos) {
            return Err(Error::Index {
                op,
                index: position(t) as i64,
                size: max_pos,
                at: t,
            });
        }
        let mut y = vec![0.0; tokens * dim];
        for (t, row) in y.chunks_exact_mut(dim).enumerate() {
            let (w, ty, p) = (ids[t] as usize, types[t] as usize, position(t));
            let (wr, tr, pr) = (
                &word[w * dim..(w + 1) * dim],
                &typ[ty * dim..(ty + 1) * dim],
                &pos[p * dim..(p + 1) * dim],
            );
            for j in 0..dim {
                row[j] = (wr[j] + tr[j]) + pr[j];
            }
        }
        Ok(y)
    }

    fn embed_bwd(
        &self,
        ids: &Vec<i64>,
        types: &Vec<i64>,
        positions: Option<&Vec<i64>>,
        dy: &Vec<f32>,
        seq: usize,
        dim: usize,
        pad: Option<usize>,
        dword: &mut Vec<f32>,
        dpos: &mut Vec<f32>,
        dtyp: &mut Vec<f32>,
    ) -> Result<()> {
        need("device embed_bwd", "dy", dy, ids.len() * dim)?;
        for (t, g) in dy.chunks_exact(dim).enumerate() {
            let p = positions.map_or(t % seq.max(1), |p| p[t] as usize);
            let (w, ty) = (ids[t] as usize, types[t] as usize);
            let word = Some(w) != pad;
            for j in 0..dim {
                if word {
                    dword[w * dim + j] += g[j];
                }
                dtyp[ty * dim + j] += g[j];
                dpos[p * dim + j] += g[j];
            }
        }
        Ok(())
    }

    fn argmax_rows(&self, x: &Vec<f32>, rows: usize, cols: usize) -> Result<Vec<i64>> {
        if cols == 0 || x.len() != rows * cols {
            return Err(Error::Arg {
                op: "device argmax_rows",
                shape: vec![x.len(), rows, cols],
                why: "x must hold rows x cols values".into(),
            });
        }
        Ok(x.chunks(cols)
            .map(|row| {
                let mut best = (f32::NEG_INFINITY, 0usize);
                for (i, &v) in row.iter().enumerate() {
                    if v > best.0 {
                        best = (v, i);
                    }
                }
                best.1 as i64
            })
            .collect())
    }

    fn gather_rows(&self, x: &Vec<f32>, rows: &Vec<i64>, cols: usize) -> Result<Vec<f32>> {
        let mut y = Vec::with_capacity(rows.len() * cols);
        for &r in rows {
            let r = r as usize;
            if (r + 1) * cols > x.len() {
                return Err(Error::Index {
                    op: "device gather_rows",
                    index: r as i64,
                    size: x.len() / cols.max(1),
                    at: y.len() / cols.max(1),
                });
            }
            y.extend_from_slice(&x[r * cols..(r + 1) * cols]);
        }
        Ok(y)
    }

    fn scatter_add_rows(
        &self,
        dy: &Vec<f32>,
        rows: &Vec<i64>,
        cols: usize,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        need("device scatter_add_rows", "dy", dy, rows.len() * cols)?;
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            for j in 0..cols {
                dx[r * cols + j] += dy[i * cols + j];
            }
        }
        Ok(())
    }

    fn attention(
        &self,
        qkv: &Vec<f32>,
        d: &AttnDims,
        scale: f32,
        (p, seed): (f32, u64),
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        crate::attention::fused_qkv_forward(qkv, &fused_dims(d), scale, p, seed)
    }

    fn attention_bwd(
        &self,
        qkv: &Vec<f32>,
        _out: &Vec<f32>,
        probs: &Vec<f32>,
        dout: &Vec<f32>,
        d: &AttnDims,
        scale: f32,
        (p, seed): (f32, u64),
    ) -> Result<Vec<f32>> {
        crate::attention::fused_qkv_backward(qkv, probs, dout, &fused_dims(d), scale, p, seed)
    }

    fn cross_entropy(
        &self,
        mut logits: Vec<f32>,
        targets: &Vec<i64>,
        rows: usize,
        classes: usize,
        dloss: f32,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let op = "device cross_entropy";
        need(op, "logits", &logits, rows * classes)?;
        let isa = Isa::best();
        let (loss, lse, counted) =
            crate::cross_entropy::cross_entropy_rows(isa, &logits, classes, targets, -100)
                .map_err(|(at, t)| Error::Index {
                    op,
                    index: t,
                    size: classes,
                    at,
                })?;
        crate::cross_entropy::cross_entropy_backward_rows_inplace(
            isa,
            &mut logits,
            classes,
            &lse,
            targets,
            -100,
            dloss / counted.max(1) as f32,
        );
        Ok((vec![loss], logits))
    }
}

fn fused_dims(d: &AttnDims) -> crate::attention::FusedDims<'_> {
    crate::attention::FusedDims {
        batch: d.batch,
        seq: d.seq,
        heads: d.heads,
        head_dim: d.head_dim,
        lens: &d.lens,
        packed: d.packed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_argmax_rows_first_of_ties_skips_nan_and_checks_its_shape() {
        let ninf = f32::NEG_INFINITY;
        let x: Vec<f32> = [
            [1.0, 3.0, 3.0, 2.0],              // a tie: the first
            [f32::NAN, 0.5, 7.0, f32::NAN],    // NaNs never win
            [ninf; 4],                         // nothing above -inf: 0
            [-1.0, -2.0, -0.5, f32::INFINITY], // +inf wins
        ]
        .concat();
        assert_eq!(Cpu.argmax_rows(&x, 4, 4).unwrap(), vec![1, 2, 0, 3]);
        assert!(Cpu.argmax_rows(&x, 3, 4).is_err());
        assert!(Cpu.argmax_rows(&x, 4, 0).is_err());
    }
}
