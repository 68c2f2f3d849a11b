//! The f32 tile: an MR x NR block of C in registers, updated by one rank-1 product per k
//! (MR broadcasts of A, NR/LANES loads of B, MR x NR/LANES FMAs), over packed slivers.
//! [`with_tile`] is the one place that picks each ISA's tile shape.

use super::driver::Tile;
use super::memory::{prefetch, prefetch_l2};
use super::pack::{pack_a, pack_b};
use crate::simd::{Isa, Simd};

/// Register tile (MR, NR) of each ISA's microkernel, for code outside the SIMD trampolines
/// (thread splitting, buffer sizes, blocking); [`with_tile`] instantiates the same shapes
/// (a test checks that they agree).
pub(crate) fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (6, 64),
        Isa::Avx2 => (6, 16),
        Isa::Portable => (4, 8),
    }
}

/// Code generic over a register tile of MR rows and NV vectors of `S::LANES` columns.
pub(crate) trait WithTile {
    type Output;
    fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S) -> Self::Output;
}

/// Runs `w` with `S`'s register tile: 6 x 4 vectors on AVX-512 (24 zmm accumulators), 6 x 2 on
/// AVX2 (12 ymm), 4 x 1 on the portable path. Used by the f32 GEMM, the prepacked one and the
/// rounded and emulated bf16 tiles alike.
///
/// AVX-512 was 12 x 2 (BLIS's Skylake-X shape): 2 loads of B and 12 broadcasts of A per 24
/// FMAs. 6 x 4 needs 4 loads and 6 broadcasts, and divides BERT's widths (768, 3072, 384 and
/// 1536 are multiples of 64) and 128 rows into fewer, fuller slivers. On a Zen 4 it ran the
/// row-major GEMM table 0-3% faster (128 x 3072 x 768 and 128 x 768 x 3072 on one thread: 97.7
/// and 96.1 to 103.1 and 101.4 GFLOP/s) and level elsewhere, the transposed one level or
/// faster; inference and the training GEMMs level.
#[inline(always)]
pub(crate) fn with_tile<S: Simd, W: WithTile>(s: S, w: W) -> W::Output {
    match S::ISA {
        Isa::Avx512 => w.run::<S, 6, 4>(s),
        Isa::Avx2 => w.run::<S, 6, 2>(s),
        Isa::Portable => w.run::<S, 4, 1>(s),
    }
}

/// The f32 tile on ISA `S`: MR x (NV * LANES).
#[derive(Clone, Copy)]
pub(crate) struct F32Tile<S, const MR: usize, const NV: usize>(pub S);

impl<S: Simd, const MR: usize, const NV: usize> Tile for F32Tile<S, MR, NV> {
    type P = f32;
    const MR: usize = MR;
    const NR: usize = NV * S::LANES;
    const K_PER: usize = 1;
    /// 8 accumulators cover the FMA latency (4 cycles, 2 pipes): 4 rows of AVX2's 2 vectors,
    /// so a 1- or 2-row tail is balanced. AVX-512's 2-row tile (8 accumulators) already runs at
    /// the full rate; its tile says 1 (never balance), which leaves the code of its loops as it
    /// was: with only the 1-row case balanced, 126 x 768 x 3072 (no tail at all) ran 2%
    /// slower in median on a Zen 4, from the loops' code alone.
    const FULL_RATE_ROWS: usize = if NV >= 4 { 1 } else { 8usize.div_ceil(NV) };

    #[inline(always)]
    unsafe fn pack_a(
        self,
        dst: &mut [f32],
        a: *const f32,
        rs: usize,
        cs: usize,
        mc: usize,
        kc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_a::<S>(self.0, dst, a, rs, cs, mc, kc, MR) }
    }

    #[inline(always)]
    unsafe fn pack_b(
        self,
        dst: &mut [f32],
        b: *const f32,
        rs: usize,
        cs: usize,
        kc: usize,
        nc: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe { pack_b::<S, NV>(self.0, dst, b, rs, cs, kc, nc) }
    }

    const DIRECT_A: bool = true;

    #[inline(always)]
    unsafe fn tile_direct(
        self,
        kc: usize,
        a: *const f32,
        ars: usize,
        b: *const f32,
        c: *mut f32,
        rs: usize,
        cs: usize,
        alpha: f32,
        beta: f32,
        nr_eff: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let args = (
                kc,
                a,
                ars,
                1,
                b,
                Self::NR,
                c,
                rs,
                cs,
                alpha,
                beta,
                MR,
                nr_eff,
            );
            columns::<S, MR, NV>(self.0, args)
        }
    }

    #[inline(always)]
    unsafe fn tile(
        self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs: usize,
        cs: usize,
        alpha: f32,
        beta: f32,
        h: usize,
        nr_eff: usize,
    ) {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let args = (kc, a, 1, MR, b, Self::NR, c, rs, cs, alpha, beta, h, nr_eff);
            columns::<S, MR, NV>(self.0, args)
        }
    }
}

