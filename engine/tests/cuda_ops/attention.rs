//! Fused attention, forward and backward, against the CPU engine.

use crate::harness::*;

/// (B, H, S, D) tensor of part `which` (0 q, 1 k, 2 v) of a packed [B*S, 3, H, D] buffer.
fn unpack_qkv(qkv: &[f32], b: usize, s: usize, h: usize, d: usize, which: usize) -> engine::Tensor {
    let mut out = vec![0.0f32; b * h * s * d];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * s + si) * 3 + which) * h * d + hi * d;
                let dst = ((bi * h + hi) * s + si) * d;
                out[dst..dst + d].copy_from_slice(&qkv[src..src + d]);
            }
        }
    }
    engine::Tensor::from_vec(out, &[b, h, s, d]).unwrap()
}

/// The inverse for one (B, H, S, D) tensor into [B*S, (parts), H, D] at part `which`.
fn pack_bhsd(t: &engine::Tensor, parts: usize, which: usize, out: &mut [f32]) {
    let (b, h, s, d) = (t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]);
    let v = t.contiguous().to_vec();
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * h + hi) * s + si) * d;
                let dst = ((bi * s + si) * parts + which) * h * d + hi * d;
                out[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
    }
}

/// CPU attention (the engine's op) on a packed QKV buffer with key lengths; returns
/// (O [B*S, H, D], dQKV [B*S, 3, H, D]).
fn cpu_attention(
    qkv: &[f32],
    dout: &[f32],
    b: usize,
    s: usize,
    h: usize,
    d: usize,
    lens: &[usize],
    p: f32,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let (q, kk, v) = (
        unpack_qkv(qkv, b, s, h, d, 0),
        unpack_qkv(qkv, b, s, h, d, 1),
        unpack_qkv(qkv, b, s, h, d, 2),
    );
    let mut mask = vec![0.0f32; b * s];
    for (bi, &l) in lens.iter().enumerate() {
        for j in l..s {
            mask[bi * s + j] = -10000.0;
        }
    }
    let mask = engine::Tensor::from_vec(mask, &[b, 1, 1, s]).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    let (o, saved) =
        engine::attention::attention_forward(&q, &kk, &v, Some(&mask), scale, p, seed).unwrap();
    let mut o_packed = vec![0.0; b * s * h * d];
    pack_bhsd(&o, 1, 0, &mut o_packed);
    // dout arrives as [B*S, H, D]: unpack it as a one-part buffer.
    let mut dbhsd = vec![0.0f32; b * h * s * d];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = (bi * s + si) * h * d + hi * d;
                let dst = ((bi * h + hi) * s + si) * d;
                dbhsd[dst..dst + d].copy_from_slice(&dout[src..src + d]);
            }
        }
    }
    let dt = engine::Tensor::from_vec(dbhsd, &[b, h, s, d]).unwrap();
    let (dq, dk, dv) = engine::attention::attention_backward(&q, &kk, &v, &saved, &dt).unwrap();
    let mut g = vec![0.0; b * s * 3 * h * d];
    pack_bhsd(&dq, 3, 0, &mut g);
    pack_bhsd(&dk, 3, 1, &mut g);
    pack_bhsd(&dv, 3, 2, &mut g);
    (o_packed, g)
}

