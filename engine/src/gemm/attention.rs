//! Fused inference attention for one (sequence, head), on the f32 GEMM's register tile.
//!
//! ```text
//! pack K^T (d x sk) into NR-column slivers, V (sk x dv) into slivers     once per head
//! for each block of MR query rows:
//!   S[MR, sk] = scale * Q[rows] K^T      tiles of MR x NR, Q read in place   (k = d)
//!   P[MR, sk] = exp(S + mask - row max), and its row sums                   (in L1)
//!   O[rows]   = (P V) / row sums         tiles of MR x dv, P read in place   (k = sk)
//! ```
//! The unfused version ([`crate::attention::attention_inference_unfused`]) writes the whole
//! sq x sk score matrix (64 KiB at BERT's 128 tokens), reads it back to softmax it into a second
//! one, and reads that again for `P v`: three trips through L2. Here a block's scores and
//! probabilities (MR x sk, 3 KiB each) never leave L1, and the packed K^T and V are shared by
//! every query block of the head. The rows of P are left unnormalised (exp(s - max)) and each
//! output row is divided by its sum instead: dv multiplies per row rather than sk.
//!
//! `cargo run --release -p benches --bin attn_table` times it against the unfused version. On
//! a Zen 4 (AVX-512), one layer of MiniLM at 32 x 128 tokens: 13.2 to 11.7 ms on one thread,
//! 6.7 to 5.8 on two; BERT-base at 8 x 128: 5.4 to 4.5 and 2.6 to 2.2. The two products are
//! then at 92-96% of the FMA peak (measured by switching them off: what remains is the
//! softmax, about 5 us per 128 x 128 head, and reading Q, K and V from L3).
//!
//! [`attention_head_bf16`] runs the same loop on the bf16 GEMM's tile (q, k, the probabilities
//! and v rounded to bf16 as they are packed): there Q and P blocks are packed too, into bf16
//! pairs. Against the unfused bf16 version, 5-10% faster on the same shapes (MiniLM at 32 x 128,
//! one thread: 11.2 to 10.6 ms per layer).
//!
//! Nothing is kept for a backward pass: the training path keeps the probabilities
//! ([`crate::attention::attention_forward`]) or recomputes them (the fused training kernels).

use super::bf16::Bf16Kernel;
use super::driver::Tile;
use super::memory::{prefetch_l2, AlignedBuf};
use super::microkernel::{columns, rows, tile, with_tile, TileArgs, WithTile};
use super::pack::pack_b;
use crate::simd::{dispatch, map_inplace, Isa, Simd, SimdKernel};
use crate::softmax::exp_row;

/// One head's operands. Q is `sq` rows of `d` (element (i, p) at `q + i*qs.0 + p*qs.1`), K is
/// `sk` rows of `d`, V `sk` rows of `dv`, all strided views (a fused QKV projection's columns);
/// O is `sq` rows of `dv` at row stride `ors`, columns contiguous. The mask, when given, is
/// `(data, offset, row stride)`: query row i adds `data[offset + i*stride ..][..sk]`.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub q: *const f32,
    pub qs: (usize, usize),
    pub k: *const f32,
    pub ks: (usize, usize),
    pub v: *const f32,
    pub vs: (usize, usize),
    pub o: *mut f32,
    pub ors: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    pub scale: f32,
    pub mask: Option<(&'a [f32], usize, usize)>,
    /// Q, K and V of the head the calling thread will likely run next (same strides and
    /// sizes), prefetched into L2 a slice per query block: at BERT's batch sizes the fused
    /// projection (B x S x 3 x H x D) is larger than L2, and one head's rows come from L3.
    pub next: Option<(*const f32, *const f32, *const f32)>,
}

thread_local! {
    /// Per-thread scratch: packed K^T and V, a Q block, a P block (bf16), the score and
    /// probability blocks.
    static SCRATCH: std::cell::RefCell<AlignedBuf> = std::cell::RefCell::new(AlignedBuf::new());
}

