//! The one blocked GEMM driver: the loop nest of `mod.rs`'s diagram, generic over a [`Tile`]
//! (a register-tiled microkernel and the packing it reads), which the f32 and both bf16
//! microkernels implement; plus the [`Job`] it runs and the split of a job across threads.

use super::blocking::{fused_b_group, mc_block, Blocking};
use super::memory::PACK;
use super::{MatMut, MatRef};
use crate::simd::Isa;

/// A microkernel and its packing: what an element type supplies to [`blocked`].
///
/// The driver cuts C into MC x NC blocks and k into KC slices, has the tile pack each A block
/// into MR-row slivers and each B panel into NR-column slivers, and calls [`Tile::tile`] on
/// every (A sliver, B sliver) pair. A sliver holds `kc.div_ceil(K_PER)` packed elements per
/// row (or column): one f32 per k, or (bf16) one u32 word per pair of k.
pub(crate) trait Tile: Copy {
    /// The packed element: `f32`, or `u32` holding bf16(x[k]) | bf16(x[k+1]) << 16.
    type P: Copy;
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// k per packed element.
    const K_PER: usize;
    /// The fewest rows at which the tile still runs at its full rate: a tile of fewer rows
    /// has too few accumulators to cover the multiply-add latency. An A block whose last
    /// sliver would be that short runs its last two slivers balanced ([`balanced_tail`]).
    /// 1 (never balance) unless a tile says otherwise.
    const FULL_RATE_ROWS: usize = 1;

    /// Packs A[0..mc, 0..kc] (strides rs, cs) into slivers of MR rows, zero past row mc:
    /// sliver s at `dst[s * kw * MR..]`, kw = kc.div_ceil(K_PER).
    unsafe fn pack_a(
        self,
        dst: &mut [Self::P],
        a: *const f32,
        rs: usize,
        cs: usize,
        mc: usize,
        kc: usize,
    );

    /// Packs B[0..kc, 0..nc] (strides rs, cs) into slivers of NR columns, zero past column nc:
    /// sliver s at `dst[s * kw * NR..]`.
    unsafe fn pack_b(
        self,
        dst: &mut [Self::P],
        b: *const f32,
        rs: usize,
        cs: usize,
        kc: usize,
        nc: usize,
    );

    /// Whether [`Tile::tile_direct`] exists: the tile can read a row-major A in place.
    const DIRECT_A: bool = false;

    /// [`Tile::tile`] over MR full rows of a row-major A read in place, unpacked: row i's
    /// `kc` elements at `a + i * ars`. Only called when [`Tile::DIRECT_A`] holds.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_direct(
        self,
        kc: usize,
        a: *const f32,
        ars: usize,
        b: *const Self::P,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        alpha: f32,
        beta: f32,
        nr_eff: usize,
    ) {
        let _ = (kc, a, ars, b, c, rsc, csc, alpha, beta, nr_eff);
        unreachable!("tile_direct on a tile without DIRECT_A")
    }

    /// `C[0..mr_eff, 0..nr_eff] = alpha * (A sliver . B sliver) + beta * C` over `kw` packed
    /// steps, C at `c` with strides `rsc`, `csc` (not read when beta == 0).
    unsafe fn tile(
        self,
        kw: usize,
        a: *const Self::P,
        b: *const Self::P,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        alpha: f32,
        beta: f32,
        mr_eff: usize,
        nr_eff: usize,
    );
}

/// Raw description of one GEMM (or one block of it). Pointers stay valid for the call.
#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: *const f32,
    pub ars: usize,
    pub acs: usize,
    pub b: *const f32,
    pub brs: usize,
    pub bcs: usize,
    pub c: *mut f32,
    pub crs: usize,
    pub ccs: usize,
}
// SAFETY: a Job is only sent to threads that write disjoint blocks of C (see `split`), and the
// inputs are only read.
unsafe impl Send for Job {}
// SAFETY: shared, a Job's fields are only read (the pointers' targets as in Send).
unsafe impl Sync for Job {}

