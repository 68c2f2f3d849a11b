//! Every kernel against its naive f64 reference (engine::reference), on random shapes that
//! include the awkward sizes (1, 7, 17, 127, 129, 1000) and strided/transposed views, for every
//! instruction set this CPU can run (portable always; AVX2 and AVX-512 where present).

use engine::elementwise::{binary, BinOp};
use engine::gemm::bf16::{gemm_bf16_kernel, gemm_bf16_with, Bf16Kernel};
use engine::gemm::{gemm_batched_with, gemm_with, MatMut, MatRef};
use engine::reference as r;
use engine::simd::Isa;
use engine::{Gelu, ReduceOp, Tensor};
use proptest::prelude::*;

use bert_tests::seeded as rand_vec;

fn awkward() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(7),
        Just(17),
        Just(127),
        Just(129),
        1usize..70
    ]
}

/// A (rows, cols) operand stored either row-major or transposed (column-major), inside a
/// larger buffer with padding between rows/columns: a strided view, never copied by the GEMM.
struct Operand {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Operand {
    fn new(rows: usize, cols: usize, transposed: bool, pad: usize, seed: u64) -> Operand {
        let (rs, cs) = if transposed {
            (1, rows + pad)
        } else {
            (cols + pad, 1)
        };
        let len = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        };
        Operand {
            data: rand_vec(len, seed),
            rows,
            cols,
            rs,
            cs,
        }
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
    fn view(&self) -> MatRef<'_> {
        MatRef {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
    fn dense_f64(&self, round: impl Fn(f32) -> f32) -> Vec<f64> {
        (0..self.rows)
            .flat_map(|i| (0..self.cols).map(move |j| (i, j)))
            .map(|(i, j)| round(self.get(i, j)) as f64)
            .collect()
    }
}

fn check_gemm(
    isa: Isa,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    pad: usize,
    alpha: f32,
    beta: f32,
    bf16: Option<Bf16Kernel>,
) {
    let a = Operand::new(m, k, ta, pad, 1 + m as u64);
    let b = Operand::new(k, n, tb, pad, 2 + n as u64);
    // C: row-major with padding, or (pad == 2) column-major, the microkernels' strided store;
    // beta == 0 must ignore the NaNs put there.
    let tc = pad == 2;
    let (crs, ccs, len) = if tc {
        (1, m + pad, n * (m + pad))
    } else {
        (n + pad, 1, m * (n + pad))
    };
    let at = |i: usize, j: usize| i * crs + j * ccs;
    let mut c = rand_vec(len, 3);
    if beta == 0.0 {
        c.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let c0: Vec<f64> = (0..m)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| c[at(i, j)] as f64)
        .collect();
    let round = |x: f32| {
        if bf16.is_some() {
            half::bf16::from_f32(x).to_f32()
        } else {
            x
        }
    };
    let (ad, bd) = (a.dense_f64(round), b.dense_f64(round));
    let mut want = c0.clone();
    r::gemm(m, n, k, alpha as f64, &ad, &bd, beta as f64, &mut want);
    let cm = MatMut {
        data: &mut c,
        rows: m,
        cols: n,
        rs: crs,
        cs: ccs,
    };
    match bf16 {
        Some(kn) => gemm_bf16_kernel(kn, isa, threads, alpha, a.view(), b.view(), beta, cm),
        None => gemm_with(isa, threads, alpha, a.view(), b.view(), beta, cm),
    }
    .unwrap();
    for i in 0..m {
        for j in 0..n {
            // Error bound scaled by the magnitude of the terms summed (f32 accumulation).
            let mag: f64 = (0..k)
                .map(|p| (ad[i * k + p] * bd[p * n + j]).abs())
                .sum::<f64>()
                * alpha.abs() as f64
                + if beta == 0.0 {
                    0.0
                } else {
                    (beta as f64 * c0[i * n + j]).abs()
                };
            let got = c[at(i, j)] as f64;
            let w = want[i * n + j];
            assert!(
                (got - w).abs() <= 2e-6 * mag.max(1e-30) * (k as f64).sqrt().max(1.0) + 1e-30,
                "{isa:?} t{threads} bf16={bf16:?} m={m} k={k} n={n} ta={ta} tb={tb} tc={tc} alpha={alpha} beta={beta}: C[{i},{j}] = {got}, want {w}"
            );
        }
    }
    // Padding between the rows (columns) of C is never written.
    let (lines, width) = if tc { (n, m) } else { (m, n) };
    if pad > 0 && beta != 0.0 && lines > 1 {
        let fresh = rand_vec(len, 3);
        assert_eq!(c[width], fresh[width], "gemm wrote into C's padding");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_f64(m in awkward(), k in awkward(), n in awkward(), ta: bool, tb: bool, pad in 0usize..3,
                        alpha in prop_oneof![Just(1.0f32), -2.0f32..2.0], beta in prop_oneof![Just(0.0f32), Just(1.0), -1.0f32..1.0]) {
        for isa in Isa::available() {
            for threads in [1, 2] {
                check_gemm(isa, threads, m, k, n, ta, tb, pad, alpha, beta, None);
            }
        }
    }

    #[test]
    fn gemm_bf16_matches_f64_on_rounded_operands(m in awkward(), k in awkward(), n in awkward(), ta: bool, tb: bool,
                                                 pad in 0usize..3, beta in prop_oneof![Just(0.0f32), -1.0f32..1.0]) {
        // Every bf16 kernel that runs here, on every ISA (native, rounded, emulated).
        for isa in Isa::available() {
            for kn in Bf16Kernel::available(isa) {
                check_gemm(isa, 2, m, k, n, ta, tb, pad, 1.0, beta, Some(kn));
            }
        }
    }
}

/// A prepacked B gives bit for bit what the ordinary GEMM gives (same blocking along k, same
/// microkernel), so the f64 checks of `gemm_with` carry over; a B prepacked in bf16 for a
/// kernel gives what `gemm_bf16_kernel` gives on it (the f64 checks on rounded operands carry
/// over).
#[allow(clippy::too_many_arguments)]
fn check_prepacked(
    isa: Isa,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    tb: bool,
    alpha: f32,
    beta: f32,
    bf16: Option<Bf16Kernel>,
) {
    let a = rand_vec(m * k, 11);
    let b = rand_vec(k * n, 12);
    let bv = if tb {
        MatRef {
            data: &b,
            rows: k,
            cols: n,
            rs: 1,
            cs: k,
        }
    } else {
        MatRef::row_major(&b, k, n)
    };
    let c0 = rand_vec(m * n, 13);
    let mut want = c0.clone();
    let (am, cm) = (
        MatRef::row_major(&a, m, k),
        MatMut::row_major(&mut want, m, n),
    );
    match bf16 {
        Some(kn) => gemm_bf16_kernel(kn, isa, threads, alpha, am, bv, beta, cm),
        None => gemm_with(isa, threads, alpha, am, bv, beta, cm),
    }
    .unwrap();
    let packed = match bf16 {
        Some(kn) => engine::gemm::PackedB::new_bf16_kernel(kn, isa, bv).unwrap(),
        None => engine::gemm::PackedB::new(isa, bv).unwrap(),
    };
    assert_eq!(packed.bf16_kernel(), bf16);
    let mut got = c0;
    engine::gemm::gemm_prepacked(
        threads,
        alpha,
        MatRef::row_major(&a, m, k),
        &packed,
        beta,
        MatMut::row_major(&mut got, m, n),
    )
    .unwrap();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits()),
        "{isa:?} t{threads} m={m} k={k} n={n} tb={tb} bf16={bf16:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn gemm_prepacked_equals_gemm(m in awkward(), k in awkward(), n in awkward(), tb: bool,
                                  alpha in prop_oneof![Just(1.0f32), -2.0f32..2.0], beta in prop_oneof![Just(0.0f32), Just(1.0)],
                                  kind in 0usize..4) {
        // f32, or one of the bf16 kernels (where it runs on the ISA).
        let bf16 = kind.checked_sub(1).map(|i| Bf16Kernel::ALL[i]);
        for isa in Isa::available() {
            if bf16.is_some_and(|kn| !kn.runs_on(isa)) {
                continue;
            }
            for threads in [1, 2] {
                check_prepacked(isa, threads, m, k, n, tb, alpha, beta, bf16);
            }
        }
    }
}

#[test]
fn gemm_prepacked_large_and_errors() {
    for isa in Isa::available() {
        let kernels = Bf16Kernel::available(isa).into_iter().map(Some);
        for bf16 in std::iter::once(None).chain(kernels) {
            check_prepacked(isa, 2, 300, 513, 1000, true, 1.0, 1.0, bf16);
            check_prepacked(isa, 2, 1000, 300, 17, false, 1.0, 0.0, bf16);
            check_prepacked(isa, 1, 128, 384, 3100, true, 0.5, 0.0, bf16);
            // Deeper than one bf16 KC block (several blocks, an odd last one).
            check_prepacked(isa, 2, 40, 4097, 70, true, 1.0, 1.0, bf16);
        }
    }
    let b = rand_vec(12, 1);
    let p = engine::gemm::PackedB::new(Isa::best(), MatRef::row_major(&b, 3, 4)).unwrap();
    let a = rand_vec(10, 2);
    let mut c = vec![0.0; 8];
    let e = engine::gemm::gemm_prepacked(
        1,
        1.0,
        MatRef::row_major(&a, 2, 5),
        &p,
        0.0,
        MatMut::row_major(&mut c, 2, 4),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("2 x 5") && e.contains("3 x 4"), "{e}");
}

/// `ENGINE_EMULATE_AVX512=1` (the second pass of scripts/test) must really put the AVX-512
/// instantiation under test on a CPU without it, and leave the list alone otherwise.
#[test]
fn emulated_avx512_is_listed_exactly_when_asked() {
    let asked = std::env::var("ENGINE_EMULATE_AVX512").is_ok_and(|v| v == "1");
    let real = engine::simd::Avx512::detect().is_some();
    assert_eq!(Isa::available().contains(&Isa::Avx512), real || asked);
    assert_eq!(engine::simd::emulating_avx512(), asked && !real);
    if asked {
        assert_eq!(
            Isa::best(),
            Isa::Avx512,
            "ENGINE_EMULATE_AVX512=1 without ENGINE_ISA"
        );
    }
}

#[test]
fn gemm_large_and_blocked_edges() {
    // Crosses every blocking boundary (KC = 256, MC = 264, NC = 3072) with ragged edges,
    // and takes the threaded split in both directions.
    for isa in Isa::available() {
        check_gemm(isa, 2, 1000, 300, 17, false, false, 0, 1.0, 0.0, None);
        check_gemm(isa, 2, 7, 513, 1000, true, false, 1, 0.5, 1.0, None);
        check_gemm(isa, 2, 250, 260, 3100, false, true, 0, 1.0, 0.5, None);
        for kn in Bf16Kernel::available(isa) {
            check_gemm(isa, 2, 129, 1000, 127, true, true, 2, -1.0, 0.0, Some(kn));
        }
    }
}

#[test]
fn gemm_degenerate_shapes() {
    for isa in Isa::available() {
        // k = 0: C = beta * C.
        let mut c = vec![2.0f32; 6];
        gemm_with(
            isa,
            1,
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            0.5,
            MatMut::row_major(&mut c, 2, 3),
        )
        .unwrap();
        assert_eq!(c, vec![1.0; 6]);
        let mut c = vec![f32::NAN; 6];
        gemm_with(
            isa,
            1,
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            0.0,
            MatMut::row_major(&mut c, 2, 3),
        )
        .unwrap();
        assert_eq!(c, vec![0.0; 6]);
        // m = 0 or n = 0: nothing to do, no error.
        gemm_with(
            isa,
            1,
            1.0,
            MatRef::row_major(&[], 0, 4),
            MatRef::row_major(&[0.0; 8], 4, 2),
            0.0,
            MatMut::row_major(&mut [], 0, 2),
        )
        .unwrap();
    }
}

#[test]
fn gemm_rejects_bad_arguments() {
    let a = vec![0.0f32; 6];
    let mut c = vec![0.0f32; 4];
    let e = gemm_with(
        Isa::Portable,
        1,
        1.0,
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&a, 2, 3),
        0.0,
        MatMut::row_major(&mut c, 2, 2),
    )
    .unwrap_err();
    assert!(e.to_string().contains("A is (2, 3), B is (2, 3)"), "{e}");
    // A view whose strides reach past its slice.
    let e = gemm_with(
        Isa::Portable,
        1,
        1.0,
        MatRef {
            data: &a,
            rows: 2,
            cols: 3,
            rs: 4,
            cs: 1,
        },
        MatRef::row_major(&a, 3, 2),
        0.0,
        MatMut::row_major(&mut c, 2, 2),
    )
    .unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    // An output whose rows alias.
    let e = gemm_with(
        Isa::Portable,
        1,
        1.0,
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&a, 3, 2),
        0.0,
        MatMut {
            data: &mut c,
            rows: 2,
            cols: 2,
            rs: 0,
            cs: 1,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("alias"), "{e}");
}