/// [`rows`] with the tile vectors a last B sliver of `nr_eff` columns needs: one of 32 or
/// fewer (a head of 32 against a 64-column tile) runs half the tile's vectors over the same
/// packed sliver (stride NR), rather than multiplying zero columns.
#[inline(always)]
pub(crate) unsafe fn columns<S: Simd, const MR: usize, const NV: usize>(s: S, args: TileArgs) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        if NV == 4 && args.12 <= 2 * S::LANES {
            rows::<S, MR, 2>(s, args)
        } else {
            rows::<S, MR, NV>(s, args)
        }
    }
}

/// [`microkernel`] with the tile rows a last sliver of `h` rows needs (m = 128 leaves 2 rows
/// with MR = 6): a shorter tile over the same packed sliver (stride MR), rather
/// than multiplying zero rows. `bs` is the packed B sliver's stride (its NR).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows<S: Simd, const MR: usize, const NV: usize>(s: S, args: TileArgs) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let h = args.11;
        if MR == 6 && h <= 2 {
            microkernel::<S, 2, NV>(s, args)
        } else if MR == 6 && h <= 4 {
            microkernel::<S, 4, NV>(s, args)
        } else {
            microkernel::<S, MR, NV>(s, args)
        }
    }
}

/// What [`microkernel`] computes on: (kc, A, A's row stride, A's k stride, B sliver, B
/// sliver stride, C, C row stride, C column stride, alpha, beta, rows, columns).
pub(crate) type TileArgs = (
    usize,
    *const f32,
    usize,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    usize,
    f32,
    f32,
    usize,
    usize,
);

/// The register-tiled inner kernel: C[0..mr_eff, 0..nr_eff] = alpha * Ap Bp + beta * C.
///
/// A's element (i, p) is at `a[i * ars + p * aks]`: a packed sliver (k-major, `ars` 1, `aks`
/// the sliver's height, the tile using its first MR rows) or A itself, read in place (row-major,
/// `ars` its row stride, `aks` 1). `b` is a sliver of `bs` columns (kc x bs, k-major; bs >= NV * LANES, the tile uses its
/// first NV vectors).
/// The MR x NV accumulators are locals of a fixed-size array, which LLVM keeps in registers.
#[inline(always)]
unsafe fn microkernel<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    (kc, a, ars, aks, b, bs, c, rsc, csc, alpha, beta, mr_eff, nr_eff): TileArgs,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let l = S::LANES;
        let nr = NV * l;
        // The C tile is needed only after the k loop. Ask for it into L2 now, which hides a miss
        // to L3 or memory, and into L1 only for the last `C_LEAD` steps: fetched into L1 now, its
        // lines would be evicted again by the B sliver's before they are used when C's row stride
        // is a multiple of 4 KiB (all the tile's rows then fall in one or two L1 sets).
        for i in 0..mr_eff {
            for_c_lines(c.add(i * rsc), csc, nr_eff, prefetch_l2);
        }
        const C_LEAD: usize = 16;
        let acc = [[s.zero(); NV]; MR];
        let lead = kc.min(C_LEAD);
        // The tile goes through k_steps by value (returned, not borrowed): behind a `&mut` that
        // crosses two loops LLVM stored every accumulator after each FMA (2.5x slower).
        let (acc, ap, bp) = k_steps::<S, MR, NV>(s, acc, (a, ars, aks), b, bs, kc - lead);
        for i in 0..mr_eff {
            for_c_lines(c.add(i * rsc), csc, nr_eff, prefetch);
        }
        let (acc, _, _) = k_steps::<S, MR, NV>(s, acc, (ap, ars, aks), bp, bs, lead);
        let va = s.splat(alpha);
        if nr_eff == nr && csc == 1 {
            // Full-width tile, contiguous rows: vector read-modify-write of C's first mr_eff rows.
            let vb = s.splat(beta);
            for (i, row) in acc.iter().enumerate().take(mr_eff) {
                let cr = c.add(i * rsc);
                for (v, &acc_v) in row.iter().enumerate() {
                    let out = if beta == 0.0 {
                        s.mul(va, acc_v)
                    } else {
                        s.fma(vb, s.load(cr.add(v * l)), s.mul(va, acc_v))
                    };
                    s.store(cr.add(v * l), out);
                }
            }
        } else {
            // Edge tile or strided C: spill the tile, then update element by element.
            // Room for the largest tile, 6 x 64 (AVX-512).
            const { assert!(MR * NV * S::LANES <= 384) };
            let mut tmp = [0.0f32; 384];
            for (i, row) in acc.iter().enumerate() {
                for (v, &acc_v) in row.iter().enumerate() {
                    s.store(tmp.as_mut_ptr().add(i * nr + v * l), s.mul(va, acc_v));
                }
            }
            for i in 0..mr_eff {
                for j in 0..nr_eff {
                    let p = c.add(i * rsc + j * csc);
                    let t = tmp[i * nr + j];
                    *p = if beta == 0.0 { t } else { beta * *p + t };
                }
            }
        }
    }
}

