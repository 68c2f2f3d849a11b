//! Autograd: every op's backward against central finite differences (accumulated in f64),
//! on random shapes; tape semantics (accumulation, no_grad, consumed graphs); AdamW, clipping,
//! schedules and non-finite checks; and a small network that trains deterministically.

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::{no_grad, Error, Gelu, ParamStore, Tensor, Var};
use proptest::prelude::*;

/// Checks the gradients of `f` at `inputs` against central differences.
///
/// The scalar checked is `L = sum(f(x) * R)` for a fixed random R (so every output element
/// matters, with different weights). Up to `max_checks` entries of each input are perturbed by
/// +-eps; L is accumulated in f64 from the f32 outputs.
fn check_grads(inputs: &[Tensor], eps: f32, tol: f64, f: impl Fn(&[Var]) -> engine::Result<Var>) {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::param(t.clone())).collect();
    let out = f(&vars).unwrap();
    let r = Tensor::rand_uniform(&out.shape(), -1.0, 1.0, 99);
    let loss = out
        .mul(&Var::constant(r.clone()))
        .unwrap()
        .sum_all()
        .unwrap();
    loss.backward().unwrap();
    let rv = r.to_vec();
    let eval = |xs: &[Tensor]| -> f64 {
        let _g = no_grad();
        let vs: Vec<Var> = xs.iter().map(|t| Var::constant(t.clone())).collect();
        let o = f(&vs).unwrap().value().to_vec();
        o.iter().zip(&rv).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    for (i, t) in inputs.iter().enumerate() {
        let analytic = vars[i]
            .grad()
            .map(|g| g.to_vec())
            .unwrap_or_else(|| vec![0.0; t.numel()]);
        assert_eq!(
            analytic.len(),
            t.numel(),
            "input {i}: gradient has the wrong size"
        );
        let base = t.contiguous().to_vec();
        let n = base.len();
        let picks: Vec<usize> = if n <= 24 {
            (0..n).collect()
        } else {
            (0..24).map(|j| (j * 7919 + 13) % n).collect()
        };
        let mut numeric = Vec::new();
        for &j in &picks {
            let mut plus = base.clone();
            plus[j] += eps;
            let mut minus = base.clone();
            minus[j] -= eps;
            let mut xs: Vec<Tensor> = inputs.iter().map(|t| t.contiguous()).collect();
            xs[i] = Tensor::from_vec(plus, t.shape()).unwrap();
            let lp = eval(&xs);
            xs[i] = Tensor::from_vec(minus, t.shape()).unwrap();
            let lm = eval(&xs);
            numeric.push((lp - lm) / (2.0 * eps as f64));
        }
        let scale = numeric.iter().fold(0.0f64, |a, b| a.max(b.abs())).max(1e-3);
        for (&j, &num) in picks.iter().zip(&numeric) {
            let a = analytic[j] as f64;
            assert!(
                (a - num).abs() <= tol * scale,
                "input {i} (shape {:?}) entry {j}: analytic {a} vs numeric {num} (scale {scale})",
                t.shape()
            );
        }
    }
}

