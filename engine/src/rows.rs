//! Running a per-row kernel over a (rows, cols) buffer: one ISA dispatch per chunk of rows,
//! chunks spread over rayon threads once the data is large enough to pay for the fork.

use crate::simd::{dispatch, Isa, Simd, SimdKernel};

/// Below this many elements a row op stays on the calling thread.
pub const PAR_MIN_ELEMS: usize = 1 << 15;

/// A row operation: `row(s, r, out_row)` for row index r, writing `out_row` (cols floats).
pub trait RowOp: Sync {
    fn row<S: Simd>(&self, s: S, r: usize, out: &mut [f32]);
}

struct Chunk<'a, O: RowOp> {
    op: &'a O,
    first: usize,
    out: &'a mut [f32],
    cols: usize,
}

impl<O: RowOp> SimdKernel for Chunk<'_, O> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        for (i, out) in self.out.chunks_exact_mut(self.cols).enumerate() {
            self.op.row(s, self.first + i, out);
        }
    }
}

/// [`for_rows`] on the calling thread.
pub fn for_rows_serial<O: RowOp>(isa: Isa, op: &O, out: &mut [f32], cols: usize) {
    if cols == 0 || out.is_empty() {
        return;
    }
    dispatch(
        isa,
        Chunk {
            op,
            first: 0,
            out,
            cols,
        },
    );
}

/// Runs `op` on every row of `out` (rows x cols), in parallel when large.
pub fn for_rows<O: RowOp>(isa: Isa, op: &O, out: &mut [f32], cols: usize) {
    if cols == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / cols;
    let threads = rayon::current_num_threads();
    if threads == 1 || out.len() < PAR_MIN_ELEMS || rows == 1 {
        dispatch(
            isa,
            Chunk {
                op,
                first: 0,
                out,
                cols,
            },
        );
        return;
    }
    // A few chunks per thread, so uneven rows still balance.
    let per = rows.div_ceil(threads * 4).max(1);
    use rayon::prelude::*;
    out.par_chunks_mut(per * cols)
        .enumerate()
        .for_each(|(ci, chunk)| {
            dispatch(
                isa,
                Chunk {
                    op,
                    first: ci * per,
                    out: chunk,
                    cols,
                },
            );
        });
}

/// Runs `f` on all of `x` when it is small, else on chunks of it (multiples of 64 floats, a few
/// per thread) in parallel: the threading of every elementwise in-place kernel.
pub fn for_chunks(x: &mut [f32], f: impl Fn(&mut [f32]) + Sync + Send) {
    if x.len() < PAR_MIN_ELEMS || rayon::current_num_threads() == 1 {
        f(x);
        return;
    }
    use rayon::prelude::*;
    let chunk = x
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .next_multiple_of(64);
    x.par_chunks_mut(chunk).for_each(f);
}

/// Sum and max of a slice with vector accumulators (helpers shared by the row kernels).
#[inline(always)]
pub fn max_of<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut m = s.splat(f32::NEG_INFINITY);
    let mut i = 0;
    // SAFETY: i + l <= len in the loop; the tail is read with load_partial.
    unsafe {
        while i + l <= x.len() {
            m = s.max(m, s.load(x.as_ptr().add(i)));
            i += l;
        }
        if i < x.len() {
            m = s.max(
                m,
                s.load_partial(x.as_ptr().add(i), x.len() - i, f32::NEG_INFINITY),
            );
        }
    }
    s.reduce_max(m)
}

/// The sum of a slice, over four vector accumulators: an add's latency is 3 to 4 cycles and
/// two loads issue per cycle, so one accumulator would leave the loads idle most of the time.
#[inline(always)]
pub fn sum_of<S: Simd>(s: S, x: &[f32]) -> f32 {
    let l = S::LANES;
    let mut a = [s.zero(); 4];
    let mut i = 0;
    // SAFETY: bounds as in max_of.
    unsafe {
        while i + 4 * l <= x.len() {
            for (j, aj) in a.iter_mut().enumerate() {
                *aj = s.add(*aj, s.load(x.as_ptr().add(i + j * l)));
            }
            i += 4 * l;
        }
        while i + l <= x.len() {
            a[0] = s.add(a[0], s.load(x.as_ptr().add(i)));
            i += l;
        }
        if i < x.len() {
            a[1] = s.add(a[1], s.load_partial(x.as_ptr().add(i), x.len() - i, 0.0));
        }
    }
    s.reduce_sum(s.add(s.add(a[0], a[1]), s.add(a[2], a[3])))
}

/// `f(i, v)` over the slice's vectors; `v` holds x[i..i+LANES] (zero-filled past the end) and
/// the result is written back only to in-range lanes.
#[inline(always)]
pub fn zip_map<S: Simd>(s: S, out: &mut [f32], x: &[f32], mut f: impl FnMut(usize, S::F) -> S::F) {
    debug_assert_eq!(out.len(), x.len());
    let l = S::LANES;
    let n = out.len().min(x.len());
    let mut i = 0;
    // SAFETY: i + l <= n in the loop; the tail touches n - i < l elements.
    unsafe {
        while i + l <= n {
            s.store(out.as_mut_ptr().add(i), f(i, s.load(x.as_ptr().add(i))));
            i += l;
        }
        if i < n {
            let v = f(i, s.load_partial(x.as_ptr().add(i), n - i, 0.0));
            s.store_partial(out.as_mut_ptr().add(i), v, n - i);
        }
    }
}

/// Loads `LANES` floats of `x` at `i`, zero-filled past the end.
#[inline(always)]
pub fn load_at<S: Simd>(s: S, x: &[f32], i: usize) -> S::F {
    let n = x.len();
    // SAFETY: full loads only when in range; the partial load reads n - i elements.
    unsafe {
        if i + S::LANES <= n {
            s.load(x.as_ptr().add(i))
        } else {
            s.load_partial(x.as_ptr().add(i), n - i, 0.0)
        }
    }
}

/// `out[i] = f(out[i], x[i])` over vectors, with a masked tail.
#[inline(always)]
pub fn zip_map_inplace<S: Simd>(
    s: S,
    out: &mut [f32],
    x: &[f32],
    mut f: impl FnMut(S::F, S::F) -> S::F,
) {
    let l = S::LANES;
    let n = out.len().min(x.len());
    let mut i = 0;
    // SAFETY: i + l <= n in the loop; the tail touches n - i < l elements of both.
    unsafe {
        while i + l <= n {
            let v = f(s.load(out.as_ptr().add(i)), s.load(x.as_ptr().add(i)));
            s.store(out.as_mut_ptr().add(i), v);
            i += l;
        }
        if i < n {
            let v = f(
                s.load_partial(out.as_ptr().add(i), n - i, 0.0),
                s.load_partial(x.as_ptr().add(i), n - i, 0.0),
            );
            s.store_partial(out.as_mut_ptr().add(i), v, n - i);
        }
    }
}