/// Calls `f` on one address in every cache line of a C tile row (`n` elements at stride `cs`
/// from `row`): each 16-float line of a contiguous row (a 64-column row spans four), or the
/// first and last element of a strided one.
#[inline(always)]
fn for_c_lines(row: *mut f32, cs: usize, n: usize, f: impl Fn(*const f32)) {
    if cs == 1 {
        let mut j = 0;
        while j < n {
            f(row.wrapping_add(j));
            j += 16;
        }
        f(row.wrapping_add(n - 1));
    } else {
        f(row);
        f(row.wrapping_add((n - 1) * cs));
    }
}

/// `steps` rank-1 updates of the register tile from A (pointer, row stride, k stride) and the
/// packed B sliver `b` (stride `nr` per k); returns the tile and the pointers past them.
#[inline(always)]
unsafe fn k_steps<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    mut acc: [[S::F; NV]; MR],
    (a, ars, aks): (*const f32, usize, usize),
    b: *const f32,
    nr: usize,
    steps: usize,
) -> ([[S::F; NV]; MR], *const f32, *const f32) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let (mut ap, mut bp) = (a, b);
        // Unrolled by 4: fewer loop-counter instructions between the FMAs.
        for _ in 0..steps / 4 {
            rank1::<S, MR, NV>(s, &mut acc, ap, ars, bp);
            rank1::<S, MR, NV>(s, &mut acc, ap.add(aks), ars, bp.add(nr));
            rank1::<S, MR, NV>(s, &mut acc, ap.add(2 * aks), ars, bp.add(2 * nr));
            rank1::<S, MR, NV>(s, &mut acc, ap.add(3 * aks), ars, bp.add(3 * nr));
            ap = ap.add(4 * aks);
            bp = bp.add(4 * nr);
        }
        for _ in 0..steps % 4 {
            rank1::<S, MR, NV>(s, &mut acc, ap, ars, bp);
            ap = ap.add(aks);
            bp = bp.add(nr);
        }
        (acc, ap, bp)
    }
}

/// One rank-1 update of the register tile: NV loads of B, MR broadcasts of A, MR * NV FMAs.
/// (A function, not a closure: closures are not `#[inline(always)]` and would lose the ISA.)
#[inline(always)]
unsafe fn rank1<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &mut [[S::F; NV]; MR],
    ap: *const f32,
    ars: usize,
    bp: *const f32,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let mut bv = [s.zero(); NV];
        for (v, bvv) in bv.iter_mut().enumerate() {
            *bvv = s.load(bp.add(v * S::LANES));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = s.splat(*ap.add(i * ars));
            for v in 0..NV {
                row[v] = s.fma(ai, bv[v], row[v]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch, SimdKernel};

    /// [`tile`] states, for code outside the trampolines, the shape [`with_tile`] instantiates.
    #[test]
    fn the_tile_table_matches_the_instantiated_tiles() {
        struct Shape;
        impl SimdKernel for Shape {
            type Output = (usize, usize);
            fn run<S: Simd>(self, s: S) -> (usize, usize) {
                with_tile(s, self)
            }
        }
        impl WithTile for Shape {
            type Output = (usize, usize);
            fn run<S: Simd, const MR: usize, const NV: usize>(self, _: S) -> (usize, usize) {
                (
                    <F32Tile<S, MR, NV> as Tile>::MR,
                    <F32Tile<S, MR, NV> as Tile>::NR,
                )
            }
        }
        for isa in Isa::available() {
            assert_eq!(dispatch(isa, Shape), tile(isa), "{isa:?}");
        }
    }
}