fn rnd(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, -1.0, 1.0, seed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn grad_matmul_batched_broadcast_and_transposed(b in 1usize..4, m in 1usize..9, k in 1usize..9, n in 1usize..9) {
        // (b, m, k) @ (k, n): the weight broadcast over the batch.
        check_grads(&[rnd(&[b, m, k], 1), rnd(&[k, n], 2)], 1e-2, 2e-2, |v| v[0].matmul(&v[1]));
        // (b, m, k) @ (b, n, k)^T: a transposed view as the right operand.
        check_grads(&[rnd(&[b, m, k], 3), rnd(&[b, n, k], 4)], 1e-2, 2e-2, |v| v[0].matmul(&v[1].transpose(-2, -1)?));
    }

    #[test]
    fn grad_elementwise_with_broadcasting(r in 1usize..6, c in 1usize..9) {
        let (a, b) = (rnd(&[r, c], 5), rnd(&[c], 6));
        check_grads(&[a.clone(), b.clone()], 1e-2, 2e-2, |v| v[0].add(&v[1]));
        check_grads(&[a.clone(), b.clone()], 1e-2, 2e-2, |v| v[0].sub(&v[1]));
        check_grads(&[a.clone(), b.clone()], 1e-2, 2e-2, |v| v[0].mul(&v[1]));
        // Denominators kept away from 0.
        let bpos = b.affine(0.4, 1.5).unwrap();
        check_grads(&[a.clone(), bpos], 1e-2, 2e-2, |v| v[0].div(&v[1]));
        // max/min: operands well separated so the finite difference never crosses a tie.
        let sep = a.affine(1.0, 0.0).unwrap().add(&Tensor::from_vec((0..r * c).map(|i| if i % 2 == 0 { 0.5 } else { -0.5 }).collect(), &[r, c]).unwrap()).unwrap();
        check_grads(&[sep.clone(), a.clone()], 1e-3, 2e-2, |v| v[0].maximum(&v[1]));
        check_grads(&[sep.clone(), a.clone()], 1e-3, 2e-2, |v| v[0].minimum(&v[1]));
        check_grads(std::slice::from_ref(&a), 1e-2, 2e-2, |v| v[0].affine(-2.5, 1.0));
    }

    #[test]
    fn grad_reductions_and_views(a in 1usize..5, b in 1usize..5, c in 1usize..6) {
        let x = rnd(&[a, b, c], 7);
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].sum(1, false));
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].mean(-1, true));
        // max: distinct values spaced far wider than eps, so no perturbation changes the argmax.
        let spaced = Tensor::from_vec((0..a * b * c).map(|i| ((i * 37) % 101) as f32 * 0.05).collect(), &[a, b, c]).unwrap();
        check_grads(std::slice::from_ref(&spaced), 1e-3, 2e-2, |v| v[0].max(1, false));
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].permute(&[2, 0, 1])?.reshape(&[c, a * b]));
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].narrow(2, c / 2, c - c / 2));
        check_grads(&[rnd(&[1, b, 1], 8)], 1e-2, 2e-2, |v| v[0].broadcast_to(&[a, b, c]));
    }

    #[test]
    fn grad_layernorm_gelu_softmax(rows in 1usize..6, cols in 2usize..20) {
        let x = rnd(&[rows, cols], 9).affine(2.0, 0.3).unwrap();
        let (g, b) = (rnd(&[cols], 10).affine(0.5, 1.0).unwrap(), rnd(&[cols], 11));
        check_grads(&[x.clone(), g, b], 1e-2, 3e-2, |v| v[0].layernorm(&v[1], &v[2], 1e-5));
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].gelu(Gelu::Erf));
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].gelu(Gelu::Tanh));
        let mask = Tensor::from_vec((0..cols).map(|j| if j % 4 == 3 { -10000.0 } else { 0.0 }).collect(), &[cols]).unwrap();
        check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, move |v| v[0].softmax(Some(&mask)));
    }

    #[test]
    fn grad_cross_entropy_with_ignore(rows in 1usize..8, classes in 2usize..12) {
        let x = rnd(&[rows, classes], 12).affine(3.0, 0.0).unwrap();
        let targets: Vec<i64> = (0..rows).map(|i| if i % 3 == 2 { -100 } else { ((i * 5) % classes) as i64 }).collect();
        check_grads(&[x], 1e-2, 2e-2, move |v| v[0].cross_entropy(&targets, -100));
    }
}

#[test]
fn linear_matches_matmul_plus_bias_and_its_gradients() {
    let x = rnd(&[2, 3, 5], 31);
    let w = rnd(&[4, 5], 32);
    let b = rnd(&[4], 33);
    let fused = x.linear(&w, Some(&b)).unwrap();
    let plain = x.matmul(&w.t().unwrap()).unwrap().add(&b).unwrap();
    assert_eq!(fused.shape(), &[2, 3, 4]);
    for (f, p) in fused.to_vec().iter().zip(plain.to_vec()) {
        assert!((f - p).abs() < 1e-5, "{f} vs {p}");
    }
    let nobias = x.linear(&w, None).unwrap().to_vec();
    let plain = x.matmul(&w.t().unwrap()).unwrap().to_vec();
    assert_eq!(nobias, plain);
    check_grads(&[x.clone(), w.clone(), b], 1e-2, 2e-2, |v| {
        v[0].linear(&v[1], Some(&v[2]))
    });
    check_grads(&[x, w], 1e-2, 2e-2, |v| v[0].linear(&v[1], None));
    let e = rnd(&[2, 6], 1)
        .linear(&rnd(&[4, 5], 2), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear") && e.contains("[2, 6]") && e.contains("[4, 5]"),
        "{e}"
    );
}