/// Where each piece of the scratch buffer starts (4-byte slots, 16-aligned) and its length.
/// The packed K^T starts at 0.
#[derive(Clone, Copy)]
struct Layout {
    /// Packed V.
    vp: usize,
    /// A Q block: the f32 kernel's copy of a last, short block; the bf16 kernel's packed one.
    qa: usize,
    /// The bf16 kernel's packed P block (empty for f32).
    pp: usize,
    /// Scores and probabilities, MR rows of `skp` floats each.
    sb: usize,
    pb: usize,
    skp: usize,
    len: usize,
}

/// The scratch layout for tile (mr, nr), with `k_per` k per packed slot (2 for bf16 pairs, else
/// 1) and, if `packed_p`, a packed P block (every bf16 kernel's).
fn layout(h: &Head, (mr, nr): (usize, usize), k_per: usize, packed_p: bool) -> Layout {
    let up = |n: usize| n.next_multiple_of(16);
    let (kd, ks) = (h.d.div_ceil(k_per), h.sk.div_ceil(k_per));
    let vp = up(kd * h.sk.next_multiple_of(nr));
    let qa = vp + up(ks * h.dv.next_multiple_of(nr));
    let pp = qa + up(mr * kd);
    let sb = pp + if packed_p { up(mr * ks) } else { 0 };
    let skp = up(h.sk);
    Layout {
        vp,
        qa,
        pp,
        sb,
        pb: sb + mr * skp,
        skp,
        len: sb + 2 * mr * skp,
    }
}

/// `O = softmax(scale * Q K^T + mask) V` for one head on ISA `isa`, on the calling thread.
/// A row whose every key is masked (-inf) gets zeros.
///
/// # Safety
/// Every pointer of `h` must address its view's elements (as described on [`Head`]); O must
/// not overlap Q, K, V or the mask.
pub(crate) unsafe fn attention_head(isa: Isa, h: Head) {
    // SAFETY: forwarded.
    unsafe { run_head(isa, h, None) }
}

/// [`attention_head`] with both products in bf16: q, k, the probabilities and v rounded to
/// bf16 as they are packed, f32 sums, the softmax in f32. The bf16 GEMM's tile
/// ([`bf16_kernel`](super::bf16::bf16_kernel): native `vdpbf16ps`, or the f32 tile over
/// rounded operands) over the same loop; its operands are always packed (rounding happens
/// there), so Q and P blocks are packed too.
///
/// # Safety
/// As [`attention_head`].
pub(crate) unsafe fn attention_head_bf16(isa: Isa, h: Head) {
    // SAFETY: forwarded.
    unsafe { run_head(isa, h, Some(super::bf16::bf16_kernel(isa))) }
}

/// [`attention_head_bf16`] on a given bf16 kernel (the tests compare them).
///
/// # Safety
/// As [`attention_head`], and `kernel.runs_on(isa)`.
#[cfg(test)]
unsafe fn attention_head_bf16_kernel(kernel: Bf16Kernel, isa: Isa, h: Head) {
    // SAFETY: forwarded.
    unsafe { run_head(isa, h, Some(kernel)) }
}

unsafe fn run_head(isa: Isa, h: Head, bf16: Option<Bf16Kernel>) {
    if h.sq == 0 || h.dv == 0 {
        return;
    }
    if h.sk == 0 {
        // No keys: every row is "fully masked".
        for i in 0..h.sq {
            // SAFETY: row i of O holds dv floats (the caller's contract).
            unsafe { std::ptr::write_bytes(h.o.add(i * h.ors), 0, h.dv) };
        }
        return;
    }
    let lay = match bf16 {
        Some(kn) => layout(&h, kn.tile(isa), kn.k_per(), true),
        None => layout(&h, tile(isa), 1, false),
    };
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        let scratch = buf.get(lay.len).as_mut_ptr();
        dispatch(
            isa,
            Fused {
                h,
                lay,
                scratch,
                bf16,
            },
        )
    })
}

