//! bf16 GEMM with f32 accumulation: `C = alpha * bf16(A) bf16(B) + beta * C`.
//!
//! The f32 GEMM's driver and threading (`driver.rs`), with a bf16 [`Tile`]: what changes is the
//! packed element. Packing rounds each operand to bf16 (round to nearest even). Three kernels
//! ([`Bf16Kernel`]) run that contract:
//! - native (`avx512bf16`): k stored in pairs, one u32 word per (row or column, k-pair):
//!   `word = bf16(x[k]) | bf16(x[k+1]) << 16`, odd k zero-padded. That is exactly the operand
//!   layout of AVX512-BF16's `vdpbf16ps`, which computes per f32 lane
//!   `acc += a.lo * b.lo + a.hi * b.hi`: 32 multiply-adds per instruction. 12 x 32 tile.
//! - rounded (any [`Simd`]): the f32 tile over operands rounded to bf16 as they are packed
//!   (each rounded value kept as an f32). The product of two bf16 values is exact in f32, so
//!   this is the same arithmetic at the f32 FMA's rate. Where `vdpbf16ps` is not faster than
//!   f32 FMA (no AVX512-BF16, or a CPU such as Sapphire Rapids that issues it at half the FMA's
//!   rate in FLOPs), this is the fastest way to the bf16 contract: [`bf16_kernel`] probes it.
//! - emulated (any [`Simd`]): the native pair layout, each pair widened to two f32 vectors (a
//!   shift and a mask) and two FMAs. Slower than both others; kept, and tested on every ISA,
//!   because it runs the pair packing and the pair-word driver paths (K_PER = 2) on any CPU.
//!
//! Results agree across the three up to f32 summation order. Error against f32 GEMM: each
//! operand carries a relative rounding error of at most 2^-9, so a dot product of length k
//! has a typical relative error of about 2^-9 / sqrt-ish of the cancellation; the tests bound
//! it and `benches` reports it.

use super::driver::{blocked, scale_c, with_buffers, Job, Tile};
use super::memory::{prefetch, prefetch_l2};
use super::microkernel::{tile, with_tile, F32Tile, WithTile};
use super::{run_checked, Blocking, GemmError, MatMut, MatRef};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};
use half::bf16;
use std::sync::OnceLock;

/// Which microkernel runs the bf16 contract (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// `vdpbf16ps` on bf16 pair-words (AVX512-BF16 only).
    Native,
    /// The f32 tile over operands rounded to bf16 at packing.
    Rounded,
    /// bf16 pair-words widened to f32 in the f32 tile's registers.
    Emulated,
}

impl Bf16Kernel {
    /// Every kernel, the native one first.
    pub const ALL: [Bf16Kernel; 3] = [
        Bf16Kernel::Native,
        Bf16Kernel::Rounded,
        Bf16Kernel::Emulated,
    ];

