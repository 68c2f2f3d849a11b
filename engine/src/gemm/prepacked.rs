//! B packed once for many GEMMs against it (a weight matrix at inference).

use super::blocking::{kc_block, mc_block, Blocking};
use super::driver::{a_slivers, scale_c, split, Job, Tile, PARALLEL_MIN_FLOPS};
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
pub struct PackedB {
    isa: Isa,
    /// The KC it was packed with (the blocking in force then; later calls follow it).
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
        let nr = tile(isa).1;
        let kc = kc_block(k, Blocking::current(isa).kc);
        let npad = n.next_multiple_of(nr);
        let len = k * npad;
        let mut v = vec![0.0f32; len + 16];
        let off = v.as_ptr().align_offset(64).min(16);
        struct Pack<'a> {
            b: MatRef<'a>,
            dst: &'a mut [f32],
            npad: usize,
            kc: usize,
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
                let t = F32Tile::<S, MR, NV>(s);
                let (k, n) = (self.b.rows, self.b.cols);
                for pc in (0..k).step_by(self.kc) {
                    let kc = self.kc.min(k - pc);
                    let dst = &mut self.dst[pc * self.npad..];
                    // SAFETY: `new` checked B's bounds; dst holds k * npad floats.
                    unsafe {
                        let src = self.b.data.as_ptr().add(pc * self.b.rs);
                        t.pack_b(dst, src, self.b.rs, self.b.cs, kc, n);
                    }
                }
            }
        }
        if len > 0 {
            dispatch(
                isa,
                Pack {
                    b,
                    dst: &mut v[off..off + len],
                    npad,
                    kc,
                },
            );
        }
        Ok(PackedB {
            isa,
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
    let (mr, nr) = tile(isa);
    // KC is the one B was packed with; MC follows the blocking in force now, scaled to that KC.
    let blocking = Blocking::current(isa).with_kc(b.kc, mr);
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
                    blocked_prepacked(
                        F32Tile::<S, MR, NV>(s),
                        self.job,
                        self.blocking,
                        self.ap,
                        self.bp,
                        self.npad,
                        self.j0,
                    )
                }
            }
        }
        // The A packing buffer is taken here, outside the SIMD code: a closure inside it
        // (`PACK.with(|..| ..)`) would be compiled without the ISA's target features.
        PACK.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let ap = bufs
                .0
                .get(blocking.kc.min(k) * mc_block(m, mr, blocking.mc).min(m).next_multiple_of(mr));
            dispatch(
                isa,
                K {
                    job: blk,
                    blocking,
                    ap,
                    bp: bp as *const f32,
                    npad: n.next_multiple_of(nr),
                    j0,
                },
            )
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
unsafe fn blocked_prepacked<T: Tile<P = f32>>(
    t: T,
    job: Job,
    blk: Blocking,
    ap: &mut [f32],
    bp: *const f32,
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
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            let panel = bp.add(pc * npad);
            for ic in (0..m).step_by(mcb) {
                let mc = mcb.min(m - ic);
                t.pack_a(
                    ap,
                    job.a.add(ic * job.ars + pc * job.acs),
                    job.ars,
                    job.acs,
                    mc,
                    kc,
                );
                for jr in (0..n).step_by(nr) {
                    let nr_eff = nr.min(n - jr);
                    let bsliver = panel.add((j0 + jr) / nr * kc * nr);
                    let cblock = job.c.add(ic * job.crs + jr * job.ccs);
                    a_slivers(
                        t, &job, ap, mc, kc, bsliver, cblock, alpha, beta_eff, nr_eff,
                    );
                }
            }
        }
    }
}