#[test]
fn packed_linear_stacks_layers_and_fuses_residual_and_gelu() {
    let x = rnd(&[2, 7, 20], 34);
    let (w1, w2) = (rnd(&[5, 20], 35), rnd(&[11, 20], 36));
    let (b1, b2) = (rnd(&[5], 37), rnd(&[11], 38));
    let p = Tensor::packed_linear(&[&w1, &w2], &[&b1, &b2]).unwrap();
    assert_eq!(p.out_features(), 16);
    let res = rnd(&[2, 7, 16], 39);
    let got = p.forward(&x, Some(&res), Some(Gelu::Erf)).unwrap();
    let y1 = x.linear(&w1, Some(&b1)).unwrap().to_vec();
    let y2 = x.linear(&w2, Some(&b2)).unwrap().to_vec();
    let want: Vec<f32> = (0..14)
        .flat_map(|r| {
            let mut row = y1[r * 5..(r + 1) * 5].to_vec();
            row.extend_from_slice(&y2[r * 11..(r + 1) * 11]);
            row
        })
        .collect();
    let want = Tensor::from_vec(want, &[2, 7, 16])
        .unwrap()
        .add(&res)
        .unwrap()
        .gelu(Gelu::Erf)
        .unwrap()
        .to_vec();
    for (g, w) in got.to_vec().iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    let e = p
        .forward(&rnd(&[3, 19], 1), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("20 features"), "{e}");
    assert!(Tensor::packed_linear(&[&w1, &rnd(&[3, 4], 1)], &[]).is_err());
}

#[test]
fn grad_tanh_relu_and_binary_cross_entropy() {
    let x = rnd(&[3, 7], 21).affine(2.0, 0.0).unwrap();
    check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| v[0].tanh());
    // Entries well away from 0, so the finite difference never straddles the kink.
    let xr = Tensor::from_vec(
        x.to_vec()
            .iter()
            .map(|&v| if v.abs() < 0.1 { v + 0.3 } else { v })
            .collect(),
        &[3, 7],
    )
    .unwrap();
    check_grads(&[xr], 1e-2, 2e-2, |v| v[0].relu());
    let t = Tensor::rand_uniform(&[3, 7], 0.0, 1.0, 22);
    check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, move |v| {
        v[0].bce_with_logits(&t)
    });
    // The value against the f64 definition, including a large logit where a naive
    // log(sigmoid) overflows.
    let x = Tensor::from_vec(vec![-40.0, 0.0, 3.0, 60.0], &[4]).unwrap();
    let t = Tensor::from_vec(vec![1.0, 0.5, 0.0, 1.0], &[4]).unwrap();
    let got = Var::constant(x).bce_with_logits(&t).unwrap().item() as f64;
    let want = (40.0 + -(0.5f64.ln()) + (3.0 + (-3.0f64).exp().ln_1p()) + 0.0) / 4.0;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn grad_embedding_with_repeated_ids() {
    let ids = [2i64, 0, 2, 4, 2, 1];
    check_grads(&[rnd(&[5, 3], 13)], 1e-2, 2e-2, |v| {
        v[0].embedding(&ids, &[2, 3])
    });
    // Large enough for the threaded scatter-add path.
    let ids: Vec<i64> = (0..400).map(|i| (i * 7 % 50) as i64).collect();
    let table = Var::param(rnd(&[50, 300], 14));
    table
        .embedding(&ids, &[400])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = table.grad().unwrap().to_vec();
    // Row r was gathered (number of ids equal to r) times; the gradient of a sum is that count.
    for r in 0..50 {
        let count = ids.iter().filter(|&&i| i == r as i64).count() as f32;
        assert!(
            g[r * 300..(r + 1) * 300].iter().all(|&x| x == count),
            "row {r}"
        );
    }
}

#[test]
fn grad_dropout_uses_the_same_mask() {
    let x = rnd(&[7, 33], 15);
    check_grads(std::slice::from_ref(&x), 1e-2, 2e-2, |v| {
        v[0].dropout(0.3, 42)
    });
    let y = Var::constant(x).dropout(0.3, 42).unwrap().value().to_vec();
    let kept = y.iter().filter(|v| **v != 0.0).count() as f32 / y.len() as f32;
    assert!((kept - 0.7).abs() < 0.08, "kept fraction {kept}");
}

