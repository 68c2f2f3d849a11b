//! Run-time ISA dispatch and the small SIMD vocabulary every CPU kernel is written in.
//!
//! A kernel is written once, generic over [`Simd`], and instantiated three times:
//! [`Avx512`] (16 lanes), [`Avx2`] (8 lanes, with FMA) and [`Portable`] (8 lanes through the `wide`
//! crate, which compiles to whatever the build target has). [`dispatch`] picks the widest
//! instantiation the CPU supports, once per call, at run time.
//!
//! Why a token type: an `Avx2` value can only be made after `is_x86_feature_detected!` said yes,
//! so any function holding one may execute AVX2 instructions. That is what makes the `unsafe`
//! blocks inside the impls below sound.
//!
//! Why `#[inline(always)]` everywhere: the kernels only become AVX code once they are inlined into
//! the `#[target_feature]` trampolines below (`run_avx2`, `run_avx512`).
//! LLVM inlines the whole chain (kernel -> trait method -> intrinsic) into the trampoline, so the
//! loop body compiles to straight vector instructions with no calls.

use std::sync::OnceLock;

// One file per instruction set: each holds its token type and its `impl Simd`.
mod avx2;
mod avx512;
mod emu512;
mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::transpose8;
pub use avx2::Avx2;
pub use avx512::Avx512;
pub use emu512::Emu512;
pub use portable::Portable;

/// Instruction sets the engine has kernels for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// `wide`-based code, no run-time CPU requirement beyond the build target.
    Portable,
    /// AVX2 + FMA, 256-bit vectors.
    Avx2,
    /// AVX-512 F/BW/VL/DQ + FMA, 512-bit vectors.
    Avx512,
}

impl Isa {
    /// Every ISA this CPU can execute, narrowest first (always includes `Portable`). With
    /// `ENGINE_EMULATE_AVX512=1` on a CPU without AVX-512, `Avx512` is listed too and runs on
    /// [`Emu512`] (see there).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Avx2::detect().is_some() {
            v.push(Isa::Avx2);
        }
        if Avx512::detect().is_some() || emulating_avx512() {
            v.push(Isa::Avx512);
        }
        v
    }

    /// The widest ISA this CPU supports, detected once. `ENGINE_ISA=portable|avx2|avx512` in the
    /// environment caps it (used to benchmark and debug the narrower paths). Under
    /// `ENGINE_EMULATE_AVX512=1` it is `Avx512` (emulated) unless capped.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let widest = *Isa::available().last().unwrap();
            match std::env::var("ENGINE_ISA").ok().as_deref() {
                Some("portable") => Isa::Portable,
                Some("avx2") => widest.min(Isa::Avx2),
                _ => widest,
            }
        })
    }

    /// Whether the CPU also has AVX512-BF16 (`vdpbf16ps`), which the bf16 GEMM uses when present.
    pub fn has_avx512_bf16() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            Avx512::detect().is_some() && is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Whether `Isa::Avx512` runs on [`Emu512`]: `ENGINE_EMULATE_AVX512=1` and a CPU without
/// AVX-512 (a CPU that has it always runs the real thing). Read once.
pub fn emulating_avx512() -> bool {
    static EMU: OnceLock<bool> = OnceLock::new();
    *EMU.get_or_init(|| {
        std::env::var("ENGINE_EMULATE_AVX512").is_ok_and(|v| v == "1") && Avx512::detect().is_none()
    })
}

/// A kernel body written once for every [`Simd`] instantiation.
///
/// Implementations must mark `run` `#[inline(always)]`, and every closure or helper on the hot
/// path `#[inline(always)]` too (closures accept the attribute): only code inlined into the
/// `#[target_feature]` trampoline is compiled with the wider instruction set. A forgotten
/// attribute does not break results, it makes every intrinsic a function call (~50x slower):
/// the benchmarks catch it.
pub trait SimdKernel {
    type Output;
    fn run<S: Simd>(self, s: S) -> Self::Output;
}