impl Job {
    /// The whole problem `C = alpha A B + beta C` of checked views.
    pub(crate) fn new(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Job {
        Job {
            m: c.rows,
            n: c.cols,
            k: a.cols,
            alpha,
            beta,
            a: a.data.as_ptr(),
            ars: a.rs,
            acs: a.cs,
            b: b.data.as_ptr(),
            brs: b.rs,
            bcs: b.cs,
            c: c.data.as_mut_ptr(),
            crs: c.rs,
            ccs: c.cs,
        }
    }

    /// The sub-problem C[i0..i0+m, j0..j0+n].
    pub(crate) fn block(&self, i0: usize, m: usize, j0: usize, n: usize) -> Job {
        // SAFETY: (the pointer arithmetic) i0 < self.m and j0 < self.n, so these stay in the
        // allocations the original bounds check covered.
        unsafe {
            Job {
                m,
                n,
                a: self.a.add(i0 * self.ars),
                b: self.b.add(j0 * self.bcs),
                c: self.c.add(i0 * self.crs + j0 * self.ccs),
                ..*self
            }
        }
    }
}

/// Below this many multiply-adds a GEMM runs on one thread (fork/join costs a few microseconds).
pub(crate) const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// Splits the job into disjoint C blocks, one per thread, and runs them.
///
/// # Safety
/// The job's pointers must be valid for every element it addresses, C must not alias A or B.
pub(crate) unsafe fn run_threaded(isa: Isa, threads: usize, job: Job) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        run_threaded_with(
            isa,
            threads,
            job,
            super::microkernel::tile(isa),
            super::run_serial,
        )
    }
}

/// [`run_threaded`] for any serial runner with register tile `(mr, nr)` (the bf16 GEMM reuses it).
pub(crate) unsafe fn run_threaded_with(
    isa: Isa,
    threads: usize,
    job: Job,
    (mr, nr): (usize, usize),
    serial: unsafe fn(Isa, Job),
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let threads = threads.max(1);
        let work = job.m * job.n * job.k.max(1);
        if threads == 1 || work < PARALLEL_MIN_FLOPS {
            serial(isa, job);
            return;
        }
        // Each thread packs all of the operand the cut does not divide: cutting n repeats A's
        // packing (m x k) on every thread, cutting m repeats B's (k x n). So cut m when A is the
        // larger (m > n), as long as both dimensions give every thread two tiles or more; keep
        // each cut a multiple of the tile size. (4096 x 768 x 768 on two threads: 1.2x faster
        // than cutting n.)
        let tiles_m = job.m.div_ceil(mr);
        let tiles_n = job.n.div_ceil(nr);
        let cut_n = if tiles_n < 2 * threads {
            false
        } else if tiles_m < 2 * threads {
            true
        } else {
            job.m <= job.n
        };
        let blocks: Vec<Job> = if cut_n {
            split(tiles_n, threads)
                .map(|(t0, t1)| (t0 * nr, (t1 * nr).min(job.n)))
                .map(|(j0, j1)| job.block(0, job.m, j0, j1 - j0))
                .collect()
        } else {
            split(tiles_m, threads)
                .map(|(t0, t1)| (t0 * mr, (t1 * mr).min(job.m)))
                .map(|(i0, i1)| job.block(i0, i1 - i0, 0, job.n))
                .collect()
        };
        use rayon::prelude::*;
        // Blocks address disjoint parts of C, and the caller's guarantees cover them.
        blocks.into_par_iter().for_each(|b| serial(isa, b));
    }
}

/// `parts` contiguous ranges covering 0..n as evenly as possible (empty ranges dropped).
pub(crate) fn split(n: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let parts = parts.min(n).max(1);
    (0..parts)
        .map(move |p| (p * n / parts, (p + 1) * n / parts))
        .filter(|(a, b)| a < b)
}

