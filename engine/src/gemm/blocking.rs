//! Cache blocking: how big the packed blocks of A and B are, from the running CPU's caches.

use super::microkernel::tile;
use crate::cpu::Caches;
use crate::simd::Isa;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Cache blocking: KC (the k extent of one packed block), MC (rows of A per packed block) and
/// NC (columns of B per packed panel), derived from the running CPU's caches after the BLIS
/// analytical model (Low, Igual, Smith, Quintana-Orti, "Analytical modeling is enough for
/// high-performance BLIS", TOMS 2016), one level up for KC:
///
/// - KC: the paper keeps the reused B sliver (KC x NR) in L1. Our microkernel needs (MR + NR)
///   x 4 bytes per k step, 176 bytes per 24 FMAs on AVX-512, which the L2 delivers at the
///   FMA rate with room to spare, while every KC block costs a pass over C (read and write
///   of each tile) and a round of microkernel calls. So the B sliver gets one way of the L2,
///   at least what the L1 rule gives and at most 1024 deep: on a Zen 4 (32 KiB L1d, 1 MiB
///   L2) the L1 rule's KC 224 ran 3-8% slower than this rule's 1024 on the large shapes and
///   the same on BERT's 128-row ones (`gemm_table --sweep`, and a direct race).
/// - MC: the packed A block (MC x KC) takes half of the L2, the rest holds the B sliver and
///   the C tiles as they pass; rounded up to the tile, so that 128 rows stay one block on a
///   1 MiB L2 (one block lets the driver pack each B sliver just before use, see driver.rs).
///   [`Blocking::for_depth`] keeps the block's bytes when a shallow product shortens KC.
/// - NC: this core's share of L3, what the A block leaves, holds the B panel (KC x NC).
///
/// `gemm_table --sweep` times candidate blockings on the running CPU beside the model's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

impl Blocking {
    /// The model's blocking for `isa`'s register tile on CPU caches `c`.
    pub fn model(isa: Isa, c: &Caches) -> Blocking {
        let (mr, nr) = tile(isa);
        let f = std::mem::size_of::<f32>();
        // The BLIS rule: the B sliver in all L1 ways but one (the streaming A sliver and the C
        // tile take the last); a floor only, see above.
        let l1 = c.l1d;
        let kc_l1 = l1.ways.saturating_sub(1).max(1) * l1.way_bytes() / (nr * f);
        // One level up: the B sliver in one way of the L2.
        let l2 = c.l2;
        let kc = (l2.way_bytes() / (nr * f)).max(kc_l1).clamp(64, 1024);
        // Multiples of 8 keep the packing's transposes on their vector path.
        let kc = kc - kc % 8;
        let mc = (l2.size / 2 / (kc * f))
            .clamp(mr, 4096)
            .next_multiple_of(mr);
        // L3: this core's share, what the A block leaves, holds the B panel (KC x NC),
        // capped at 4096 columns: a wider panel saves only repacking A once per panel.
        let l3 = c.l3;
        let share = (l3.size / l3.shared_by.max(1)).max(l2.size);
        let nc = (share.saturating_sub(mc * kc * f) / 2 / (kc * f)).clamp(nr, 4096);
        let nc = (nc - nc % nr).max(nr);
        Blocking { kc, mc, nc }
    }

    /// The blocking of one product of depth `k` on tile rows `mr`: KC rounded to equal blocks
    /// of the depth ([`kc_block`]), and MC scaled by the same factor the other way, so that
    /// the packed A block keeps its bytes (k = 768 with KC 1024 and MC 132 runs one KC block
    /// of 768 with 180 rows per A block), capped at 4096 rows.
    pub fn for_depth(self, k: usize, mr: usize) -> Blocking {
        self.with_kc(kc_block(k, self.kc), mr)
    }

    /// This blocking with KC set to `kc` and MC scaled to keep the A block's bytes (rows a
    /// multiple of `mr`, at most 4096).
    pub fn with_kc(self, kc: usize, mr: usize) -> Blocking {
        let mc = (self.mc * self.kc / kc.max(1))
            .clamp(mr, 4096)
            .next_multiple_of(mr);
        Blocking { kc, mc, ..self }
    }

    /// `ENGINE_GEMM_BLOCKING=KC,MC,NC`, when set and not empty (a warning on stderr when it
    /// cannot be read).
    fn from_env() -> Option<Blocking> {
        let v = std::env::var("ENGINE_GEMM_BLOCKING")
            .ok()
            .filter(|v| !v.trim().is_empty())?;
        let d: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match d[..] {
            [kc, mc, nc] if kc > 0 && mc > 0 && nc > 0 => Some(Blocking { kc, mc, nc }),
            _ => {
                eprintln!("engine: ENGINE_GEMM_BLOCKING={v:?} is not KC,MC,NC (three positive integers); using the model's blocking");
                None
            }
        }
    }