#[test]
fn fused_attention_against_the_cpu_engine() {
    let g = gpu();
    let mut r = rng(11);
    use k::attention::{attention_bwd, attention_fwd, AttnBatch, AttnShape};
    for (b, s, h, d, p) in [
        (2, 7, 1, 32, 0.0f32),
        (3, 128, 4, 64, 0.1),
        (2, 80, 2, 128, 0.1),
        (4, 130, 2, 64, 0.0),
    ] {
        let lens: Vec<usize> = (0..b)
            .map(|i| {
                if i == 0 {
                    s
                } else {
                    1 + (r.next_u64() as usize) % s
                }
            })
            .collect();
        let tokens = b * s;
        let (qkv, dout) = (
            randn(&mut r, tokens * 3 * h * d, 1.0),
            randn(&mut r, tokens * h * d, 1.0),
        );
        let seed = r.next_u64();
        let (want_o, want_g) = cpu_attention(&qkv, &dout, b, s, h, d, &lens, p, seed);
        let batch = AttnBatch::padded(&g, s, &lens).unwrap();
        let shape = AttnShape {
            heads: h,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let drop = (p > 0.0).then_some((p, seed));
        let tag = format!("B{b} S{s} H{h} D{d} p={p} lens {lens:?}");
        let (dqkv_in, ddout) = (up(&g, &qkv), up(&g, &dout));
        let mut o = poison(&g, tokens * h * d);
        let mut lse = poison(&g, tokens * h);
        attention_fwd(
            &g,
            &batch,
            shape,
            &dqkv_in.as_view(),
            &mut o.as_view_mut(),
            &mut lse,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd f32 {tag}"),
            &down(&g, &o),
            &want_o,
            F32_TOL,
        );
        let mut grad = poison(&g, tokens * 3 * h * d);
        attention_bwd(
            &g,
            &batch,
            shape,
            &dqkv_in.as_view(),
            &o.as_view(),
            &lse,
            &ddout.as_view(),
            &mut grad.as_view_mut(),
            drop,
        )
        .unwrap();
        close(
            &format!("attention bwd f32 dqkv {tag}"),
            &down(&g, &grad),
            &want_g,
            F32_TOL,
        );
        // bf16 storage: the CPU reference on the rounded inputs.
        let (want_ob, want_gb) = cpu_attention(
            &round_bf16(&qkv),
            &round_bf16(&dout),
            b,
            s,
            h,
            d,
            &lens,
            p,
            seed,
        );
        let (qb, db) = (up(&g, &to_bf16(&qkv)), up(&g, &to_bf16(&dout)));
        let mut ob = poison_bf16(&g, tokens * h * d);
        let mut lse_ref = poison(&g, tokens * h);
        k::attention::attention_fwd_with(
            &g,
            k::attention::AttnKernel::Reference,
            &batch,
            shape,
            &qb.as_view(),
            &mut ob.as_view_mut(),
            &mut lse_ref,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd bf16 reference {tag}"),
            &from_bf16(&down(&g, &ob)),
            &want_ob,
            BF16_TOL,
        );
        // The tensor-core kernel (the default for bf16): against the CPU and the reference LSE.
        let mut ob = poison_bf16(&g, tokens * h * d);
        attention_fwd(
            &g,
            &batch,
            shape,
            &qb.as_view(),
            &mut ob.as_view_mut(),
            &mut lse,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd bf16 tensor cores {tag}"),
            &from_bf16(&down(&g, &ob)),
            &want_ob,
            BF16_TOL,
        );
        close(
            &format!("attention lse tensor cores vs reference {tag}"),
            &down(&g, &lse),
            &down(&g, &lse_ref),
            1e-3,
        );
        // The default bf16 backward (tensor cores for head dims 32 and 64), then the reference.
        for which in [
            k::attention::AttnKernel::TensorCores,
            k::attention::AttnKernel::Reference,
        ] {
            if which == k::attention::AttnKernel::TensorCores && d > 64 {
                continue;
            }
            let mut gb = poison_bf16(&g, tokens * 3 * h * d);
            k::attention::attention_bwd_with(
                &g,
                which,
                &batch,
                shape,
                &qb.as_view(),
                &ob.as_view(),
                &lse,
                &db.as_view(),
                &mut gb.as_view_mut(),
                drop,
            )
            .unwrap();
            close(
                &format!("attention bwd bf16 {which:?} dqkv {tag}"),
                &from_bf16(&down(&g, &gb)),
                &want_gb,
                BF16_TOL,
            );
        }
    }
    // Packed variable-length sequences (no padding tokens): each against the CPU on its own.
    let (h, d) = (3, 64);
    let lens = [5usize, 128, 77, 1, 200];
    let tokens: usize = lens.iter().sum();
    let (qkv, dout) = (
        randn(&mut r, tokens * 3 * h * d, 1.0),
        randn(&mut r, tokens * h * d, 1.0),
    );
    let batch = AttnBatch::packed(&g, &lens).unwrap();
    let shape = AttnShape {
        heads: h,
        head_dim: d,
        scale: 0.125,
    };
    let dq_in = up(&g, &qkv);
    let mut o = poison(&g, tokens * h * d);
    let mut lse = poison(&g, tokens * h);
    attention_fwd(
        &g,
        &batch,
        shape,
        &dq_in.as_view(),
        &mut o.as_view_mut(),
        &mut lse,
        None,
    )
    .unwrap();
    let mut grad = poison(&g, tokens * 3 * h * d);
    attention_bwd(
        &g,
        &batch,
        shape,
        &dq_in.as_view(),
        &o.as_view(),
        &lse,
        &up(&g, &dout).as_view(),
        &mut grad.as_view_mut(),
        None,
    )
    .unwrap();
    let (got_o, got_g) = (down(&g, &o), down(&g, &grad));
    let mut at = 0;
    for &l in &lens {
        let q_part = &qkv[at * 3 * h * d..(at + l) * 3 * h * d];
        let d_part = &dout[at * h * d..(at + l) * h * d];
        let (want_o, want_g) = cpu_attention(q_part, d_part, 1, l, h, d, &[l], 0.0, 0);
        close(
            &format!("attention packed fwd len {l}"),
            &got_o[at * h * d..(at + l) * h * d],
            &want_o,
            F32_TOL,
        );
        close(
            &format!("attention packed bwd len {l}"),
            &got_g[at * 3 * h * d..(at + l) * 3 * h * d],
            &want_g,
            F32_TOL,
        );
        at += l;
    }
    // Contract checks.
    assert!(AttnBatch::padded(&g, 8, &[9]).is_err());
    let e = attention_fwd(
        &g,
        &batch,
        AttnShape {
            heads: h,
            head_dim: 48,
            scale: 1.0,
        },
        &dq_in.as_view(),
        &mut o.as_view_mut(),
        &mut lse,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("head_dim"), "{e}");
}