/// `C *= beta` (the k = 0 case), with `beta == 0` writing zeros without reading.
pub(crate) unsafe fn scale_c(job: Job, beta: f32) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        for i in 0..job.m {
            for j in 0..job.n {
                let p = job.c.add(i * job.crs + j * job.ccs);
                *p = if beta == 0.0 { 0.0 } else { beta * *p };
            }
        }
    }
}

/// The thread's packing buffers, sized for `job` under blocking `blk` and register tile
/// (`mr`, `nr`) with `k_per` k per packed element, handed to `f` as slices of `P` (f32 or u32:
/// four bytes either way). Taken outside the SIMD code: a closure inside it (`PACK.with`)
/// would be compiled without the ISA's target features.
pub(crate) fn with_buffers<P: Copy, R>(
    job: &Job,
    blk: Blocking,
    (mr, nr): (usize, usize),
    k_per: usize,
    f: impl FnOnce(&mut [P], &mut [P]) -> R,
) -> R {
    assert_eq!(std::mem::size_of::<P>(), 4, "packed elements are 4 bytes");
    let kw = blk.kc.min(job.k).div_ceil(k_per);
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let bp = bbuf.get(kw * blk.nc.min(job.n).next_multiple_of(nr));
        let ap = abuf.get(kw * mc_block(job.m, mr, blk.mc).min(job.m).next_multiple_of(mr));
        // SAFETY: P is a plain 4-byte value like the buffers' f32 (asserted above), any bit
        // pattern is valid for both, and the two views borrow the buffers mutably.
        let (ap, bp) = unsafe {
            (
                std::slice::from_raw_parts_mut(ap.as_mut_ptr() as *mut P, ap.len()),
                std::slice::from_raw_parts_mut(bp.as_mut_ptr() as *mut P, bp.len()),
            )
        };
        f(ap, bp)
    })
}

