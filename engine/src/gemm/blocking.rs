//! Cache blocking: how big the packed blocks of A and B are, from the running CPU's caches.

use super::microkernel::tile;
use crate::cpu::Caches;
use crate::simd::Isa;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Cache blocking: KC (the k extent of one packed block), MC (rows of A per packed block) and
/// NC (columns of B per packed panel), derived from the running CPU's caches by the BLIS
/// analytical model (Low, Igual, Smith, Quintana-Orti, "Analytical modeling is enough for
/// high-performance BLIS", TOMS 2016):
///
/// - L1 holds one B sliver (KC x NR), reused by every A sliver of the block, while A slivers
///   (MR x KC) stream through it. Of the W1 ways, C_A = floor((W1 - 1) / (1 + NR/MR)) go to A
///   (one way is left for C and the rest to B, in proportion NR : MR), and KC fills them:
///   KC = C_A * (L1 bytes per way) / (MR * 4).
/// - L2 holds the packed A block (MC x KC): the ways not needed by one B sliver, less one,
///   MC = (W2 - 1 - ceil(KC*NR*4 / L2 way)) * (L2 bytes per way) / (KC * 4).
/// - L3 (this core's share) holds the B panel (KC x NC) beside the A block, likewise.
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
        // L1: the B sliver is the one operand reused from L1 (by every A sliver of the
        // block); an A sliver is used once per B sliver and streams. So the B sliver takes
        // all ways but one, the last being left to the streaming A sliver and the C tile.
        let l1 = c.l1d;
        let kc = (l1.ways.saturating_sub(1).max(1) * l1.way_bytes() / (nr * f)).clamp(64, 1024);
        // Multiples of 8 keep the packing's transposes on their vector path.
        let kc = kc - kc % 8;
        // L2: the packed A block takes a quarter; the rest holds the B slivers as they pass
        // from L3, the C tiles, and the lines the L2 prefetchers bring beside each of them.
        let l2 = c.l2;
        let mc = (l2.size / 4 / (kc * f)).clamp(mr, 4096);
        let mc = (mc - mc % mr).max(mr);
        // L3: this core's share, what the A block leaves, holds the B panel (KC x NC),
        // capped at 4096 columns: a wider panel saves only repacking A once per panel.
        let l3 = c.l3;
        let share = (l3.size / l3.shared_by.max(1)).max(l2.size);
        let nc = (share.saturating_sub(mc * kc * f) / 2 / (kc * f)).clamp(nr, 4096);
        let nc = (nc - nc % nr).max(nr);
        Blocking { kc, mc, nc }
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
/// For tuning sweeps and tests; MC and NC are rounded up to the ISA's tile.
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
