//! Layer normalisation over the last dimension.
//!
//! `y = (x - mean) * rstd * gamma + beta`, `rstd = 1 / sqrt(var + eps)`, biased variance.
//! Two passes for the statistics (sum, then sum of squared deviations: no cancellation),
//! one for the output. Returns per-row mean and rstd, which the backward pass reuses.

use crate::rows::{for_rows, load_at, sum_of, zip_map, RowOp};
use crate::simd::{Isa, Simd};

struct LayerNorm<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
    cols: usize,
    /// (mean, rstd) of row r go to stats[2r], stats[2r+1]: each row writes only its own pair.
    stats: SyncPtr,
}

/// A raw pointer shared across rayon tasks that write disjoint elements (each use says why):
/// here rows writing their own statistics, in embedding.rs column bands of the gradient.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: only handed to tasks that write disjoint elements.
unsafe impl Sync for SyncPtr {}
// SAFETY: as for Sync: the pointer is only written at disjoint elements.
unsafe impl Send for SyncPtr {}
impl SyncPtr {
    /// A method, so closures capture the whole wrapper (which is Sync) rather than its field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

impl RowOp for LayerNorm<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, y: &mut [f32]) {
        let n = self.cols;
        let x = &self.x[r * n..(r + 1) * n];
        let mean = sum_of(s, x) / n as f32;
        let vm = s.splat(mean);
        // Sum of squared deviations over four accumulators (one would chain every FMA on the
        // last: 4 cycles per vector); the tail loads `mean` into its missing lanes, so they
        // add exactly zero.
        let l = S::LANES;
        let full = n / l * l;
        let mut acc = [s.zero(); 4];
        let mut i = 0;
        // SAFETY: full loads below `full` <= n; the tail reads n - full elements.
        unsafe {
            let p = x.as_ptr();
            while i + 4 * l <= full {
                for (j, a) in acc.iter_mut().enumerate() {
                    let d = s.sub(s.load(p.add(i + j * l)), vm);
                    *a = s.fma(d, d, *a);
                }
                i += 4 * l;
            }
            while i < full {
                let d = s.sub(s.load(p.add(i)), vm);
                acc[0] = s.fma(d, d, acc[0]);
                i += l;
            }
            if full < n {
                let d = s.sub(s.load_partial(p.add(full), n - full, mean), vm);
                acc[1] = s.fma(d, d, acc[1]);
            }
        }
        let acc = s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]));
        let var = s.reduce_sum(acc) / n as f32;
        let rstd = 1.0 / (var + self.eps).sqrt();
        // SAFETY: stats has 2 * rows entries and row r owns entries 2r and 2r+1.
        unsafe {
            *self.stats.0.add(2 * r) = mean;
            *self.stats.0.add(2 * r + 1) = rstd;
        }
        let vr = s.splat(rstd);
        let (g, b) = (&self.gamma[..n], &self.beta[..n]);
        // SAFETY: x, y, gamma and beta all hold n floats; full loads stay below `full`.
        unsafe {
            let mut i = 0;
            while i < full {
                let xn = s.mul(s.sub(s.load(x.as_ptr().add(i)), vm), vr);
                let o = s.fma(xn, s.load(g.as_ptr().add(i)), s.load(b.as_ptr().add(i)));
                s.store(y.as_mut_ptr().add(i), o);
                i += l;
            }
            if full < n {
                let k = n - full;
                let xn = s.mul(s.sub(s.load_partial(x.as_ptr().add(full), k, 0.0), vm), vr);
                let gv = s.load_partial(g.as_ptr().add(full), k, 0.0);
                let o = s.fma(xn, gv, s.load_partial(b.as_ptr().add(full), k, 0.0));
                s.store_partial(y.as_mut_ptr().add(full), o, k);
            }
        }
    }
}