struct Fused<'a> {
    h: Head<'a>,
    lay: Layout,
    scratch: *mut f32,
    /// The bf16 kernel (None: f32).
    bf16: Option<Bf16Kernel>,
}

impl SimdKernel for Fused<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd>(self, s: S) {
        #[cfg(target_arch = "x86_64")]
        if self.bf16 == Some(Bf16Kernel::Native) {
            // SAFETY: forwarded from run_head's contract (runs_on checked the CPU).
            unsafe { head_packed(s, super::bf16::Native, self.h, &self.lay, self.scratch) };
            return;
        }
        with_tile(s, self)
    }
}

impl WithTile for Fused<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S) {
        let (h, lay, scratch) = (self.h, &self.lay, self.scratch);
        // SAFETY: forwarded from run_head's contract; the scratch holds `lay.len` slots.
        unsafe {
            if self.bf16 == Some(Bf16Kernel::Rounded) {
                head_packed(s, super::bf16::Rounded::<S, MR, NV>(s), h, lay, scratch)
            } else if self.bf16.is_some() {
                head_packed(s, super::bf16::Emulated::<S, MR, NV>(s), h, lay, scratch)
            } else if NV == 4 && h.dv <= 2 * S::LANES {
                // V slivers as wide as the head when it fits half the tile (a head of 32 on
                // AVX-512's 64 columns): half the packed bytes, no zero columns multiplied.
                head::<S, MR, NV, 2>(s, h, lay, scratch)
            } else {
                head::<S, MR, NV, NV>(s, h, lay, scratch)
            }
        }
    }
}

/// The f32 head on tile MR x NV vectors for the scores, MR x VV vectors for `P v`.
#[inline(always)]
unsafe fn head<S: Simd, const MR: usize, const NV: usize, const VV: usize>(
    s: S,
    h: Head,
    lay: &Layout,
    scratch: *mut f32,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body; every scratch piece lies inside the `lay.len` floats.
    unsafe {
        let l = S::LANES;
        let (nr, nrv) = (NV * l, VV * l);
        let kt = std::slice::from_raw_parts_mut(scratch, lay.vp);
        let vp = std::slice::from_raw_parts_mut(scratch.add(lay.vp), lay.qa - lay.vp);
        let qt = scratch.add(lay.qa);
        let (sb, pb, skp) = (scratch.add(lay.sb), scratch.add(lay.pb), lay.skp);
        // B of the scores is K^T: element (p, j) = K[j, p], so row stride K's column stride.
        pack_b::<S, NV>(s, kt, h.k, h.ks.1, h.ks.0, h.d, h.sk);
        pack_b::<S, VV>(s, vp, h.v, h.vs.0, h.vs.1, h.sk, h.dv);
        for i0 in (0..h.sq).step_by(MR) {
            let rows_here = MR.min(h.sq - i0);
            prefetch_next(&h, i0 / MR, h.sq.div_ceil(MR));
            // A full block reads Q in place; a last, short one is copied out first, so that
            // the tile (which may read up to 4 rows for 3) never reads past Q's last row.
            let (a, ars, aks) = if rows_here == MR {
                (h.q.add(i0 * h.qs.0), h.qs.0, h.qs.1)
            } else {
                for i in 0..MR {
                    for p in 0..h.d {
                        *qt.add(i * h.d + p) = if i < rows_here {
                            *h.q.add((i0 + i) * h.qs.0 + p * h.qs.1)
                        } else {
                            0.0
                        };
                    }
                }
                (qt as *const f32, h.d, 1)
            };
            for j0 in (0..h.sk).step_by(nr) {
                let args: TileArgs = (
                    h.d,
                    a,
                    ars,
                    aks,
                    kt.as_ptr().add(j0 * h.d),
                    nr,
                    sb.add(j0),
                    skp,
                    1,
                    h.scale,
                    0.0,
                    rows_here,
                    nr.min(h.sk - j0),
                );
                columns::<S, MR, NV>(s, args);
            }
            let inv = block_exp(s, &h, (sb, pb, skp), i0, rows_here);
            for j0 in (0..h.dv).step_by(nrv) {
                let args: TileArgs = (
                    h.sk,
                    pb,
                    skp,
                    1,
                    vp.as_ptr().add(j0 * h.sk),
                    nrv,
                    h.o.add(i0 * h.ors + j0),
                    h.ors,
                    1,
                    1.0,
                    0.0,
                    rows_here,
                    nrv.min(h.dv - j0),
                );
                if VV == NV {
                    columns::<S, MR, VV>(s, args);
                } else {
                    rows::<S, MR, VV>(s, args);
                }
            }
            scale_rows(s, &h, i0, &inv[..rows_here]);
        }
    }
}

