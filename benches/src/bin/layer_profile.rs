//! One encoder layer's inference, op by op: the same calls `bert`'s `forward_inference` makes
//! (packed QKV Linear, fused attention, output Linear with the residual, LayerNorm, the FFN's two
//! Linears, GELU, LayerNorm), each timed on its own (best of interleaved rounds), beside the
//! whole layer run back to back. Says where a layer's time goes on the running CPU and ISA
//! (`ENGINE_ISA=avx2` on an AVX-512 CPU for the AVX2 path), and how much is outside the GEMMs.
//! Random weights; MiniLM's and BERT-base's shapes.
//! Run: `cargo run --release -p benches --bin layer_profile [-- THREADS]`
use benches::*;
use engine::attention::attention_inference_with;
use engine::{Gelu, PackedLinear, Precision, Tensor};

/// (name, hidden, heads, intermediate, batch, seq)
const CASES: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("MiniLM 1x128", 384, 12, 1536, 1, 128),
    ("MiniLM 8x128", 384, 12, 1536, 8, 128),
    ("BERT-base 1x128", 768, 12, 3072, 1, 128),
    ("BERT-base 8x128", 768, 12, 3072, 8, 128),
];

fn t(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = rand_vec(n, seed).iter().map(|x| x * 0.1).collect();
    Tensor::from_vec(v, shape).unwrap()
}

fn main() {
    let threads: usize = match std::env::args().nth(1) {
        None => 1,
        Some(a) => match a.parse() {
            Ok(t) if t > 0 => t,
            _ => {
                eprintln!("layer_profile: the one argument is a thread count (a positive integer), not {a:?}");
                std::process::exit(2);
            }
        },
    };
    let p = pool(threads);
    println!(
        "engine ISA: {:?}; {threads} thread(s); one layer, ms per op (best of interleaved rounds); GFLOP/s for the products",
        engine::simd::Isa::best()
    );
    println!(
        "{:>16} {:>13} {:>13} {:>13} {:>7} {:>13} {:>7} {:>13} {:>7} {:>8} {:>8} {:>7}",
        "shape",
        "qkv",
        "attention",
        "attn out",
        "ln",
        "ffn in",
        "gelu",
        "ffn out",
        "ln",
        "sum",
        "layer",
        "other"
    );
    for &(name, h, nh, inter, b, s) in CASES {
        let hd = h / nh;
        let lin = |nout: usize, nin: usize, seed: u64| {
            let (w, bias) = (t(&[nout, nin], seed), t(&[nout], seed + 1));
            PackedLinear::new(&[&w], &[&bias]).unwrap()
        };
        let (qkv, attn_out, ffn_in, ffn_out) = (
            lin(3 * h, h, 1),
            lin(h, h, 3),
            lin(inter, h, 5),
            lin(h, inter, 7),
        );
        let (g1, b1, g2, b2) = (t(&[h], 9), t(&[h], 10), t(&[h], 11), t(&[h], 12));
        let x = t(&[b, s, h], 13);
        let scale = 1.0 / (hd as f32).sqrt();
        let split = |y: &Tensor| {
            let v = y.reshape(&[b, s, 3, nh, hd]).unwrap();
            let v = v.permute(&[2, 0, 3, 1, 4]).unwrap();
            (
                v.select(0, 0).unwrap(),
                v.select(0, 1).unwrap(),
                v.select(0, 2).unwrap(),
            )
        };
        let attn = |y: &Tensor| {
            let (q, k, v) = split(y);
            attention_inference_with(&q, &k, &v, None, scale, Precision::F32).unwrap()
        };
        let times = p.install(|| {
            // Inputs of each op, computed once.
            let y = qkv.forward(&x, None, None).unwrap();
            let ctx = attn(&y);
            let a0 = attn_out.forward(&ctx, Some(&x), None).unwrap();
            let a = a0.layernorm(&g1, &b1, 1e-12).unwrap();
            let m0 = ffn_in.forward(&a, None, None).unwrap();
            let o0 = ffn_out.forward(&m0, Some(&a), None).unwrap();
            let mut m = m0.to_vec();
            race(
                3.0,
                5,
                &mut [
                    &mut || drop(qkv.forward(&x, None, None).unwrap()),
                    &mut || drop(attn(&y)),
                    &mut || drop(attn_out.forward(&ctx, Some(&x), None).unwrap()),
                    &mut || drop(a0.layernorm(&g1, &b1, 1e-12).unwrap()),
                    &mut || drop(ffn_in.forward(&a, None, None).unwrap()),
                    &mut || {
                        m.copy_from_slice(m0.as_slice().unwrap());
                        engine::gelu::gelu_inplace(engine::simd::Isa::best(), &mut m, Gelu::Erf)
                    },
                    &mut || drop(ffn_out.forward(&m0, Some(&a), None).unwrap()),
                    &mut || drop(o0.layernorm(&g2, &b2, 1e-12).unwrap()),
                    &mut || {
                        let y = qkv.forward(&x, None, None).unwrap();
                        let ctx = attn(&y);
                        let a = attn_out
                            .forward(&ctx, Some(&x), None)
                            .unwrap()
                            .layernorm(&g1, &b1, 1e-12)
                            .unwrap();
                        let m = ffn_in.forward(&a, None, Some(Gelu::Erf)).unwrap();
                        let o = ffn_out.forward(&m, Some(&a), None).unwrap();
                        drop(o.layernorm(&g2, &b2, 1e-12).unwrap())
                    },
                ],
            )
        });
        let tok = (b * s) as f64;
        let gf = |flops: f64, secs: f64| flops / secs / 1e9;
        let ms = |x: f64| x * 1e3;
        let cell = |secs: f64, flops: f64| format!("{:.3} ({:.0})", ms(secs), gf(flops, secs));
        let sum: f64 = times[..8].iter().sum();
        let gemm_flops = |nout: usize, nin: usize| 2.0 * tok * (nout * nin) as f64;
        println!(
            "{:>16} {:>13} {:>13} {:>13} {:>7.3} {:>13} {:>7.3} {:>13} {:>7.3} {:>8.3} {:>8.3} {:>6.0}%",
            name,
            cell(times[0], gemm_flops(3 * h, h)),
            cell(times[1], 4.0 * (b * nh * s * s * hd) as f64),
            cell(times[2], gemm_flops(h, h)),
            ms(times[3]),
            cell(times[4], gemm_flops(inter, h)),
            ms(times[5]),
            cell(times[6], gemm_flops(h, inter)),
            ms(times[7]),
            ms(sum),
            ms(times[8]),
            100.0 * (times[3] + times[5] + times[7]) / sum,
        );
    }
    println!("(gelu includes a copy of its input, to start from the same values each time; 'other': LayerNorm and GELU's share of the sum)");
}