#[test]
fn batched_gemm_matches_per_batch_and_broadcasts() {
    let (batch, m, k, n) = (5, 17, 33, 9);
    let a = rand_vec(batch * m * k, 11);
    let b = rand_vec(k * n, 12); // broadcast: batch stride 0
    for isa in Isa::available() {
        for threads in [1, 2] {
            let mut c = vec![0.0f32; batch * m * n];
            gemm_batched_with(
                isa,
                threads,
                batch,
                1.0,
                MatRef::row_major(&a, m, k),
                m * k,
                MatRef::row_major(&b, k, n),
                0,
                0.0,
                MatMut::row_major(&mut c, m, n),
                m * n,
            )
            .unwrap();
            for bi in 0..batch {
                let ad: Vec<f64> = a[bi * m * k..(bi + 1) * m * k]
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let bd: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                let mut want = vec![0.0; m * n];
                r::gemm(m, n, k, 1.0, &ad, &bd, 0.0, &mut want);
                for (got, w) in c[bi * m * n..(bi + 1) * m * n].iter().zip(&want) {
                    assert!((*got as f64 - w).abs() < 1e-5, "{isa:?} batch {bi}");
                }
            }
        }
    }
}

#[test]
fn tensor_matmul_with_views_and_batch_broadcast() {
    // Attention-shaped: q (B, H, S, D) @ k^T (B, H, D, S) with k a transposed view; and a
    // (B, S, D) @ (D, E) with the weight broadcast over the batch; and a permuted batch.
    let q = Tensor::rand_uniform(&[2, 3, 7, 5], -1.0, 1.0, 1);
    let k = Tensor::rand_uniform(&[2, 3, 7, 5], -1.0, 1.0, 2);
    let s = q.matmul(&k.t().unwrap()).unwrap();
    assert_eq!(s.shape(), &[2, 3, 7, 7]);
    let (qv, kv, sv) = (q.to_vec(), k.to_vec(), s.to_vec());
    for bh in 0..6 {
        for i in 0..7 {
            for j in 0..7 {
                let want: f64 = (0..5)
                    .map(|d| qv[bh * 35 + i * 5 + d] as f64 * kv[bh * 35 + j * 5 + d] as f64)
                    .sum();
                assert!((sv[bh * 49 + i * 7 + j] as f64 - want).abs() < 1e-5);
            }
        }
    }
    let x = Tensor::rand_uniform(&[4, 6, 8], -1.0, 1.0, 3);
    let w = Tensor::rand_uniform(&[8, 3], -1.0, 1.0, 4);
    let y = x.matmul(&w).unwrap();
    let y2 = x.reshape(&[24, 8]).unwrap().matmul(&w).unwrap();
    assert_eq!(y.to_vec(), y2.to_vec());
    // A permuted batch (no single batch stride): (S, B, D) viewed as (B, S, D).
    let xp = Tensor::rand_uniform(&[6, 4, 8], -1.0, 1.0, 5)
        .permute(&[1, 0, 2])
        .unwrap();
    let yp = xp.matmul(&w).unwrap();
    let yc = xp.contiguous().matmul(&w).unwrap();
    assert_eq!(yp.to_vec(), yc.to_vec());
    let e = x.matmul(&Tensor::zeros(&[7, 3])).unwrap_err().to_string();
    assert!(
        e.contains("matmul") && e.contains("[4, 6, 8]") && e.contains("[7, 3]"),
        "{e}"
    );
    // bf16 precision through the tensor API stays close to f32.
    let yb = x.matmul_with(&w, engine::Precision::Bf16).unwrap();
    let err = yb
        .to_vec()
        .iter()
        .zip(y.to_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 2e-2, "bf16 matmul error {err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn softmax_matches_f64(rows in awkward(), cols in prop_oneof![Just(1000usize), awkward()], masked: bool, scale in 0.1f32..30.0) {
        let x: Vec<f32> = rand_vec(rows * cols, 5).iter().map(|v| v * scale).collect();
        let mask: Vec<f32> = (0..cols).map(|c| if c % 3 == 1 { f32::NEG_INFINITY } else if c % 5 == 0 { -10000.0 } else { 0.0 }).collect();
        let offsets = vec![0usize; rows];
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let md: Vec<f64> = mask.iter().map(|&v| v as f64).collect();
        let want = r::softmax(&xd, rows, cols, masked.then_some(&md[..]));
        for isa in Isa::available() {
            let mut out = vec![0.0; rows * cols];
            engine::softmax::softmax_rows(isa, &x, cols, masked.then_some((&mask[..], &offsets[..])), &mut out);
            for (i, (g, w)) in out.iter().zip(&want).enumerate() {
                let w = if w.is_nan() { 0.0 } else { *w }; // fully masked rows: we give 0
                prop_assert!((*g as f64 - w).abs() < 2e-6 + 2e-6 * w, "{:?} [{}] {} vs {}", isa, i, g, w);
            }
        }
    }

    #[test]
    fn layernorm_matches_f64(rows in awkward(), cols in prop_oneof![Just(1000usize), awkward()], shift in -100.0f32..100.0) {
        let x: Vec<f32> = rand_vec(rows * cols, 6).iter().map(|v| v + shift).collect();
        let g = rand_vec(cols, 7);
        let b = rand_vec(cols, 8);
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let want = r::layernorm(&f(&x), rows, cols, &f(&g), &f(&b), 1e-12);
        for isa in Isa::available() {
            let mut out = vec![0.0; rows * cols];
            let (mean, rstd) = engine::layernorm::layernorm_rows(isa, &x, cols, &g, &b, 1e-12, &mut out);
            prop_assert_eq!(mean.len(), rows);
            for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                // The input's own rounding (|shift| up to 100 vs spread 1) limits accuracy.
                let tol = 1e-5 + 2e-7 * shift.abs() as f64 * rstd[i / cols] as f64 * 8.0;
                prop_assert!((*o as f64 - w).abs() < tol.max(1e-4 * (cols == 1) as u8 as f64 + 1e-5), "{:?} [{}] {} vs {}", isa, i, o, w);
            }
        }
    }

    #[test]
    fn gelu_matches_f64(n in awkward(), scale in 0.1f32..12.0) {
        let x: Vec<f32> = rand_vec(n, 9).iter().map(|v| v * scale).collect();
        for isa in Isa::available() {
            for (kind, f) in [(Gelu::Erf, r::gelu_erf as fn(f64) -> f64), (Gelu::Tanh, r::gelu_tanh)] {
                let mut y = x.clone();
                engine::gelu::gelu_inplace(isa, &mut y, kind);
                for (xi, yi) in x.iter().zip(&y) {
                    let w = f(*xi as f64);
                    prop_assert!((*yi as f64 - w).abs() < 1e-6 * (1.0 + w.abs()), "{:?} {:?} gelu({}) = {} vs {}", isa, kind, xi, yi, w);
                }
            }
        }
    }

    #[test]
    fn cross_entropy_matches_f64(rows in awkward(), classes in prop_oneof![Just(1000usize), awkward()], scale in 0.1f32..20.0) {
        let x: Vec<f32> = rand_vec(rows * classes, 10).iter().map(|v| v * scale).collect();
        let targets: Vec<i64> = (0..rows).map(|i| if i % 4 == 3 { -100 } else { ((i * 7919) % classes) as i64 }).collect();
        let (want, count) = r::cross_entropy(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), rows, classes, &targets, -100);
        for isa in Isa::available() {
            let (loss, lse, n) = engine::cross_entropy::cross_entropy_rows(isa, &x, classes, &targets, -100).unwrap();
            prop_assert_eq!(n, count);
            prop_assert!((loss as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{:?} {} vs {}", isa, loss, want);
            prop_assert!(lse.iter().zip(&targets).all(|(l, &t)| (t == -100) == l.is_nan()));
        }
    }

    #[test]
    fn log_softmax_matches_f64(rows in awkward(), cols in prop_oneof![Just(1000usize), awkward()], scale in 0.1f32..50.0) {
        let x: Vec<f32> = rand_vec(rows * cols, 19).iter().map(|v| v * scale).collect();
        let p = r::softmax(&x.iter().map(|&v| v as f64).collect::<Vec<_>>(), rows, cols, None);
        for isa in Isa::available() {
            let mut out = vec![0.0; rows * cols];
            engine::cross_entropy::log_softmax_rows(isa, &x, cols, &mut out);
            for (i, (g, w)) in out.iter().zip(&p).enumerate() {
                let w = w.ln();
                prop_assert!((*g as f64 - w).abs() < 2e-6 * (1.0 + w.abs()), "{:?} [{}] {} vs {}", isa, i, g, w);
            }
        }
    }

    #[test]
    fn binary_broadcast_matches_scalar(a_dims in proptest::collection::vec(1usize..6, 1..4), b_mask in proptest::collection::vec(any::<bool>(), 4),
                                       transpose_a: bool, op_i in 0usize..6) {
        let op = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Max, BinOp::Min][op_i];
        let mut a_shape = a_dims.clone();
        a_shape[0] *= 7; // a larger leading dim for non-trivial inner runs
        // b: same rank, some dims set to 1 (broadcast), maybe fewer leading dims.
        let b_shape: Vec<usize> = a_shape.iter().zip(&b_mask).map(|(&d, &m)| if m { 1 } else { d }).collect();
        let b_shape = &b_shape[(b_mask[3] as usize).min(b_shape.len() - 1)..];
        let mut a = Tensor::rand_uniform(&a_shape, -2.0, 2.0, 11);
        if transpose_a && a.rank() >= 2 {
            a = Tensor::rand_uniform(&[a_shape[1], a_shape[0]], -2.0, 2.0, 11).t().unwrap();
            if a_shape.len() > 2 { a = a.unsqueeze(2).unwrap().broadcast_to(&[a_shape[0], a_shape[1], a_shape[2]]).unwrap(); }
        }
        let b = Tensor::rand_uniform(b_shape, 0.5, 2.0, 12);
        let out = a.binary(&b, op).unwrap();
        let shape = out.shape().to_vec();
        let (ab, bb) = (a.broadcast_to(&shape).unwrap().to_vec(), b.broadcast_to(&shape).unwrap().to_vec());
        let got = out.to_vec();
        for i in 0..got.len() {
            prop_assert_eq!(got[i], op.scalar(ab[i], bb[i]), "{:?} at {}", op, i);
        }
        for isa in Isa::available() {
            let (av, bv) = (a.broadcast_to(&shape).unwrap(), b.broadcast_to(&shape).unwrap());
            let (ac, bc) = (av.contiguous(), bv.contiguous());
            let mut o = vec![0.0; got.len()];
            binary(isa, op, &shape, (ac.as_slice().unwrap(), ac.strides()), (bc.as_slice().unwrap(), bc.strides()), &mut o);
            prop_assert_eq!(&o, &got);
        }
    }

    #[test]
    fn reductions_match_f64(dims in proptest::collection::vec(prop_oneof![Just(1usize), Just(7), Just(17), 1usize..40], 1..4), axis_pick in 0usize..4, keep: bool) {
        let t = Tensor::rand_uniform(&dims, -1.0, 1.0, 13);
        let axis = axis_pick % dims.len();
        let v = t.to_vec();
        let outer: usize = dims[..axis].iter().product();
        let inner: usize = dims[axis + 1..].iter().product();
        for (op, name) in [(ReduceOp::Sum, "sum"), (ReduceOp::Mean, "mean"), (ReduceOp::Max, "max")] {
            let got = t.reduce(op, axis as isize, keep).unwrap();
            let mut want_shape = dims.clone();
            if keep { want_shape[axis] = 1 } else { want_shape.remove(axis); }
            prop_assert_eq!(got.shape(), &want_shape[..]);
            let g = got.to_vec();
            for o in 0..outer {
                for i in 0..inner {
                    let xs = (0..dims[axis]).map(|a| v[(o * dims[axis] + a) * inner + i] as f64);
                    let w = match op {
                        ReduceOp::Sum => xs.sum::<f64>(),
                        ReduceOp::Mean => xs.sum::<f64>() / dims[axis] as f64,
                        ReduceOp::Max => xs.fold(f64::NEG_INFINITY, f64::max),
                    };
                    prop_assert!((g[o * inner + i] as f64 - w).abs() < 1e-5, "{} {} vs {}", name, g[o * inner + i], w);
                }
            }
        }
        for isa in Isa::available() {
            let mut out = vec![0.0; outer * inner];
            engine::reduce::reduce(isa, ReduceOp::Sum, &v, outer, dims[axis], inner, &mut out);
            let want = t.sum(axis as isize, false).unwrap().to_vec();
            for (a, b) in out.iter().zip(&want) { prop_assert!((a - b).abs() < 1e-5); }
        }
    }
}

