//! GPU benchmark of the CUDA kernels (feature `cuda`; run by scripts/gpu-check on a GPU machine,
//! beside scripts/gpu_bench_torch.py, which times torch's equivalent ops on the same shapes).
//!
//! Shapes are BERT-base training at batch 128 x 128 tokens (16,384 rows; hidden 768, FFN 3,072,
//! 12 heads, vocabulary 30,522, ~2,458 masked rows). Each line: `name  ms  rate  unit`, where
//! rate is GB/s for memory-bound kernels (the fewest bytes the op must move: every input read
//! once, every output written once) and TFLOP/s for GEMMs. Timed with CUDA events around
//! `REPS` launches after a warm-up; the median of 5 such rounds. Inputs are random (never
//! zeros), and each op's output is checked for NaNs (unwritten elements) after timing.

use engine::cuda::cudarc::driver::{CudaSlice, DeviceRepr};
use engine::cuda::{self as k, blas, gelu::GeluKind, Gpu};
use half::bf16;

const REPS: usize = 20;
const ROWS: usize = 128 * 128;
const HID: usize = 768;
const FFN: usize = 3072;
const HEADS: usize = 12;
const SEQ: usize = 128;
const VOCAB: usize = 30522;
const MASKED: usize = 2458;

fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = engine::rng::SplitMix64::new(seed);
    (0..n).map(|_| r.next_normal() * scale).collect()
}

fn up<T: DeviceRepr>(g: &Gpu, v: &[T]) -> CudaSlice<T> {
    g.stream().clone_htod(v).unwrap()
}

fn up_bf16(g: &Gpu, v: &[f32]) -> CudaSlice<bf16> {
    up(g, &v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>())
}