/// The head over any bf16 [`Tile`] (pair-words, or f32 values rounded at packing): Q and P
/// blocks packed with the tile's `pack_a`, K^T and V with its `pack_b`, every product a
/// `tile` call.
#[inline(always)]
unsafe fn head_packed<S: Simd, T: Tile<P = u32>>(
    s: S,
    t: T,
    h: Head,
    lay: &Layout,
    scratch: *mut f32,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body; every scratch piece lies inside the `lay.len` 4-byte slots.
    unsafe {
        let (mr, nr) = (T::MR, T::NR);
        let (kwd, kws) = (h.d.div_ceil(T::K_PER), h.sk.div_ceil(T::K_PER));
        let words = |at: usize, end: usize| {
            std::slice::from_raw_parts_mut(scratch.add(at) as *mut u32, end - at)
        };
        let (kt, vp) = (words(0, lay.vp), words(lay.vp, lay.qa));
        let (qa, pp) = (words(lay.qa, lay.pp), words(lay.pp, lay.sb));
        let (sb, pb, skp) = (scratch.add(lay.sb), scratch.add(lay.pb), lay.skp);
        t.pack_b(kt, h.k, h.ks.1, h.ks.0, h.d, h.sk);
        t.pack_b(vp, h.v, h.vs.0, h.vs.1, h.sk, h.dv);
        for i0 in (0..h.sq).step_by(mr) {
            let rows_here = mr.min(h.sq - i0);
            prefetch_next(&h, i0 / mr, h.sq.div_ceil(mr));
            t.pack_a(qa, h.q.add(i0 * h.qs.0), h.qs.0, h.qs.1, rows_here, h.d);
            for j0 in (0..h.sk).step_by(nr) {
                let (b, c) = (kt.as_ptr().add(j0 * kwd), sb.add(j0));
                let cols = nr.min(h.sk - j0);
                t.tile(
                    kwd,
                    qa.as_ptr(),
                    b,
                    c,
                    skp,
                    1,
                    h.scale,
                    0.0,
                    rows_here,
                    cols,
                );
            }
            let inv = block_exp(s, &h, (sb, pb, skp), i0, rows_here);
            t.pack_a(pp, pb, skp, 1, rows_here, h.sk);
            for j0 in (0..h.dv).step_by(nr) {
                let (b, c) = (vp.as_ptr().add(j0 * kws), h.o.add(i0 * h.ors + j0));
                let cols = nr.min(h.dv - j0);
                t.tile(kws, pp.as_ptr(), b, c, h.ors, 1, 1.0, 0.0, rows_here, cols);
            }
            scale_rows(s, &h, i0, &inv[..rows_here]);
        }
    }
}

/// The most rows of a query block (the bf16 tile's 12, the f32 tile's 6 or 4).
const MAX_ROWS: usize = 16;

