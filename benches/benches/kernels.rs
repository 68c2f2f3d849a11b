//! Memory-bound kernels in GB/s beside a plain copy of the same bytes (the roofline they
//! chase): softmax, layernorm, GELU (both forms), at BERT activation sizes, 1 and 2 threads.
//! Each output is checked against the f64 reference on sampled rows before timing.
//!
//! `cargo bench -p benches --bench kernels`; the table comes from `--bin kernel_table`.
use benches::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::simd::Isa;
use engine::{reference as r, Gelu};
use std::time::Duration;

/// (rows, cols): attention scores of 8 x 12 heads x 128 queries over 128 keys, and hidden
/// states of 8 x 128 tokens x 768 / 3072.
pub const CASES: &[(&str, usize, usize)] = &[
    ("scores_12288x128", 12288, 128),
    ("hidden_1024x768", 1024, 768),
    ("ffn_1024x3072", 1024, 3072),
];

fn bench(c: &mut Criterion) {
    let isa = Isa::best();
    for &(name, rows, cols) in CASES {
        let x = rand_vec(rows * cols, 3);
        let gamma = rand_vec(cols, 4);
        let beta = rand_vec(cols, 5);
        let mut out = vec![0f32; rows * cols];
        let bytes = (2 * rows * cols * 4) as u64; // read x, write out
                                                  // Checks.
        engine::softmax::softmax_rows(isa, &x, cols, None, &mut out);
        let want = r::softmax(
            &x[..cols].iter().map(|&v| v as f64).collect::<Vec<_>>(),
            1,
            cols,
            None,
        );
        assert!(out[..cols]
            .iter()
            .zip(&want)
            .all(|(a, b)| (*a as f64 - b).abs() < 1e-6));
        engine::layernorm::layernorm_rows(isa, &x, cols, &gamma, &beta, 1e-12, &mut out);
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let want = r::layernorm(&f(&x[..cols]), 1, cols, &f(&gamma), &f(&beta), 1e-12);
        assert!(out[..cols]
            .iter()
            .zip(&want)
            .all(|(a, b)| (*a as f64 - b).abs() < 1e-4));
        let mut g = c.benchmark_group(format!("kernels/{name}"));
        g.throughput(Throughput::Bytes(bytes))
            .sample_size(20)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(1));
        for threads in [1usize, 2] {
            let p = pool(threads);
            g.bench_function(format!("copy/t{threads}"), |b| {
                b.iter(|| p.install(|| parallel_copy(&x, &mut out)))
            });
            g.bench_function(format!("softmax/t{threads}"), |b| {
                b.iter(|| {
                    p.install(|| engine::softmax::softmax_rows(isa, &x, cols, None, &mut out))
                })
            });
            g.bench_function(format!("layernorm/t{threads}"), |b| {
                b.iter(|| {
                    p.install(|| {
                        engine::layernorm::layernorm_rows(
                            isa, &x, cols, &gamma, &beta, 1e-12, &mut out,
                        )
                    })
                })
            });
            for (kind, kname) in [(Gelu::Erf, "gelu_erf"), (Gelu::Tanh, "gelu_tanh")] {
                // GELU is in place: copy then map, so subtract the copy row to read it alone.
                g.bench_function(format!("{kname}/t{threads}"), |b| {
                    b.iter(|| {
                        p.install(|| {
                            parallel_copy(&x, &mut out);
                            engine::gelu::gelu_inplace(isa, &mut out, kind)
                        })
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
