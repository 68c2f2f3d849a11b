//! bf16 GEMM with f32 accumulation: `C = alpha * bf16(A) bf16(B) + beta * C`.
//!
//! The f32 GEMM's driver and threading (`driver.rs`), with a bf16 [`Tile`]: what changes is the
//! packed element. Packing
//! rounds each operand to bf16 (round to nearest even) and stores k in pairs, one u32 word per
//! (row or column, k-pair): `word = bf16(x[k]) | bf16(x[k+1]) << 16`, odd k zero-padded.
//! That is exactly the operand layout of AVX512-BF16's `vdpbf16ps`, which computes per f32 lane
//! `acc += a.lo * b.lo + a.hi * b.hi`: 32 multiply-adds per instruction, twice f32 FMA.
//!
//! Microkernels:
//! - native (`avx512bf16`): 12 x 32 tile, one `vdpbf16ps` per (row, vector) per k-pair.
//! - emulated (any [`Simd`]): widen each pair to two f32 vectors (a shift and a mask) and do
//!   two FMAs. Slower than f32 GEMM, but it runs the same packing and driver everywhere, so
//!   those are tested on machines without AVX512-BF16, and results agree with the native path
//!   up to f32 summation order.
//!
//! Error against f32 GEMM: each operand carries a relative rounding error of at most 2^-9, so
//! a dot product of length k has a typical relative error of about 2^-9 / sqrt-ish of the
//! cancellation; the tests bound it and `benches` reports it.

use super::driver::{blocked, scale_c, with_buffers, Job, Tile};
use super::memory::prefetch;
use super::microkernel::{tile, with_tile, WithTile};
use super::{run_checked, Blocking, GemmError, MatMut, MatRef};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};
use half::bf16;

/// How the bf16 GEMM will run here: `"native"` (vdpbf16ps) or `"emulated"`.
pub fn bf16_mode(isa: Isa) -> &'static str {
    if isa == Isa::Avx512 && Isa::has_avx512_bf16() {
        "native"
    } else {
        "emulated"
    }
}

/// Rounds an f32 to bf16 bits (round to nearest even; NaN stays NaN).
#[inline(always)]
fn to_bf16_bits(x: f32) -> u32 {
    bf16::from_f32(x).to_bits() as u32
}

/// bf16 GEMM on all threads of the current rayon pool. Same contract as [`super::gemm`].
pub fn gemm_bf16(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Result<(), GemmError> {
    gemm_bf16_with(
        Isa::best(),
        rayon::current_num_threads(),
        alpha,
        a,
        b,
        beta,
        c,
    )
}

/// [`gemm_bf16`] with an explicit ISA and thread count.
pub fn gemm_bf16_with(
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    run_checked(
        isa,
        threads,
        alpha,
        a,
        b,
        beta,
        c,
        tile(isa),
        run_serial_bf16,
    )
}

/// The blocking, in k (KC = 512 is 256 pairs: the same L1 footprint as an f32 KC of 256).
const BLOCKING: Blocking = Blocking {
    kc: 512,
    mc: 240,
    nc: 3072,
};

unsafe fn run_serial_bf16(isa: Isa, job: Job) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        if job.k == 0 {
            scale_c(job, job.beta);
            return;
        }
        struct K<'a> {
            job: Job,
            ap: &'a mut [u32],
            bp: &'a mut [u32],
        }
        impl SimdKernel for K<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                with_tile(s, self)
            }
        }
        impl WithTile for K<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S) {
                // SAFETY: forwarded from run_serial_bf16's contract.
                unsafe {
                    blocked(
                        Emulated::<S, MR, NV>(s),
                        self.job,
                        BLOCKING,
                        self.ap,
                        self.bp,
                    )
                }
            }
        }
        with_buffers(
            &job,
            BLOCKING,
            tile(isa),
            2,
            |ap: &mut [u32], bp: &mut [u32]| {
                if bf16_mode(isa) == "native" {
                    #[cfg(target_arch = "x86_64")]
                    blocked(Native, job, BLOCKING, ap, bp);
                } else {
                    dispatch(isa, K { job, ap, bp });
                }
            },
        )
    }
}

/// `vdpbf16ps`, 12 x 32 (AVX-512's f32 tile shape).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Native;

#[cfg(target_arch = "x86_64")]
impl Tile for Native {
    type P = u32;
    const MR: usize = 12;
    const NR: usize = 32;
    const K_PER: usize = 2;
    #[inline(always)]
    unsafe fn pack_a(
        self,
        dst: &mut [u32],
        a: *const f32,
        rs: usize,
        cs: usize,
        mc: usize,
        kc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_pairs_a(dst, a, rs, cs, mc, kc, Self::MR) }
    }
    #[inline(always)]
    unsafe fn pack_b(
        self,
        dst: &mut [u32],
        b: *const f32,
        rs: usize,
        cs: usize,
        kc: usize,
        nc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_pairs_b(dst, b, rs, cs, kc, nc, Self::NR) }
    }
    #[inline(always)]
    unsafe fn tile(
        self,
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        alpha: f32,
        beta: f32,
        mr_eff: usize,
        nr_eff: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { native::kernel(kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff) }
    }
}

/// Pairs widened to f32 and two FMAs, on any [`Simd`]; MR x (NV * LANES), the f32 tile's shape.
#[derive(Clone, Copy)]
struct Emulated<S, const MR: usize, const NV: usize>(S);

