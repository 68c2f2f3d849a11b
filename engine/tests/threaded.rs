//! The multi-threaded paths of the row-wise ops at sizes that take them (the kernel property
//! tests use small shapes): a reduction over one long axis (bias gradients), and elementwise ops
//! on same-shape operands split into chunks, on 1 to 3 threads, against f64 references.
use engine::Tensor;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[test]
fn reductions_over_a_long_axis() {
    for threads in [1, 2, 3] {
        pool(threads).install(|| {
            for (rows, cols) in [(4099usize, 257usize), (1000, 768), (200_003, 1)] {
                let x = Tensor::randn(&[rows, cols], 0.5, 1.0, rows as u64);
                let v = x.to_vec();
                let mut want = vec![0.0f64; cols];
                for (i, &e) in v.iter().enumerate() {
                    want[i % cols] += e as f64;
                }
                let sum = x.sum(0, false).unwrap().to_vec();
                let mean = x.mean(0, false).unwrap().to_vec();
                for c in 0..cols {
                    // f32 accumulation over `rows` values of magnitude ~1.
                    let tol = 1e-6 * rows as f64 + 3e-6 * want[c].abs();
                    assert!(
                        (sum[c] as f64 - want[c]).abs() < tol,
                        "sum col {c}: {} vs {} ({threads} threads)",
                        sum[c],
                        want[c]
                    );
                    let m = want[c] / rows as f64;
                    assert!(
                        (mean[c] as f64 - m).abs() < 1e-5,
                        "mean col {c}: {} vs {m}",
                        mean[c]
                    );
                }
                let max = x.max(0, false).unwrap().to_vec();
                for c in 0..cols {
                    let m = (0..rows)
                        .map(|r| v[r * cols + c])
                        .fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(max[c], m, "max col {c}");
                }
            }
        });
    }
}

#[test]
fn same_shape_elementwise_ops_split_across_threads() {
    for threads in [1, 2, 3] {
        pool(threads).install(|| {
            for n in [200_001usize, 1 << 18] {
                let a = Tensor::randn(&[n], 0.0, 1.0, 1);
                let b = Tensor::randn(&[n], 0.0, 1.0, 2);
                let (av, bv) = (a.to_vec(), b.to_vec());
                let sum = a.add(&b).unwrap().to_vec();
                let prod = a.mul(&b).unwrap().to_vec();
                for i in 0..n {
                    assert_eq!(sum[i], av[i] + bv[i], "add at {i} ({threads} threads)");
                    assert_eq!(prod[i], av[i] * bv[i], "mul at {i}");
                }
                // A scalar broadcast is a single run too.
                let s = Tensor::from_vec(vec![3.0], &[1]).unwrap();
                let shifted = a.add(&s).unwrap().to_vec();
                assert!(shifted.iter().zip(&av).all(|(x, y)| *x == y + 3.0));
            }
        });
    }
}