/// LayerNorm of each row of `x` (rows, cols) into `out`; gamma and beta have `cols` entries.
/// Returns (mean, rstd), one per row.
pub fn layernorm_rows(
    isa: Isa,
    x: &[f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(
        x.len(),
        out.len(),
        "layernorm_rows: input and output lengths differ"
    );
    assert!(
        gamma.len() == cols && beta.len() == cols,
        "layernorm_rows: gamma/beta must have cols entries"
    );
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let mut stats = vec![0.0f32; 2 * rows];
    for_rows(
        isa,
        &LayerNorm {
            x,
            gamma,
            beta,
            eps,
            cols,
            stats: SyncPtr(stats.as_mut_ptr()),
        },
        out,
        cols,
    );
    stats.chunks_exact(2).map(|p| (p[0], p[1])).unzip()
}

struct LayerNormBackward<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    gamma: &'a [f32],
    mean: &'a [f32],
    rstd: &'a [f32],
    cols: usize,
}

impl RowOp for LayerNormBackward<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, dx: &mut [f32]) {
        let n = self.cols;
        let (x, dy) = (&self.x[r * n..(r + 1) * n], &self.dy[r * n..(r + 1) * n]);
        let (vm, vr) = (s.splat(self.mean[r]), s.splat(self.rstd[r]));
        // g = dy * gamma, xhat = (x - mean) * rstd; dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
        // Tail lanes load zeros for dy and gamma, so g = 0 there and both sums stay exact.
        // Two accumulators per sum, alternating vectors, so consecutive adds do not wait on
        // each other.
        let l = S::LANES;
        let (mut sg, mut sgx) = ([s.zero(); 2], [s.zero(); 2]);
        let mut i = 0;
        let mut k = 0;
        while i < n {
            let g = s.mul(load_at(s, dy, i), load_at(s, self.gamma, i));
            let xh = s.mul(s.sub(load_at(s, x, i), vm), vr);
            sg[k] = s.add(sg[k], g);
            sgx[k] = s.fma(g, xh, sgx[k]);
            i += l;
            k ^= 1;
        }
        let inv_n = 1.0 / n as f32;
        let (mg, mgx) = (
            s.splat(s.reduce_sum(s.add(sg[0], sg[1])) * inv_n),
            s.splat(s.reduce_sum(s.add(sgx[0], sgx[1])) * inv_n),
        );
        zip_map(
            s,
            dx,
            x,
            #[inline(always)]
            |i, xv| {
                let g = s.mul(load_at(s, dy, i), load_at(s, self.gamma, i));
                let xh = s.mul(s.sub(xv, vm), vr);
                s.mul(vr, s.sub(s.sub(g, mg), s.mul(xh, mgx)))
            },
        );
    }
}

/// Backward of [`layernorm_rows`]: from x, dy and the saved per-row mean and rstd, writes dx and
/// returns (dgamma, dbeta) = (sum over rows of dy * xhat, sum over rows of dy).
pub fn layernorm_backward_rows(
    isa: Isa,
    x: &[f32],
    dy: &[f32],
    cols: usize,
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    assert!(
        x.len() == dy.len() && dy.len() == dx.len(),
        "layernorm_backward_rows: lengths differ"
    );
    for_rows(
        isa,
        &LayerNormBackward {
            x,
            dy,
            gamma,
            mean,
            rstd,
            cols,
        },
        dx,
        cols,
    );
    // Parameter gradients: column sums over rows, in per-chunk partials (f32, rows in order).
    use rayon::prelude::*;
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let per = rows.div_ceil(rayon::current_num_threads().max(1)).max(64);
    let (dg, db) = (0..rows.div_ceil(per).max(1))
        .into_par_iter()
        .map(|c| {
            let (mut dg, mut db) = (vec![0.0f32; cols], vec![0.0f32; cols]);
            for r in c * per..((c + 1) * per).min(rows) {
                for j in 0..cols {
                    let g = dy[r * cols + j];
                    dg[j] += g * (x[r * cols + j] - mean[r]) * rstd[r];
                    db[j] += g;
                }
            }
            (dg, db)
        })
        .reduce(
            || (vec![0.0; cols], vec![0.0; cols]),
            |(mut a, mut b), (c, d)| {
                a.iter_mut().zip(&c).for_each(|(x, y)| *x += y);
                b.iter_mut().zip(&d).for_each(|(x, y)| *x += y);
                (a, b)
            },
        );
    (dg, db)
}
