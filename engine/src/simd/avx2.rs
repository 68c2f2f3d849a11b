//! AVX2 + FMA: 8 lanes in `__m256`. The token, and its `impl Simd` (x86-64 only); also the
//! in-register 8x8 transpose the packing uses, shared with AVX-512.

use super::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Token proving AVX2 and FMA are available.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(());

impl Avx2 {
    pub fn detect() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Avx2(()));
        }
        None
    }
}

#[cfg(target_arch = "x86_64")]
/// The 8x8 transpose of eight registers of 8 lanes: lane j of result i is lane i of input j.
/// Unpack pairs of rows, shuffle pairs of pairs, then swap 128-bit halves. Pure data movement
/// (no arithmetic on the lanes), so it moves any 32-bit payload bit for bit (the bf16 packer
/// passes words through it).
/// # Safety
/// AVX2 available.
#[inline(always)]
pub(crate) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register-only AVX2 operations (the caller's contract).
    unsafe {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = r;
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

#[cfg(target_arch = "x86_64")]
/// The 8x8 transpose ([`transpose8`]) of ROWS (6 or 8) rows x 8 columns loaded from memory
/// (missing rows are zero). Stores exactly ROWS floats per column (6 as 4 + 2), so nothing
/// outside the block is touched.
/// # Safety
/// AVX2 available (callers hold an Avx2/Avx512 token); pointer contract as
/// `Simd::pack_transposed_x8`.
#[inline(always)]
pub(super) unsafe fn transpose_x8<const ROWS: usize>(
    src: *const f32,
    rs: usize,
    dst: *mut f32,
    ld: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let r0 = _mm256_loadu_ps(src);
        let r1 = _mm256_loadu_ps(src.add(rs));
        let r2 = _mm256_loadu_ps(src.add(2 * rs));
        let r3 = _mm256_loadu_ps(src.add(3 * rs));
        let r4 = _mm256_loadu_ps(src.add(4 * rs));
        let r5 = _mm256_loadu_ps(src.add(5 * rs));
        let (r6, r7) = if ROWS == 8 {
            (
                _mm256_loadu_ps(src.add(6 * rs)),
                _mm256_loadu_ps(src.add(7 * rs)),
            )
        } else {
            (_mm256_setzero_ps(), _mm256_setzero_ps())
        };
        let cols = transpose8([r0, r1, r2, r3, r4, r5, r6, r7]);
        for (p, c) in cols.iter().enumerate() {
            let d = dst.add(p * ld);
            if ROWS == 8 {
                _mm256_storeu_ps(d, *c);
                continue;
            }
            _mm_storeu_ps(d, _mm256_castps256_ps128(*c));
            _mm_storel_epi64(
                d.add(4) as *mut __m128i,
                _mm_castps_si128(_mm256_extractf128_ps::<1>(*c)),
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (whole impl): every method takes an `Avx2` token, which only `Avx2::detect` makes
// after checking the CPU has AVX2 and FMA; pointer methods document their own contract.
impl Simd for Avx2 {
    const ISA: Isa = Isa::Avx2;
    const LANES: usize = 8;
    type F = __m256;
    type I = __m256i;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn select_lt(self, a: __m256, b: __m256, t: __m256, f: __m256) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
    }
    #[inline(always)]
    fn round_to_i32(self, a: __m256) -> __m256i {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_cvtps_epi32(a) }
    }
    #[inline(always)]
    fn i32_to_f32(self, a: __m256i) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_cvtepi32_ps(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256i) -> __m256 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                n,
                _mm256_set1_epi32(127),
            )))
        }
    }
    #[inline(always)]
    fn sub_i32(self, n: __m256i, k: i32) -> __m256i {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe { _mm256_sub_epi32(n, _mm256_set1_epi32(k)) }
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
        unsafe { transpose_x8::<ROWS>(src, rs, dst, ld) }
    }
    #[inline(always)]
    unsafe fn load_bf16_pairs(self, p: *const u32) -> (__m256, __m256) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let w = _mm256_loadu_si256(p as *const __m256i);
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w)),
                _mm256_castsi256_ps(_mm256_and_si256(
                    w,
                    _mm256_set1_epi32(0xFFFF_0000u32 as i32),
                )),
            )
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m256) -> f32 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        // SAFETY: `self` is an `Avx2` token, so the CPU has AVX2 and FMA.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        }
    }
}