#[test]
fn grad_attention_with_mask_and_dropout() {
    let (b, h, s, d) = (2, 2, 5, 4);
    let mask = Tensor::from_vec(
        vec![0., 0., 0., 0., 0., 0., 0., 0., -10000., -10000.],
        &[b, 1, 1, s],
    )
    .unwrap();
    let qkv = [
        rnd(&[b, h, s, d], 16),
        rnd(&[b, h, s, d], 17),
        rnd(&[b, h, s, d], 18),
    ];
    let m2 = mask.clone();
    check_grads(&qkv, 1e-2, 3e-2, move |v| {
        Var::attention(&v[0], &v[1], &v[2], Some(&m2), 0.5, 0.0, 0)
    });
    check_grads(&qkv, 1e-2, 3e-2, move |v| {
        Var::attention(&v[0], &v[1], &v[2], Some(&mask), 0.5, 0.2, 7)
    });
    // q, k, v as head views of one (B, S, H*D) projection, the way a BERT layer makes them.
    let x = rnd(&[b, s, h * d], 19);
    check_grads(&[x], 1e-2, 3e-2, |v| {
        let heads = v[0].reshape(&[b, s, h, d])?.permute(&[0, 2, 1, 3])?;
        Var::attention(&heads, &heads, &heads, None, 0.5, 0.0, 0)
    });
}

#[test]
fn fused_inference_attention_matches_the_recorded_op() {
    // Heads as strided views of one (B, S, 3*H*D) projection, a per-batch padding mask and a
    // full (B, H, Sq, Sk) mask; Sq != Sk; more heads than lanes.
    let (b, h, s, d) = (3, 5, 19, 24);
    let x = rnd(&[b, s, 3 * h * d], 40);
    let heads = |i: usize| {
        x.narrow(2, i * h * d, h * d)
            .unwrap()
            .reshape(&[b, s, h, d])
            .unwrap()
            .permute(&[0, 2, 1, 3])
            .unwrap()
    };
    let (q, k, v) = (heads(0), heads(1), heads(2));
    let q = q.narrow(2, 0, 11).unwrap();
    let pad: Vec<f32> = (0..b * s)
        .map(|i| {
            if i % s >= s - 3 * (i / s) {
                f32::MIN
            } else {
                0.0
            }
        })
        .collect();
    let pad = Tensor::from_vec(pad, &[b, 1, 1, s]).unwrap();
    let full = Tensor::rand_uniform(&[b, h, 11, s], -2.0, 2.0, 41);
    for mask in [None, Some(&pad), Some(&full)] {
        let want = Var::attention(
            &Var::constant(q.clone()),
            &Var::constant(k.clone()),
            &Var::constant(v.clone()),
            mask,
            0.3,
            0.0,
            0,
        )
        .unwrap()
        .value()
        .permute(&[0, 2, 1, 3])
        .unwrap()
        .contiguous()
        .to_vec();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool
                .install(|| engine::attention::attention_inference(&q, &k, &v, mask, 0.3).unwrap());
            assert_eq!(got.shape(), &[b, 11, h * d]);
            for (g, w) in got.to_vec().iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            // bf16 products: within bf16's rounding of the f32 result, and not equal to it.
            let bf = pool
                .install(|| {
                    engine::attention::attention_inference_with(
                        &q,
                        &k,
                        &v,
                        mask,
                        0.3,
                        engine::Precision::Bf16,
                    )
                })
                .unwrap()
                .to_vec();
            let (num, den) = bf
                .iter()
                .zip(&want)
                .fold((0.0f64, 0.0f64), |(n, d), (g, w)| {
                    (n + ((g - w) as f64).powi(2), d + (*w as f64).powi(2))
                });
            let rel = (num / den).sqrt();
            assert!(
                rel < 1e-2 && rel > 1e-6,
                "bf16 attention relative error {rel}"
            );
        }
    }
    let e = engine::attention::attention_inference(
        &q,
        &k,
        &v,
        Some(&Tensor::zeros(&[2, 1, 1, s])),
        0.3,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mask"), "{e}");
}

