//! The f32 GEMM under any cache blocking: the blocking is derived from the running CPU's
//! caches, so the tests elsewhere only see this machine's. Here `set_blocking` forces small,
//! odd blockings, so that every shape crosses KC, MC and NC boundaries with ragged edges and
//! every short edge tile (a last A sliver of 1..MR rows) runs, on every ISA this CPU has.
//! Own test binary: the override is process-wide, and the other binaries compare runs
//! bit for bit under one blocking.

use engine::cpu::{Cache, Caches};
use engine::gemm::{gemm_prepacked, gemm_with, set_blocking, Blocking, MatMut, MatRef, PackedB};
use engine::reference as r;
use engine::simd::Isa;
use proptest::prelude::*;

/// The override is process-wide and the tests of one binary run on parallel threads: each test
/// holds this lock while its blocking is in force.
static BLOCKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` under blocking `b` (and the lock), then restores the model's.
fn with_blocking(b: Blocking, f: impl FnOnce()) {
    let _guard = BLOCKING.lock().unwrap_or_else(|e| e.into_inner());
    set_blocking(Some(b));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    set_blocking(None);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

use bert_tests::seeded as rand_vec;

/// `C = alpha A B + beta C` (A row-major or transposed, B likewise) against the f64 reference.
fn check(isa: Isa, threads: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool, beta: f32) {
    let a = rand_vec(m * k, 1 + m as u64);
    let b = rand_vec(k * n, 2 + n as u64);
    let av = if ta {
        MatRef::row_major(&a, k, m).t()
    } else {
        MatRef::row_major(&a, m, k)
    };
    let bv = if tb {
        MatRef::row_major(&b, n, k).t()
    } else {
        MatRef::row_major(&b, k, n)
    };
    let dense = |v: &MatRef| -> Vec<f64> {
        (0..v.rows)
            .flat_map(|i| (0..v.cols).map(move |j| (i, j)))
            .map(|(i, j)| v.data[i * v.rs + j * v.cs] as f64)
            .collect()
    };
    let (ad, bd) = (dense(&av), dense(&bv));
    let c0 = rand_vec(m * n, 3);
    let mut want: Vec<f64> = c0.iter().map(|&x| x as f64).collect();
    r::gemm(m, n, k, 0.5, &ad, &bd, beta as f64, &mut want);
    let mut c = c0.clone();
    gemm_with(
        isa,
        threads,
        0.5,
        av,
        bv,
        beta,
        MatMut::row_major(&mut c, m, n),
    )
    .unwrap();
    let tol = 1e-5 * (k as f64).sqrt().max(1.0);
    for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
        assert!(
            (got as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{isa:?} t{threads} {m}x{k}x{n} ta={ta} tb={tb}: C[{}, {}] = {got}, want {w}",
            i / n,
            i % n
        );
    }
    // The prepacked path under the same blocking gives the same bits.
    let packed = PackedB::new(isa, bv).unwrap();
    let mut c2 = c0.clone();
    gemm_prepacked(
        threads,
        0.5,
        av,
        &packed,
        beta,
        MatMut::row_major(&mut c2, m, n),
    )
    .unwrap();
    if let Some(i) = (0..c.len()).find(|&i| c[i].to_bits() != c2[i].to_bits()) {
        panic!(
            "{isa:?} t{threads} {m}x{k}x{n} ta={ta} tb={tb} beta={beta} {:?}: prepacked differs at C[{}, {}]: {} vs {} (want {})",
            Blocking::current(isa),
            i / n,
            i % n,
            c[i],
            c2[i],
            want[i]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn gemm_is_right_under_any_blocking(kc in 1usize..40, mc in 1usize..60, nc in 1usize..100,
                                        m in 1usize..80, k in 1usize..90, n in 1usize..140,
                                        ta: bool, tb: bool, beta in prop_oneof![Just(0.0f32), Just(1.0), -1.0f32..1.0]) {
        with_blocking(Blocking { kc, mc, nc }, || {
            for isa in Isa::available() {
                for threads in [1, 2] {
                    check(isa, threads, m, k, n, ta, tb, beta);
                }
            }
        });
    }
}

#[test]
fn every_short_edge_tile_runs() {
    // m = q * MR + h for every remainder h of every ISA's tile (12, 6, 4 rows).
    let b = Blocking {
        kc: 16,
        mc: 48,
        nc: 64,
    };
    with_blocking(b, || {
        for isa in Isa::available() {
            for m in 1..=25 {
                check(isa, 1, m, 19, 70, false, false, 1.0);
            }
        }
    });
}

#[test]
fn the_model_follows_the_caches() {
    let cache = |size: usize, ways: usize, shared_by: usize| Cache {
        size,
        ways,
        line: 64,
        shared_by,
    };
    // Zen 3: 32 KiB 8-way L1d, 512 KiB L2, 32 MiB L3 shared by 8.
    let zen3 = Caches {
        l1d: cache(32 << 10, 8, 1),
        l2: cache(512 << 10, 8, 1),
        l3: cache(32 << 20, 16, 8),
        source: "test",
    };
    // Sapphire Rapids: 48 KiB 12-way L1d, 2 MiB 16-way L2.
    let spr = Caches {
        l1d: cache(48 << 10, 12, 1),
        l2: cache(2 << 20, 16, 1),
        l3: cache(105 << 20, 15, 56),
        source: "test",
    };
    for (caches, isa) in [(zen3, Isa::Avx2), (spr, Isa::Avx512), (zen3, Isa::Portable)] {
        let b = Blocking::model(isa, &caches);
        let (mr, nr) = match isa {
            Isa::Avx512 => (6, 64),
            Isa::Avx2 => (6, 16),
            Isa::Portable => (4, 8),
        };
        // The B sliver fits one L2 way and is no shorter than the L1 rule's; the A block
        // takes half the L2 (one tile of rows more at most); tiles divide MC and NC.
        assert!(b.kc * nr * 4 <= caches.l2.way_bytes(), "{isa:?} {b:?}");
        let kc_l1 = (caches.l1d.ways - 1) * caches.l1d.way_bytes() / (nr * 4);
        assert!(b.kc >= kc_l1.min(1024) - 8, "{isa:?} {b:?}");
        assert!(
            b.kc >= 64 && b.kc <= 1024 && b.kc.is_multiple_of(8),
            "{isa:?} {b:?}"
        );
        assert!(
            (b.mc - mr) * b.kc * 4 <= caches.l2.size / 2,
            "{isa:?} {b:?}"
        );
        assert!(
            b.mc.is_multiple_of(mr) && b.nc.is_multiple_of(nr),
            "{isa:?} {b:?}"
        );
        assert!(b.nc >= nr && b.nc <= 4096, "{isa:?} {b:?}");
        // A shallow product keeps the A block's bytes: KC shrinks, MC grows as much.
        let d = b.for_depth(b.kc / 2, mr);
        assert_eq!(d.kc, b.kc / 2, "{isa:?} {b:?}");
        assert!(
            d.mc >= 2 * b.mc - mr && d.mc <= 2 * b.mc + mr && d.mc.is_multiple_of(mr),
            "{isa:?} {b:?} {d:?}"
        );
    }
    // Zen 4 (1 MiB L2): 128 rows of BERT's GEMMs stay one A block at the depths they have.
    let zen4 = Caches {
        l1d: cache(32 << 10, 8, 1),
        l2: cache(1 << 20, 8, 1),
        l3: cache(32 << 20, 16, 8),
        source: "test",
    };
    let z = Blocking::model(Isa::Avx512, &zen4);
    for k in [64, 384, 768, 1536, 3072] {
        assert!(z.for_depth(k, 6).mc >= 128, "{z:?} k {k}");
    }
    // A bigger L2 gives a longer KC (up to the cap) and a bigger A block.
    let a = Blocking::model(Isa::Avx512, &spr);
    let b = Blocking::model(Isa::Avx512, &zen3);
    assert!(a.kc > b.kc && a.mc * a.kc > b.mc * b.kc, "{a:?} {b:?}");
}