/// Median milliseconds per call of `f` (REPS calls between two events, 5 rounds).
fn time(g: &Gpu, mut f: impl FnMut()) -> f64 {
    f();
    g.synchronize().unwrap();
    let flags = Some(engine::cuda::cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut t = Vec::new();
    for _ in 0..5 {
        let a = g.context().new_event(flags).unwrap();
        let b = g.context().new_event(flags).unwrap();
        a.record(g.stream()).unwrap();
        for _ in 0..REPS {
            f();
        }
        b.record(g.stream()).unwrap();
        b.synchronize().unwrap();
        t.push(a.elapsed_ms(&b).unwrap() as f64 / REPS as f64);
    }
    t.sort_by(|x, y| x.partial_cmp(y).unwrap());
    t[2]
}

fn report_bw(name: &str, ms: f64, bytes: f64) {
    println!("{name:<40} {ms:>9.4} {:>9.1} GB/s", bytes / ms / 1e6);
}

fn no_nan<T: DeviceRepr + Default + Clone + Copy>(
    g: &Gpu,
    name: &str,
    b: &CudaSlice<T>,
    f: impl Fn(T) -> f32,
) {
    let v = g.stream().clone_dtoh(b).unwrap();
    let bad = v.iter().filter(|&&x| f(x).is_nan()).count();
    assert_eq!(bad, 0, "{name}: {bad} NaN outputs");
}

fn main() {
    let g = Gpu::new(0).unwrap_or_else(|e| panic!("gpu_bench needs a CUDA GPU: {e}"));
    g.warm_up().unwrap();
    let s = g.stream().clone();
    println!("# gpu_bench ({}, {} SMs); name ms rate", g.arch(), g.sms());
    let id = |x: f32| x;
    let bid = |x: bf16| x.to_f32();

    // Device copy: the ceiling for the memory-bound kernels.
    let n = ROWS * FFN;
    let big = up(&g, &randn(n, 1, 1.0));
    let big2 = up(&g, &randn(n, 2, 1.0));
    let mut out = up(&g, &vec![0.0f32; n]);
    let ms = time(&g, || s.memcpy_dtod(&big, &mut out).unwrap());
    report_bw("copy f32 [16384,3072]", ms, 8.0 * n as f64);

    let ms = time(&g, || {
        k::elementwise::add(&g, &big, &big2, &mut out).unwrap()
    });
    report_bw("add f32 [16384,3072]", ms, 12.0 * n as f64);
    no_nan(&g, "add", &out, id);

    let bias = up(&g, &randn(FFN, 3, 0.1));
    for kind in [GeluKind::Erf, GeluKind::Tanh] {
        let ms = time(&g, || {
            k::gelu::bias_gelu_fwd(&g, kind, &big, &bias.as_view(), &mut out, FFN).unwrap()
        });
        report_bw(
            &format!("bias_gelu_fwd {kind:?} f32 [16384,3072]"),
            ms,
            8.0 * n as f64,
        );
        no_nan(&g, "bias_gelu_fwd", &out, id);
    }
    let ms = time(&g, || {
        k::gelu::bias_gelu_bwd(
            &g,
            GeluKind::Erf,
            &big,
            &bias.as_view(),
            &big2.as_view(),
            &mut out,
            FFN,
        )
        .unwrap()
    });
    report_bw("bias_gelu_bwd Erf f32 [16384,3072]", ms, 12.0 * n as f64);
    no_nan(&g, "bias_gelu_bwd", &out, id);
    {
        let (xb, bb) = (
            up_bf16(&g, &randn(n, 4, 1.0)),
            up_bf16(&g, &randn(FFN, 5, 0.1)),
        );
        let mut yb = up(&g, &vec![bf16::ZERO; n]);
        let ms = time(&g, || {
            k::gelu::bias_gelu_fwd(&g, GeluKind::Erf, &xb, &bb.as_view(), &mut yb, FFN).unwrap()
        });
        report_bw("bias_gelu_fwd Erf bf16 [16384,3072]", ms, 4.0 * n as f64);
        no_nan(&g, "bias_gelu_fwd bf16", &yb, bid);
        let ms = time(&g, || {
            k::elementwise::cast_f32_bf16(&g, &big, &mut yb).unwrap()
        });
        report_bw("cast f32->bf16 [16384,3072]", ms, 6.0 * n as f64);
    }
    let ms = time(&g, || {
        k::dropout::dropout(&g, &big, &mut out, 0.1, 7).unwrap()
    });
    report_bw("dropout p=0.1 f32 [16384,3072]", ms, 8.0 * n as f64);
    let mut colsum = up(&g, &vec![0.0f32; FFN]);
    let ms = time(&g, || {
        k::reduce::column_sum(&g, &big, &mut colsum, FFN, 0.0).unwrap()
    });
    report_bw("column_sum (dbias) f32 [16384,3072]", ms, 4.0 * n as f64);
    no_nan(&g, "column_sum", &colsum, id);
    drop((big, big2, out));

    // LayerNorm at the hidden size, fused with dropout and the residual.
    let n = ROWS * HID;
    let (x, res, dy) = (
        up(&g, &randn(n, 6, 1.0)),
        up(&g, &randn(n, 7, 1.0)),
        up(&g, &randn(n, 8, 1.0)),
    );
    let (gamma, beta) = (up(&g, &vec![1.0f32; HID]), up(&g, &randn(HID, 9, 0.1)));
    let (mut h, mut y) = (up(&g, &vec![0.0f32; n]), up(&g, &vec![0.0f32; n]));
    let (mut mean, mut rstd) = (up(&g, &vec![0.0f32; ROWS]), up(&g, &vec![0.0f32; ROWS]));
    let ms = time(&g, || {
        k::layernorm::layernorm_fwd(
            &g,
            &x,
            Some(&res.as_view()),
            &gamma,
            &beta,
            Some(&mut h.as_view_mut()),
            &mut y,
            &mut mean,
            &mut rstd,
            HID,
            1e-12,
            Some((0.1, 3)),
        )
        .unwrap()
    });
    report_bw(
        "layernorm_fwd +dropout+residual f32 [16384,768]",
        ms,
        16.0 * n as f64,
    );
    no_nan(&g, "layernorm_fwd", &y, id);
    let mut dx = up(&g, &vec![0.0f32; n]);
    let (mut dg, mut db) = (up(&g, &vec![0.0f32; HID]), up(&g, &vec![0.0f32; HID]));
    let ms = time(&g, || {
        k::layernorm::layernorm_bwd(&g, &h, &dy, &gamma, &mean, &rstd, &mut dx, HID).unwrap();
        k::layernorm::layernorm_params_bwd(&g, &h, &dy, &mean, &rstd, &mut dg, &mut db, HID, 0.0)
            .unwrap();
    });
    report_bw(
        "layernorm_bwd dx+dgamma+dbeta f32 [16384,768]",
        ms,
        12.0 * n as f64,
    );
    no_nan(&g, "layernorm_bwd", &dx, id);
    let (vocab_t, pos_t, type_t) = (
        up(&g, &randn(VOCAB * HID, 10, 1.0)),
        up(&g, &randn(512 * HID, 11, 1.0)),
        up(&g, &randn(2 * HID, 12, 1.0)),
    );
    let ids: Vec<i32> = (0..ROWS)
        .map(|i| ((i as u64 * 2_654_435_761) % VOCAB as u64) as i32)
        .collect();
    let types: Vec<i32> = (0..ROWS).map(|i| ((i % SEQ) >= SEQ / 2) as i32).collect();
    let (dids, dtypes) = (up(&g, &ids), up(&g, &types));
    let ms = time(&g, || {
        k::embedding::bert_embed_fwd(
            &g,
            &dids,
            Some(&dtypes.as_view()),
            &vocab_t,
            &pos_t,
            &type_t,
            &mut y,
            SEQ,
            HID,
            None,
        )
        .unwrap()
    });
    report_bw("bert_embed_fwd f32 [16384,768]", ms, 8.0 * n as f64);
    no_nan(&g, "bert_embed_fwd", &y, id);
    drop((x, res, dy, h, y, dx));

    // Attention probabilities: (128, 12, 128, 128).
    let n = ROWS * HEADS * SEQ;
    let (sc, dsc) = (up(&g, &randn(n, 13, 2.0)), up(&g, &randn(n, 14, 1.0)));
    let mut mask = vec![0.0f32; 128 * SEQ];
    for (i, m) in mask.iter_mut().enumerate() {
        if i % SEQ >= 32 + (i / SEQ) % 96 {
            *m = -10000.0;
        }
    }
    let mask = up(&g, &mask);
    let (mut p, mut dp) = (up(&g, &vec![0.0f32; n]), up(&g, &vec![0.0f32; n]));
    let ms = time(&g, || {
        k::softmax::softmax_fwd(
            &g,
            &sc,
            Some((&mask.as_view(), HEADS * SEQ)),
            &mut p,
            SEQ,
            0.125,
        )
        .unwrap()
    });
    report_bw(
        "softmax_fwd masked f32 [128,12,128,128]",
        ms,
        8.0 * n as f64,
    );
    no_nan(&g, "softmax_fwd", &p, id);
    let ms = time(&g, || {
        k::softmax::softmax_bwd(&g, &p, &dsc, &mut dp, SEQ).unwrap()
    });
    report_bw("softmax_bwd f32 [128,12,128,128]", ms, 12.0 * n as f64);
    drop((sc, dsc, p, dp));

    // MLM loss over the vocabulary at the masked rows, forward + backward in one pass.
    let n = MASKED * VOCAB;
    let logits0 = randn(n, 15, 2.0);
    let targets: Vec<i32> = (0..MASKED).map(|i| ((i * 7919) % VOCAB) as i32).collect();
    let dt = up(&g, &targets);
    let mut logits = up(&g, &logits0);
    let (mut loss, mut lse) = (up(&g, &vec![0.0f32; MASKED]), up(&g, &vec![0.0f32; MASKED]));
    // In place: each round overwrites the logits with the gradient, which is as large a buffer
    // of the same kind of values (the kernel's work does not depend on them).
    let ms = time(&g, || {
        k::cross_entropy::cross_entropy_fused_inplace(
            &g,
            &mut logits,
            &dt,
            &mut loss,
            &mut lse,
            VOCAB,
            -100,
            1.0 / MASKED as f32,
        )
        .unwrap()
    });
    report_bw("cross_entropy fwd+bwd f32 [2458,30522]", ms, 8.0 * n as f64);
    no_nan(&g, "cross_entropy", &loss, id);
    drop(logits);

    // Multi-tensor AdamW over BERT-base's parameter shapes (110 M parameters).
    let mut shapes: Vec<usize> = vec![VOCAB * HID, 512 * HID, 2 * HID, HID, HID];
    for _ in 0..12 {
        shapes.extend([
            HID * HID,
            HID,
            HID * HID,
            HID,
            HID * HID,
            HID,
            HID * HID,
            HID,
            HID,
            HID,
            FFN * HID,
            FFN,
            HID * FFN,
            HID,
            HID,
            HID,
        ]);
    }
    shapes.extend([HID * HID, HID, HID * HID, HID, HID, HID, VOCAB, 2 * HID, 2]);
    let total: usize = shapes.iter().sum();
    let tensors: Vec<_> = shapes
        .iter()
        .enumerate()
        .map(|(i, &len)| k::adamw::AdamTensor {
            param: up(&g, &randn(len, 100 + i as u64, 0.02)),
            grad: up(&g, &randn(len, 1000 + i as u64, 0.01)),
            copy: None,
            decay: 0.01,
        })
        .collect();
    let mut opt = k::adamw::MultiAdamW::new(&g, tensors).unwrap();
    let hp = k::adamw::AdamStep {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        bc1: 1.0,
        bc2: 1.0,
    };
    let ms = time(&g, || {
        opt.clip_grad_norm(&g, 1.0).unwrap();
        opt.step(&g, hp, true).unwrap();
    });
    report_bw(
        &format!("adamw_multi+clip {:.1}M params", total as f64 / 1e6),
        ms,
        32.0 * total as f64,
    );
    no_nan(&g, "adamw", &opt.tensors[0].param, id);
    drop(opt);

    // Fused attention (bf16 storage, f32 math on CUDA cores: the reference-grade kernel),
    // packed QKV; FLOPs by FlashAttention's convention (forward 4 B H S^2 D, fwd+bwd 3.5x).
    // The padded batch (lengths 32..128, the formula shared with gpu_bench_torch.py) runs packed,
    // without padding tokens, and is rated by the padded batch's FLOPs as torch is.
    for (bsz, seq, padded) in [
        (64usize, 128usize, false),
        (16, 512, false),
        (4, 1024, false),
        (64, 128, true),
    ] {
        use k::attention::{attention_bwd, attention_fwd, AttnBatch, AttnShape};
        let (h, d) = (HEADS, 64);
        let lens: Vec<usize> = (0..bsz)
            .map(|b| if padded { 32 + (b * 53 + 17) % 97 } else { seq })
            .collect();
        let batch = if padded {
            AttnBatch::packed(&g, &lens).unwrap()
        } else {
            AttnBatch::padded(&g, seq, &lens).unwrap()
        };
        let tokens = batch.tokens;
        let shape = AttnShape {
            heads: h,
            head_dim: d,
            scale: 0.125,
        };
        let qkv = up_bf16(&g, &randn(tokens * 3 * h * d, 30, 1.0));
        let dout = up_bf16(&g, &randn(tokens * h * d, 31, 1.0));
        let mut o = up(&g, &vec![bf16::ZERO; tokens * h * d]);
        let mut lse = up(&g, &vec![0.0f32; tokens * h]);
        let mut dqkv = up(&g, &vec![bf16::ZERO; tokens * 3 * h * d]);
        let flops = 4.0 * (bsz * h * seq * seq * d) as f64;
        let tag = format!(
            "B{bsz} H{h} S{seq} D{d}{}",
            if padded { " padded" } else { "" }
        );
        let ms = time(&g, || {
            k::attention::attention_fwd_with(
                &g,
                k::attention::AttnKernel::Reference,
                &batch,
                shape,
                &qkv.as_view(),
                &mut o.as_view_mut(),
                &mut lse,
                None,
            )
            .unwrap()
        });
        println!(
            "{:<40} {ms:>9.4} {:>9.1} TFLOP/s",
            format!("attention fwd bf16 reference {tag}"),
            flops / ms / 1e9
        );
        let ms = time(&g, || {
            attention_fwd(
                &g,
                &batch,
                shape,
                &qkv.as_view(),
                &mut o.as_view_mut(),
                &mut lse,
                None,
            )
            .unwrap()
        });
        println!(
            "{:<40} {ms:>9.4} {:>9.1} TFLOP/s",
            format!("attention fwd bf16 {tag}"),
            flops / ms / 1e9
        );
        let ms = time(&g, || {
            attention_fwd(
                &g,
                &batch,
                shape,
                &qkv.as_view(),
                &mut o.as_view_mut(),
                &mut lse,
                None,
            )
            .unwrap();
            attention_bwd(
                &g,
                &batch,
                shape,
                &qkv.as_view(),
                &o.as_view(),
                &lse,
                &dout.as_view(),
                &mut dqkv.as_view_mut(),
                None,
            )
            .unwrap();
        });
        println!(
            "{:<40} {ms:>9.4} {:>9.1} TFLOP/s",
            format!("attention fwd+bwd bf16 {tag}"),
            3.5 * flops / ms / 1e9
        );
        no_nan(&g, "attention", &dqkv, bid);
    }

    // GEMMs at BERT-base's shapes, M x K x N: C[M, N] = A[M, K] B[K, N].
    let b = blas::Blas::new(&g).unwrap();
    for (m, kk, nn) in [(ROWS, HID, FFN), (ROWS, FFN, HID), (ROWS, HID, HID)] {
        let (a, bm) = (randn(m * kk, 20, 1.0), randn(kk * nn, 21, 1.0));
        let shape = blas::GemmShape::new(m, nn, kk);
        let (da, db) = (up(&g, &a), up(&g, &bm));
        let mut c = up(&g, &vec![0.0f32; m * nn]);
        for math in [blas::Math::F32, blas::Math::Tf32] {
            let ms = time(&g, || {
                b.gemm::<f32, f32>(&g, shape, math, 1.0, &da, &db, 0.0, &mut c)
                    .unwrap()
            });
            println!(
                "{:<40} {ms:>9.4} {:>9.1} TFLOP/s",
                format!("gemm {math:?} {m}x{kk}x{nn}"),
                shape.flops() / ms / 1e9
            );
        }
        let (ab, bb) = (up_bf16(&g, &a), up_bf16(&g, &bm));
        let mut cb = up(&g, &vec![bf16::ZERO; m * nn]);
        let ms = time(&g, || {
            b.gemm::<bf16, bf16>(&g, shape, blas::Math::F32, 1.0, &ab, &bb, 0.0, &mut cb)
                .unwrap()
        });
        println!(
            "{:<40} {ms:>9.4} {:>9.1} TFLOP/s",
            format!("gemm Bf16 {m}x{kk}x{nn}"),
            shape.flops() / ms / 1e9
        );
        no_nan(&g, "gemm bf16", &cb, bid);
    }
}