#[test]
fn gradients_accumulate_over_uses_and_calls() {
    let x = Var::param(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
    // y = sum(x * x + x): dy/dx = 2x + 1, x used three times.
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 5.0, 7.0]);
    // A second graph's gradient adds to the first (micro-batch accumulation).
    x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec(), vec![5.0, 9.0, 13.0]);
    // The consumed graph refuses a second backward.
    assert!(matches!(y.backward(), Err(Error::GraphConsumed)));
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn two_half_batches_accumulate_to_one_full_batch() {
    // A sum-reduced loss over a batch: accumulating the gradients of its two halves equals the
    // gradient of the whole (what gradient accumulation over micro-batches relies on).
    let w = Var::param(rnd(&[4, 3], 21));
    let x = rnd(&[6, 4], 22);
    let loss = |rows: Tensor| {
        Var::constant(rows)
            .matmul(&w)
            .unwrap()
            .gelu(Gelu::Tanh)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    loss(x.clone()).backward().unwrap();
    let full = w.grad().unwrap().to_vec();
    w.zero_grad();
    loss(x.narrow(0, 0, 3).unwrap()).backward().unwrap();
    loss(x.narrow(0, 3, 3).unwrap()).backward().unwrap();
    for (a, b) in w.grad().unwrap().to_vec().iter().zip(&full) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn no_grad_records_nothing() {
    let w = Var::param(rnd(&[3, 3], 20));
    let y = {
        let _g = no_grad();
        w.matmul(&w).unwrap().sum_all().unwrap()
    };
    assert!(!y.requires_grad());
    y.backward().unwrap();
    assert!(w.grad().is_none());
    // Recording resumes after the scope.
    assert!(w.matmul(&w).unwrap().requires_grad());
    assert!(y.backward_with(Tensor::scalar(1.0)).is_ok());
    let e = w.matmul(&w).unwrap().backward().unwrap_err();
    assert!(e.to_string().contains("scalar"), "{e}");
}

#[test]
fn adamw_matches_hand_computed_steps() {
    // Two parameters: a weight (decays) and a bias (does not). Gradient fixed at 0.5.
    let mut ps = ParamStore::new();
    let w = ps
        .insert(
            "layer.weight",
            Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap(),
        )
        .unwrap();
    let b = ps
        .insert("layer.bias", Tensor::from_vec(vec![0.5], &[1]).unwrap())
        .unwrap();
    for correct in [true, false] {
        let mut opt = AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            bias_correction: correct,
        });
        let (mut pw, mut pb) = (vec![1.0f64, -2.0], 0.5f64);
        w.set_value(Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap())
            .unwrap();
        b.set_value(Tensor::from_vec(vec![0.5], &[1]).unwrap())
            .unwrap();
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for t in 1..=3 {
            w.set_grad(Some(Tensor::full(&[2], 0.5)));
            b.set_grad(Some(Tensor::full(&[1], 0.5)));
            opt.step(&ps, 0.01).unwrap();
            m = 0.9 * m + 0.1 * 0.5;
            v = 0.99 * v + 0.01 * 0.25;
            let (mh, vh) = if correct {
                (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.99f64.powi(t)))
            } else {
                (m, v)
            };
            let upd = 0.01 * mh / (vh.sqrt() + 1e-8);
            for p in pw.iter_mut() {
                *p -= 0.01 * 0.1 * *p;
                *p -= upd;
            }
            pb -= upd;
        }
        let got = w.value().to_vec();
        assert!(
            (got[0] as f64 - pw[0]).abs() < 1e-6 && (got[1] as f64 - pw[1]).abs() < 1e-6,
            "bias_correction={correct}: {got:?} vs {pw:?}"
        );
        assert!(
            (b.value().to_vec()[0] as f64 - pb).abs() < 1e-6,
            "bias must not decay"
        );
    }
}

#[test]
fn nonfinite_gradients_are_refused_with_the_parameter_name() {
    let mut ps = ParamStore::new();
    let a = ps
        .insert("encoder.layer.0.attention.query.weight", Tensor::ones(&[2]))
        .unwrap();
    a.set_grad(Some(Tensor::from_vec(vec![1.0, f32::NAN], &[2]).unwrap()));
    let mut opt = AdamW::new(AdamWConfig::default());
    let e = opt.step(&ps, 1e-3).unwrap_err().to_string();
    assert!(
        e.contains("step 1") && e.contains("encoder.layer.0.attention.query.weight"),
        "{e}"
    );
    assert_eq!(
        a.value().to_vec(),
        vec![1.0, 1.0],
        "nothing may change on a refused step"
    );
    assert!(engine::optim::check_finite_loss(f32::INFINITY, 7)
        .unwrap_err()
        .to_string()
        .contains("step 7"));
}

