//! B packed once for many GEMMs against it (a weight matrix at inference).

use super::bf16::{bf16_kernel, Bf16Kernel, Emulated, Rounded};
use super::blocking::{kc_block, mc_block, Blocking};
use super::driver::{
    a_block, direct_a, pack_a_block, scale_c, split, Job, Tile, PARALLEL_MIN_FLOPS,
};
use super::memory::PACK;
use super::microkernel::{tile, with_tile, F32Tile, WithTile};
use super::{check_args, GemmError, MatMut, MatRef};
use crate::simd::{dispatch, Isa, Simd, SimdKernel};

/// B packed once, for a GEMM run many times against the same B (a weight matrix at inference):
/// exactly the slivers the blocked loop would pack on every call, for every KC block, so those
/// calls skip packing B. For M = 128 rows (one sequence of BERT) packing B is about a sixth of
/// a Linear layer's time.
///
/// Layout: KC block `pc` (starting at row pc of B) holds `ceil(n / NR)` slivers of kc x NR
/// floats, `data[pc * npad + s * kc * NR + p * NR + j] = B[pc + p, s * NR + j]` (zero past n),
/// where npad = ceil(n / NR) * NR.
///
/// [`PackedB::new_bf16`] packs for the bf16 GEMM instead (see `bf16.rs`): B rounded to bf16
/// once, for the bf16 kernel chosen then. For the pair-word kernels, k in pairs, one u32 word
/// per (k-pair, column), KC block `pc` at word `pc / 2 * npad`; for the rounded one, the f32
/// layout above, each value rounded. Its GEMM then converts only A on each call: for a weight
/// matrix at inference that takes B's rounding off the hot path (and, in pairs, halves its
/// bytes).
pub struct PackedB {
    isa: Isa,
    /// Packed for this bf16 kernel (else f32).
    bf16: Option<Bf16Kernel>,
    /// The KC it was packed with, in k (the blocking in force then; later calls follow it).
    kc: usize,
    k: usize,
    n: usize,
    /// The packed floats start 64-byte aligned at `v[off]`.
    v: Vec<f32>,
    off: usize,
}

impl PackedB {
    /// Packs `b` (k x n, any strides) for `isa`'s microkernel.
    pub fn new(isa: Isa, b: MatRef) -> Result<PackedB, GemmError> {
        Self::build(isa, b, None)
    }

    /// Rounds `b` (k x n, any strides) to bf16 and packs it for `isa`'s bf16 microkernel
    /// ([`bf16_kernel`]): [`gemm_prepacked`] against it is
    /// [`gemm_bf16`](super::bf16::gemm_bf16) with B packed once.
    pub fn new_bf16(isa: Isa, b: MatRef) -> Result<PackedB, GemmError> {
        Self::build(isa, b, Some(bf16_kernel(isa)))
    }

    /// [`PackedB::new_bf16`] for a given bf16 kernel; an error if it does not run on `isa`.
    pub fn new_bf16_kernel(kernel: Bf16Kernel, isa: Isa, b: MatRef) -> Result<PackedB, GemmError> {
        if !kernel.runs_on(isa) {
            return Err(GemmError(format!(
                "the {} bf16 kernel does not run on {isa:?} on this CPU",
                kernel.name()
            )));
        }
        Self::build(isa, b, Some(kernel))
    }

    /// Whether it holds bf16 values (built by [`PackedB::new_bf16`]).
    pub fn is_bf16(&self) -> bool {
        self.bf16.is_some()
    }

    /// The bf16 kernel it was packed for (None: f32).
    pub fn bf16_kernel(&self) -> Option<Bf16Kernel> {
        self.bf16
    }

