//! The hand-written pretraining step (`bert::step`, the one the GPU runs) against the tape: on a
//! small random BERT and a padded batch with masked positions, both give the same MLM and NSP
//! losses and the same gradient for every parameter, with dropout on and off.

use bert::step::{forward_backward, from_named, layout, to_named, StepBatch};
use bert::{Bert, BertConfig, BertInput, Forward, Task};
use engine::device::{Cpu, Device};

fn config(act: &str) -> BertConfig {
    let mut c = BertConfig::preset("bert-tiny", 97).unwrap();
    c.hidden_size = 64;
    c.num_attention_heads = 2;
    c.intermediate_size = 96;
    c.num_hidden_layers = 2;
    c.max_position_embeddings = 24;
    c.hidden_act = bert::Activation::parse(act).unwrap();
    c
}

/// A padded batch of three sequences (lengths 16, 11, 6 of 16), types 0 then 1, about 20% of
/// the valid positions masked, NSP labels 0/1.
fn batch() -> (BertInput, Vec<i64>, Vec<i64>) {
    let (b, s) = (3, 16);
    let lens = [16, 11, 6];
    let mut x = BertInput::new(vec![0; b * s], b, s).unwrap();
    let mut labels = vec![-100i64; b * s];
    let mut r = 12345u64;
    let mut next = |m: u64| {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (r >> 33) % m
    };
    for (bi, &len) in lens.iter().enumerate() {
        for j in 0..s {
            let i = bi * s + j;
            if j < len {
                x.input_ids[i] = 1 + next(96) as i64;
                x.token_type_ids[i] = (j >= len / 2) as i64;
                if j > 0 && next(5) == 0 {
                    labels[i] = 1 + next(96) as i64;
                }
            } else {
                x.input_ids[i] = 0;
                x.attention_mask[i] = 0.0;
            }
        }
    }
    (x, labels, vec![0, 1, 1])
}

fn check(act: &str, seed: Option<u64>) {
    let c = config(act);
    let model = Bert::init(&c, Task::PreTraining, 7).unwrap();
    let (x, labels, nsp) = batch();
    // The tape.
    model.params.zero_grad();
    let o = model
        .pretraining(
            &x,
            &labels,
            Some(&nsp),
            Forward {
                dropout_seed: seed,
                ..Default::default()
            },
        )
        .unwrap();
    o.loss.backward().unwrap();
    let tape_mlm = o.mlm_loss.item();
    let tape_nsp = o.nsp_loss.as_ref().unwrap().item();
    // The step, on the CPU device.
    let get = |n: &str| model.params.get(n).map(|v| v.value().to_vec());
    let params = from_named(&c, get).unwrap();
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    let losses = forward_backward(&Cpu, &c, &params, &mut grads, &sb, seed, 1.0).unwrap();
    let mlm = Cpu.download(losses.mlm.as_ref().unwrap()).unwrap()[0];
    let nspl = Cpu.download(&losses.nsp).unwrap()[0];
    assert!(
        (mlm - tape_mlm).abs() < 1e-5 * tape_mlm.abs().max(1.0),
        "MLM loss {mlm} vs tape {tape_mlm}"
    );
    assert!(
        (nspl - tape_nsp).abs() < 1e-5 * tape_nsp.abs().max(1.0),
        "NSP loss {nspl} vs tape {tape_nsp}"
    );
    let named = to_named(&c, &grads);
    assert_eq!(named.len(), model.params.iter().count(), "every parameter");
    for (name, shape, g) in named {
        let v = model
            .params
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(v.shape(), shape, "{name}");
        let want = v.grad().map(|t| t.to_vec()).unwrap_or(vec![0.0; g.len()]);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
        let worst = g
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: max |step - tape| = {worst:e} (largest gradient {scale:e})"
        );
    }
}

#[test]
fn step_matches_the_tape_without_dropout() {
    check("gelu", None);
}

#[test]
fn step_matches_the_tape_with_dropout() {
    check("gelu", Some(99));
}

#[test]
fn step_matches_the_tape_with_gelu_tanh() {
    check("gelu_new", Some(5));
}

#[test]
fn layout_round_trips_and_rejects_missing_tensors() {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 3).unwrap();
    let get = |n: &str| model.params.get(n).map(|v| v.value().to_vec());
    let vals = from_named(&c, get).unwrap();
    assert_eq!(vals.len(), layout(&c).len());
    for (name, _, v) in to_named(&c, &vals) {
        assert_eq!(
            v,
            model.params.get(&name).unwrap().value().to_vec(),
            "{name}"
        );
    }
    let err = from_named(&c, |n: &str| {
        (!n.ends_with("layer.1.attention.self.key.bias"))
            .then(|| model.params.get(n).unwrap().value().to_vec())
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("layer.1.attention.self.key.bias"), "{err}");
}
