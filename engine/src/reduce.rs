//! Reductions over one axis: sum, mean, max.
//!
//! The input is viewed as (outer, axis, inner), contiguous. When inner == 1 each output is a
//! vector reduction of a contiguous row; otherwise rows of length `inner` are combined
//! elementwise along the axis (vectorised over inner).

use crate::rows::{max_of, sum_of};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

struct ReduceK<'a> {
    op: ReduceOp,
    x: &'a [f32],
    axis: usize,
    inner: usize,
    out: &'a mut [f32],
}

impl SimdKernel for ReduceK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (axis, inner) = (self.axis, self.inner);
        let block = axis * inner;
        for (o, out) in self.out.chunks_exact_mut(inner.max(1)).enumerate() {
            let xb = &self.x[o * block..(o + 1) * block];
            if inner == 1 {
                out[0] = match self.op {
                    ReduceOp::Sum => sum_of(s, xb),
                    ReduceOp::Mean => sum_of(s, xb) / axis as f32,
                    ReduceOp::Max => max_of(s, xb),
                };
                continue;
            }
            let l = S::LANES;
            out.copy_from_slice(&xb[..inner]);
            let po = out.as_mut_ptr();
            for a in 1..axis {
                let pr = xb[a * inner..].as_ptr();
                let mut i = 0;
                // SAFETY: i + l <= inner in the vector loop; row a has `inner` floats.
                unsafe {
                    while i + l <= inner {
                        let (c, v) = (s.load(po.add(i)), s.load(pr.add(i)));
                        s.store(
                            po.add(i),
                            if self.op == ReduceOp::Max {
                                s.max(c, v)
                            } else {
                                s.add(c, v)
                            },
                        );
                        i += l;
                    }
                    for j in i..inner {
                        let v = *pr.add(j);
                        let c = &mut *po.add(j);
                        *c = if self.op == ReduceOp::Max {
                            if v.is_nan() || v > *c {
                                v
                            } else {
                                *c
                            }
                        } else {
                            *c + v
                        };
                    }
                }
            }
            if self.op == ReduceOp::Mean {
                let inv = 1.0 / axis as f32;
                out.iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
}

/// Reduces contiguous `x` viewed as (outer, axis, inner) into `out` (outer, inner).
/// Max over an empty axis gives -inf, sum 0, mean NaN.
pub fn reduce(
    isa: Isa,
    op: ReduceOp,
    x: &[f32],
    outer: usize,
    axis: usize,
    inner: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), outer * axis * inner);
    assert_eq!(out.len(), outer * inner);
    if axis == 0 {
        out.fill(match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Mean => f32::NAN,
            ReduceOp::Max => f32::NEG_INFINITY,
        });
        return;
    }
    if inner == 0 || outer == 0 {
        return;
    }
    if outer == 1
        && x.len() >= crate::rows::PAR_MIN_ELEMS * 4
        && rayon::current_num_threads() > 1
        && op != ReduceOp::Max
    {
        // One long axis (a bias gradient: the sum over every row): partial sums over fixed
        // blocks of rows on every thread, added in order. The blocks do not depend on the thread
        // count, so neither does the result.
        const BLOCK: usize = 64;
        use rayon::prelude::*;
        let blocks = axis.div_ceil(BLOCK);
        let mut part = vec![0.0f32; blocks * inner];
        part.par_chunks_mut(inner)
            .zip(x.par_chunks(BLOCK * inner))
            .for_each(|(o, xb)| {
                let rows = xb.len() / inner;
                dispatch(
                    isa,
                    ReduceK {
                        op: ReduceOp::Sum,
                        x: xb,
                        axis: rows,
                        inner,
                        out: o,
                    },
                )
            });
        out.fill(0.0);
        for p in part.chunks_exact(inner) {
            for (o, v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
        if op == ReduceOp::Mean {
            let inv = 1.0 / axis as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        return;
    }
    if x.len() < crate::rows::PAR_MIN_ELEMS || rayon::current_num_threads() == 1 || outer == 1 {
        dispatch(
            isa,
            ReduceK {
                op,
                x,
                axis,
                inner,
                out,
            },
        );
        return;
    }
    use rayon::prelude::*;
    let per = outer.div_ceil(rayon::current_num_threads() * 4);
    out.par_chunks_mut(per * inner)
        .zip(x.par_chunks(per * axis * inner))
        .for_each(|(o, xb)| {
            dispatch(
                isa,
                ReduceK {
                    op,
                    x: xb,
                    axis,
                    inner,
                    out: o,
                },
            );
        });
}
