//! Fused log-softmax + cross-entropy with an ignore index.
//!
//! For logits (rows, classes) and integer targets (rows):
//! `loss_r = logsumexp(x_r) - x_r[t_r]`, averaged over rows whose target is not `ignore`.
//! Also returns each row's logsumexp (NaN for ignored rows), which the backward pass uses
//! (`grad = softmax - onehot`) without recomputing the max and sum.

use crate::rows::{max_of, PAR_MIN_ELEMS};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};

/// `ln sum exp(x)` of one row, stable (max subtracted first).
#[inline(always)]
pub fn logsumexp<S: Simd>(s: S, x: &[f32]) -> f32 {
    let max = max_of(s, x);
    if !max.is_finite() {
        return max;
    }
    let vmax = s.splat(max);
    let l = S::LANES;
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let mut i = 0;
    // SAFETY: i + l <= len in the loops; the tail uses load_partial with -inf fill (exp -> 0).
    unsafe {
        while i + 2 * l <= x.len() {
            a0 = s.add(a0, s.exp_fast(s.sub(s.load(x.as_ptr().add(i)), vmax)));
            a1 = s.add(a1, s.exp_fast(s.sub(s.load(x.as_ptr().add(i + l)), vmax)));
            i += 2 * l;
        }
        while i < x.len() {
            let v = if i + l <= x.len() {
                s.load(x.as_ptr().add(i))
            } else {
                s.load_partial(x.as_ptr().add(i), x.len() - i, f32::NEG_INFINITY)
            };
            a0 = s.add(a0, s.exp_fast(s.sub(v, vmax)));
            i += l;
        }
    }
    max + s.reduce_sum(s.add(a0, a1)).ln()
}

struct LogSoftmax<'a> {
    x: &'a [f32],
    cols: usize,
}

impl crate::rows::RowOp for LogSoftmax<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, y: &mut [f32]) {
        let x = &self.x[r * self.cols..(r + 1) * self.cols];
        let lse = s.splat(logsumexp(s, x));
        crate::rows::zip_map(
            s,
            y,
            x,
            #[inline(always)]
            |_, v| s.sub(v, lse),
        );
    }
}

/// `log_softmax` of each row of x (rows, cols): `x - logsumexp(x)`, into `out`.
pub fn log_softmax_rows(isa: Isa, x: &[f32], cols: usize, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "log_softmax_rows: input and output lengths differ"
    );
    crate::rows::for_rows(isa, &LogSoftmax { x, cols }, out, cols);
}

struct Lse<'a> {
    x: &'a [f32],
    classes: usize,
    first: usize,
    targets: &'a [i64],
    ignore: i64,
    out: &'a mut [f32],
}

impl SimdKernel for Lse<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (i, o) in self.out.iter_mut().enumerate() {
            let r = self.first + i;
            *o = if self.targets[r] == self.ignore {
                f32::NAN
            } else {
                logsumexp(s, &self.x[r * self.classes..(r + 1) * self.classes])
            };
        }
    }
}

/// Returns (mean loss over counted rows, per-row logsumexp, counted rows).
/// Errors with the position of the first target that is neither `ignore` nor in 0..classes.
pub fn cross_entropy_rows(
    isa: Isa,
    logits: &[f32],
    classes: usize,
    targets: &[i64],
    ignore: i64,
) -> Result<(f32, Vec<f32>, usize), (usize, i64)> {
    let rows = targets.len();
    assert_eq!(
        logits.len(),
        rows * classes,
        "cross_entropy_rows: logits must be rows x classes"
    );
    if let Some((at, &t)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t != ignore && (t < 0 || t as usize >= classes))
    {
        return Err((at, t));
    }
    let mut lse = vec![0.0f32; rows];
    if logits.len() < PAR_MIN_ELEMS || rayon::current_num_threads() == 1 {
        dispatch(
            isa,
            Lse {
                x: logits,
                classes,
                first: 0,
                targets,
                ignore,
                out: &mut lse,
            },
        );
    } else {
        use rayon::prelude::*;
        let per = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
        lse.par_chunks_mut(per).enumerate().for_each(|(ci, out)| {
            dispatch(
                isa,
                Lse {
                    x: logits,
                    classes,
                    first: ci * per,
                    targets,
                    ignore,
                    out,
                },
            );
        });
    }
    let mut total = 0.0f64;
    let mut count = 0;
    for r in 0..rows {
        if targets[r] != ignore {
            total += (lse[r] - logits[r * classes + targets[r] as usize]) as f64;
            count += 1;
        }
    }
    Ok((
        if count == 0 {
            0.0
        } else {
            (total / count as f64) as f32
        },
        lse,
        count,
    ))
}

struct CeBackward<'a> {
    x: &'a [f32],
    lse: &'a [f32],
    targets: &'a [i64],
    ignore: i64,
    scale: f32,
    classes: usize,
}

impl crate::rows::RowOp for CeBackward<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, d: &mut [f32]) {
        let t = self.targets[r];
        if t == self.ignore {
            d.fill(0.0);
            return;
        }
        let x = &self.x[r * self.classes..(r + 1) * self.classes];
        let (lse, sc) = (s.splat(self.lse[r]), s.splat(self.scale));
        crate::rows::zip_map(
            s,
            d,
            x,
            #[inline(always)]
            |_, v| s.mul(sc, s.exp_fast(s.sub(v, lse))),
        );
        d[t as usize] -= self.scale;
    }
}

/// Backward of the mean cross-entropy: `dlogits = scale * (softmax(x) - onehot(t))` on counted
/// rows, 0 on ignored rows; `scale` is dloss / (number of counted rows).
pub fn cross_entropy_backward_rows(
    isa: Isa,
    logits: &[f32],
    classes: usize,
    lse: &[f32],
    targets: &[i64],
    ignore: i64,
    scale: f32,
    dlogits: &mut [f32],
) {
    assert_eq!(
        logits.len(),
        dlogits.len(),
        "cross_entropy_backward_rows: lengths differ"
    );
    crate::rows::for_rows(
        isa,
        &CeBackward {
            x: logits,
            lse,
            targets,
            ignore,
            scale,
            classes,
        },
        dlogits,
        classes,
    );
}

struct CeBackwardInPlace<'a> {
    lse: &'a [f32],
    targets: &'a [i64],
    ignore: i64,
    scale: f32,
}

impl crate::rows::RowOp for CeBackwardInPlace<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, d: &mut [f32]) {
        let t = self.targets[r];
        if t == self.ignore {
            d.fill(0.0);
            return;
        }
        let (lse, sc) = (s.splat(self.lse[r]), s.splat(self.scale));
        crate::simd::map_inplace(
            s,
            d,
            #[inline(always)]
            |v| s.mul(sc, s.exp_fast(s.sub(v, lse))),
        );
        d[t as usize] -= self.scale;
    }
}

/// [`cross_entropy_backward_rows`] written over the logits themselves (the MLM head's
/// `[masked rows, vocabulary]` buffer is not needed after the loss, so no second one is made).
pub fn cross_entropy_backward_rows_inplace(
    isa: Isa,
    logits: &mut [f32],
    classes: usize,
    lse: &[f32],
    targets: &[i64],
    ignore: i64,
    scale: f32,
) {
    crate::rows::for_rows(
        isa,
        &CeBackwardInPlace {
            lse,
            targets,
            ignore,
            scale,
        },
        logits,
        classes,
    );
}
