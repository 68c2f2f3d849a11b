//! Inference attention of one encoder layer at BERT's shapes: the fused kernel (scores, softmax
//! and `P v` per block of query rows, in L1; `engine/src/gemm/attention.rs`) against the
//! three-pass version it replaced (`attention_inference_unfused`), interleaved in one process,
//! 1 and 2 threads. Q, K and V are views of one (B, S, 3, H, D) projection, as in the model.
//! The outputs are checked against each other before timing.
//! Run: `cargo run --release -p benches --bin attn_table`
use benches::*;
use engine::attention::{
    attention_inference, attention_inference_unfused, attention_inference_with,
};
use engine::{Precision, Tensor};

/// (name, batch, heads, seq, head dim)
const CASES: &[(&str, usize, usize, usize, usize)] = &[
    ("MiniLM 1x128", 1, 12, 128, 32),
    ("MiniLM 32x128", 32, 12, 128, 32),
    ("BERT-base 8x128", 8, 12, 128, 64),
    ("BERT-base 2x512", 2, 12, 512, 64),
];

fn main() {
    println!(
        "engine ISA: {:?}; one layer's attention, ms (best of interleaved runs), GFLOP/s of its two products",
        engine::simd::Isa::best()
    );
    println!(
        "{:>16} {:>3} {:>10} {:>10} {:>9} {:>9} {:>8} {:>13} {:>11}",
        "shape",
        "thr",
        "unfused",
        "fused",
        "GF/s unf",
        "GF/s fus",
        "speedup",
        "unfused bf16",
        "fused bf16"
    );
    for &(name, b, h, s, d) in CASES {
        let x = Tensor::from_vec(rand_vec(b * s * 3 * h * d, 7), &[b, s, 3, h, d]).unwrap();
        let qkv = x.permute(&[2, 0, 3, 1, 4]).unwrap();
        let (q, k, v) = (
            qkv.select(0, 0).unwrap(),
            qkv.select(0, 1).unwrap(),
            qkv.select(0, 2).unwrap(),
        );
        let scale = 1.0 / (d as f32).sqrt();
        let flops = 4.0 * (b * h * s * s * d) as f64;
        for threads in [1usize, 2] {
            let p = pool(threads);
            let t = p.install(|| {
                let want = attention_inference_unfused(&q, &k, &v, None, scale, Precision::F32)
                    .unwrap()
                    .to_vec();
                let got = attention_inference(&q, &k, &v, None, scale)
                    .unwrap()
                    .to_vec();
                let err = max_rel_err(&got, &want);
                assert!(err < 1e-5, "{name}: fused differs from unfused by {err}");
                race(
                    2.0,
                    10,
                    &mut [
                        &mut || {
                            std::hint::black_box(
                                attention_inference_unfused(
                                    &q,
                                    &k,
                                    &v,
                                    None,
                                    scale,
                                    Precision::F32,
                                )
                                .unwrap(),
                            );
                        },
                        &mut || {
                            std::hint::black_box(
                                attention_inference(&q, &k, &v, None, scale).unwrap(),
                            );
                        },
                        &mut || {
                            std::hint::black_box(
                                attention_inference_unfused(
                                    &q,
                                    &k,
                                    &v,
                                    None,
                                    scale,
                                    Precision::Bf16,
                                )
                                .unwrap(),
                            );
                        },
                        &mut || {
                            std::hint::black_box(
                                attention_inference_with(&q, &k, &v, None, scale, Precision::Bf16)
                                    .unwrap(),
                            );
                        },
                    ],
                )
            });
            println!(
                "{:>16} {:>3} {:>10.3} {:>10.3} {:>9.1} {:>9.1} {:>7.2}x {:>13.3} {:>11.3}",
                name,
                threads,
                t[0] * 1e3,
                t[1] * 1e3,
                flops / t[0] / 1e9,
                flops / t[1] / 1e9,
                t[0] / t[1],
                t[2] * 1e3,
                t[3] * 1e3
            );
        }
    }
}