    /// `"native"`, `"rounded"` or `"emulated"`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Native => "native",
            Bf16Kernel::Rounded => "rounded",
            Bf16Kernel::Emulated => "emulated",
        }
    }

    /// Whether it can run on `isa` here: the native kernel needs AVX-512 and AVX512-BF16.
    pub fn runs_on(self, isa: Isa) -> bool {
        match self {
            Bf16Kernel::Native => {
                cfg!(target_arch = "x86_64") && isa == Isa::Avx512 && Isa::has_avx512_bf16()
            }
            Bf16Kernel::Rounded | Bf16Kernel::Emulated => true,
        }
    }

    /// The kernels that run on `isa` here.
    pub fn available(isa: Isa) -> Vec<Bf16Kernel> {
        Self::ALL.into_iter().filter(|k| k.runs_on(isa)).collect()
    }

    /// k per packed element: 2 for the pair-words, 1 for the rounded f32 values.
    pub(crate) fn k_per(self) -> usize {
        match self {
            Bf16Kernel::Rounded => 1,
            Bf16Kernel::Native | Bf16Kernel::Emulated => 2,
        }
    }

    /// The register tile (MR, NR): the native tile's 12 x 32, else the f32 tile.
    pub(crate) fn tile(self, isa: Isa) -> (usize, usize) {
        #[cfg(target_arch = "x86_64")]
        if self == Bf16Kernel::Native {
            return (Native::MR, Native::NR);
        }
        tile(isa)
    }

    /// The blocking, in k per packed element. Rounded: the f32 GEMM's ([`Blocking::current`]).
    /// Pair-words: that one with KC scaled so that a packed B sliver of the tile holds the
    /// same bytes as the f32 tile's (the native tile is half as wide: twice the depth; MC
    /// scaled back to keep the A block's bytes), then doubled (a word is a pair of k).
    pub(crate) fn blocking(self, isa: Isa) -> Blocking {
        let b = Blocking::current(isa);
        if self == Bf16Kernel::Rounded {
            return b;
        }
        let (mr, nr) = self.tile(isa);
        let b = b.with_kc(b.kc * tile(isa).1 / nr, mr);
        Blocking { kc: 2 * b.kc, ..b }
    }
}

/// The kernel the bf16 GEMM, the bf16 prepacked weights and the bf16 attention run on `isa`:
/// `ENGINE_BF16_KERNEL=native|rounded|emulated` where it names one that runs there; else
/// native where the CPU has AVX512-BF16 and a probe, timed once per process, finds
/// `vdpbf16ps` at least 1.25x the FLOP rate of f32 FMA (AMD Zen 4: about 2x; Sapphire Rapids:
/// about 0.5x), else rounded.
pub fn bf16_kernel(isa: Isa) -> Bf16Kernel {
    static CHOSEN: OnceLock<Option<Bf16Kernel>> = OnceLock::new();
    let forced = *CHOSEN.get_or_init(|| {
        let v = std::env::var("ENGINE_BF16_KERNEL").ok()?;
        Bf16Kernel::ALL.into_iter().find(|k| k.name() == v)
    });
    if let Some(k) = forced.filter(|k| k.runs_on(isa)) {
        return k;
    }
    if Bf16Kernel::Native.runs_on(isa) && native_dot_is_faster() {
        Bf16Kernel::Native
    } else {
        Bf16Kernel::Rounded
    }
}

/// How the bf16 GEMM will run here: [`bf16_kernel`]'s name.
pub fn bf16_mode(isa: Isa) -> &'static str {
    bf16_kernel(isa).name()
}

/// The probe behind [`bf16_kernel`]: `vdpbf16ps` against f32 FMA in FLOPs per second on this
/// core, best of a few alternating rounds of independent chains (about a millisecond, once).
fn native_dot_is_faster() -> bool {
    static FASTER: OnceLock<bool> = OnceLock::new();
    *FASTER.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if Isa::has_avx512_bf16() {
            // SAFETY: AVX512F and AVX512-BF16 were just detected.
            let (dot, fma) = unsafe { native::probe_rates() };
            return dot >= 1.25 * fma;
        }
        false
    })
}

/// Rounds an f32 to bf16 bits (round to nearest even; NaN stays NaN).
#[inline(always)]
fn to_bf16_bits(x: f32) -> u32 {
    bf16::from_f32(x).to_bits() as u32
}