#[test]
fn clipping_and_schedules() {
    let mut ps = ParamStore::new();
    let a = ps.insert("a", Tensor::zeros(&[2])).unwrap();
    let b = ps.insert("b", Tensor::zeros(&[1])).unwrap();
    a.set_grad(Some(Tensor::from_vec(vec![3.0, 0.0], &[2]).unwrap()));
    b.set_grad(Some(Tensor::from_vec(vec![4.0], &[1]).unwrap()));
    let norm = clip_grad_norm(&ps, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-6);
    let (ga, gb) = (a.grad().unwrap().to_vec(), b.grad().unwrap().to_vec());
    assert!((ga[0] - 0.6).abs() < 1e-5 && (gb[0] - 0.8).abs() < 1e-5);
    let s = LrSchedule::linear(1e-3, 10, 110);
    assert_eq!(s.lr(0), 0.0);
    assert!((s.lr(5) - 5e-4).abs() < 1e-9);
    assert!((s.lr(10) - 1e-3).abs() < 1e-9);
    assert!((s.lr(60) - 5e-4).abs() < 1e-9);
    assert_eq!(s.lr(110), 0.0);
    assert_eq!(s.lr(500), 0.0);
    let p = LrSchedule { power: 2.0, ..s };
    assert!((p.lr(60) - 2.5e-4).abs() < 1e-9);
    // Warmup-stable-decay: 10 warmup steps, the peak held to step 90, then linear to 0 at 110.
    let w = LrSchedule::warmup_stable_decay(1e-3, 10, 110, 0.2);
    assert_eq!(w.decay_from, 90);
    assert!((w.lr(5) - 5e-4).abs() < 1e-9);
    assert_eq!(w.lr(60), 1e-3);
    assert_eq!(w.lr(90), 1e-3);
    assert!((w.lr(100) - 5e-4).abs() < 1e-9);
    assert_eq!(w.lr(110), 0.0);
    // A decay share of 1 is BERT's linear schedule.
    let l = LrSchedule::warmup_stable_decay(1e-3, 10, 110, 1.0);
    assert!((1..=120).all(|t| l.lr(t) == s.lr(t)));
}

/// A 2-layer MLP learns a nonlinear 3-class task (which third of the circle a point's angle
/// falls in, in the plane) to a low loss, and two runs with the same seed agree bit for bit.
fn train_mlp(seed: u64) -> Vec<f32> {
    let n = 192;
    let pts = Tensor::rand_uniform(&[n, 2], -1.0, 1.0, seed);
    let pv = pts.to_vec();
    let labels: Vec<i64> = (0..n)
        .map(|i| {
            (((pv[2 * i + 1].atan2(pv[2 * i]) + std::f32::consts::PI)
                / (2.0 * std::f32::consts::PI / 3.0)) as i64)
                .min(2)
        })
        .collect();
    let mut ps = ParamStore::new();
    let w1 = ps
        .insert("l1.weight", Tensor::randn(&[2, 32], 0.0, 0.7, seed + 1))
        .unwrap();
    let b1 = ps.insert("l1.bias", Tensor::zeros(&[32])).unwrap();
    let w2 = ps
        .insert("l2.weight", Tensor::randn(&[32, 3], 0.0, 0.3, seed + 2))
        .unwrap();
    let b2 = ps.insert("l2.bias", Tensor::zeros(&[3])).unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let sched = LrSchedule::linear(3e-2, 10, 300);
    let x = Var::constant(pts);
    let mut losses = Vec::new();
    for step in 1..=300 {
        ps.zero_grad();
        let h = x
            .matmul(&w1)
            .unwrap()
            .add(&b1)
            .unwrap()
            .gelu(Gelu::Erf)
            .unwrap();
        let logits = h.matmul(&w2).unwrap().add(&b2).unwrap();
        let loss = logits.cross_entropy(&labels, -100).unwrap();
        losses.push(loss.item());
        loss.backward().unwrap();
        clip_grad_norm(&ps, 5.0).unwrap();
        opt.step(&ps, sched.lr(step)).unwrap();
    }
    losses
}

#[test]
fn mlp_trains_deterministically() {
    let a = train_mlp(5);
    let b = train_mlp(5);
    assert_eq!(a, b, "same seed, same losses, bit for bit");
    let (first, last) = (a[0], *a.last().unwrap());
    assert!(first > 0.9, "starts near ln 3: {first}");
    assert!(last < 0.25, "loss after 300 steps: {last} (from {first})");
}
