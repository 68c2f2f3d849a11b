//! Elementwise binary ops with numpy broadcasting, and unary maps.
//!
//! The broadcast is resolved into strides (0 on broadcast dimensions), adjacent dimensions
//! are merged where both operands allow it, and the innermost dimension runs as a vector loop
//! in one of three forms: both operands contiguous, one of them a broadcast scalar, or general
//! strides (scalar loop).

use crate::simd::{dispatch, Isa, Simd, SimdKernel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinOp {
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::Max => "maximum",
            BinOp::Min => "minimum",
        }
    }
    #[inline(always)]
    pub fn scalar(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Max => {
                if b.is_nan() {
                    b
                } else {
                    a.max(b)
                }
            }
            BinOp::Min => {
                if b.is_nan() {
                    b
                } else {
                    a.min(b)
                }
            }
        }
    }
    #[inline(always)]
    fn vec<S: Simd>(self, s: S, a: S::F, b: S::F) -> S::F {
        match self {
            BinOp::Add => s.add(a, b),
            BinOp::Sub => s.sub(a, b),
            BinOp::Mul => s.mul(a, b),
            BinOp::Div => s.div(a, b),
            BinOp::Max => s.max(a, b),
            BinOp::Min => s.min(a, b),
        }
    }
}

/// One innermost run: `n` outputs from a at stride `sa`, b at stride `sb` (0 = broadcast).
struct Inner<'a> {
    op: BinOp,
    runs: &'a [(usize, usize, usize)],
    a: &'a [f32],
    b: &'a [f32],
    sa: usize,
    sb: usize,
    n: usize,
    out: &'a mut [f32],
}

impl SimdKernel for Inner<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (op, n, l) = (self.op, self.n, S::LANES);
        for &(oa, ob, oo) in self.runs {
            let out = &mut self.out[oo..oo + n];
            let po = out.as_mut_ptr();
            let (pa, pb) = (self.a[oa..].as_ptr(), self.b[ob..].as_ptr());
            // SAFETY: the caller laid out runs so that a[oa + i*sa] and b[ob + i*sb] exist for
            // i < n; full vector loads happen only on stride-1 operands with i + l <= n.
            unsafe {
                match (self.sa, self.sb) {
                    (1, 1) | (1, 0) | (0, 1) => {
                        let mut i = 0;
                        while i + l <= n {
                            s.store(
                                po.add(i),
                                op.vec(
                                    s,
                                    load_or_splat(s, pa, self.sa, i),
                                    load_or_splat(s, pb, self.sb, i),
                                ),
                            );
                            i += l;
                        }
                        for j in i..n {
                            *po.add(j) = op.scalar(*pa.add(j * self.sa), *pb.add(j * self.sb));
                        }
                    }
                    (sa, sb) => {
                        for j in 0..n {
                            *po.add(j) = op.scalar(*pa.add(j * sa), *pb.add(j * sb));
                        }
                    }
                }
            }
        }
    }
}

/// `p[i..i+LANES]` when `stride` is 1, `p[0]` in every lane when it is 0.
#[inline(always)]
unsafe fn load_or_splat<S: Simd>(s: S, p: *const f32, stride: usize, i: usize) -> S::F {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        if stride == 0 {
            s.splat(*p)
        } else {
            s.load(p.add(i))
        }
    }
}

/// `out = a (op) b` where a and b are strided views (offsets, shapes and strides already
/// broadcast to `shape`) and out is dense row-major of `shape`.
pub fn binary(
    isa: Isa,
    op: BinOp,
    shape: &[usize],
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    out: &mut [f32],
) {
    // Merge dimensions: (d, d+1) merge when both operands are "contiguous across" them.
    let mut dims: Vec<(usize, usize, usize)> = Vec::new(); // (size, stride a, stride b)
    for (i, &size) in shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let cur = (size, a.1[i], b.1[i]);
        if let Some(last) = dims.last_mut() {
            if last.1 == cur.1 * cur.0 && last.2 == cur.2 * cur.0 {
                *last = (last.0 * cur.0, cur.1, cur.2);
                continue;
            }
        }
        dims.push(cur);
    }
    let (n, sa, sb) = dims.pop().unwrap_or((1, 1, 1));
    // Enumerate the start offsets of every inner run.
    let outer: usize = dims.iter().map(|d| d.0).product();
    let mut runs = Vec::with_capacity(outer);
    let mut idx = vec![0usize; dims.len()];
    let (mut oa, mut ob) = (0usize, 0usize);
    for r in 0..outer {
        runs.push((oa, ob, r * n));
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            oa += dims[d].1;
            ob += dims[d].2;
            if idx[d] < dims[d].0 {
                break;
            }
            oa -= dims[d].1 * dims[d].0;
            ob -= dims[d].2 * dims[d].0;
            idx[d] = 0;
        }
    }
    let total = outer * n;
    if runs.len() == 1 && total >= crate::rows::PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        // One long run (same-shape operands, the usual residual add or gradient sum): split it.
        use rayon::prelude::*;
        let (oa, ob) = (runs[0].0, runs[0].1);
        let chunk = n
            .div_ceil(rayon::current_num_threads() * 4)
            .next_multiple_of(64);
        out.par_chunks_mut(chunk).enumerate().for_each(|(k, o)| {
            let start = k * chunk;
            dispatch(
                isa,
                Inner {
                    op,
                    runs: &[(oa + start * sa, ob + start * sb, 0)],
                    a: a.0,
                    b: b.0,
                    sa,
                    sb,
                    n: o.len(),
                    out: o,
                },
            );
        });
        return;
    }
    if total < crate::rows::PAR_MIN_ELEMS || rayon::current_num_threads() == 1 || runs.len() == 1 {
        dispatch(
            isa,
            Inner {
                op,
                runs: &runs,
                a: a.0,
                b: b.0,
                sa,
                sb,
                n,
                out,
            },
        );
        return;
    }
    use rayon::prelude::*;
    let per = runs.len().div_ceil(rayon::current_num_threads() * 4);
    out.par_chunks_mut(per * n)
        .zip(runs.par_chunks(per))
        .for_each(|(o, rs)| {
            let base = rs[0].2;
            let local: Vec<_> = rs.iter().map(|&(x, y, z)| (x, y, z - base)).collect();
            dispatch(
                isa,
                Inner {
                    op,
                    runs: &local,
                    a: a.0,
                    b: b.0,
                    sa,
                    sb,
                    n,
                    out: o,
                },
            );
        });
}

/// Unary maps that have a vector form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Tanh,
    Relu,
    Sqrt,
    /// `a * x + b`
    Affine(f32, f32),
}

struct UnaryK<'a> {
    op: UnaryOp,
    x: &'a mut [f32],
}

impl SimdKernel for UnaryK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        match self.op {
            UnaryOp::Neg => crate::simd::map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| s.sub(s.zero(), v),
            ),
            UnaryOp::Exp => crate::simd::map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| s.exp(v),
            ),
            UnaryOp::Tanh => crate::simd::map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| s.tanh(v),
            ),
            UnaryOp::Relu => crate::simd::map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| s.max(s.zero(), v),
            ),
            UnaryOp::Sqrt => self.x.iter_mut().for_each(|v| *v = v.sqrt()),
            UnaryOp::Affine(a, b) => crate::simd::map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| s.fma(s.splat(a), v, s.splat(b)),
            ),
        }
    }
}

/// Applies `op` in place, threaded when large.
pub fn unary_inplace(isa: Isa, op: UnaryOp, x: &mut [f32]) {
    crate::rows::for_chunks(x, |c| dispatch(isa, UnaryK { op, x: c }));
}