/// The block's unnormalised probabilities: row i of `pb` = exp(row i of `sb` + mask - max),
/// for `rows` rows of `sk` at stride `skp`. Returns 1 / sum per row (0 for a fully masked row).
#[inline(always)]
unsafe fn block_exp<S: Simd>(
    s: S,
    h: &Head,
    (sb, pb, skp): (*mut f32, *mut f32, usize),
    i0: usize,
    rows: usize,
) -> [f32; MAX_ROWS] {
    assert!(rows <= MAX_ROWS, "a query block of {rows} rows");
    let mut inv = [0.0f32; MAX_ROWS];
    for (i, inv) in inv.iter_mut().enumerate().take(rows) {
        // SAFETY: the caller's blocks hold `rows` rows of `skp >= sk` floats.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(sb.add(i * skp), h.sk),
                std::slice::from_raw_parts_mut(pb.add(i * skp), h.sk),
            )
        };
        let m = h
            .mask
            .map(|(data, off, rs)| &data[off + (i0 + i) * rs..][..h.sk]);
        let sum = exp_row(s, x, m, y);
        *inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }
    inv
}

/// Output rows `i0..i0 + inv.len()` multiplied by their `inv` (the softmax's division).
#[inline(always)]
unsafe fn scale_rows<S: Simd>(s: S, h: &Head, i0: usize, inv: &[f32]) {
    for (i, &inv) in inv.iter().enumerate() {
        // SAFETY: O's row i0 + i holds dv floats (the caller's contract), written by no one else.
        let row = unsafe { std::slice::from_raw_parts_mut(h.o.add((i0 + i) * h.ors), h.dv) };
        let vi = s.splat(inv);
        map_inplace(
            s,
            row,
            #[inline(always)]
            |v| s.mul(v, vi),
        );
    }
}