#[test]
fn softmax_with_broadcast_padding_mask() {
    // Scores (B=2, H=3, S=4, S=4), key-padding mask (B, 1, 1, S): batch 1 masks its last 2 keys.
    let scores = Tensor::rand_uniform(&[2, 3, 4, 4], -3.0, 3.0, 14);
    let mask = Tensor::from_vec(
        vec![0., 0., 0., 0., 0., 0., -1e4, f32::NEG_INFINITY],
        &[2, 1, 1, 4],
    )
    .unwrap();
    let p = scores.softmax(Some(&mask)).unwrap().to_vec();
    let s = scores.to_vec();
    for row in 0..24 {
        let b = row / 12;
        let m: Vec<f64> = (0..4).map(|c| mask.to_vec()[b * 4 + c] as f64).collect();
        let want = r::softmax(
            &s[row * 4..row * 4 + 4]
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            1,
            4,
            Some(&m),
        );
        for c in 0..4 {
            assert!((p[row * 4 + c] as f64 - want[c]).abs() < 1e-6);
        }
        if b == 1 {
            assert_eq!(p[row * 4 + 3], 0.0);
        }
    }
    // A fully masked row gives zeros, not NaN.
    let all = Tensor::full(&[1, 4], f32::NEG_INFINITY);
    assert_eq!(
        Tensor::zeros(&[2, 4]).softmax(Some(&all)).unwrap().to_vec(),
        vec![0.0; 8]
    );
    let e = scores
        .softmax(Some(&Tensor::zeros(&[3, 4])))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("softmax") && e.contains("[2, 3, 4, 4]") && e.contains("[3, 4]"),
        "{e}"
    );
}

