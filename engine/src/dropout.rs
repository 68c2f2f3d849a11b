//! Dropout with a counter-based mask: element i of a call with seed s is kept when
//! `hash(s, i) >= p * 2^24`, so the mask is a pure function of (seed, index). The backward pass
//! regenerates it instead of storing it, and a GPU kernel can produce the same mask.

/// SplitMix64's constants: the index step (golden ratio) and the finaliser's two multipliers.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const C1: u64 = 0xBF58_476D_1CE4_E5B9;
const C2: u64 = 0x94D0_49BB_1331_11EB;

/// SplitMix64's finaliser on (seed, index): a fixed, well-mixed 64-bit hash.
#[inline(always)]
pub fn hash(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(C1);
    z = (z ^ (z >> 27)).wrapping_mul(C2);
    z ^ (z >> 31)
}

/// Whether element `i` survives dropout with probability `p` of being dropped.
#[inline(always)]
pub fn keep(seed: u64, i: u64, p: f32) -> bool {
    ((hash(seed, i) >> 40) as f32) >= p * (1u64 << 24) as f32
}

/// `x[i] = keep(i) ? x[i] / (1 - p) : 0` in place. The same call on a gradient is the backward.
pub fn dropout_inplace(x: &mut [f32], p: f32, seed: u64) {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout: p must be in [0, 1), got {p}"
    );
    if p == 0.0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    let apply = |(c, chunk): (usize, &mut [f32])| apply(chunk, (c * 4096) as u64, seed, p, scale);
    use rayon::prelude::*;
    if x.len() >= crate::rows::PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        x.par_chunks_mut(4096).enumerate().for_each(apply);
    } else {
        x.chunks_mut(4096).enumerate().for_each(apply);
    }
}

/// `x[j] = keep(seed, base + j) ? x[j] * scale : 0` on the widest path this CPU has: AVX-512
/// (F and DQ, eight 64-bit hashes per multiply), AVX2, or [`apply_scalar`]; all bit-identical.
pub fn apply(x: &mut [f32], base: u64, seed: u64, p: f32, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // SAFETY: AVX512F and AVX512DQ were detected at run time.
            unsafe { avx512::apply(x, base, seed, p, scale) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected at run time.
            unsafe { avx2::apply(x, base, seed, p, scale) };
            return;
        }
    }
    apply_scalar(x, base, seed, p, scale);
}

/// `dst[j] = keep(seed, base + j) ? src[j] * scale : 0`: [`apply`] reading another buffer,
/// one pass instead of a copy and a pass on the AVX-512 path. Panics if the lengths differ.
pub fn apply_from(dst: &mut [f32], src: &[f32], base: u64, seed: u64, p: f32, scale: f32) {
    assert_eq!(
        dst.len(),
        src.len(),
        "dropout: source and destination lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX512F and AVX512DQ were detected at run time; both slices hold len values
        // and are distinct borrows.
        unsafe {
            avx512::run::<false>(
                src.as_ptr(),
                dst.as_mut_ptr(),
                std::ptr::null_mut(),
                dst.len(),
                base,
                seed,
                p,
                scale,
            )
        };
        return;
    }
    dst.copy_from_slice(src);
    apply(dst, base, seed, p, scale);
}

/// [`apply_from`] into `dst` and [`apply`] on `g`, with one mask for both:
/// `keep(seed, base + j) ? (src[j] * scale, g[j] * scale) : (0, 0)`. The attention backward drops
/// out the saved probabilities and their gradient with the same mask; on the AVX-512 path each
/// hash is computed once for the two. Panics if the lengths differ.
pub fn apply_pair(
    dst: &mut [f32],
    src: &[f32],
    g: &mut [f32],
    base: u64,
    seed: u64,
    p: f32,
    scale: f32,
) {
    assert!(
        dst.len() == src.len() && g.len() == src.len(),
        "dropout: the pair's lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: AVX512F and AVX512DQ were detected at run time; the three slices hold len
        // values, and dst and g are distinct mutable borrows, src a shared one.
        unsafe {
            avx512::run::<true>(
                src.as_ptr(),
                dst.as_mut_ptr(),
                g.as_mut_ptr(),
                dst.len(),
                base,
                seed,
                p,
                scale,
            )
        };
        return;
    }
    apply_from(dst, src, base, seed, p, scale);
    apply(g, base, seed, p, scale);
}

/// `x[j] = keep(seed, base + j) ? x[j] * scale : 0`, one element at a time.
pub fn apply_scalar(x: &mut [f32], base: u64, seed: u64, p: f32, scale: f32) {
    for (j, v) in x.iter_mut().enumerate() {
        *v = if keep(seed, base + j as u64, p) {
            *v * scale
        } else {
            0.0
        };
    }
}