/// Rounds each f32 (as its bits) to the nearest bf16, in place, kept as an f32: `half`'s
/// round to nearest even, NaN kept NaN (made quiet), written so that it vectorises.
#[inline(always)]
fn round_to_bf16(x: &mut [u32]) {
    for w in x {
        let b = *w;
        let r = b.wrapping_add(0x7FFF + ((b >> 16) & 1));
        let nan = (b & 0x7FFF_FFFF) > 0x7F80_0000;
        *w = if nan { b | 0x0040_0000 } else { r } & 0xFFFF_0000;
    }
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

/// [`gemm_bf16`] with an explicit ISA and thread count, on [`bf16_kernel`]`(isa)`.
pub fn gemm_bf16_with(
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    gemm_bf16_kernel(bf16_kernel(isa), isa, threads, alpha, a, b, beta, c)
}

/// [`gemm_bf16_with`] on a given kernel (tests and benchmarks compare them); an error if it
/// does not run on `isa` here.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16_kernel(
    kernel: Bf16Kernel,
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    if !kernel.runs_on(isa) {
        return Err(GemmError(format!(
            "the {} bf16 kernel does not run on {isa:?} on this CPU",
            kernel.name()
        )));
    }
    let serial: unsafe fn(Isa, Job) = match kernel {
        Bf16Kernel::Native => run_serial_native,
        Bf16Kernel::Rounded => run_serial_rounded,
        Bf16Kernel::Emulated => run_serial_emulated,
    };
    run_checked(isa, threads, alpha, a, b, beta, c, kernel.tile(isa), serial)
}

/// One bf16 GEMM job on the calling thread, on [`bf16_kernel`]`(isa)` (the attention's
/// per-head products in training).
///
/// # Safety
/// As [`super::run_serial`]: the job's pointers are valid for every element it addresses and C
/// does not alias A or B.
pub(crate) unsafe fn run_serial_bf16(isa: Isa, job: Job) {
    // SAFETY: forwarded.
    unsafe { run_serial_kernel(bf16_kernel(isa), isa, job) }
}

unsafe fn run_serial_native(isa: Isa, job: Job) {
    // SAFETY: forwarded; gemm_bf16_kernel checked that the kernel runs on isa.
    unsafe { run_serial_kernel(Bf16Kernel::Native, isa, job) }
}

unsafe fn run_serial_rounded(isa: Isa, job: Job) {
    // SAFETY: forwarded.
    unsafe { run_serial_kernel(Bf16Kernel::Rounded, isa, job) }
}

unsafe fn run_serial_emulated(isa: Isa, job: Job) {
    // SAFETY: forwarded.
    unsafe { run_serial_kernel(Bf16Kernel::Emulated, isa, job) }
}

/// One bf16 GEMM job on the calling thread, on `kernel` (which runs on `isa`).
///
/// # Safety
/// As [`run_serial_bf16`], and `kernel.runs_on(isa)`.
unsafe fn run_serial_kernel(kernel: Bf16Kernel, isa: Isa, job: Job) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        if job.k == 0 {
            scale_c(job, job.beta);
            return;
        }
        let blocking = kernel.blocking(isa).for_depth(job.k, kernel.tile(isa).0);
        struct K<'a> {
            job: Job,
            blocking: Blocking,
            ap: &'a mut [u32],
            bp: &'a mut [u32],
            rounded: bool,
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
                // SAFETY: forwarded from run_serial_kernel's contract.
                unsafe {
                    if self.rounded {
                        let t = Rounded::<S, MR, NV>(s);
                        blocked(t, self.job, self.blocking, self.ap, self.bp)
                    } else {
                        let t = Emulated::<S, MR, NV>(s);
                        blocked(t, self.job, self.blocking, self.ap, self.bp)
                    }
                }
            }
        }
        with_buffers(
            &job,
            blocking,
            kernel.tile(isa),
            kernel.k_per(),
            |ap: &mut [u32], bp: &mut [u32]| {
                if kernel == Bf16Kernel::Native {
                    #[cfg(target_arch = "x86_64")]
                    blocked(Native, job, blocking, ap, bp);
                } else {
                    dispatch(
                        isa,
                        K {
                            job,
                            blocking,
                            ap,
                            bp,
                            rounded: kernel == Bf16Kernel::Rounded,
                        },
                    );
                }
            },
        )
    }
}

