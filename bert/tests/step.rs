//! The hand-written pretraining step (`bert::step`, the one the GPU runs) against the tape: on a
//! small random BERT and a padded batch with masked positions, both give the same MLM and NSP
//! losses and the same gradient for every parameter, with dropout on and off.

use bert::step::{
    forward_backward, from_named, layout, read_scalar, to_named, StepBatch, StepTrainer,
};
use bert::{Bert, Forward, Task};
use engine::device::{Cpu, Device};
use engine::optim::{clip_grad_norm, AdamW, AdamWConfig};

mod step_fixture;
use step_fixture::{batch, config, grads_on};

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
    let prefs: Vec<&Vec<f32>> = params.iter().collect();
    let mut grefs: Vec<&mut Vec<f32>> = grads.iter_mut().collect();
    let losses = forward_backward(&Cpu, &c, &prefs, &mut grefs, &sb, seed, 1.0).unwrap();
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

#[test]
fn trainer_steps_match_the_tape_with_adamw_and_clipping() {
    // Three optimizer steps, dropout on, clipping active (max norm 0.5), two micro-batches in
    // the last step: losses and every parameter after each step equal the tape's.
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 11).unwrap();
    let get = |n: &str| model.params.get(n).map(|v| v.value().to_vec());
    let adam = AdamWConfig::default();
    let mut tr =
        StepTrainer::new(&Cpu, &c, &from_named(&c, get).unwrap(), adam.clone(), 0).unwrap();
    let mut opt = AdamW::new(adam);
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    for step in 1..=3u64 {
        let micro = if step == 3 { 2 } else { 1 };
        let seeds: Vec<u64> = (0..micro).map(|m| step * 10 + m).collect();
        // The tape.
        model.params.zero_grad();
        let mut tape_loss = 0.0;
        for &sd in &seeds {
            let o = model
                .pretraining(
                    &x,
                    &labels,
                    Some(&nsp),
                    Forward {
                        dropout_seed: Some(sd),
                        ..Default::default()
                    },
                )
                .unwrap();
            let l = o.loss.affine(1.0 / micro as f32, 0.0).unwrap();
            tape_loss += l.item();
            l.backward().unwrap();
        }
        let tape_norm = clip_grad_norm(&model.params, 0.5).unwrap();
        opt.step(&model.params, 1e-3).unwrap();
        // The step.
        let mb: Vec<_> = seeds.iter().map(|&sd| (sb.clone(), Some(sd))).collect();
        let st = tr.step(&mb, 1e-3, 0.5).unwrap();
        let loss: f32 = st
            .losses
            .iter()
            .map(|l| {
                read_scalar(&Cpu, l.mlm.as_ref().unwrap()).unwrap()
                    + read_scalar(&Cpu, &l.nsp).unwrap()
            })
            .sum::<f32>()
            / micro as f32;
        let norm = read_scalar(&Cpu, &st.grad_norm).unwrap();
        assert!(
            (loss - tape_loss).abs() < 1e-5 * tape_loss.abs(),
            "step {step}: loss {loss} vs {tape_loss}"
        );
        assert!(
            tape_norm > 0.5,
            "clipping must be active (norm {tape_norm})"
        );
        assert!(
            (norm - tape_norm).abs() < 1e-4 * tape_norm,
            "step {step}: norm {norm} vs {tape_norm}"
        );
        let (params, m, _) = tr.state_named().unwrap();
        for (name, _, p) in params {
            let want = model.params.get(&name).unwrap().value().to_vec();
            let worst = p
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 2e-6, "step {step}: {name} differs by {worst:e}");
        }
        let (name, _, mm) = &m[7];
        let (want, _) = opt.moments(name).unwrap();
        let worst = mm
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-6,
            "step {step}: first moment of {name} differs by {worst:e}"
        );
    }
}