/// The blocked loops around tile `t`. `ap` and `bp` are packing buffers from [`with_buffers`].
/// Inlined, so the whole nest compiles inside the caller's ISA trampoline.
#[inline(always)]
pub(crate) unsafe fn blocked<T: Tile>(
    t: T,
    job: Job,
    blk: Blocking,
    ap: &mut [T::P],
    bp: &mut [T::P],
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let (mr, nr) = (T::MR, T::NR);
        let direct = T::DIRECT_A && direct_a(&job);
        let Job {
            m,
            n,
            k,
            alpha,
            beta,
            ..
        } = job;
        for jc in (0..n).step_by(blk.nc) {
            let nc = blk.nc.min(n - jc);
            for pc in (0..k).step_by(blk.kc) {
                let kc = blk.kc.min(k - pc);
                let kw = kc.div_ceil(T::K_PER);
                // When all of M fits one MC block, the packed B panel would be used by a single
                // block: pack each B sliver just before its microkernel calls instead, into a
                // cache-sized buffer, rather than writing a KC x NC panel out to L3 and reading it
                // back (for M = 128 that round trip costs about a tenth of the run). A row-major
                // B with narrow slivers is packed a group of slivers at a time (`fused_b_group`).
                let mcb = mc_block(m, mr, blk.mc);
                let fused = m <= mcb;
                let group = if fused {
                    fused_b_group(job.bcs, kw * nr * 4, nr * 4)
                } else {
                    1
                };
                if !fused {
                    t.pack_b(
                        bp,
                        job.b.add(pc * job.brs + jc * job.bcs),
                        job.brs,
                        job.bcs,
                        kc,
                        nc,
                    );
                }
                let beta_eff = if pc == 0 { beta } else { 1.0 };
                for ic in (0..m).step_by(mcb) {
                    let mc = mcb.min(m - ic);
                    let a0 = job.a.add(ic * job.ars + pc * job.acs);
                    let inplace = pack_a_block(t, ap, &job, a0, mc, kc, direct);
                    for jr in (0..nc).step_by(nr) {
                        let nr_eff = nr.min(nc - jr);
                        let bsliver = if fused {
                            let g = (jr / nr) % group;
                            if g == 0 {
                                let src = job.b.add(pc * job.brs + (jc + jr) * job.bcs);
                                let cols = (group * nr).min(nc - jr);
                                t.pack_b(bp, src, job.brs, job.bcs, kc, cols);
                            }
                            bp.as_ptr().add(g * kw * nr)
                        } else {
                            bp.as_ptr().add(jr * kw)
                        };
                        let cblock = job.c.add(ic * job.crs + (jc + jr) * job.ccs);
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
}

/// Whether the blocked GEMM reads A in place rather than packing it: A row-major (its k
/// contiguous). Packing A costs a read and a write of each A block per B panel, which on small
/// products is a few percent of the run (256 x 256 x 256 on two threads: 4-6%); the tile then
/// reads MR rows of A at their own stride, which the L1 streams follow as they do a packed
/// sliver.
pub(crate) fn direct_a(job: &Job) -> bool {
    job.acs == 1
}

/// The rows at the end of an A block of `mc` rows that run as two balanced slivers rather than
/// a full one and a short one (0: none): when the short one would have fewer than `full` rows
/// ([`Tile::FULL_RATE_ROWS`]) and at most a third of MR (so that each half fills the tile
/// sizes the kernels have). m = 128 on AVX2's 6-row tile leaves 2 rows, 4 accumulators, which
/// run at about half the FMA rate; 6 + 2 rows go as 4 + 4, which run at nearly the full rate.
/// On a Zen 4, AVX2, one thread, medians of 6 alternating runs, with a packed B (the Linear
/// layers'): 128 x 384 x 1536 109.3 to 110.5 GFLOP/s, 128 x 1536 x 384 111.8 to 113.2,
/// 32 x 768 x 768 106.8 to 110.7. The other tiles keep their short slivers: AVX-512's 2-row
/// tile has 8 accumulators, and the native bf16 tile's 4-row tail as 8 + 8 measured level.
#[inline(always)]
pub(crate) fn balanced_tail(mc: usize, mr: usize, full: usize) -> usize {
    let r = mc % mr;
    if r > 0 && r < full && 3 * r <= mr && mc > mr {
        mr + r
    } else {
        0
    }
}

/// The two slivers of a [`balanced_tail`] of `tail` rows that starts at row `start`:
/// (first row, rows) of each, the larger first.
#[inline(always)]
pub(crate) fn tail_halves(start: usize, tail: usize) -> [(usize, usize); 2] {
    let h1 = tail.div_ceil(2);
    [(start, h1), (start + h1, tail - h1)]
}

/// Packs the A block at `a0` (`mc` rows, `kc` deep) into `ap`: slivers of MR rows, the last
/// two as [`tail_halves`] where there is a [`balanced_tail`] (sliver s at `s * MR * kw`); or,
/// when A is read in place (`direct`), only the rows past its full MR-row slivers (those of a
/// [`balanced_tail`] included), so that no row past the block is ever read. Returns the rows
/// read in place.
#[inline(always)]
pub(crate) unsafe fn pack_a_block<T: Tile>(
    t: T,
    ap: &mut [T::P],
    job: &Job,
    a0: *const f32,
    mc: usize,
    kc: usize,
    direct: bool,
) -> usize {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let tail = balanced_tail(mc, T::MR, T::FULL_RATE_ROWS);
        let inplace = if direct {
            mc - if tail > 0 { tail } else { mc % T::MR }
        } else {
            0
        };
        let body = mc - tail - inplace;
        t.pack_a(ap, a0.add(inplace * job.ars), job.ars, job.acs, body, kc);
        if tail > 0 {
            // The tail's two halves, each a sliver of its own.
            let sliver = T::MR * kc.div_ceil(T::K_PER);
            let first = body.div_ceil(T::MR);
            for (s, (i, h)) in tail_halves(mc - tail, tail).into_iter().enumerate() {
                let dst = &mut ap[(first + s) * sliver..];
                t.pack_a(dst, a0.add(i * job.ars), job.ars, job.acs, h, kc);
            }
        }
        inplace
    }
}

/// One A block (`a0`, its first `inplace` rows read in place, the rest packed in `ap`; `mc`
/// rows, `kc` deep) against one packed B sliver, into the C block at `c`: the innermost loop,
/// one tile call per MR rows (or per half of a [`balanced_tail`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn a_block<T: Tile>(
    t: T,
    job: &Job,
    (a0, inplace, ap): (*const f32, usize, &[T::P]),
    (mc, kc): (usize, usize),
    bsliver: *const T::P,
    c: *mut f32,
    alpha: f32,
    beta: f32,
    nr_eff: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        for ir in (0..inplace).step_by(T::MR) {
            t.tile_direct(
                kc,
                a0.add(ir * job.ars),
                job.ars,
                bsliver,
                c.add(ir * job.crs),
                job.crs,
                job.ccs,
                alpha,
                beta,
                nr_eff,
            );
        }
        let kw = kc.div_ceil(T::K_PER);
        let tail = balanced_tail(mc, T::MR, T::FULL_RATE_ROWS);
        let end = mc - tail;
        for ir in (inplace..end).step_by(T::MR) {
            let h = T::MR.min(end - ir);
            let a = ap.as_ptr().add((ir - inplace) * kw);
            let c = c.add(ir * job.crs);
            t.tile(kw, a, bsliver, c, job.crs, job.ccs, alpha, beta, h, nr_eff);
        }
        if tail > 0 {
            // The balanced tail: two slivers of their own, after the full ones.
            let first = ap.as_ptr().add((end - inplace) * kw);
            for (s, (ir, h)) in tail_halves(end, tail).into_iter().enumerate() {
                let a = first.add(s * T::MR * kw);
                let c = c.add(ir * job.crs);
                t.tile(kw, a, bsliver, c, job.crs, job.ccs, alpha, beta, h, nr_eff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of each sliver of a block of `mc` rows, as the driver cuts it: MR-row slivers
    /// (the last one shorter), or, with a balanced tail, full slivers then the tail's halves.
    fn cut(mc: usize, mr: usize, full: usize) -> Vec<usize> {
        let tail = balanced_tail(mc, mr, full);
        let end = mc - tail;
        let mut out: Vec<usize> = (0..end).step_by(mr).map(|i| mr.min(end - i)).collect();
        let mut at = end;
        if tail > 0 {
            for (i, h) in tail_halves(end, tail) {
                assert_eq!(i, at, "{mc} rows on {mr}: the halves are not contiguous");
                out.push(h);
                at += h;
            }
        }
        for &h in &out {
            assert!(h > 0 && h <= mr, "{mc} rows on {mr}: a sliver of {h}");
        }
        out
    }

    #[test]
    fn short_tails_are_balanced_only_where_the_tile_needs_it() {
        // AVX2's 6-row tile (full rate from 4 rows): 128 = 20 x 6 + 4 + 4, 127 = ... + 4 + 3.
        assert_eq!(cut(128, 6, 4)[20..], [4, 4]);
        assert_eq!(cut(127, 6, 4)[20..], [4, 3]);
        assert_eq!(cut(32, 6, 4), [6, 6, 6, 6, 4, 4]);
        // A 3-row or longer tail, a block of one sliver, or a tile that never balances: as is.
        assert_eq!(cut(129, 6, 4)[21..], [3]);
        assert_eq!(cut(2, 6, 4), [2]);
        assert_eq!(cut(128, 6, 1)[21..], [2]);
        // Every cut covers the block, in as many slivers as MR-row cutting makes.
        for mc in 1..200 {
            for (mr, full) in [(6, 4), (6, 2), (4, 8), (12, 8)] {
                let c = cut(mc, mr, full);
                assert_eq!(c.iter().sum::<usize>(), mc);
                assert_eq!(c.len(), mc.div_ceil(mr), "{mc} rows on {mr}");
            }
        }
    }
}