/// Runs `k` with the instantiation for `isa`. Panics if the CPU lacks `isa` (callers pass
/// [`Isa::best()`] or an entry of [`Isa::available()`]).
#[inline]
pub fn dispatch<K: SimdKernel>(isa: Isa, k: K) -> K::Output {
    match isa {
        Isa::Portable => k.run(Portable),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let s = Avx2::detect().expect("dispatch: CPU has no AVX2+FMA");
            // SAFETY: the token exists, so the CPU has AVX2 and FMA.
            unsafe { run_avx2(s, k) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => match Avx512::detect() {
            // SAFETY: the token exists, so the CPU has AVX-512F/BW/VL/DQ and FMA.
            Some(s) => unsafe { run_avx512(s, k) },
            None if emulating_avx512() => k.run(Emu512),
            None => panic!("dispatch: CPU has no AVX-512"),
        },
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx512 if emulating_avx512() => k.run(Emu512),
        #[cfg(not(target_arch = "x86_64"))]
        _ => k.run(Portable),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: SimdKernel>(s: Avx2, k: K) -> K::Output {
    k.run(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn run_avx512<K: SimdKernel>(s: Avx512, k: K) -> K::Output {
    k.run(s)
}

/// The vector vocabulary. `F` is a vector of `LANES` f32, `I` the matching vector of i32.
///
/// Pointer methods are `unsafe`: the caller guarantees `LANES` readable/writable floats
/// (or `n` for the `_partial` forms). Everything else is safe because the token proves the ISA.
pub trait Simd: Copy + Send + Sync + 'static {
    /// Which [`Isa`] this instantiation is.
    const ISA: Isa;
    const LANES: usize;
    type F: Copy;
    type I: Copy;

    fn splat(self, x: f32) -> Self::F;
    fn zero(self) -> Self::F {
        self.splat(0.0)
    }
    /// # Safety
    /// `p` points to `LANES` readable f32 (no alignment needed).
    unsafe fn load(self, p: *const f32) -> Self::F;
    /// # Safety
    /// `p` points to `LANES` writable f32 (no alignment needed).
    unsafe fn store(self, p: *mut f32, v: Self::F);
    /// Loads `n < LANES` floats, the other lanes are `fill`.
    /// # Safety
    /// `p` points to `n` readable f32.
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize, fill: f32) -> Self::F {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let mut buf = [fill; 16];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            self.load(buf.as_ptr())
        }
    }
    /// Stores the first `n < LANES` lanes.
    /// # Safety
    /// `p` points to `n` writable f32.
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, v: Self::F, n: usize) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let mut buf = [0.0f32; 16];
            self.store(buf.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
        }
    }

    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, fused where the ISA has FMA.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// Lane-wise maximum; if `b` is NaN the result is NaN (NaNs in the data propagate).
    fn max(self, a: Self::F, b: Self::F) -> Self::F;
    /// Lane-wise minimum; if `b` is NaN the result is NaN.
    fn min(self, a: Self::F, b: Self::F) -> Self::F;
    fn abs(self, a: Self::F) -> Self::F;
    /// Lane-wise `if a < b { t } else { f }`.
    fn select_lt(self, a: Self::F, b: Self::F, t: Self::F, f: Self::F) -> Self::F;
    /// Round to nearest (ties to even) and convert to i32.
    fn round_to_i32(self, a: Self::F) -> Self::I;
    fn i32_to_f32(self, a: Self::I) -> Self::F;
    /// `2^n` for integer lanes `n` in the normal exponent range [-126, 127].
    fn pow2i(self, n: Self::I) -> Self::F;
    fn reduce_sum(self, a: Self::F) -> f32;
    fn reduce_max(self, a: Self::F) -> f32;

    /// `exp(x)`, max relative error about 2 ulp on the normal range; results that would be
    /// subnormal (x below -87.34) flush to 0; +inf above 88.72;
    /// NaN propagates. Cody-Waite range reduction `x = n ln2 + r`, then a degree-6 polynomial
    /// for `e^r` on [-ln2/2, ln2/2] (Cephes `expf` coefficients), then scale by `2^n`.
    #[inline(always)]
    fn exp(self, x: Self::F) -> Self::F {
        let lo = self.splat(-87.33654);
        let hi = self.splat(88.72283);
        let xc = self.min(hi, self.max(lo, x));
        let n = self.round_to_i32(self.mul(xc, self.splat(std::f32::consts::LOG2_E)));
        let nf = self.i32_to_f32(n);
        let r = self.fma(nf, self.splat(-0.693_359_4), xc);
        let r = self.fma(nf, self.splat(2.121_944_4e-4), r);
        let mut p = self.splat(1.987_569_1e-4);
        p = self.fma(p, r, self.splat(1.398_2e-3));
        p = self.fma(p, r, self.splat(8.333_452e-3));
        p = self.fma(p, r, self.splat(4.166_579_6e-2));
        p = self.fma(p, r, self.splat(1.666_666_5e-1));
        p = self.fma(p, r, self.splat(0.5));
        let r2 = self.mul(r, r);
        let p = self.fma(p, r2, self.add(r, self.splat(1.0)));
        // n spans [-126, 128]; 2^128 is not a float, so scale in two halves that always are:
        // n1 = floor(n / 2) (round(n/2 - 1/4) for integer n), n2 = n - n1.
        let n1 = self.round_to_i32(self.fma(nf, self.splat(0.5), self.splat(-0.25)));
        let n2 = self.round_to_i32(self.sub(nf, self.i32_to_f32(n1)));
        let y = self.mul(self.mul(p, self.pow2i(n1)), self.pow2i(n2));
        let y = self.select_lt(x, lo, self.zero(), y);
        self.select_lt(hi, x, self.splat(f32::INFINITY), y)
    }

    /// `exp(x)` for `x <= 88` (softmax's `x - max`, cross-entropy's `x - lse`, `exp(-x^2/2)`,
    /// the sigmoid in GELU), with the accuracy of [`Simd::exp`] and a shorter chain of
    /// dependent operations: `2^n` is one exponent (n <= 127: no two-step scaling) and the
    /// polynomial is evaluated by Estrin's scheme (depth 4 instead of Horner's 7). Above 88 it
    /// returns exp(88); results that would be subnormal flush to 0; NaN propagates.
    #[inline(always)]
    fn exp_fast(self, x: Self::F) -> Self::F {
        let lo = self.splat(-87.33654);
        let xc = self.min(self.splat(88.0), self.max(lo, x));
        let n = self.round_to_i32(self.mul(xc, self.splat(std::f32::consts::LOG2_E)));
        let y = self.mul(self.exp_fast_reduced(xc, self.i32_to_f32(n)), self.pow2i(n));
        self.select_lt(x, lo, self.zero(), y)
    }

    /// [`Simd::exp_fast`]'s `e^r` for `r = x - n ln2` (`n` = round(x log2 e), as a float),
    /// before the scaling by `2^n`: the Cody-Waite reduction and the polynomial, shared by
    /// the default and AVX-512's override.
    #[inline(always)]
    fn exp_fast_reduced(self, x: Self::F, n: Self::F) -> Self::F {
        let r = self.fma(n, self.splat(-0.693_359_4), x);
        let r = self.fma(n, self.splat(2.121_944_4e-4), r);
        // e^r = 1 + r + r^2 (c0 + c1 r + c2 r^2 + c3 r^3 + c4 r^4 + c5 r^5), the same Cephes
        // coefficients as `exp`, grouped as (c0 + c1 r) + r^2 (c2 + c3 r) + r^4 (c4 + c5 r).
        let r2 = self.mul(r, r);
        let r4 = self.mul(r2, r2);
        let a = self.fma(self.splat(1.666_666_5e-1), r, self.splat(0.5));
        let b = self.fma(self.splat(8.333_452e-3), r, self.splat(4.166_579_6e-2));
        let c = self.fma(self.splat(1.987_569_1e-4), r, self.splat(1.398_2e-3));
        let inner = self.fma(r4, c, self.fma(r2, b, a));
        self.fma(inner, r2, self.add(r, self.splat(1.0)))
    }

    /// `n - k` on integer lanes.
    fn sub_i32(self, n: Self::I, k: i32) -> Self::I;

    /// Loads `LANES` 32-bit words, each a pair of bf16 (low half first), and widens them to
    /// two f32 vectors: (low halves, high halves). The bf16 GEMM's emulation of `vdpbf16ps`.
    /// # Safety
    /// `p` points to `LANES` readable u32.
    unsafe fn load_bf16_pairs(self, p: *const u32) -> (Self::F, Self::F);

    /// GEMM packing helper: copies a `ROWS`-row x 8-column block (rows `rs` apart, columns
    /// contiguous; ROWS is 6 or 8) transposed, column p going to `dst[p*ld .. p*ld + ROWS]`.
    /// Scalar by default; x86 overrides it with an in-register 8x8 transpose.
    /// # Safety
    /// The ROWS x 8 source block is readable; `dst[p*ld + i]` for p < 8, i < ROWS is writable.
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
            for p in 0..8 {
                for i in 0..ROWS {
                    *dst.add(p * ld + i) = *src.add(i * rs + p);
                }
            }
        }
    }

    /// `erf(x)` as `z P(z^2) / Q(z^2)`, z = x clamped to [-4, 4] (erf(4) rounds to 1 in f32),
    /// P and Q of degree 5 fitted for this kernel by `scripts/fit/erf_rational.py` (minimax
    /// absolute error 2.6e-8 in exact arithmetic, 3e-7 as evaluated here in f32); the result is
    /// clamped to [-1, 1] and exactly +-1 from |x| = 4 on; NaN propagates.
    ///
    /// Why this form: Abramowitz & Stegun 7.1.26 (a division, a polynomial and an `exp`, the
    /// formula this replaced) is one chain of about 45 dependent operations; the FP scheduler
    /// holds only a couple of such chains in flight, so GELU ran at about 32 cycles per vector.
    /// Here P and Q are two independent Horner chains of 5 FMAs, then one division: about 40
    /// cycles deep and 17 operations, and GELU got about twice as fast.
    #[inline(always)]
    fn erf(self, x: Self::F) -> Self::F {
        const P: [f32; 6] = [
            std::f32::consts::FRAC_2_SQRT_PI, // the fit's 1.128_379 (erf'(0) = 2 / sqrt pi)
            0.196_876_62,
            0.053_547_516,
            0.004_029_814,
            0.000_288_515,
            1.968_495_8e-6,
        ];
        const Q: [f32; 6] = [
            1.0,
            0.507_808_3,
            0.116_733_33,
            0.015_496_763,
            0.001_222_497_7,
            3.744e-5,
        ];
        let (lo, hi) = (self.splat(-1.0), self.splat(1.0));
        // `max(lo, x)` returns x when x is NaN (NaN in the second operand wins).
        let z = self.min(self.splat(4.0), self.max(self.splat(-4.0), x));
        let t = self.mul(z, z);
        let (mut p, mut q) = (self.splat(P[5]), self.splat(Q[5]));
        for k in (0..5).rev() {
            p = self.fma(p, t, self.splat(P[k]));
            q = self.fma(q, t, self.splat(Q[k]));
        }
        let y = self.min(hi, self.max(lo, self.div(self.mul(z, p), q)));
        // From |x| = 4 on, exactly +-1 (z / 4): what f32 erf is there, so that GELU's
        // `1 + erf` is exactly 0 far out on the negative side. NaN fails the test: z / 4 = NaN.
        self.select_lt(
            self.abs(x),
            self.splat(4.0),
            y,
            self.mul(z, self.splat(0.25)),
        )
    }

    /// `tanh(x)` as `sign(x) (1 - e) / (1 + e)`, `e = exp(-2|x|)`; absolute error below 1e-7.
    #[inline(always)]
    fn tanh(self, x: Self::F) -> Self::F {
        let one = self.splat(1.0);
        let e = self.exp_fast(self.mul(self.splat(-2.0), self.abs(x)));
        let y = self.div(self.sub(one, e), self.add(one, e));
        self.select_lt(x, self.zero(), self.sub(self.zero(), y), y)
    }
}