#[test]
fn ops_on_strided_views_equal_ops_on_copies() {
    let x = Tensor::rand_uniform(&[17, 129], -4.0, 4.0, 15).t().unwrap(); // (129, 17) strided
    let xc = x.contiguous();
    assert_eq!(
        x.softmax(None).unwrap().to_vec(),
        xc.softmax(None).unwrap().to_vec()
    );
    assert_eq!(
        x.gelu(Gelu::Erf).unwrap().to_vec(),
        xc.gelu(Gelu::Erf).unwrap().to_vec()
    );
    let (g, b) = (Tensor::ones(&[17]), Tensor::zeros(&[17]));
    assert_eq!(
        x.layernorm(&g, &b, 1e-5).unwrap().to_vec(),
        xc.layernorm(&g, &b, 1e-5).unwrap().to_vec()
    );
    assert_eq!(
        x.sum(0, false).unwrap().to_vec(),
        xc.sum(0, false).unwrap().to_vec()
    );
    let e = x
        .layernorm(&Tensor::ones(&[16]), &b, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layernorm") && e.contains("[129, 17]") && e.contains("[16]"),
        "{e}"
    );
}

#[test]
fn embedding_gathers_rows_and_rejects_bad_ids() {
    let table = Tensor::rand_uniform(&[10, 7], -1.0, 1.0, 16);
    let ids = [3i64, 0, 9, 3, 5, 1];
    let out = Tensor::embedding(&table, &ids, &[2, 3]).unwrap();
    assert_eq!(out.shape(), &[2, 3, 7]);
    let (t, o) = (table.to_vec(), out.to_vec());
    for (p, &id) in ids.iter().enumerate() {
        assert_eq!(
            o[p * 7..(p + 1) * 7],
            t[id as usize * 7..(id as usize + 1) * 7]
        );
    }
    let e = Tensor::embedding(&table, &[1, 10], &[2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("embedding") && e.contains("index 10 at position 1") && e.contains("size 10"),
        "{e}"
    );
    assert!(Tensor::embedding(&table, &[-1], &[1]).is_err());
}

#[test]
fn cross_entropy_tensor_api_and_errors() {
    let logits = Tensor::from_vec(vec![1.0, 2.0, 3.0, 1.0, 1.0, 1.0], &[2, 3]).unwrap();
    let (loss, lse) = logits.cross_entropy(&[2, -100], -100).unwrap();
    let want = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln() - 3.0;
    assert!((loss as f64 - want).abs() < 1e-6);
    assert!(lse[1].is_nan());
    let e = logits.cross_entropy(&[3, 0], -100).unwrap_err().to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("index 3 at position 0"),
        "{e}"
    );
    assert_eq!(logits.cross_entropy(&[-100, -100], -100).unwrap().0, 0.0);
}

