//! bf16 GEMM with f32 accumulation: `C = alpha * bf16(A) bf16(B) + beta * C`.
//!
//! Same blocking and threading as `gemm.rs`; what changes is the packed element. Packing
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

use crate::gemm::{prefetch, run_checked, AlignedBuf, GemmError, Job, MatMut, MatRef};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};
use half::bf16;
use std::cell::RefCell;

const KC: usize = 512; // in k (256 pairs): the same L1 footprint as f32's KC = 256
const MC: usize = 240;
const NC: usize = 3072;

/// How the bf16 GEMM will run here: `"native"` (vdpbf16ps) or `"emulated"`.
pub fn bf16_mode(isa: Isa) -> &'static str {
    if isa == Isa::Avx512 && Isa::has_avx512_bf16() {
        "native"
    } else {
        "emulated"
    }
}

/// Register tile of the bf16 microkernel for `isa`.
fn tile_bf16(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (12, 32),
        Isa::Avx2 => (6, 16),
        Isa::Portable => (4, 8),
    }
}

/// Rounds an f32 to bf16 bits (round to nearest even; NaN stays NaN).
#[inline(always)]
fn to_bf16_bits(x: f32) -> u32 {
    bf16::from_f32(x).to_bits() as u32
}

/// bf16 GEMM on all threads of the current rayon pool. Same contract as [`crate::gemm::gemm`].
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
        tile_bf16(isa),
        run_serial_bf16,
    )
}

thread_local! {
    static PACK16: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::new((AlignedBuf::new(), AlignedBuf::new()));
}

unsafe fn run_serial_bf16(isa: Isa, job: Job) {
    if job.k == 0 {
        crate::gemm::scale_c(job, job.beta);
        return;
    }
    let (mr, nr) = tile_bf16(isa);
    let kp = KC.min(job.k).div_ceil(2);
    PACK16.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        // The buffers hold u32 words; AlignedBuf is f32-typed, so view it as u32 (same size).
        let ap = abuf.get(kp * MC.min(job.m).next_multiple_of(mr));
        let bp = bbuf.get(kp * NC.min(job.n).next_multiple_of(nr));
        let ap = std::slice::from_raw_parts_mut(ap.as_mut_ptr() as *mut u32, ap.len());
        let bp = std::slice::from_raw_parts_mut(bp.as_mut_ptr() as *mut u32, bp.len());
        if bf16_mode(isa) == "native" {
            #[cfg(target_arch = "x86_64")]
            blocked(Native, job, ap, bp);
        } else {
            struct K<'a> {
                job: Job,
                ap: &'a mut [u32],
                bp: &'a mut [u32],
            }
            impl SimdKernel for K<'_> {
                type Output = ();
                #[inline(always)]
                fn run<S: Simd>(self, s: S) {
                    // SAFETY: forwarded from run_serial_bf16's contract.
                    unsafe {
                        match S::ISA {
                            Isa::Avx512 => {
                                blocked(Emulated::<S, 12, 2>(s), self.job, self.ap, self.bp)
                            }
                            Isa::Avx2 => {
                                blocked(Emulated::<S, 6, 2>(s), self.job, self.ap, self.bp)
                            }
                            Isa::Portable => {
                                blocked(Emulated::<S, 4, 1>(s), self.job, self.ap, self.bp)
                            }
                        }
                    }
                }
            }
            dispatch(isa, K { job, ap, bp });
        }
    })
}

/// A bf16 microkernel over pair-packed slivers, with its register tile MR x NR.
trait Bf16Tile: Copy {
    const MR: usize;
    const NR: usize;
    /// C[0..mr_eff, 0..nr_eff] = alpha * (A sliver . B sliver over kp k-pairs) + beta * C.
    #[allow(clippy::too_many_arguments)]
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
    );
}

/// `vdpbf16ps`, 12 x 32.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Native;

#[cfg(target_arch = "x86_64")]
impl Bf16Tile for Native {
    const MR: usize = 12;
    const NR: usize = 32;
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
        native::kernel(kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff)
    }
}

/// Pairs widened to f32 and two FMAs, on any [`Simd`]; MR x (NV * LANES).
#[derive(Clone, Copy)]
struct Emulated<S, const MR: usize, const NV: usize>(S);

impl<S: Simd, const MR: usize, const NV: usize> Bf16Tile for Emulated<S, MR, NV> {
    const MR: usize = MR;
    const NR: usize = NV * S::LANES;
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
        emulated_kernel::<S, MR, NV>(self.0, kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff)
    }
}

/// The blocked loops around a bf16 microkernel (k counted in pairs inside the slivers).
/// Inlined, so with an emulated kernel the whole nest compiles inside the ISA trampoline.
#[inline(always)]
unsafe fn blocked<K: Bf16Tile>(kernel: K, job: Job, ap: &mut [u32], bp: &mut [u32]) {
    let (mr, nr) = (K::MR, K::NR);
    let Job {
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = job;
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let kp = kc.div_ceil(2);
            pack_pairs_b(
                bp,
                job.b.add(pc * job.brs + jc * job.bcs),
                job.brs,
                job.bcs,
                kc,
                nc,
                nr,
            );
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                pack_pairs_a(
                    ap,
                    job.a.add(ic * job.ars + pc * job.acs),
                    job.ars,
                    job.acs,
                    mc,
                    kc,
                    mr,
                );
                for jr in (0..nc).step_by(nr) {
                    for ir in (0..mc).step_by(mr) {
                        let c = job.c.add((ic + ir) * job.crs + (jc + jr) * job.ccs);
                        kernel.tile(
                            kp,
                            ap.as_ptr().add(ir * kp),
                            bp.as_ptr().add(jr * kp),
                            c,
                            job.crs,
                            job.ccs,
                            alpha,
                            beta_eff,
                            mr.min(mc - ir),
                            nr.min(nc - jr),
                        );
                    }
                }
            }
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
    for i in 0..mr_eff {
        for j in 0..nr_eff {
            let p = c.add(i * rsc + j * csc);
            let t = alpha * tile[i * nr + j];
            *p = if beta == 0.0 { t } else { beta * *p + t };
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
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
    #[allow(clippy::too_many_arguments)]
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