    /// The blocking the GEMM uses for `isa`: the override set by [`set_blocking`], else the
    /// model's for the running CPU.
    pub fn current(isa: Isa) -> Blocking {
        let kc = OVERRIDE[0].load(Ordering::Relaxed);
        if kc > 0 {
            let (mr, nr) = tile(isa);
            return Blocking {
                kc,
                mc: OVERRIDE[1].load(Ordering::Relaxed).next_multiple_of(mr),
                nc: OVERRIDE[2].load(Ordering::Relaxed).next_multiple_of(nr),
            };
        }
        static MODEL: OnceLock<[Blocking; 3]> = OnceLock::new();
        let m = MODEL.get_or_init(|| {
            let c = Caches::get();
            [Isa::Portable, Isa::Avx2, Isa::Avx512].map(|i| {
                let (mr, nr) = tile(i);
                Blocking::from_env()
                    .map(|b| Blocking {
                        kc: b.kc,
                        mc: b.mc.next_multiple_of(mr),
                        nc: b.nc.next_multiple_of(nr),
                    })
                    .unwrap_or_else(|| Blocking::model(i, &c))
            })
        });
        m[match isa {
            Isa::Portable => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
        }]
    }
}

/// Overrides the blocking of every later f32 GEMM in the process (`None`: back to the model).
/// For tuning sweeps and tests; MC and NC are rounded up to the ISA's tile. MC is the rows at
/// this KC: a product whose depth shortens KC scales it ([`Blocking::for_depth`]).
pub fn set_blocking(b: Option<Blocking>) {
    let b = b.unwrap_or(Blocking {
        kc: 0,
        mc: 0,
        nc: 0,
    });
    OVERRIDE[1].store(b.mc.max(1), Ordering::Relaxed);
    OVERRIDE[2].store(b.nc.max(1), Ordering::Relaxed);
    OVERRIDE[0].store(b.kc, Ordering::Relaxed);
}

static OVERRIDE: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// The k extent of each KC block for a product of depth `k`: KC from the blocking, rounded to
/// a whole number of blocks of equal depth (a multiple of 8), so that no short block is left
/// over: k = 768 with KC = 352 runs two blocks of 384 rather than 352 + 352 + 64, a third pass
/// over C for a twelfth of the work (1.3x slower at 4096 x 768 x 768). Blocks grow by at most
/// half (a quotient rounded to the nearest) and shrink by less than a third.
pub(crate) fn kc_block(k: usize, kc: usize) -> usize {
    let blocks = ((2 * k + kc) / (2 * kc)).max(1);
    k.div_ceil(blocks).next_multiple_of(8).max(8)
}

/// Rows per A block: at most `mc`, and balanced, so that m = 256 is one block of 256 rather
/// than 240 + 16, and m = 512 two of 258 (multiples of MR) rather than 240 + 240 + 32.
pub(crate) fn mc_block(m: usize, mr: usize, mc: usize) -> usize {
    let blocks = m.div_ceil(mc).max(1);
    m.div_ceil(blocks)
        .next_multiple_of(mr)
        .min(mc.next_multiple_of(mr))
}

/// How many B slivers the driver packs at once when it packs them just before use (all of M
/// in one A block): 1, unless B is row-major (`bcs` 1), where one sliver's piece of each row
/// is only `row_bytes` (64 bytes on AVX2's 16-column tile), so that packing it walks KC rows
/// one line each, a page apart or more: a TLB miss per line and nothing the prefetcher
/// streams. A group reads up to 512 contiguous bytes per row instead, in a buffer of at most a
/// quarter of the L2 (`sliver_bytes` each). On a Zen 4 (1 MiB L2), alternating runs, one
/// thread, medians: the AVX2 tile (5 slivers) at 128 x 768 x 3072 went from 93.9 to 100.0
/// GFLOP/s (B transposed runs 99-100), 128 x 3072 x 768 level; the native bf16 tile (32
/// columns, 4 slivers) at 128 x 3072 x 768 from 145 to 163, the other 128-row shapes level or
/// better. The AVX-512 f32 tile's 256-byte rows stay one sliver at a time at depth 768.
pub(crate) fn fused_b_group(bcs: usize, sliver_bytes: usize, row_bytes: usize) -> usize {
    if bcs != 1 {
        return 1;
    }
    let fit = Caches::get().l2.size / 4 / sliver_bytes.max(1);
    (512 / row_bytes.max(1)).min(fit).max(1)
}