impl<S: Simd, const MR: usize, const NV: usize> Tile for Emulated<S, MR, NV> {
    type P = u32;
    const MR: usize = MR;
    const NR: usize = NV * S::LANES;
    const K_PER: usize = 2;
    #[inline(always)]
    unsafe fn pack_a(
        self,
        dst: &mut [u32],
        a: *const f32,
        rs: usize,
        cs: usize,
        mc: usize,
        kc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_pairs_a(dst, a, rs, cs, mc, kc, MR) }
    }
    #[inline(always)]
    unsafe fn pack_b(
        self,
        dst: &mut [u32],
        b: *const f32,
        rs: usize,
        cs: usize,
        kc: usize,
        nc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_pairs_b(dst, b, rs, cs, kc, nc, Self::NR) }
    }
    #[inline(always)]
    unsafe fn tile(
        self,
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        alpha: f32,
        beta: f32,
        mr_eff: usize,
        nr_eff: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            emulated_kernel::<S, MR, NV>(self.0, kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff)
        }
    }
}

/// Packs B[0..kc, 0..nc] into slivers of `nr` columns of pair-words:
/// `dst[s*kp*nr + q*nr + j] = pair(B[2q, s*nr+j], B[2q+1, s*nr+j])`, zero-padded.
unsafe fn pack_pairs_b(
    dst: &mut [u32],
    b: *const f32,
    rs: usize,
    cs: usize,
    kc: usize,
    nc: usize,
    nr: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let kp = kc.div_ceil(2);
        for (si, j0) in (0..nc).step_by(nr).enumerate() {
            let sl = &mut dst[si * kp * nr..(si + 1) * kp * nr];
            for q in 0..kp {
                for j in 0..nr {
                    let col = j0 + j;
                    let w = if col < nc {
                        let lo = to_bf16_bits(*b.add(2 * q * rs + col * cs));
                        let hi = if 2 * q + 1 < kc {
                            to_bf16_bits(*b.add((2 * q + 1) * rs + col * cs))
                        } else {
                            0
                        };
                        lo | hi << 16
                    } else {
                        0
                    };
                    sl[q * nr + j] = w;
                }
            }
        }
    }
}

/// Packs A[0..mc, 0..kc] into slivers of `mr` rows of pair-words:
/// `dst[s*kp*mr + q*mr + i] = pair(A[s*mr+i, 2q], A[s*mr+i, 2q+1])`, zero-padded.
unsafe fn pack_pairs_a(
    dst: &mut [u32],
    a: *const f32,
    rs: usize,
    cs: usize,
    mc: usize,
    kc: usize,
    mr: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let kp = kc.div_ceil(2);
        for (si, i0) in (0..mc).step_by(mr).enumerate() {
            let sl = &mut dst[si * kp * mr..(si + 1) * kp * mr];
            for i in 0..mr {
                let row = i0 + i;
                for q in 0..kp {
                    sl[q * mr + i] = if row < mc {
                        let lo = to_bf16_bits(*a.add(row * rs + 2 * q * cs));
                        let hi = if 2 * q + 1 < kc {
                            to_bf16_bits(*a.add(row * rs + (2 * q + 1) * cs))
                        } else {
                            0
                        };
                        lo | hi << 16
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Writes an accumulated tile to C: `C = alpha * tile + beta * C` (C not read when beta == 0).
#[inline(always)]
unsafe fn store_tile(
    tile: &[f32],
    nr: usize,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    alpha: f32,
    beta: f32,
    mr_eff: usize,
    nr_eff: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        for i in 0..mr_eff {
            for j in 0..nr_eff {
                let p = c.add(i * rsc + j * csc);
                let t = alpha * tile[i * nr + j];
                *p = if beta == 0.0 { t } else { beta * *p + t };
            }
        }
    }
}

#[inline(always)]
unsafe fn emulated_kernel<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    alpha: f32,
    beta: f32,
    mr_eff: usize,
    nr_eff: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let l = S::LANES;
        let nr = NV * l;
        for i in 0..mr_eff {
            prefetch(c.add(i * rsc));
        }
        let mut acc = [[s.zero(); NV]; MR];
        for q in 0..kp {
            let mut lo = [s.zero(); NV];
            let mut hi = [s.zero(); NV];
            for v in 0..NV {
                (lo[v], hi[v]) = s.load_bf16_pairs(b.add(q * nr + v * l));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let w = *a.add(q * MR + i);
                let (alo, ahi) = (
                    s.splat(f32::from_bits(w << 16)),
                    s.splat(f32::from_bits(w & 0xFFFF_0000)),
                );
                for v in 0..NV {
                    row[v] = s.fma(ahi, hi[v], s.fma(alo, lo[v], row[v]));
                }
            }
        }
        let mut tmp = [0.0f32; 12 * 32];
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                s.store(tmp.as_mut_ptr().add(i * nr + v * l), x);
            }
        }
        store_tile(&tmp, nr, c, rsc, csc, alpha, beta, mr_eff, nr_eff);
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use std::arch::x86_64::*;

    /// 12 x 32 tile with `vdpbf16ps`: per k-pair, 2 loads of B pair-words (32 columns),
    /// 12 broadcasts of A pair-words, 24 dot-product-accumulates.
    ///
    /// # Safety
    /// The CPU has AVX512F and AVX512-BF16 (checked by `bf16_mode`); `a` holds kp*12 words,
    /// `b` kp*32 words; C addresses as in the f32 microkernel.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn kernel(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        alpha: f32,
        beta: f32,
        mr_eff: usize,
        nr_eff: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; 12];
            for q in 0..kp {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(q * 32) as *const __m512i));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(q * 32 + 16) as *const __m512i));
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(q * 12 + i) as i32));
                    row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
                }
            }
            let mut tmp = [0.0f32; 12 * 32];
            for (i, row) in acc.iter().enumerate() {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * 32), row[0]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * 32 + 16), row[1]);
            }
            super::store_tile(&tmp, 32, c, rsc, csc, alpha, beta, mr_eff, nr_eff);
        }
    }
}
