//! GEMM benchmarks: ours (f32 and bf16) beside the `gemm` crate and `matrixmultiply`, on the
//! square sizes and BERT's shapes, 1 and 2 threads. Every contender's output is checked
//! (ours against an f64 reference on sampled entries, the peers against ours) before timing.
//!
//! `cargo bench -p benches --bench gemm`; for the README table (interleaved timing, MKL and
//! OpenBLAS in the same run) use `scripts/bench_gemm_peers.py`.
use benches::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::gemm::bf16::gemm_bf16_with;
use engine::gemm::{gemm_with, MatMut, MatRef};
use engine::simd::Isa;
use std::time::Duration;

const SHAPES: &[(usize, usize, usize)] = &[
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (128, 768, 768),
    (128, 768, 3072),
    (128, 3072, 768),
    (4096, 768, 768),
];

fn bench(cr: &mut Criterion) {
    let isa = Isa::best();
    let quick = std::env::var("BENCH_QUICK").is_ok();
    for &(m, k, n) in SHAPES {
        if quick && m * n * k > 1 << 28 {
            continue;
        }
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        let mut g = cr.benchmark_group(format!("gemm/{m}x{k}x{n}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // "elements" = FLOPs
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(if m * n * k > 1 << 30 { 4 } else { 2 }));
        for threads in [1usize, 2] {
            let p = pool(threads);
            let mut c = vec![0f32; m * n];
            let mut reference = vec![0f32; m * n];
            p.install(|| {
                gemm_with(
                    isa,
                    threads,
                    1.0,
                    MatRef::row_major(&a, m, k),
                    MatRef::row_major(&b, k, n),
                    0.0,
                    MatMut::row_major(&mut reference, m, n),
                )
                .unwrap()
            });
            check_gemm_sampled(&reference, &a, &b, (m, k, n), (n, 1), 1e-5);
            g.bench_function(BenchmarkId::new("ours_f32", threads), |bch| {
                bch.iter(|| {
                    p.install(|| {
                        gemm_with(
                            isa,
                            threads,
                            1.0,
                            MatRef::row_major(&a, m, k),
                            MatRef::row_major(&b, k, n),
                            0.0,
                            MatMut::row_major(&mut c, m, n),
                        )
                        .unwrap()
                    })
                })
            });
            p.install(|| {
                gemm_bf16_with(
                    isa,
                    threads,
                    1.0,
                    MatRef::row_major(&a, m, k),
                    MatRef::row_major(&b, k, n),
                    0.0,
                    MatMut::row_major(&mut c, m, n),
                )
                .unwrap()
            });
            check_gemm_sampled(&c, &a, &b, (m, k, n), (n, 1), 1e-2);
            g.bench_function(BenchmarkId::new("ours_bf16", threads), |bch| {
                bch.iter(|| {
                    p.install(|| {
                        gemm_bf16_with(
                            isa,
                            threads,
                            1.0,
                            MatRef::row_major(&a, m, k),
                            MatRef::row_major(&b, k, n),
                            0.0,
                            MatMut::row_major(&mut c, m, n),
                        )
                        .unwrap()
                    })
                })
            });
            let par = if threads == 1 {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(threads)
            };
            // SAFETY: the pointers and strides describe the live buffers a, b and c.
            let run_gemm = |c: &mut [f32]| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    par,
                )
            };
            p.install(|| run_gemm(&mut c));
            assert!(max_rel_err(&c, &reference) < 1e-3, "gemm crate disagrees");
            g.bench_function(BenchmarkId::new("gemm_crate", threads), |bch| {
                bch.iter(|| p.install(|| run_gemm(&mut c)))
            });
        }
        // matrixmultiply sizes its thread pool once per process (MATMUL_NUM_THREADS): benched
        // at whatever that is here; scripts/bench_gemm_peers.py runs it at 1 and 2 threads.
        let mut c = vec![0f32; m * n];
        // SAFETY: the pointers and strides describe the live buffers a, b and c.
        let run_mm = |c: &mut [f32]| unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        };
        run_mm(&mut c);
        check_gemm_sampled(&c, &a, &b, (m, k, n), (n, 1), 1e-5);
        g.bench_function("matrixmultiply_env_threads", |bch| {
            bch.iter(|| run_mm(&mut c))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