/// `vdpbf16ps`, 12 x 32: 2 loads of B words and 12 broadcasts per 24 dot products (the f32
/// tile is 6 x 64; this one keeps the shape it was tuned with, see [`Bf16Kernel::tile`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Native;

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
        // SAFETY: the caller upholds this function's safety contract (and `Bf16Kernel::runs_on`
        // checked AVX512F before this tile was chosen).
        unsafe { native::pack_pairs(dst, a, rs, cs, mc, kc, Self::MR) }
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
        // SAFETY: as pack_a; B's lanes are its columns (stride cs), its k its rows (stride rs).
        unsafe { native::pack_pairs(dst, b, cs, rs, nc, kc, Self::NR) }
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
pub(crate) struct Emulated<S, const MR: usize, const NV: usize>(pub(crate) S);

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
        unsafe { pack_pairs(dst, a, rs, cs, mc, kc, MR) }
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
        unsafe { pack_pairs(dst, b, cs, rs, nc, kc, Self::NR) }
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

/// The f32 tile over operands rounded to bf16 as they are packed: the packed slots are u32
/// (like the pair-words, so every bf16 path shares its buffers) holding the rounded f32's
/// bits, one k each.
#[derive(Clone, Copy)]
pub(crate) struct Rounded<S, const MR: usize, const NV: usize>(pub(crate) S);

/// A packing buffer of u32 slots seen as f32: both are plain 4-byte values.
#[inline(always)]
fn as_f32(v: &mut [u32]) -> &mut [f32] {
    // SAFETY: same size and alignment, every bit pattern valid for both, borrowed mutably.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, v.len()) }
}

impl<S: Simd, const MR: usize, const NV: usize> Tile for Rounded<S, MR, NV> {
    type P = u32;
    const MR: usize = MR;
    const NR: usize = NV * S::LANES;
    const K_PER: usize = 1;
    /// The f32 tile's rule (this is the f32 tile over rounded operands).
    const FULL_RATE_ROWS: usize = <F32Tile<S, MR, NV> as Tile>::FULL_RATE_ROWS;
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
        // SAFETY: the caller upholds this function's safety contract; the f32 packer writes
        // mc.div_ceil(MR) slivers of kc * MR slots, which are then rounded.
        unsafe {
            F32Tile::<S, MR, NV>(self.0).pack_a(as_f32(dst), a, rs, cs, mc, kc);
            round_to_bf16(&mut dst[..mc.div_ceil(MR) * MR * kc]);
        }
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
        // SAFETY: as pack_a, with nc.div_ceil(NR) slivers of kc * NR slots.
        unsafe {
            F32Tile::<S, MR, NV>(self.0).pack_b(as_f32(dst), b, rs, cs, kc, nc);
            round_to_bf16(&mut dst[..nc.div_ceil(Self::NR) * Self::NR * kc]);
        }
    }
    #[inline(always)]
    unsafe fn tile(
        self,
        kc: usize,
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
        // SAFETY: the caller upholds this function's safety contract; the slots hold f32s.
        unsafe {
            F32Tile::<S, MR, NV>(self.0).tile(
                kc,
                a as *const f32,
                b as *const f32,
                c,
                rsc,
                csc,
                alpha,
                beta,
                mr_eff,
                nr_eff,
            )
        }
    }
}