/// Block `ib` of `blocks`: its share of the next head's Q, K and V rows, prefetched into L2
/// (rows with contiguous elements only).
#[inline(always)]
fn prefetch_next(h: &Head, ib: usize, blocks: usize) {
    let Some((nq, nk, nv)) = h.next else { return };
    for (p, (rs, cs), n, w) in [
        (nq, h.qs, h.sq, h.d),
        (nk, h.ks, h.sk, h.d),
        (nv, h.vs, h.sk, h.dv),
    ] {
        if cs == 1 {
            for r in n * ib / blocks..n * (ib + 1) / blocks {
                for c in (0..w).step_by(16) {
                    prefetch_l2(p.wrapping_add(r * rs + c));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 attention of one head, row-major q (sq x d), k (sk x d), v (sk x dv).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: Option<&[f32]>,
        sq: usize,
        sk: usize,
        d: usize,
        dv: usize,
        scale: f64,
    ) -> Vec<f64> {
        let mut o = vec![0.0f64; sq * dv];
        for i in 0..sq {
            let z: Vec<f64> = (0..sk)
                .map(|j| {
                    let dot: f64 = (0..d)
                        .map(|p| q[i * d + p] as f64 * k[j * d + p] as f64)
                        .sum();
                    scale * dot + mask.map_or(0.0, |m| m[i * sk + j] as f64)
                })
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue;
            }
            let e: Vec<f64> = z.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..dv {
                o[i * dv + c] = (0..sk).map(|j| e[j] / sum * v[j * dv + c] as f64).sum();
            }
        }
        o
    }

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Every ISA (emulated AVX-512 included) against f64, over shapes that hit each edge:
    /// a last query block short of MR, key counts around the tile width, heads of 32 (half
    /// the AVX-512 tile), 64 and wider than the tile, d != dv, Q, K, V as interleaved
    /// columns of one buffer (row stride 3 widths) or transposed (element stride > 1), masks
    /// with fully masked rows, and O rows wider than the head.
    #[test]
    fn fused_head_matches_f64_on_every_isa() {
        let mut isas = Isa::available();
        if crate::simd::emulating_avx512() && !isas.contains(&Isa::Avx512) {
            isas.push(Isa::Avx512);
        }
        let shapes = [
            (1, 1, 8, 8),
            (5, 7, 3, 5),
            (13, 64, 32, 32),
            (11, 70, 32, 32),
            (6, 129, 64, 64),
            (20, 33, 24, 80),
            (7, 128, 16, 70),
        ];
        for isa in isas {
            for (ci, &(sq, sk, d, dv)) in shapes.iter().enumerate() {
                for transposed in [false, true] {
                    for masked in [false, true] {
                        // One (rows, 3 * w) buffer: Q, K, V side by side, w = max(d, dv).
                        let w = d.max(dv);
                        let rows = sq.max(sk);
                        let buf = rand(rows * 3 * w, ci as u64 * 7 + 1);
                        // Element (i, p) of piece t: row-major at [i * 3w + t * w + p], or
                        // transposed at [p * rows * 3 ... ]: a second buffer laid out (3w, rows).
                        let tbuf: Vec<f32> = (0..3 * w * rows)
                            .map(|x| {
                                let (c, r) = (x / rows, x % rows);
                                buf[r * 3 * w + c]
                            })
                            .collect();
                        let get = |t: usize, n: usize, cols: usize| -> Vec<f32> {
                            (0..n * cols)
                                .map(|x| buf[(x / cols) * 3 * w + t * w + x % cols])
                                .collect()
                        };
                        let (qd, kd, vd) = (get(0, sq, d), get(1, sk, d), get(2, sk, dv));
                        let mut mask = rand(sq * sk, 99);
                        for j in 0..sk {
                            mask[(sq / 2) * sk + j] = f32::NEG_INFINITY;
                        }
                        if sk > 1 {
                            mask[0] = f32::NEG_INFINITY;
                        }
                        let want = naive(
                            &qd,
                            &kd,
                            &vd,
                            masked.then_some(&mask[..]),
                            sq,
                            sk,
                            d,
                            dv,
                            0.37,
                        );
                        // f32, then every bf16 kernel that runs on this ISA here.
                        let kernels = Bf16Kernel::available(isa).into_iter().map(Some);
                        for bf16 in std::iter::once(None).chain(kernels) {
                            let ors = dv + 3;
                            let mut o = vec![f32::NAN; sq * ors];
                            let (src, st) = if transposed {
                                (&tbuf, (1, rows))
                            } else {
                                (&buf, (3 * w, 1))
                            };
                            let at = |t: usize| {
                                let off = if transposed { t * w * rows } else { t * w };
                                src[off..].as_ptr()
                            };
                            let head = Head {
                                q: at(0),
                                qs: st,
                                k: at(1),
                                ks: st,
                                v: at(2),
                                vs: st,
                                o: o.as_mut_ptr(),
                                ors,
                                sq,
                                sk,
                                d,
                                dv,
                                scale: 0.37,
                                mask: masked.then_some((&mask[..], 0, sk)),
                                next: Some((at(2), at(0), at(1))),
                            };
                            // SAFETY: the views address elements of `buf`/`tbuf`, O is `o`.
                            unsafe {
                                match bf16 {
                                    Some(kn) => attention_head_bf16_kernel(kn, isa, head),
                                    None => attention_head(isa, head),
                                }
                            };
                            // bf16 rounds q, k, the probabilities and v (8 bits each).
                            let tol = if bf16.is_some() { 3e-2 } else { 1e-5 };
                            for i in 0..sq {
                                for c in 0..dv {
                                    let (g, w) = (o[i * ors + c] as f64, want[i * dv + c]);
                                    assert!(
                                        (g - w).abs() < tol * (1.0 + w.abs()),
                                        "{isa:?} {sq}x{sk}x{d}x{dv} t={transposed} m={masked} \
                                         bf16={bf16:?} ({i},{c}): {g} vs {w}"
                                    );
                                }
                                for c in dv..ors {
                                    assert!(o[i * ors + c].is_nan(), "wrote past the head");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
