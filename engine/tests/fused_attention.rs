//! The fused training attention over a QKV buffer (the CPU device's, `attention::fused_qkv_*`)
//! against the Tensor-level attention the tape uses: outputs, probabilities and every gradient,
//! with padding and with dropout, on awkward sizes.
use engine::attention::{
    attention_backward, attention_forward, fused_qkv_backward, fused_qkv_forward, FusedDims,
};
use engine::Tensor;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut r = engine::rng::SplitMix64::new(seed);
    (0..n).map(|_| r.next_normal()).collect()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(b: usize, s: usize, h: usize, hd: usize, lens: &[usize], p: f32) {
    let n = b * s * 3 * h * hd;
    let qkv = rand(n, 1 + s as u64);
    let dout = rand(b * s * h * hd, 2);
    let (scale, seed) = (1.0 / (hd as f32).sqrt(), 77);
    let dims = FusedDims {
        batch: b,
        seq: s,
        heads: h,
        head_dim: hd,
        lens,
        packed: false,
    };
    let (out, probs) = fused_qkv_forward(&qkv, &dims, scale, p, seed).unwrap();
    let dqkv = fused_qkv_backward(&qkv, &probs, &dout, &dims, scale, p, seed).unwrap();
    // The reference: q, k, v as (B,H,S,D) views, an additive key mask, heads merged after.
    let t = Tensor::from_vec(qkv.clone(), &[b, s, 3, h, hd])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap();
    let (q, k, v) = (
        t.select(0, 0).unwrap(),
        t.select(0, 1).unwrap(),
        t.select(0, 2).unwrap(),
    );
    let mut m = vec![0.0f32; b * s];
    for (bi, &l) in lens.iter().enumerate() {
        m[bi * s + l..(bi + 1) * s].fill(f32::MIN);
    }
    let mask = Tensor::from_vec(m, &[b, 1, 1, s]).unwrap();
    let (o, saved) = attention_forward(&q, &k, &v, Some(&mask), scale, p, seed).unwrap();
    let merged = o.permute(&[0, 2, 1, 3]).unwrap().contiguous().to_vec();
    assert!(
        worst(&out, &merged) < 1e-5,
        "output, {b}x{s} h{h} d{hd} p{p}"
    );
    assert!(worst(&probs, &saved.probs.to_vec()) < 1e-6, "probabilities");
    let dview = Tensor::from_vec(dout, &[b, s, h, hd])
        .unwrap()
        .permute(&[0, 2, 1, 3])
        .unwrap();
    let (dq, dk, dv) = attention_backward(&q, &k, &v, &saved, &dview).unwrap();
    for (which, g) in [dq, dk, dv].iter().enumerate() {
        let g = g.to_vec();
        let mut want = vec![0.0f32; b * s * h * hd];
        let mut got = vec![0.0f32; b * s * h * hd];
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..s {
                    for j in 0..hd {
                        let at = ((bi * h + hi) * s + i) * hd + j;
                        want[at] = g[at];
                        got[at] = dqkv[(((bi * s + i) * 3 + which) * h + hi) * hd + j];
                    }
                }
            }
        }
        let scale_g = want.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        assert!(
            worst(&got, &want) < 1e-5 * scale_g,
            "gradient {which} (q, k, v), {b}x{s} h{h} d{hd} p{p}: {}",
            worst(&got, &want)
        );
    }
}

#[test]
fn fused_attention_matches_the_tensor_attention() {
    check(2, 16, 2, 8, &[16, 16], 0.0);
    check(3, 17, 3, 7, &[17, 9, 1], 0.0);
    check(3, 17, 3, 7, &[17, 9, 1], 0.1);
    check(2, 129, 2, 32, &[129, 40], 0.1);
    check(1, 1, 1, 1, &[1], 0.0);
}

#[test]
fn fused_attention_rejects_a_buffer_of_the_wrong_size() {
    let dims = FusedDims {
        batch: 2,
        seq: 4,
        heads: 2,
        head_dim: 8,
        lens: &[4, 5],
        packed: false,
    };
    let e = fused_qkv_forward(&vec![0.0; 2 * 4 * 3 * 16], &dims, 1.0, 0.0, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[4, 5]"), "{e}");
}

#[test]
fn packed_sequences_give_the_padded_results_on_their_tokens() {
    // Packed (no padding) against padded to the longest, dropout on: the same outputs and
    // gradients on every real token when the padded rows' output gradient is zero (in a padded
    // batch the padding rows are queries too, and their gradients would reach the keys).
    let (h, hd, lens) = (2, 8, [9usize, 4, 1]);
    let (b, s) = (lens.len(), 9);
    let row = 3 * h * hd;
    let padded_qkv = rand(b * s * row, 5);
    let mut dout_p = rand(b * s * h * hd, 6);
    let (mut qkv, mut dout) = (Vec::new(), Vec::new());
    for (bi, &l) in lens.iter().enumerate() {
        qkv.extend_from_slice(&padded_qkv[bi * s * row..(bi * s + l) * row]);
        dout.extend_from_slice(&dout_p[bi * s * h * hd..(bi * s + l) * h * hd]);
        dout_p[(bi * s + l) * h * hd..(bi + 1) * s * h * hd].fill(0.0);
    }
    let dims = |packed| FusedDims {
        batch: b,
        seq: s,
        heads: h,
        head_dim: hd,
        lens: &lens,
        packed,
    };
    let (scale, p, seed) = (0.3, 0.2, 9);
    let (op, pp) = fused_qkv_forward(&padded_qkv, &dims(false), scale, p, seed).unwrap();
    let gp = fused_qkv_backward(&padded_qkv, &pp, &dout_p, &dims(false), scale, p, seed).unwrap();
    let (ok, pk) = fused_qkv_forward(&qkv, &dims(true), scale, p, seed).unwrap();
    let gk = fused_qkv_backward(&qkv, &pk, &dout, &dims(true), scale, p, seed).unwrap();
    let mut at = 0;
    for (bi, &l) in lens.iter().enumerate() {
        let (o1, o2) = (
            &op[bi * s * h * hd..(bi * s + l) * h * hd],
            &ok[at * h * hd..(at + l) * h * hd],
        );
        assert!(worst(o1, o2) < 1e-6, "output of sequence {bi}");
        let (g1, g2) = (
            &gp[bi * s * row..(bi * s + l) * row],
            &gk[at * row..(at + l) * row],
        );
        assert!(
            worst(g1, g2) < 1e-6,
            "dqkv of sequence {bi}: {}",
            worst(g1, g2)
        );
        at += l;
    }
    assert_eq!(at * row, qkv.len());
}