#[test]
fn bf16_gemm_error_against_f32_is_reported_and_small() {
    // Relative Frobenius error of bf16 GEMM against f32 GEMM at a BERT shape (128 x 768 x 768).
    let (m, k, n) = (128, 768, 768);
    let a = rand_vec(m * k, 17);
    let b = rand_vec(k * n, 18);
    let mut c32 = vec![0.0; m * n];
    let mut c16 = vec![0.0; m * n];
    let isa = Isa::best();
    gemm_with(
        isa,
        2,
        1.0,
        MatRef::row_major(&a, m, k),
        MatRef::row_major(&b, k, n),
        0.0,
        MatMut::row_major(&mut c32, m, n),
    )
    .unwrap();
    gemm_bf16_with(
        isa,
        2,
        1.0,
        MatRef::row_major(&a, m, k),
        MatRef::row_major(&b, k, n),
        0.0,
        MatMut::row_major(&mut c16, m, n),
    )
    .unwrap();
    let num: f64 = c32
        .iter()
        .zip(&c16)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = c32.iter().map(|x| (*x as f64).powi(2)).sum();
    let rel = (num / den).sqrt();
    println!(
        "bf16 GEMM relative Frobenius error vs f32 at 128x768x768 ({}): {rel:.2e}",
        engine::gemm::bf16::bf16_mode(isa)
    );
    // Two operands rounded to 8 significant bits: about 2^-9 each, partly cancelling.
    assert!(rel < 6e-3 && rel > 1e-5, "relative error {rel}");
}

