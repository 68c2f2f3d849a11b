//! GELU, both forms BERT checkpoints use.
//!
//! erf form (`gelu`):       `x/2 (1 + erf(x / sqrt 2))`
//! tanh form (`gelu_new`):  `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`

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
                    let k = s.splat(0.797_884_6); // sqrt(2/pi)
                    let inner = s.mul(k, s.fma(s.mul(s.splat(0.044715), s.mul(v, v)), v, v));
                    s.mul(s.mul(half, v), s.add(one, s.tanh(inner)))
                },
            ),
        }
    }
}

/// GELU in place, threaded over chunks when large.
pub fn gelu_inplace(isa: Isa, x: &mut [f32], kind: Gelu) {
    if x.len() < crate::rows::PAR_MIN_ELEMS || rayon::current_num_threads() == 1 {
        dispatch(isa, GeluK { x, kind });
        return;
    }
    use rayon::prelude::*;
    let chunk = x
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .next_multiple_of(64);
    x.par_chunks_mut(chunk)
        .for_each(|c| dispatch(isa, GeluK { x: c, kind }));
}
