//! Row softmax, numerically stable, with an optional additive mask.
//!
//! `y[r, :] = exp(z - max z) / sum exp(z - max z)` with `z = x[r, :] + mask[r, :]`.
//! Three passes over the row, each a vector loop: max, exp-and-sum (written to y), scale.
//! A row whose every entry is -inf (fully masked) gives zeros rather than NaN.

use crate::rows::{for_rows, load_at, max_of, zip_map, RowOp};
use crate::simd::{Isa, Simd};

struct Softmax<'a> {
    x: &'a [f32],
    cols: usize,
    /// Mask data and, for each x row, the offset of its mask row in that data (so any
    /// broadcast costs one lookup per row).
    mask: Option<(&'a [f32], &'a [usize])>,
}

impl RowOp for Softmax<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, y: &mut [f32]) {
        let n = self.cols;
        let x = &self.x[r * n..(r + 1) * n];
        let mask = self.mask.map(|(m, rows)| &m[rows[r]..rows[r] + n]);
        softmax_row(s, x, mask, y);
    }
}

/// One row: `y = softmax(x + mask)`, `x`, `mask` and `y` of one length. For kernels already
/// inside an ISA trampoline.
#[inline(always)]
pub(crate) fn softmax_row<S: Simd>(s: S, x: &[f32], mask: Option<&[f32]>, y: &mut [f32]) {
    let sum = exp_row(s, x, mask, y);
    if sum > 0.0 {
        let inv = s.splat(1.0 / sum);
        crate::simd::map_inplace(
            s,
            y,
            #[inline(always)]
            |v| s.mul(v, inv),
        );
    }
}

/// The softmax's numerator: `y = exp(z - max z)`, z = x + mask, returning its sum (0, with y
/// all zeros, when every z is -inf). The fused attention divides its output rows by the sum
/// instead of every probability (a head of 32 against 128 keys: a quarter of the multiplies).
#[inline(always)]
pub(crate) fn exp_row<S: Simd>(s: S, x: &[f32], mask: Option<&[f32]>, y: &mut [f32]) -> f32 {
    let n = x.len();
    debug_assert_eq!(y.len(), n);
    // z = x + mask is built in y itself when masked; raw pointers because z may be y.
    let yp = y.as_mut_ptr();
    let zp: *const f32 = match mask {
        Some(mr) => {
            zip_map(
                s,
                y,
                x,
                #[inline(always)]
                |i, v| s.add(v, load_at(s, mr, i)),
            );
            yp
        }
        None => x.as_ptr(),
    };
    // SAFETY: zp addresses n floats (x's row or y) and nothing writes y during this read.
    let max = max_of(s, unsafe { std::slice::from_raw_parts(zp, n) });
    if max == f32::NEG_INFINITY {
        // SAFETY: yp addresses y's n floats.
        unsafe { std::ptr::write_bytes(yp, 0, n) };
        return 0.0;
    }
    let vmax = s.splat(max);
    let mut acc = s.zero();
    // exp(z - max) into y, summing as we go (masked tail lanes add exp(-inf) = 0).
    // z may alias y (when masked), which is fine: each lane is read before written.
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: i + l <= n in the loop; the tail handles n - i < l elements.
    unsafe {
        while i + l <= n {
            let e = s.exp_fast(s.sub(s.load(zp.add(i)), vmax));
            acc = s.add(acc, e);
            s.store(yp.add(i), e);
            i += l;
        }
        if i < n {
            let e = s.exp_fast(s.sub(s.load_partial(zp.add(i), n - i, f32::NEG_INFINITY), vmax));
            acc = s.add(acc, e);
            s.store_partial(yp.add(i), e, n - i);
        }
    }
    s.reduce_sum(acc)
}

/// Softmax of each row of `x` (rows, cols) into `out` (rows, cols). `mask`, when given, is
/// `(data, offsets)`: x row r gets `data[offsets[r]..offsets[r] + cols]` added first.
pub fn softmax_rows(
    isa: Isa,
    x: &[f32],
    cols: usize,
    mask: Option<(&[f32], &[usize])>,
    out: &mut [f32],
) {
    assert_eq!(
        x.len(),
        out.len(),
        "softmax_rows: input and output lengths differ"
    );
    for_rows(isa, &Softmax { x, cols, mask }, out, cols);
}

/// [`softmax_rows`] on the calling thread only (for callers already running one task per core).
pub fn softmax_rows_serial(
    isa: Isa,
    x: &[f32],
    cols: usize,
    mask: Option<(&[f32], &[usize])>,
    out: &mut [f32],
) {
    assert_eq!(
        x.len(),
        out.len(),
        "softmax_rows: input and output lengths differ"
    );
    if cols > 0 {
        crate::rows::for_rows_serial(isa, &Softmax { x, cols, mask }, out, cols);
    }
}

struct SoftmaxBackward<'a> {
    y: &'a [f32],
    dy: &'a [f32],
    cols: usize,
}

impl RowOp for SoftmaxBackward<'_> {
    #[inline(always)]
    fn row<S: Simd>(&self, s: S, r: usize, dx: &mut [f32]) {
        let n = self.cols;
        let (y, dy) = (&self.y[r * n..(r + 1) * n], &self.dy[r * n..(r + 1) * n]);
        // dot = sum(dy * y), then dx = y * (dy - dot).
        // Two accumulators, alternating vectors: one would wait out each FMA's latency.
        let l = S::LANES;
        let mut acc = [s.zero(); 2];
        let (mut i, mut k) = (0, 0);
        while i < n {
            acc[k] = s.fma(load_at(s, y, i), load_at(s, dy, i), acc[k]);
            i += l;
            k ^= 1;
        }
        let dot = s.splat(s.reduce_sum(s.add(acc[0], acc[1])));
        zip_map(
            s,
            dx,
            y,
            #[inline(always)]
            |i, yv| s.mul(yv, s.sub(load_at(s, dy, i), dot)),
        );
    }
}

/// Backward of row softmax: given y = softmax(x) and dy, `dx = y * (dy - sum(dy * y))` per row.
/// (The additive mask has no gradient: it is a constant.)
pub fn softmax_backward_rows(isa: Isa, y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    assert!(
        y.len() == dy.len() && dy.len() == dx.len(),
        "softmax_backward_rows: lengths differ"
    );
    for_rows(isa, &SoftmaxBackward { y, dy, cols }, dx, cols);
}
