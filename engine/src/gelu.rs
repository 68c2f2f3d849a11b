//! GELU, both forms BERT checkpoints use.
//!
//! erf form (`gelu`):       `x/2 (1 + erf(x / sqrt 2))`
//! tanh form (`gelu_new`):  `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
//!
//! The forward computes the tanh form as `x / (1 + exp(-2u))`, u = sqrt(2/pi) (x + 0.044715 x^3),
//! since `(1 + tanh u) / 2` is the logistic function of 2u: one exp and one division, and no
//! cancellation in `1 + tanh u` where tanh u is near -1.

use crate::simd::{dispatch, map_inplace, Isa, Simd, SimdKernel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    Erf,
    Tanh,
}

struct GeluK<'a> {
    x: &'a mut [f32],
    kind: Gelu,
}

impl SimdKernel for GeluK<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let half = s.splat(0.5);
        let one = s.splat(1.0);
        match self.kind {
            Gelu::Erf => map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| {
                    let e = s.erf(s.mul(v, s.splat(std::f32::consts::FRAC_1_SQRT_2)));
                    s.mul(s.mul(half, v), s.add(one, e))
                },
            ),
            Gelu::Tanh => map_inplace(
                s,
                self.x,
                #[inline(always)]
                |v| {
                    // -2 sqrt(2/pi) (x + 0.044715 x^3): above 88 (x below about -9.7) exp_fast
                    // saturates at exp(88) and the result is x / 1.7e38, about 0, as it should.
                    let m2k = s.splat(-2.0 * 0.797_884_6);
                    let arg = s.mul(m2k, s.fma(s.mul(s.splat(0.044715), s.mul(v, v)), v, v));
                    s.div(v, s.add(one, s.exp_fast(arg)))
                },
            ),
        }
    }
}

/// GELU in place, threaded over chunks when large.
pub fn gelu_inplace(isa: Isa, x: &mut [f32], kind: Gelu) {
    crate::rows::for_chunks(x, |c| dispatch(isa, GeluK { x: c, kind }));
}

struct GeluBackward<'a> {
    x: &'a [f32],
    dx: &'a mut [f32],
    kind: Gelu,
}

impl SimdKernel for GeluBackward<'_> {
    type Output = ();
    /// On entry `dx` holds dy; on exit dy * gelu'(x).
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        let (half, one) = (s.splat(0.5), s.splat(1.0));
        let x = self.x;
        match self.kind {
            // d/dx = (1 + erf(x/sqrt2)) / 2 + x * exp(-x^2/2) / sqrt(2 pi)
            Gelu::Erf => crate::rows::zip_map_inplace(
                s,
                self.dx,
                x,
                #[inline(always)]
                |dy, xv| {
                    let cdf = s.mul(
                        half,
                        s.add(
                            one,
                            s.erf(s.mul(xv, s.splat(std::f32::consts::FRAC_1_SQRT_2))),
                        ),
                    );
                    let pdf = s.mul(
                        s.splat(0.398_942_3),
                        s.exp_fast(s.mul(s.splat(-0.5), s.mul(xv, xv))),
                    );
                    s.mul(dy, s.fma(xv, pdf, cdf))
                },
            ),
            // u = k (x + c x^3), t = tanh u: d/dx = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 c x^2)
            Gelu::Tanh => crate::rows::zip_map_inplace(
                s,
                self.dx,
                x,
                #[inline(always)]
                |dy, xv| {
                    let (k, c) = (s.splat(0.797_884_6), s.splat(0.044715));
                    let x2 = s.mul(xv, xv);
                    let t = s.tanh(s.mul(k, s.fma(s.mul(c, x2), xv, xv)));
                    let du = s.mul(k, s.fma(s.mul(s.splat(3.0), c), x2, one));
                    let d = s.fma(
                        s.mul(s.mul(half, xv), s.sub(one, s.mul(t, t))),
                        du,
                        s.mul(half, s.add(one, t)),
                    );
                    s.mul(dy, d)
                },
            ),
        }
    }
}

/// Backward of GELU: `dx = dy * gelu'(x)`; `dx` holds dy on entry.
pub fn gelu_backward_inplace(isa: Isa, x: &[f32], dx: &mut [f32], kind: Gelu) {
    assert_eq!(x.len(), dx.len(), "gelu_backward: lengths differ");
    if x.len() < crate::rows::PAR_MIN_ELEMS || rayon::current_num_threads() == 1 {
        dispatch(isa, GeluBackward { x, dx, kind });
        return;
    }
    use rayon::prelude::*;
    let chunk = x
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .next_multiple_of(64);
    dx.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(d, xc)| dispatch(isa, GeluBackward { x: xc, dx: d, kind }));
}
