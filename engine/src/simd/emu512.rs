//! Emu512: the AVX-512 shape in software, for testing on CPUs without AVX-512

use super::*;

/// A software stand-in for [`Avx512`]: 16 lanes as two [`Portable`] halves, with
/// `ISA = Isa::Avx512`, so a kernel instantiated with it takes every AVX-512 decision (16-lane
/// loops and their tails, the GEMM's 6 x 64 register tile and packing, the bf16 GEMM's
/// emulated kernel on that tile) on a CPU that has no AVX-512. The development machine has none,
/// so this is how those paths are tested: `ENGINE_EMULATE_AVX512=1 cargo test` (part of
/// `scripts/test`) makes [`Isa::available`] list `Avx512` and [`dispatch`] run it here.
/// What it cannot check is the [`Avx512`] impl itself (one intrinsic per method) and the
/// native `vdpbf16ps` kernel; those need the hardware.
#[derive(Clone, Copy, Debug, Default)]
pub struct Emu512;

impl Simd for Emu512 {
    const ISA: Isa = Isa::Avx512;
    const LANES: usize = 16;
    type F = [wide::f32x8; 2];
    type I = [wide::i32x8; 2];

    #[inline(always)]
    fn splat(self, x: f32) -> Self::F {
        [Portable.splat(x); 2]
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Self::F {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { [Portable.load(p), Portable.load(p.add(8))] }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: Self::F) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            Portable.store(p, v[0]);
            Portable.store(p.add(8), v[1]);
        }
    }
    #[inline(always)]
    fn add(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.add(a[0], b[0]), Portable.add(a[1], b[1])]
    }
    #[inline(always)]
    fn sub(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.sub(a[0], b[0]), Portable.sub(a[1], b[1])]
    }
    #[inline(always)]
    fn mul(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.mul(a[0], b[0]), Portable.mul(a[1], b[1])]
    }
    #[inline(always)]
    fn div(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.div(a[0], b[0]), Portable.div(a[1], b[1])]
    }
    #[inline(always)]
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        [
            Portable.fma(a[0], b[0], c[0]),
            Portable.fma(a[1], b[1], c[1]),
        ]
    }
    #[inline(always)]
    fn max(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.max(a[0], b[0]), Portable.max(a[1], b[1])]
    }
    #[inline(always)]
    fn min(self, a: Self::F, b: Self::F) -> Self::F {
        [Portable.min(a[0], b[0]), Portable.min(a[1], b[1])]
    }
    #[inline(always)]
    fn abs(self, a: Self::F) -> Self::F {
        [Portable.abs(a[0]), Portable.abs(a[1])]
    }
    #[inline(always)]
    fn select_lt(self, a: Self::F, b: Self::F, t: Self::F, f: Self::F) -> Self::F {
        [
            Portable.select_lt(a[0], b[0], t[0], f[0]),
            Portable.select_lt(a[1], b[1], t[1], f[1]),
        ]
    }
    #[inline(always)]
    fn round_to_i32(self, a: Self::F) -> Self::I {
        [Portable.round_to_i32(a[0]), Portable.round_to_i32(a[1])]
    }
    #[inline(always)]
    fn i32_to_f32(self, a: Self::I) -> Self::F {
        [Portable.i32_to_f32(a[0]), Portable.i32_to_f32(a[1])]
    }
    #[inline(always)]
    fn pow2i(self, n: Self::I) -> Self::F {
        [Portable.pow2i(n[0]), Portable.pow2i(n[1])]
    }
    #[inline(always)]
    fn sub_i32(self, n: Self::I, k: i32) -> Self::I {
        [Portable.sub_i32(n[0], k), Portable.sub_i32(n[1], k)]
    }
    #[inline(always)]
    fn reduce_sum(self, a: Self::F) -> f32 {
        Portable.reduce_sum(a[0]) + Portable.reduce_sum(a[1])
    }
    #[inline(always)]
    fn reduce_max(self, a: Self::F) -> f32 {
        Portable.reduce_max(a[0]).max(Portable.reduce_max(a[1]))
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const u32) -> (Self::F, Self::F) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let (lo0, hi0) = Portable.load_bf16_pairs(p);
            let (lo1, hi1) = Portable.load_bf16_pairs(p.add(8));
            ([lo0, lo1], [hi0, hi1])
        }
    }
}