#[test]
fn encode_matches_the_model_forward_and_checks_ids() {
    use bert::step::{encode, encoder_from_named, EncoderInput};
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 5).unwrap();
    let (x, _, _) = batch();
    let out = model
        .forward(
            &x,
            Forward {
                hidden_states: true,
                ..Default::default()
            },
        )
        .unwrap();
    let vals = encoder_from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let refs: Vec<&Vec<f32>> = vals.iter().collect();
    let lens: Vec<usize> = (0..x.batch)
        .map(|b| {
            x.attention_mask[b * x.seq..(b + 1) * x.seq]
                .iter()
                .filter(|&&m| m == 1.0)
                .count()
        })
        .collect();
    let input = EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &x.input_ids,
        token_type_ids: &x.token_type_ids,
        lens: &lens,
        packed: false,
    };
    for layers in [c.num_hidden_layers, c.num_hidden_layers - 1] {
        let got = encode(&Cpu, &c, &refs, &input, layers).unwrap();
        let want = out.hidden_states[layers].value().to_vec();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "after {layers} layers: {worst:e}");
    }
    let mut bad = x.input_ids.clone();
    bad[20] = c.vocab_size as i64;
    let err = encode(
        &Cpu,
        &c,
        &refs,
        &EncoderInput {
            input_ids: &bad,
            ..input
        },
        2,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("token id 97 at batch 1 position 4"), "{err}");
}

#[test]
fn packed_batches_give_the_padded_losses_and_gradients() {
    // Without padding tokens (packed) the step computes the same losses and the same gradient
    // for every parameter as on the padded batch (no dropout: its hidden-state masks follow
    // the token index, which packing changes).
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 13).unwrap();
    let params = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let (x, labels, nsp) = batch();
    let padded = StepBatch::new(&x, &labels, &nsp).unwrap();
    let packed = padded.to_packed();
    assert_eq!(packed.input_ids.len(), 16 + 11 + 6);
    assert_eq!(packed.seq, 16);
    let (m1, n1, g1) = grads_on(&Cpu, &c, &params, &padded, None);
    let (m2, n2, g2) = grads_on(&Cpu, &c, &params, &packed, None);
    assert!((m1 - m2).abs() < 1e-5 * m1.abs(), "MLM {m1} vs {m2}");
    assert!((n1 - n2).abs() < 1e-5 * n1.abs(), "NSP {n1} vs {n2}");
    for ((name, _, a), (_, _, b)) in to_named(&c, &g1).into_iter().zip(to_named(&c, &g2)) {
        let scale = a.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5 * scale,
            "{name}: padded and packed differ by {worst:e}"
        );
    }
    // With dropout it trains too (finite losses), and a packed batch with the wrong number of
    // labels is an error, not a panic.
    let prefs: Vec<&Vec<f32>> = params.iter().collect();
    let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut grefs: Vec<&mut Vec<f32>> = grads.iter_mut().collect();
    let l = forward_backward(&Cpu, &c, &prefs, &mut grefs, &packed, Some(3), 1.0).unwrap();
    assert!(l.mlm.unwrap()[0].is_finite() && l.nsp[0].is_finite());
    let mut bad = packed.clone();
    bad.mlm_labels.pop();
    let e = forward_backward(&Cpu, &c, &prefs, &mut grefs, &bad, None, 1.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("32 MLM labels for a batch of 33 tokens"), "{e}");
}

#[test]
fn a_profiled_device_gives_the_same_step_and_counts_every_op() {
    // engine::device::profile::Profiled only adds a stopwatch: the same losses and gradients as
    // the device it wraps, and a table with each op's call count.
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 17).unwrap();
    let params = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap().to_packed();
    let p = engine::device::profile::Profiled::new(&Cpu, || {});
    let (m1, n1, g1) = grads_on(&Cpu, &c, &params, &sb, Some(4));
    let (m2, n2, g2) = grads_on(&p, &c, &params, &sb, Some(4));
    assert_eq!((m1, n1), (m2, n2));
    assert_eq!(g1, g2);
    let table = p.table();
    // Two layers: 4 Linear layers each, plus the MLM transform, decoder, pooler and NSP.
    let calls = |op: &str| -> u64 {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(op))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(calls("linear"), 2 * 4 + 4, "{table}");
    assert_eq!(calls("attention"), 2, "{table}");
    assert_eq!(calls("cross_entropy"), 2, "{table}");
    assert!(
        table.lines().last().unwrap().starts_with("total"),
        "{table}"
    );
}