/// Packs `count` lanes (rows of A, or columns of B) of `kc` values, element (l, k) at
/// `src + l*ls + k*ks`, into slivers of `w` lanes of pair-words:
/// `dst[s*kp*w + q*w + l] = pair(x[s*w+l, 2q], x[s*w+l, 2q+1])`, zero past `count` and `kc`.
/// A is packed with its rows as lanes (ls = rs, ks = cs), B with its columns (ls = cs, ks = rs).
unsafe fn pack_pairs(
    dst: &mut [u32],
    src: *const f32,
    ls: usize,
    ks: usize,
    count: usize,
    kc: usize,
    w: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let kp = kc.div_ceil(2);
        let x = |lane: usize, k: usize| {
            if k < kc {
                to_bf16_bits(*src.add(lane * ls + k * ks))
            } else {
                0
            }
        };
        for (si, l0) in (0..count).step_by(w).enumerate() {
            let sl = &mut dst[si * kp * w..(si + 1) * kp * w];
            for q in 0..kp {
                for l in 0..w {
                    let lane = l0 + l;
                    sl[q * w + l] = if lane < count {
                        x(lane, 2 * q) | x(lane, 2 * q + 1) << 16
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

    /// (`vdpbf16ps` FLOP/s, f32 FMA FLOP/s) on this core: 16 independent accumulator chains
    /// of each, best of 3 alternating rounds of about 0.1 ms (frequency ramps and
    /// interruptions only lower a round). For [`super::bf16_kernel`]'s choice.
    ///
    /// # Safety
    /// The CPU has AVX512F and AVX512-BF16.
    pub(super) unsafe fn probe_rates() -> (f64, f64) {
        const ITERS: usize = 8192;
        let (mut dot, mut fma) = (0.0f64, 0.0f64);
        for _ in 0..3 {
            let t = std::time::Instant::now();
            // SAFETY: the caller's contract.
            std::hint::black_box(unsafe { dot_chains(std::hint::black_box(ITERS)) });
            let flops = (ITERS * 16 * 16 * 4) as f64;
            dot = dot.max(flops / t.elapsed().as_secs_f64().max(1e-9));
            let t = std::time::Instant::now();
            // SAFETY: the caller's contract.
            std::hint::black_box(unsafe { fma_chains(std::hint::black_box(ITERS)) });
            let flops = (ITERS * 16 * 16 * 2) as f64;
            fma = fma.max(flops / t.elapsed().as_secs_f64().max(1e-9));
        }
        (dot, fma)
    }

    /// 16 chains of `vdpbf16ps`, `iters` each.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dot_chains(iters: usize) -> f32 {
        // SAFETY: register-only arithmetic on the features this function enables.
        unsafe {
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3F80_3F80));
            let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3380_3380));
            let mut acc = [_mm512_setzero_ps(); 16];
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm512_dpbf16_ps(*x, a, b);
                }
            }
            acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
        }
    }

    /// 16 chains of `vfmadd231ps`, `iters` each.
    #[target_feature(enable = "avx512f")]
    unsafe fn fma_chains(iters: usize) -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_setzero_ps(); 16];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
    }

    /// 12 x 32 tile with `vdpbf16ps`: per k-pair, 2 loads of B pair-words (32 columns),
    /// 12 broadcasts of A pair-words, 24 dot-product-accumulates. A last sliver of 8 or 4
    /// rows or fewer (m = 128 leaves 8) runs a tile of that many rows over the same packed
    /// sliver (stride 12), rather than multiplying zero rows.
    ///
    /// # Safety
    /// The CPU has AVX512F and AVX512-BF16 (checked by `Bf16Kernel::runs_on`); `a` holds
    /// kp*12 words, `b` kp*32 words; C addresses as in the f32 microkernel.
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
            let args = (kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff);
            match mr_eff {
                0..=4 => rows::<4>(args),
                5..=8 => rows::<8>(args),
                _ => rows::<12>(args),
            }
        }
    }

    /// [`kernel`]'s arguments.
    type KernelArgs = (
        usize,
        *const u32,
        *const u32,
        *mut f32,
        usize,
        usize,
        f32,
        f32,
        usize,
        usize,
    );

    /// [`kernel`] with a tile of MR (at most 12) of the packed sliver's 12 rows.
    ///
    /// # Safety
    /// As [`kernel`], with `mr_eff <= MR`.
    #[inline(always)]
    unsafe fn rows<const MR: usize>(
        (kp, a, b, c, rsc, csc, alpha, beta, mr_eff, nr_eff): KernelArgs,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            // C's rows into L2 now, into L1 for the last C_LEAD k-pairs (as the f32 tile does).
            let last = nr_eff.max(1) - 1;
            for i in 0..mr_eff {
                super::prefetch_l2(c.add(i * rsc));
                super::prefetch_l2(c.add(i * rsc + last * csc));
            }
            const C_LEAD: usize = 8;
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            let lead = kp.saturating_sub(C_LEAD);
            for q in 0..lead {
                pair(&mut acc, a, b, q);
            }
            for i in 0..mr_eff {
                super::prefetch(c.add(i * rsc));
                super::prefetch(c.add(i * rsc + last * csc));
            }
            for q in lead..kp {
                pair(&mut acc, a, b, q);
            }
            if csc == 1 {
                // C rows are contiguous: `alpha * acc + beta * C` in registers, the columns
                // past nr_eff masked off (C is not read when beta == 0).
                let va = _mm512_set1_ps(alpha);
                let vb = _mm512_set1_ps(beta);
                let m0: __mmask16 = if nr_eff >= 16 {
                    0xFFFF
                } else {
                    (1u16 << nr_eff) - 1
                };
                let r1 = nr_eff.saturating_sub(16);
                let m1: __mmask16 = if r1 >= 16 { 0xFFFF } else { (1u16 << r1) - 1 };
                for (i, row) in acc.iter().enumerate().take(mr_eff) {
                    let p = c.add(i * rsc);
                    for (v, m) in [(0, m0), (1, m1)] {
                        let q = p.add(16 * v);
                        let x = _mm512_mul_ps(va, row[v]);
                        let y = if beta == 0.0 {
                            x
                        } else {
                            _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, q), x)
                        };
                        _mm512_mask_storeu_ps(q, m, y);
                    }
                }
                return;
            }
            let mut tmp = [0.0f32; 12 * 32];
            for (i, row) in acc.iter().enumerate() {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * 32), row[0]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * 32 + 16), row[1]);
            }
            super::store_tile(&tmp, 32, c, rsc, csc, alpha, beta, mr_eff, nr_eff);
        }
    }

    /// k-pair `q` of an MR x 32 tile over a 12-row A sliver: 2 loads of B words, MR broadcasts
    /// of A words, 2 MR `vdpbf16ps`. (A function, not a closure: it must inline into
    /// `kernel`'s features.)
    ///
    /// # Safety
    /// As [`kernel`]: pair q of both slivers is readable, the CPU has AVX512-BF16.
    #[inline(always)]
    unsafe fn pair<const MR: usize>(
        acc: &mut [[__m512; 2]; MR],
        a: *const u32,
        b: *const u32,
        q: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
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
    }

    /// Each lane rounded to bf16 as `to_bf16_bits` rounds (to nearest even; a NaN stays a
    /// NaN, quieted), the result in the lane's upper 16 bits (the lower 16 are not zeroed).
    ///
    /// # Safety
    /// The CPU has AVX512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn round_hi(v: __m512i) -> __m512i {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
        let r = _mm512_add_epi32(v, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
        let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
        _mm512_mask_or_epi32(r, nan, v, _mm512_set1_epi32(0x0040_0000))
    }

    /// Lane mask for the first `n` (at most 16) of 16 lanes.
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            (1u16 << n) - 1
        }
    }

    /// The scalar `pack_pairs` (same arguments, same layout) with the rounding vectorised, and
    /// bit-identical to it. When k is contiguous (ks == 1) eight lanes' pairs are converted 8
    /// words at a time and transposed into the sliver's rows; when the lanes are (ls == 1) two
    /// k-rows of up to 16 lanes are merged into words and stored whole; otherwise the scalar
    /// packing runs.
    ///
    /// # Safety
    /// The CPU has AVX512F; `src` is valid for every (l, k) above; dst holds
    /// `count.div_ceil(w) * kc.div_ceil(2) * w` words.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_pairs(
        dst: &mut [u32],
        src: *const f32,
        ls: usize,
        ks: usize,
        count: usize,
        kc: usize,
        w: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let kp = kc.div_ceil(2);
            let slivers = count.div_ceil(w);
            assert!(dst.len() >= slivers * kp * w, "packing buffer too small");
            let d = dst.as_mut_ptr();
            if ks == 1 {
                // Eight lanes at a time: each lane's 16 floats (8 pairs) rounded to 8 words,
                // the 8 x 8 words transposed in registers, and stored as 8 rows of the sliver
                // (one k-pair each, 8 lanes wide), instead of one scalar store per word.
                for s in 0..slivers {
                    let sl = d.add(s * kp * w);
                    for q0 in (0..kp).step_by(8) {
                        // 16 floats (fewer at the end of k: zeros past kc) -> 8 words.
                        let m = first(kc - 2 * q0);
                        let pairs = (kp - q0).min(8);
                        for l0 in (0..w).step_by(8) {
                            let g = (w - l0).min(8);
                            // Words ride in f32 lanes through the (shuffle-only) transpose.
                            let mut r = [_mm256_setzero_ps(); 8];
                            for (i, ri) in r.iter_mut().enumerate().take(g) {
                                let lane = s * w + l0 + i;
                                if lane < count {
                                    let p = src.add(lane * ls + 2 * q0) as *const i32;
                                    let v = _mm512_maskz_loadu_epi32(m, p);
                                    *ri = _mm256_castsi256_ps(_mm512_cvtepi32_epi16(
                                        _mm512_srli_epi32::<16>(round_hi(v)),
                                    ));
                                }
                            }
                            let t = crate::simd::transpose8(r);
                            for (j, tj) in t.iter().enumerate().take(pairs) {
                                let o = sl.add((q0 + j) * w + l0);
                                match g {
                                    8 => _mm256_storeu_ps(o as *mut f32, *tj),
                                    4 => _mm_storeu_ps(o as *mut f32, _mm256_castps256_ps128(*tj)),
                                    _ => {
                                        let mut x = [0u32; 8];
                                        _mm256_storeu_ps(x.as_mut_ptr() as *mut f32, *tj);
                                        for (e, &v) in x.iter().enumerate().take(g) {
                                            *o.add(e) = v;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            } else if ls == 1 {
                let lo_mask = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
                // k-pair outermost: the two source rows are read front to back, once, which the
                // hardware prefetcher follows (sliver by sliver, the reads stride across pages).
                for q in 0..kp {
                    // Transposed operands read a short run of each long row: no stream for the
                    // prefetcher to follow, so fetch the pair PD pairs ahead by hand.
                    const PD: usize = 16;
                    if 2 * (q + PD) + 1 < kc {
                        let p = src.add(2 * (q + PD) * ks);
                        for l in (0..count).step_by(16) {
                            super::prefetch(p.add(l));
                            super::prefetch(p.add(ks + l));
                        }
                    }
                    for s in 0..slivers {
                        let sl = d.add(s * kp * w);
                        for l0 in (0..w).step_by(16) {
                            let n = (count.saturating_sub(s * w + l0)).min(16).min(w - l0);
                            let m = first(n);
                            let p = src.add((s * w + l0) * ls + 2 * q * ks);
                            let lo = _mm512_maskz_loadu_ps(m, p);
                            let hi = if 2 * q + 1 < kc {
                                _mm512_maskz_loadu_ps(m, p.add(ks))
                            } else {
                                _mm512_setzero_ps()
                            };
                            let lo = _mm512_srli_epi32::<16>(round_hi(_mm512_castps_si512(lo)));
                            let hi = _mm512_and_si512(round_hi(_mm512_castps_si512(hi)), lo_mask);
                            let word = _mm512_or_si512(lo, hi);
                            _mm512_mask_storeu_epi32(
                                sl.add(q * w + l0) as *mut i32,
                                first(w - l0),
                                word,
                            );
                        }
                    }
                }
            } else {
                super::pack_pairs(dst, src, ls, ks, count, kc, w);
            }
        }
    }
}

#[cfg(test)]
mod rounding_tests {
    use super::*;

    /// The rounded kernel's in-place rounding is `half`'s (round to nearest even, NaN quieted,
    /// overflow to infinity), bit for bit: special values, ties, and a million random patterns.
    #[test]
    fn in_place_rounding_equals_half() {
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            0x3F80_8000, // a tie, even below: rounds down
            0x3F81_8000, // a tie, odd below: rounds up
            0x3F80_8001,
            0x3F80_7FFF,
            0x7FC0_0000,
            0xFFC0_0000,
            0x7F80_0001, // signalling NaN
            0xFF80_0001,
            0x7F80_0000,
            0xFF80_0000,
            0x7F7F_FFFF, // f32::MAX: rounds up to infinity
            0xFF7F_FFFF,
            1,
            0x807F_FFFF,
            0x0080_0000,
        ];
        let mut rng = crate::rng::SplitMix64::new(11);
        bits.extend((0..1 << 20).map(|_| rng.next_u64() as u32));
        let mut got = bits.clone();
        round_to_bf16(&mut got);
        for (&x, &g) in bits.iter().zip(&got) {
            let want = (to_bf16_bits(f32::from_bits(x))) << 16;
            assert_eq!(g, want, "{x:#010x}: {g:#010x}, want {want:#010x}");
        }
    }

    /// The kernel chosen for each ISA runs there; the override names a kernel by its name.
    #[test]
    fn the_chosen_kernel_runs_on_its_isa() {
        for isa in Isa::available() {
            let k = bf16_kernel(isa);
            assert!(k.runs_on(isa), "{isa:?}: {k:?}");
            assert_eq!(bf16_mode(isa), k.name());
            assert!(Bf16Kernel::available(isa).contains(&Bf16Kernel::Rounded));
        }
        assert!(!Bf16Kernel::Native.runs_on(Isa::Portable));
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The vectorised packing rounds exactly as the scalar one (`half`'s round to nearest even)
    /// on every layout it takes: k contiguous, lanes contiguous, neither; including ties, NaN,
    /// infinities, subnormals and values that round up to infinity, with tails of k and lanes.
    #[test]
    fn native_packing_equals_scalar_packing() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX512F here: only the scalar packing runs on this CPU");
            return;
        }
        let special = [
            0.0f32,
            -0.0,
            1.0,
            f32::from_bits(0x3F80_8000), // a tie, even below: rounds down
            f32::from_bits(0x3F81_8000), // a tie, odd below: rounds up
            f32::from_bits(0x3F80_8001),
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001), // signalling NaN
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::from_bits(1), // smallest subnormal
            f32::from_bits(0x807F_FFFF),
            f32::MIN_POSITIVE,
        ];
        let mut rng = crate::rng::SplitMix64::new(7);
        let (rows, cols) = (29usize, 37usize);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                if i % 3 == 0 {
                    special[(i / 3) % special.len()]
                } else {
                    rng.next_normal() * 10f32.powi((i % 7) as i32 - 3)
                }
            })
            .collect();
        // (lane stride, k stride): k contiguous, lanes contiguous, neither (every other column).
        for (ls, ks, count, kc) in [
            (cols, 1, rows, cols),
            (1, cols, cols, rows),
            (2 * cols, 2, 14, 18),
        ] {
            for w in [12, 32] {
                for kc in [kc, kc - 1, 1] {
                    let len = count.div_ceil(w) * kc.div_ceil(2) * w;
                    let (mut want, mut got) = (vec![7u32; len], vec![9u32; len]);
                    // SAFETY: every (lane, k) read lies inside x, as the test's strides make it.
                    unsafe {
                        pack_pairs(&mut want, x.as_ptr(), ls, ks, count, kc, w);
                        native::pack_pairs(&mut got, x.as_ptr(), ls, ks, count, kc, w);
                    }
                    assert_eq!(got, want, "ls {ls} ks {ks} count {count} kc {kc} w {w}");
                }
            }
        }
    }
}
