//! AVX-512 F/BW/VL/DQ: 16 lanes in `__m512`. The token, and its `impl Simd` (x86-64 only).

#[cfg(target_arch = "x86_64")]
use super::avx2::transpose_x8;
use super::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Token proving AVX-512 F/BW/VL/DQ (and FMA) are available.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(());

impl Avx512 {
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("fma")
        {
            return Some(Avx512(()));
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (whole impl): every method takes an `Avx512` token, which only `Avx512::detect`
// makes after checking the CPU has AVX-512 F/BW/VL/DQ and FMA.
impl Simd for Avx512 {
    const ISA: Isa = Isa::Avx512;
    const LANES: usize = 16;
    type F = __m512;
    type I = __m512i;

    /// [`Simd::exp_fast`] with AVX-512's `vrndscaleps` and `vscalefps`: `n = round(x log2 e)`
    /// stays a float and `p * 2^n` is one instruction, instead of two conversions and the
    /// exponent-field arithmetic of [`Simd::pow2i`] (17 operations against 21). The same
    /// reduction and polynomial: `p * 2^n` is exact either way wherever the result is normal,
    /// and rounded alike where it is not, so the results are the default's, bit for bit (a test
    /// checks it).
    #[inline(always)]
    fn exp_fast(self, x: __m512) -> __m512 {
        let lo = self.splat(-87.33654);
        let xc = self.min(self.splat(88.0), self.max(lo, x));
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe {
            // Round to nearest even, exceptions suppressed (imm8 0x08): what cvtps2dq does
            // under the default MXCSR.
            let nf =
                _mm512_roundscale_ps::<0x08>(self.mul(xc, self.splat(std::f32::consts::LOG2_E)));
            let y = _mm512_scalef_ps(self.exp_fast_reduced(xc, nf), nf);
            self.select_lt(x, lo, self.zero(), y)
        }
    }

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> __m512 {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let m: __mmask16 = ((1u32 << n) - 1) as u16;
            _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p)
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: __m512, n: usize) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let m: __mmask16 = ((1u32 << n) - 1) as u16;
            _mm512_mask_storeu_ps(p, m, v)
        }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn select_lt(self, a: __m512, b: __m512, t: __m512, f: __m512) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), f, t) }
    }
    #[inline(always)]
    fn round_to_i32(self, a: __m512) -> __m512i {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_cvtps_epi32(a) }
    }
    #[inline(always)]
    fn i32_to_f32(self, a: __m512i) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_cvtepi32_ps(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512i) -> __m512 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
                n,
                _mm512_set1_epi32(127),
            )))
        }
    }
    #[inline(always)]
    fn sub_i32(self, n: __m512i, k: i32) -> __m512i {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_sub_epi32(n, _mm512_set1_epi32(k)) }
    }
    #[inline(always)]
    unsafe fn pack_transposed_x8<const ROWS: usize>(
        self,
        src: *const f32,
        rs: usize,
        dst: *mut f32,
        ld: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            // AVX-512 implies AVX2: the 256-bit transpose serves both.
            transpose_x8::<ROWS>(src, rs, dst, ld)
        }
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const u32) -> (__m512, __m512) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let w = _mm512_loadu_si512(p as *const __m512i);
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)),
                _mm512_castsi512_ps(_mm512_and_si512(
                    w,
                    _mm512_set1_epi32(0xFFFF_0000u32 as i32),
                )),
            )
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        // SAFETY: `self` is an `Avx512` token, so the CPU has AVX-512 F/BW/VL/DQ and FMA.
        unsafe { _mm512_reduce_max_ps(a) }
    }
}