/// GELU's tails and special values: the erf form clamps its argument at 4 / sqrt 2 and its
/// result to [-1, 1]; the tanh form divides by 1 + exp(-2u) with the exponential saturating.
#[test]
fn gelu_extremes_and_nan() {
    let x = [
        -1e30f32, -1e4, -100.0, -20.0, -9.8, -5.7, -4.0, -1e-30, -0.0, 0.0, 1e-30, 4.0, 5.7, 9.8,
        20.0, 100.0, 1e4, 1e30,
    ];
    for isa in Isa::available() {
        for (kind, f) in [
            (Gelu::Erf, r::gelu_erf as fn(f64) -> f64),
            (Gelu::Tanh, r::gelu_tanh),
        ] {
            let mut y = x.to_vec();
            engine::gelu::gelu_inplace(isa, &mut y, kind);
            for (xi, yi) in x.iter().zip(&y) {
                let w = f(*xi as f64);
                assert!(
                    (*yi as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{isa:?} {kind:?} gelu({xi}) = {yi}, want {w}"
                );
            }
            let mut nan = vec![f32::NAN; 9];
            engine::gelu::gelu_inplace(isa, &mut nan, kind);
            assert!(
                nan.iter().all(|v| v.is_nan()),
                "{isa:?} {kind:?}: gelu(NaN)"
            );
        }
    }
}