    fn build(isa: Isa, b: MatRef, bf16: Option<Bf16Kernel>) -> Result<PackedB, GemmError> {
        if !b.in_bounds() {
            return Err(GemmError(format!(
                "B ({} x {}, strides {} {}) reaches past its {} elements",
                b.rows,
                b.cols,
                b.rs,
                b.cs,
                b.data.len()
            )));
        }
        let (k, n) = (b.rows, b.cols);
        // The tile's width, k per packed element, KC blocks of k (even for pair-words, so
        // that blocks start on a pair).
        let (nr, kper, kc) = match bf16 {
            Some(kn) => (kn.tile(isa).1, kn.k_per(), kc_block(k, kn.blocking(isa).kc)),
            None => (tile(isa).1, 1, kc_block(k, Blocking::current(isa).kc)),
        };
        let npad = n.next_multiple_of(nr);
        let len = k.div_ceil(kper) * npad;
        let mut v = vec![0.0f32; len + 16];
        let off = v.as_ptr().align_offset(64).min(16);
        struct Pack<'a> {
            b: MatRef<'a>,
            dst: &'a mut [f32],
            npad: usize,
            kc: usize,
            bf16: Option<Bf16Kernel>,
        }
        impl SimdKernel for Pack<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                with_tile(s, self)
            }
        }
        impl WithTile for Pack<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S) {
                let (b, npad, kc) = (self.b, self.npad, self.kc);
                match self.bf16 {
                    Some(Bf16Kernel::Rounded) => {
                        pack_blocks(Rounded::<S, MR, NV>(s), b, as_words(self.dst), npad, kc)
                    }
                    Some(_) => {
                        pack_blocks(Emulated::<S, MR, NV>(s), b, as_words(self.dst), npad, kc)
                    }
                    None => pack_blocks(F32Tile::<S, MR, NV>(s), b, self.dst, npad, kc),
                }
            }
        }
        // The native bf16 tile runs without a dispatch (its code carries its target features).
        let native = bf16 == Some(Bf16Kernel::Native);
        if len > 0 {
            let dst = &mut v[off..off + len];
            if native {
                #[cfg(target_arch = "x86_64")]
                pack_blocks(super::bf16::Native, b, as_words(dst), npad, kc);
            } else {
                dispatch(
                    isa,
                    Pack {
                        b,
                        dst,
                        npad,
                        kc,
                        bf16,
                    },
                );
            }
        }
        Ok(PackedB {
            isa,
            bf16,
            kc,
            k,
            n,
            v,
            off,
        })
    }
    pub fn rows(&self) -> usize {
        self.k
    }
    pub fn cols(&self) -> usize {
        self.n
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    fn data(&self) -> *const f32 {
        self.v[self.off..].as_ptr()
    }
}

/// A packing buffer of f32 slots seen as u32 words (bf16 pairs): both are plain 4-byte values.
fn as_words(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: same size and alignment, every bit pattern valid for both, borrowed mutably.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u32, v.len()) }
}

/// Packs every KC block of `b` with tile `t` (block `pc` at element `pc / K_PER * npad`).
#[inline(always)]
fn pack_blocks<T: Tile>(t: T, b: MatRef, dst: &mut [T::P], npad: usize, kc: usize) {
    let (k, n) = (b.rows, b.cols);
    for pc in (0..k).step_by(kc) {
        let kcb = kc.min(k - pc);
        let dst = &mut dst[pc / T::K_PER * npad..];
        // SAFETY: the caller checked B's bounds; dst holds k.div_ceil(K_PER) * npad elements,
        // and this block's kcb.div_ceil(K_PER) * npad of them start here.
        unsafe {
            let src = b.data.as_ptr().add(pc * b.rs);
            t.pack_b(dst, src, b.rs, b.cs, kcb, n);
        }
    }
}