/// Applies `f` to a slice `LANES` floats at a time with a masked tail: the shape of every
/// elementwise kernel. `f` maps one vector to one vector.
#[inline(always)]
pub fn map_inplace<S: Simd>(s: S, x: &mut [f32], f: impl Fn(S::F) -> S::F) {
    let n = x.len();
    let l = S::LANES;
    let p = x.as_mut_ptr();
    let mut i = 0;
    // SAFETY: i + l <= n inside the loop, and the tail touches n - i < l floats.
    unsafe {
        while i + l <= n {
            s.store(p.add(i), f(s.load(p.add(i))));
            i += l;
        }
        if i < n {
            let v = s.load_partial(p.add(i), n - i, 0.0);
            s.store_partial(p.add(i), f(v), n - i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ExpErf<'a>(&'a [f32]);
    impl SimdKernel for ExpErf<'_> {
        type Output = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
        #[inline(always)]
        fn run<S: Simd>(self, s: S) -> Self::Output {
            let mut e = self.0.to_vec();
            map_inplace(
                s,
                &mut e,
                #[inline(always)]
                |v| s.exp(v),
            );
            let mut r = self.0.to_vec();
            map_inplace(
                s,
                &mut r,
                #[inline(always)]
                |v| s.erf(v),
            );
            let mut t = self.0.to_vec();
            map_inplace(
                s,
                &mut t,
                #[inline(always)]
                |v| s.tanh(v),
            );
            let mut n = self.0.to_vec();
            map_inplace(
                s,
                &mut n,
                #[inline(always)]
                |v| s.exp_fast(v),
            );
            (e, r, t, n)
        }
    }

    /// `exp_fast`'s algorithm in scalar f32 with fused `mul_add` (correctly rounded on any
    /// CPU): the bit-exact model of the vector versions that have FMA.
    fn exp_fast_model(x: f32) -> f32 {
        if x.is_nan() {
            return x;
        }
        let lo = -87.33654f32;
        let xc = x.clamp(lo, 88.0);
        let nf = (xc * std::f32::consts::LOG2_E).round_ties_even();
        let r = nf.mul_add(-0.693_359_4, xc);
        let r = nf.mul_add(2.121_944_4e-4, r);
        let r2 = r * r;
        let r4 = r2 * r2;
        let a = 1.666_666_5e-1f32.mul_add(r, 0.5);
        let b = 8.333_452e-3f32.mul_add(r, 4.166_579_6e-2);
        let c = 1.987_569_1e-4f32.mul_add(r, 1.398_2e-3);
        let inner = r4.mul_add(c, r2.mul_add(b, a));
        let p = inner.mul_add(r2, r + 1.0);
        let y = p * 2f32.powi(nf as i32);
        if x < lo {
            0.0
        } else {
            y
        }
    }

    /// AVX-512 overrides `exp_fast` (vscalefps); AVX2 runs the trait's default. Both must give
    /// the scalar model's results bit for bit over the whole input range, the clamps, the
    /// subnormal edge and NaN. (The portable path is left out: `wide`'s `mul_add` is not fused
    /// on a CPU without FMA, and the other tests bound its error.)
    #[test]
    fn exp_fast_is_bit_identical_to_its_model_on_every_fma_isa() {
        let xs: Vec<f32> = (-2_000_000..=2_000_000)
            .map(|i| i as f32 * 4.5e-5)
            .chain([
                -1e4,
                -87.34,
                -87.33654,
                -87.3,
                87.9,
                88.0,
                88.5,
                1e4,
                f32::NAN,
            ])
            .chain([f32::NEG_INFINITY, f32::INFINITY, 0.0, -0.0])
            .collect();
        let want: Vec<f32> = xs.iter().map(|&x| exp_fast_model(x)).collect();
        for isa in Isa::available() {
            if isa == Isa::Portable {
                continue;
            }
            let got = dispatch(isa, ExpErf(&xs)).3;
            for ((x, p), q) in xs.iter().zip(&got).zip(&want) {
                assert!(
                    p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                    "exp_fast({x}): {isa:?} {p:e}, model {q:e}"
                );
            }
        }
    }

    #[test]
    fn exp_erf_tanh_match_f64_on_every_isa() {
        let xs: Vec<f32> = (-20000..=20000)
            .map(|i| i as f32 * 0.0047)
            .chain([
                -1e4,
                -100.0,
                -87.5,
                88.0,
                88.7,
                89.0,
                1e4,
                0.0,
                -0.0,
                f32::NEG_INFINITY,
                f32::INFINITY,
            ])
            .collect();
        for isa in Isa::available() {
            let (e, r, t, n) = dispatch(isa, ExpErf(&xs));
            for (i, &x) in xs.iter().enumerate() {
                if x <= 88.0 {
                    let (want, got) = ((x as f64).exp(), n[i] as f64);
                    if want < f32::MIN_POSITIVE as f64 {
                        assert!(
                            got.abs() <= f32::MIN_POSITIVE as f64,
                            "{isa:?} exp_fast({x})"
                        );
                    } else {
                        assert!(
                            ((got - want) / want).abs() < 4e-7,
                            "{isa:?} exp_fast({x}) = {got}, want {want}"
                        );
                    }
                }
                let want = (x as f64).exp();
                let got = e[i] as f64;
                if want < f32::MIN_POSITIVE as f64 {
                    // Results in the subnormal range are flushed to zero (see `exp`).
                    assert!(
                        got.abs() <= f32::MIN_POSITIVE as f64,
                        "{isa:?} exp({x}) = {got}"
                    );
                } else if want > f32::MAX as f64 {
                    assert_eq!(got, f64::INFINITY, "{isa:?} exp({x})");
                } else {
                    assert!(
                        ((got - want) / want).abs() < 4e-7,
                        "{isa:?} exp({x}) = {got}, want {want}"
                    );
                }
                let want = erf_f64(x as f64);
                assert!(
                    (r[i] as f64 - want).abs() < 4.5e-7,
                    "{isa:?} erf({x}) = {}, want {want}",
                    r[i]
                );
                let want = (x as f64).tanh();
                assert!(
                    (t[i] as f64 - want).abs() < 3e-7,
                    "{isa:?} tanh({x}) = {}, want {want}",
                    t[i]
                );
            }
            let (e, r, t, n) = dispatch(isa, ExpErf(&[f32::NAN; 3]));
            for (f, v) in [("exp", e), ("erf", r), ("tanh", t), ("exp_fast", n)] {
                assert!(
                    v.iter().all(|v| v.is_nan()),
                    "{isa:?}: {f}(NaN) must be NaN"
                );
            }
        }
    }

    /// The software AVX-512 stand-in is two portable halves: lane for lane it must give what
    /// `Portable` gives, on lengths that leave every tail size of 16 lanes (and of 8).
    #[test]
    fn emu512_matches_portable_lane_for_lane() {
        for n in [1usize, 7, 8, 9, 15, 16, 17, 31, 33, 100] {
            let xs: Vec<f32> = (0..n).map(|i| (i as f32 - 40.0) * 0.37).collect();
            let p = ExpErf(&xs).run(Portable);
            let e = ExpErf(&xs).run(Emu512);
            assert_eq!(p, e, "n = {n}");
        }
        let v: Vec<f32> = (0..16).map(|i| (i as f32 * 1.7).sin()).collect();
        // SAFETY: v holds 16 floats.
        let (s16, m16) = unsafe {
            let x = Emu512.load(v.as_ptr());
            (Emu512.reduce_sum(x), Emu512.reduce_max(x))
        };
        assert!((s16 - v.iter().sum::<f32>()).abs() < 1e-5);
        assert_eq!(m16, v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        let w: Vec<u32> = (0..16u32).map(|i| (i + 1) << 16 | (i + 100)).collect();
        // SAFETY: w holds 16 words.
        let (lo, hi) = unsafe { Emu512.load_bf16_pairs(w.as_ptr()) };
        let (mut l, mut h) = ([0f32; 16], [0f32; 16]);
        // SAFETY: l and h hold 16 floats.
        unsafe {
            Emu512.store(l.as_mut_ptr(), lo);
            Emu512.store(h.as_mut_ptr(), hi);
        }
        for i in 0..16 {
            assert_eq!(l[i].to_bits(), (w[i] & 0xFFFF) << 16);
            assert_eq!(h[i].to_bits(), w[i] & 0xFFFF_0000);
        }
    }

    /// erf in f64 by its Taylor series (small |x|) or continued fraction for erfc (large |x|).
    pub(crate) fn erf_f64(x: f64) -> f64 {
        crate::reference::erf(x)
    }
}