/// The same mask four elements at a time: SplitMix64 in 64-bit lanes, its multiplies built from
/// AVX2's 32 x 32 -> 64-bit `vpmuludq` (AVX2 has no 64-bit multiply). Bit for bit the scalar
/// result (and the GPU's): the same integer arithmetic, then the same f32 compare.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::{C1, C2, GOLDEN};

    /// Low 64 bits of a * c in each lane.
    #[inline(always)]
    unsafe fn mul64(a: __m256i, c: u64) -> __m256i {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let (lo, hi) = (
                _mm256_set1_epi64x(c as i64),
                _mm256_set1_epi64x((c >> 32) as i64),
            );
            let ll = _mm256_mul_epu32(a, lo);
            let cross = _mm256_add_epi64(
                _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), lo),
                _mm256_mul_epu32(a, hi),
            );
            _mm256_add_epi64(ll, _mm256_slli_epi64::<32>(cross))
        }
    }

    /// The top 24 bits of SplitMix64(seed, i) for the four indices whose i * GOLDEN is `ig`,
    /// as f32.
    #[inline(always)]
    unsafe fn bits24(seed: __m256i, ig: __m256i) -> __m128 {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let mut z = _mm256_xor_si256(seed, ig);
            z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64::<30>(z)), C1);
            z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64::<27>(z)), C2);
            z = _mm256_xor_si256(z, _mm256_srli_epi64::<31>(z));
            let top = _mm256_srli_epi64::<40>(z);
            // The four values fit in 32 bits: gather the low halves, convert exactly.
            let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0);
            let packed = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(top, idx));
            _mm_cvtepi32_ps(packed)
        }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn apply(x: &mut [f32], base: u64, seed: u64, p: f32, scale: f32) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let threshold = _mm_set1_ps(p * (1u64 << 24) as f32);
            let vscale = _mm_set1_ps(scale);
            let vseed = _mm256_set1_epi64x(seed as i64);
            let g = |j: u64| (base + j).wrapping_mul(GOLDEN) as i64;
            let mut ig = _mm256_setr_epi64x(g(0), g(1), g(2), g(3));
            let step = _mm256_set1_epi64x(4u64.wrapping_mul(GOLDEN) as i64);
            let n4 = x.len() / 4 * 4;
            let ptr = x.as_mut_ptr();
            let mut j = 0;
            while j < n4 {
                let keep = _mm_cmpge_ps(bits24(vseed, ig), threshold);
                let v = _mm_loadu_ps(ptr.add(j));
                _mm_storeu_ps(ptr.add(j), _mm_and_ps(keep, _mm_mul_ps(v, vscale)));
                ig = _mm256_add_epi64(ig, step);
                j += 4;
            }
            super::apply_scalar(&mut x[n4..], base + n4 as u64, seed, p, scale);
        }
    }
}