/// `C = alpha * A B + beta * C` with B prepacked (see [`PackedB`]), on `threads` threads.
pub fn gemm_prepacked(
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: &PackedB,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    let (k, n) = (b.k, b.n);
    if a.cols != k || c.rows != a.rows || c.cols != n {
        return Err(GemmError(format!(
            "A is {} x {}, packed B {k} x {n}, C {} x {}",
            a.rows, a.cols, c.rows, c.cols
        )));
    }
    // The checks of an ordinary GEMM, with a stand-in B of the right shape (never read).
    let stand_in = [0.0f32; 1];
    check_args(
        &a,
        &MatRef {
            data: &stand_in,
            rows: k,
            cols: n,
            rs: 0,
            cs: 0,
        },
        &c,
    )?;
    if c.rows == 0 || c.cols == 0 {
        return Ok(());
    }
    let isa = b.isa;
    let bf16 = b.bf16;
    let (mr, nr) = bf16.map_or(tile(isa), |kn| kn.tile(isa));
    let kper = bf16.map_or(1, |kn| kn.k_per());
    // The native bf16 tile runs without a dispatch (its code carries its target features).
    let native = bf16 == Some(Bf16Kernel::Native);
    // KC is the one B was packed with; MC follows the blocking in force now, scaled to that KC.
    let blocking = bf16
        .map_or(Blocking::current(isa), |kn| kn.blocking(isa))
        .with_kc(b.kc, mr);
    let bp = b.data() as usize;
    let job = Job::new(alpha, a, MatRef::row_major(&stand_in, 1, 1), beta, c);
    if k == 0 {
        // SAFETY: the job addresses C, checked above.
        unsafe { scale_c(job, beta) };
        return Ok(());
    }
    let run = move |i0: usize, m: usize, j0: usize, nn: usize| {
        let blk = job.block(i0, m, j0, nn);
        struct K<'a> {
            job: Job,
            blocking: Blocking,
            ap: &'a mut [f32],
            bp: *const f32,
            npad: usize,
            j0: usize,
            bf16: Option<Bf16Kernel>,
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
                // SAFETY: forwarded from the checks above; blocks of C are disjoint.
                unsafe {
                    let (job, blk, npad, j0) = (self.job, self.blocking, self.npad, self.j0);
                    let words = self.bp as *const u32;
                    match self.bf16 {
                        Some(Bf16Kernel::Rounded) => {
                            let t = Rounded::<S, MR, NV>(s);
                            blocked_prepacked(t, job, blk, as_words(self.ap), words, npad, j0)
                        }
                        Some(_) => {
                            let t = Emulated::<S, MR, NV>(s);
                            blocked_prepacked(t, job, blk, as_words(self.ap), words, npad, j0)
                        }
                        None => {
                            let t = F32Tile::<S, MR, NV>(s);
                            blocked_prepacked(t, job, blk, self.ap, self.bp, npad, j0)
                        }
                    }
                }
            }
        }
        // The A packing buffer is taken here, outside the SIMD code: a closure inside it
        // (`PACK.with(|..| ..)`) would be compiled without the ISA's target features.
        PACK.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let ap = bufs.0.get(
                blocking.kc.min(k).div_ceil(kper)
                    * mc_block(m, mr, blocking.mc).min(m).next_multiple_of(mr),
            );
            let npad = n.next_multiple_of(nr);
            if native {
                // SAFETY: as below; the native tile's features were checked by runs_on.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    blocked_prepacked(
                        super::bf16::Native,
                        blk,
                        blocking,
                        as_words(ap),
                        bp as *const u32,
                        npad,
                        j0,
                    )
                };
            } else {
                dispatch(
                    isa,
                    K {
                        job: blk,
                        blocking,
                        ap,
                        bp: bp as *const f32,
                        npad,
                        j0,
                        bf16,
                    },
                )
            }
        });
    };
    let threads = threads.max(1);
    if threads == 1 || job.m * job.n * k < PARALLEL_MIN_FLOPS {
        run(0, job.m, 0, n);
        return Ok(());
    }
    let (tiles_m, tiles_n) = (job.m.div_ceil(mr), n.div_ceil(nr));
    // Each thread reads all of the operand the cut does not divide: cutting n shares A (m x k),
    // cutting m shares the packed B (k x n). Share the smaller one (B is never packed here).
    let cut_n = if job.m > n {
        tiles_m < 2 * threads
    } else {
        tiles_n >= 2 * threads || tiles_n >= tiles_m
    };
    let blocks: Vec<(usize, usize, usize, usize)> = if cut_n {
        split(tiles_n, threads)
            .map(|(t0, t1)| (0, job.m, t0 * nr, (t1 * nr).min(n) - t0 * nr))
            .collect()
    } else {
        split(tiles_m, threads)
            .map(|(t0, t1)| (t0 * mr, (t1 * mr).min(job.m) - t0 * mr, 0, n))
            .collect()
    };
    use rayon::prelude::*;
    blocks
        .into_par_iter()
        .for_each(|(i0, m, j0, nn)| run(i0, m, j0, nn));
    Ok(())
}

/// The blocked loops of [`blocked`](super::driver::blocked) over a prepacked B; `j0` (a
/// multiple of NR) is the first column of this block of C within the packed B.
#[inline(always)]
unsafe fn blocked_prepacked<T: Tile>(
    t: T,
    job: Job,
    blk: Blocking,
    ap: &mut [T::P],
    bp: *const T::P,
    npad: usize,
    j0: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let (mr, nr) = (T::MR, T::NR);
        let Job {
            m,
            n,
            k,
            alpha,
            beta,
            ..
        } = job;
        let mcb = mc_block(m, mr, blk.mc);
        let direct = T::DIRECT_A && direct_a(&job);
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            let kw = kc.div_ceil(T::K_PER);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            let panel = bp.add(pc / T::K_PER * npad);
            for ic in (0..m).step_by(mcb) {
                let mc = mcb.min(m - ic);
                let a0 = job.a.add(ic * job.ars + pc * job.acs);
                let inplace = pack_a_block(t, ap, &job, a0, mc, kc, direct);
                for jr in (0..n).step_by(nr) {
                    let nr_eff = nr.min(n - jr);
                    let bsliver = panel.add((j0 + jr) / nr * kw * nr);
                    let cblock = job.c.add(ic * job.crs + jr * job.ccs);
                    a_block(
                        t,
                        &job,
                        (a0, inplace, ap),
                        (mc, kc),
                        bsliver,
                        cblock,
                        alpha,
                        beta_eff,
                        nr_eff,
                    );
                }
            }
        }
    }
}
