//! Portable: `wide::f32x8`. Compiles to SSE2 on a baseline x86-64 build, NEON on aarch64, etc.

use super::*;

/// Token for the portable path (always available).
#[derive(Clone, Copy, Debug, Default)]
pub struct Portable;

impl Simd for Portable {
    const ISA: Isa = Isa::Portable;
    const LANES: usize = 8;
    type F = wide::f32x8;
    type I = wide::i32x8;

    #[inline(always)]
    fn splat(self, x: f32) -> Self::F {
        wide::f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Self::F {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { wide::f32x8::from(std::ptr::read_unaligned(p as *const [f32; 8])) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: Self::F) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v.to_array()) }
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        a * b
    }
    #[inline(always)]
    fn div(self, a: Self::F, b: Self::F) -> Self::F {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: Self::F, b: Self::F) -> Self::F {
        // NaN in b must win, like `maxps a, b` with b as the second operand.
        b.is_nan().blend(b, a.fast_max(b))
    }
    #[inline(always)]
    fn min(self, a: Self::F, b: Self::F) -> Self::F {
        b.is_nan().blend(b, a.fast_min(b))
    }
    #[inline(always)]
    fn abs(self, a: Self::F) -> Self::F {
        a.abs()
    }
    #[inline(always)]
    fn select_lt(self, a: Self::F, b: Self::F, t: Self::F, f: Self::F) -> Self::F {
        use wide::CmpLt;
        a.cmp_lt(b).blend(t, f)
    }
    #[inline(always)]
    fn round_to_i32(self, a: Self::F) -> Self::I {
        a.round_int()
    }
    #[inline(always)]
    fn i32_to_f32(self, a: Self::I) -> Self::F {
        a.round_float()
    }
    #[inline(always)]
    fn pow2i(self, n: Self::I) -> Self::F {
        let bits: wide::i32x8 = (n + wide::i32x8::splat(127)) << 23;
        bytemuck::cast(bits)
    }
    #[inline(always)]
    fn sub_i32(self, n: Self::I, k: i32) -> Self::I {
        n - wide::i32x8::splat(k)
    }
    #[inline(always)]
    fn reduce_sum(self, a: Self::F) -> f32 {
        a.reduce_add()
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const u32) -> (Self::F, Self::F) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let w = std::ptr::read_unaligned(p as *const [u32; 8]);
            (
                wide::f32x8::from(w.map(|x| f32::from_bits(x << 16))),
                wide::f32x8::from(w.map(|x| f32::from_bits(x & 0xFFFF_0000))),
            )
        }
    }
    #[inline(always)]
    fn reduce_max(self, a: Self::F) -> f32 {
        let v = a.to_array();
        v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}
