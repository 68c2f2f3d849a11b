//! Layer normalisation over the last dimension.
//!
//! `y = (x - mean) * rstd * gamma + beta`, `rstd = 1 / sqrt(var + eps)`, biased variance.
//! Two passes for the statistics (sum, then sum of squared deviations: no cancellation),
//! one for the output. Returns per-row mean and rstd, which the backward pass reuses.

use crate::rows::{for_rows, load_at, sum_of, RowOp};
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

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: rows run on different threads but write disjoint entries (see `stats`).
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

impl RowOp for LayerNorm<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, y: &mut [f32]) {
        let n = self.cols;
        let x = &self.x[r * n..(r + 1) * n];
        let mean = sum_of(s, x) / n as f32;
        let vm = s.splat(mean);
        // Sum of squared deviations, masking the padded tail lanes to zero.
        let l = S::LANES;
        let mut acc = s.zero();
        let mut i = 0;
        while i < n {
            let d = s.sub(load_at(s, x, i), vm);
            let d = if i + l <= n {
                d
            } else {
                // Lanes past the end loaded 0 and became -mean: zero them through the buffer.
                let mut buf = [0.0f32; 16];
                // SAFETY: buf holds 16 >= LANES floats.
                unsafe { s.store(buf.as_mut_ptr(), d) };
                buf[n - i..].fill(0.0);
                // SAFETY: as above.
                unsafe { s.load(buf.as_ptr()) }
            };
            acc = s.fma(d, d, acc);
            i += l;
        }
        let var = s.reduce_sum(acc) / n as f32;
        let rstd = 1.0 / (var + self.eps).sqrt();
        // SAFETY: stats has 2 * rows entries and row r owns entries 2r and 2r+1.
        unsafe {
            *self.stats.0.add(2 * r) = mean;
            *self.stats.0.add(2 * r + 1) = rstd;
        }
        let vr = s.splat(rstd);
        crate::rows::zip_map(
            s,
            y,
            x,
            #[inline(always)]
            |i, v| {
                let xn = s.mul(s.sub(v, vm), vr);
                s.fma(xn, load_at(s, self.gamma, i), load_at(s, self.beta, i))
            },
        );
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