/// The same mask sixteen elements at a time: two vectors of eight 64-bit SplitMix64 lanes with
/// AVX512DQ's 64-bit multiply (`vpmullq`), the top 24 bits narrowed to one vector of 16 f32 and
/// compared into a mask. Bit for bit the scalar result, as the AVX2 path.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{C1, C2, GOLDEN};

    /// Whether this CPU runs [`apply`] (AVX512F and AVX512DQ).
    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }

    /// The top 24 bits of SplitMix64(seed, i) for the eight indices whose i * GOLDEN is `ig`.
    #[inline(always)]
    unsafe fn bits24(seed: __m512i, ig: __m512i) -> __m256i {
        // SAFETY: the caller upholds this function's safety contract (AVX512F and DQ).
        unsafe {
            let mut z = _mm512_xor_si512(seed, ig);
            z = _mm512_xor_si512(z, _mm512_srli_epi64::<30>(z));
            z = _mm512_mullo_epi64(z, _mm512_set1_epi64(C1 as i64));
            z = _mm512_xor_si512(z, _mm512_srli_epi64::<27>(z));
            z = _mm512_mullo_epi64(z, _mm512_set1_epi64(C2 as i64));
            z = _mm512_xor_si512(z, _mm512_srli_epi64::<31>(z));
            // Each lane's top 24 bits fit in 32: narrow the lanes, convert exactly later.
            _mm512_cvtepi64_epi32(_mm512_srli_epi64::<40>(z))
        }
    }

    /// # Safety
    /// The CPU must support AVX512F and AVX512DQ ([`available`]).
    pub unsafe fn apply(x: &mut [f32], base: u64, seed: u64, p: f32, scale: f32) {
        let ptr = x.as_mut_ptr();
        // SAFETY: forwarded; in place (source and destination the same n values).
        unsafe {
            run::<false>(
                ptr,
                ptr,
                std::ptr::null_mut(),
                x.len(),
                base,
                seed,
                p,
                scale,
            )
        }
    }

    /// `dst[j] = keep(seed, base + j) ? src[j] * scale : 0` for j < n; with `PAIR`, also
    /// `other[j] = keep(seed, base + j) ? other[j] * scale : 0` under the same mask (`other`
    /// unused without).
    ///
    /// # Safety
    /// The CPU must support AVX512F and AVX512DQ; `src` and `dst` are valid for n values and
    /// are either the same buffer or do not overlap; with `PAIR`, `other` is valid for n values
    /// and overlaps neither.
    #[target_feature(enable = "avx512f,avx512dq")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn run<const PAIR: bool>(
        src: *const f32,
        dst: *mut f32,
        other: *mut f32,
        n: usize,
        base: u64,
        seed: u64,
        p: f32,
        scale: f32,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let threshold = _mm512_set1_ps(p * (1u64 << 24) as f32);
            let vscale = _mm512_set1_ps(scale);
            let vseed = _mm512_set1_epi64(seed as i64);
            let g = |j: u64| (base + j).wrapping_mul(GOLDEN) as i64;
            let mut lo = _mm512_setr_epi64(g(0), g(1), g(2), g(3), g(4), g(5), g(6), g(7));
            let mut hi = _mm512_setr_epi64(g(8), g(9), g(10), g(11), g(12), g(13), g(14), g(15));
            let step = _mm512_set1_epi64(16u64.wrapping_mul(GOLDEN) as i64);
            let n16 = n / 16 * 16;
            let mut j = 0;
            while j < n16 {
                let bits = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(bits24(vseed, lo)),
                    bits24(vseed, hi),
                );
                let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_cvtepi32_ps(bits), threshold);
                let v = _mm512_loadu_ps(src.add(j));
                _mm512_storeu_ps(dst.add(j), _mm512_maskz_mul_ps(keep, v, vscale));
                if PAIR {
                    let w = _mm512_loadu_ps(other.add(j));
                    _mm512_storeu_ps(other.add(j), _mm512_maskz_mul_ps(keep, w, vscale));
                }
                lo = _mm512_add_epi64(lo, step);
                hi = _mm512_add_epi64(hi, step);
                j += 16;
            }
            for j in n16..n {
                let k = super::keep(seed, base + j as u64, p);
                let x = *src.add(j);
                *dst.add(j) = if k { x * scale } else { 0.0 };
                if PAIR {
                    *other.add(j) = if k { *other.add(j) * scale } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vector_mask_is_the_scalar_mask_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut r = crate::rng::SplitMix64::new(7);
            for (n, base, p) in [
                (1usize, 0u64, 0.1f32),
                (7, 5, 0.5),
                (4096, 4096 * 9, 0.1),
                (1003, 1 << 40, 0.9),
                (4111, 1 << 50, 0.25),
                (16, 3, 0.5),
                (33, 17, 0.5),
            ] {
                let x: Vec<f32> = (0..n).map(|_| r.next_normal()).collect();
                let seed = r.next_u64();
                let (mut a, mut b) = (x.clone(), x.clone());
                super::apply_scalar(&mut a, base, seed, p, 1.0 / (1.0 - p));
                // SAFETY: AVX2 detected above.
                unsafe { super::avx2::apply(&mut b, base, seed, p, 1.0 / (1.0 - p)) };
                let same = a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "avx2: n={n} base={base} p={p}");
                if super::avx512::available() {
                    let mut c = x.clone();
                    // SAFETY: AVX512F and DQ detected.
                    unsafe { super::avx512::apply(&mut c, base, seed, p, 1.0 / (1.0 - p)) };
                    let same = a.iter().zip(&c).all(|(u, v)| u.to_bits() == v.to_bits());
                    assert!(same, "avx512: n={n} base={base} p={p}");
                }
                let mut d = vec![f32::NAN; n];
                super::apply_from(&mut d, &x, base, seed, p, 1.0 / (1.0 - p));
                let same = a.iter().zip(&d).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "apply_from: n={n} base={base} p={p}");
                // The pair: the first output as apply_from, the second as apply on its own.
                let y: Vec<f32> = (0..n).map(|_| r.next_normal()).collect();
                let mut ya = y.clone();
                super::apply_scalar(&mut ya, base, seed, p, 1.0 / (1.0 - p));
                let (mut e, mut yb) = (vec![f32::NAN; n], y.clone());
                super::apply_pair(&mut e, &x, &mut yb, base, seed, p, 1.0 / (1.0 - p));
                let same = a.iter().zip(&e).all(|(u, v)| u.to_bits() == v.to_bits())
                    && ya.iter().zip(&yb).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "apply_pair: n={n} base={base} p={p}");
                let kept = a.iter().filter(|v| **v != 0.0).count() as f64 / n as f64;
                assert!(
                    n < 1000 || (kept - (1.0 - p) as f64).abs() < 0.05,
                    "kept {kept}"
                );
            }
        }
    }
}
