//! The hand-written pretraining step (`bert::step`, what `bert pretrain` runs) against the tape,
//! one body per check run on every device: [`Cpu`] and `CpuBf16` (bf16 GEMM operands) always,
//! and with feature `cuda` also
//! `Cuda` (f32) and `CudaBf16` (bf16 mixed precision) on GPU 0 (`scripts/gpu-check` builds them,
//! `scripts/device/gpu-check.sh` runs them). Each device has its tolerance against the tape's
//! f32 result ([`Tol`]); the checks that are not about a device (layout, error messages, the
//! profiler) run on the CPU only.

use bert::step::{
    encode, encoder_from_named, forward_backward, from_named, ft_forward_backward, ft_logits,
    layout, named_in, read_scalar, to_named, values_for, EncoderInput, FtBatch, FtHead, FtTargets,
    StepBatch, StepTrainer,
};
use bert::{Bert, BertConfig, BertInput, Forward, SeqLabels, Task};
use bert_tests::step_fixture::{batch, config, grads_on};
use bert_tests::{max_abs_err, rel_l2};
use engine::device::{Cpu, Device};
use engine::optim::{clip_grad_norm, AdamW, AdamWConfig};

/// How close a device's values must be to the reference's.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// max |got - want| <= tol * max(|want|_max, 1e-3), per tensor.
    MaxRel(f32),
    /// |got - want|_2 <= tol * max(|want|_2, 1% of the whole gradient's norm), per tensor:
    /// for bf16, whose 8-bit mantissa makes the largest error meaningless, and where
    /// gradients that are zero in exact arithmetic (the key bias) are rounding noise.
    RelL2(f64),
}

/// A device's tolerances against the tape.
#[derive(Clone, Copy, Debug)]
struct Tol {
    /// Losses, relative.
    loss: f32,
    /// Every gradient of one step.
    grad: Close,
    /// The encoder's hidden states.
    hidden: Close,
    /// After the trainer's optimizer steps: parameters and first moments (`abs + rel * scale`
    /// per tensor), None where not checked (bf16 drifts by design); the gradient norm, relative.
    params: Option<(f32, f32)>,
    moments: Option<(f32, f32)>,
    norm: f32,
    /// The share of masked-LM predictions that must equal the tape's arg-max (1: all, near-ties
    /// of 1e-4 excepted).
    predictions: f64,
}

const CPU: Tol = Tol {
    loss: 1e-5,
    grad: Close::MaxRel(1e-4),
    hidden: Close::MaxRel(1e-5),
    params: Some((2e-6, 0.0)),
    moments: Some((1e-6, 0.0)),
    norm: 1e-4,
    predictions: 1.0,
};

/// The CPU with bf16 GEMM operands (f32 activations, sums, parameters): bf16's bounds, tighter
/// than the GPU's bf16 (whose activations are bf16 too).
const CPU_BF16: Tol = Tol {
    loss: 1e-2,
    grad: Close::RelL2(0.05),
    hidden: Close::RelL2(1e-2),
    params: None,
    moments: None,
    norm: 0.05,
    predictions: 0.9,
};

/// cuBLAS in plain f32: the CPU's bounds against the CPU step, plus the CPU step's own.
#[cfg(feature = "cuda")]
const CUDA: Tol = Tol {
    loss: 2e-5,
    grad: Close::MaxRel(2e-4),
    hidden: Close::MaxRel(2e-4),
    params: Some((1e-6, 2e-4)),
    moments: Some((1e-7, 1e-3)),
    norm: 1e-3,
    predictions: 1.0,
};

/// bf16 activations and GEMM operands, f32 master weights and accumulation.
#[cfg(feature = "cuda")]
const CUDA_BF16: Tol = Tol {
    loss: 1.2e-2,
    grad: Close::RelL2(0.1),
    hidden: Close::RelL2(2e-2),
    params: None,
    moments: None,
    norm: 0.1,
    predictions: 0.9,
};

/// Panics naming the tensor unless `got` is within `close` of `want`; `global` is the whole
/// reference gradient's L2 norm (for [`Close::RelL2`]'s floor; 0 elsewhere).
fn assert_close(what: &str, got: &[f32], want: &[f32], close: Close, global: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    match close {
        Close::MaxRel(t) => {
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3) as f64;
            let worst = max_abs_err(got, want);
            assert!(
                worst <= t as f64 * scale,
                "{what}: max |got - want| {worst:e}, largest {scale:e} (tolerance {t:e} of it)"
            );
        }
        Close::RelL2(t) => {
            let n = want.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt();
            let r = rel_l2(got, want) * n.max(1e-30) / n.max(0.01 * global).max(1e-30);
            assert!(r <= t, "{what}: relative L2 {r:.3e} > {t:e}");
        }
    }
}

fn assert_loss(what: &str, got: f32, want: f32, tol: f32) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: {got} vs the tape's {want} (tolerance {tol:e} relative)"
    );
}

fn step_values(c: &BertConfig, model: &Bert) -> Vec<Vec<f32>> {
    from_named(c, |n: &str| model.params.get(n).map(|v| v.value().to_vec())).unwrap()
}

/// The tape's losses (MLM, NSP) and every gradient, after one forward and backward.
fn tape_step(
    model: &Bert,
    x: &BertInput,
    labels: &[i64],
    nsp: &[i64],
    seed: Option<u64>,
) -> (f32, f32) {
    model.params.zero_grad();
    let o = model
        .pretraining(
            x,
            labels,
            Some(nsp),
            Forward {
                dropout_seed: seed,
                ..Default::default()
            },
        )
        .unwrap();
    o.loss.backward().unwrap();
    (o.mlm_loss.item(), o.nsp_loss.as_ref().unwrap().item())
}

/// The step's gradients `grads` (step order) against the tape's in `model`, per tensor.
fn assert_grads(c: &BertConfig, model: &Bert, grads: &[Vec<f32>], close: Close, what: &str) {
    let named = to_named(c, grads);
    assert_eq!(named.len(), model.params.iter().count(), "every parameter");
    let want_of = |name: &str, n: usize| {
        model
            .params
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .grad()
            .map(|t| t.to_vec())
            .unwrap_or(vec![0.0; n])
    };
    let global = named
        .iter()
        .flat_map(|(name, _, g)| want_of(name, g.len()))
        .map(|x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    for (name, shape, g) in &named {
        assert_eq!(model.params.get(name).unwrap().shape(), *shape, "{name}");
        let want = want_of(name, g.len());
        assert_close(&format!("{what} {name}"), g, &want, close, global);
    }
}

/// One step on `dev` (padded batch, or packed when `packed`) against the tape on the padded
/// batch: both losses and every gradient.
fn step_matches_the_tape<D: Device>(dev: &D, tol: Tol, act: &str, seed: Option<u64>, packed: bool) {
    let c = config(act);
    let model = Bert::init(&c, Task::PreTraining, 7).unwrap();
    let (x, labels, nsp) = batch();
    let (tape_mlm, tape_nsp) = tape_step(&model, &x, &labels, &nsp, seed);
    let mut sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    if packed {
        sb = sb.to_packed();
    }
    let (mlm, nspl, grads) = grads_on(dev, &c, &step_values(&c, &model), &sb, seed);
    println!("{act} seed {seed:?} packed {packed}: MLM {mlm} (tape {tape_mlm}), NSP {nspl} (tape {tape_nsp})");
    assert_loss("MLM loss", mlm, tape_mlm, tol.loss);
    assert_loss("NSP loss", nspl, tape_nsp, tol.loss);
    assert_grads(&c, &model, &grads, tol.grad, "gradient of");
}

/// Three optimizer steps on `dev`, dropout on, clipping active (max norm 0.5), two
/// micro-batches in the last: the losses, gradient norm, parameters and first moments after
/// each step against the tape with the engine's AdamW.
fn trainer_matches_the_tape<D: Device>(dev: &D, tol: Tol) {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 11).unwrap();
    let adam = AdamWConfig::default();
    let mut tr = StepTrainer::new(dev, &c, &step_values(&c, &model), adam.clone(), 0).unwrap();
    let mut opt = AdamW::new(adam);
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    let within = |what: &str, got: &[f32], want: &[f32], (abs, rel): (f32, f32)| {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
        let worst = max_abs_err(got, want);
        assert!(
            worst <= (abs + rel * scale) as f64,
            "{what} differs by {worst:e} (largest {scale:e})"
        );
    };
    for step in 1..=3u64 {
        let micro = if step == 3 { 2 } else { 1 };
        let seeds: Vec<u64> = (0..micro).map(|m| step * 10 + m).collect();
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
        assert!(
            tape_norm > 0.5,
            "clipping must be active (norm {tape_norm})"
        );
        opt.step(&model.params, 1e-3).unwrap();
        let mb: Vec<_> = seeds.iter().map(|&sd| (sb.clone(), Some(sd))).collect();
        let st = tr.step(&mb, 1e-3, 0.5).unwrap();
        let loss: f32 = st
            .losses
            .iter()
            .map(|l| {
                read_scalar(dev, l.mlm.as_ref().unwrap()).unwrap()
                    + read_scalar(dev, &l.nsp).unwrap()
            })
            .sum::<f32>()
            / micro as f32;
        let norm = read_scalar(dev, &st.grad_norm).unwrap();
        println!(
            "step {step}: loss {loss} (tape {tape_loss}); grad norm {norm} (tape {tape_norm})"
        );
        assert_loss(&format!("step {step}: loss"), loss, tape_loss, tol.loss);
        assert!(
            (norm - tape_norm).abs() <= tol.norm * tape_norm,
            "step {step}: norm {norm} vs {tape_norm}"
        );
        let (params, m, _) = tr.state_named().unwrap();
        if let Some(t) = tol.params {
            for (name, _, p) in &params {
                let want = model.params.get(name).unwrap().value().to_vec();
                within(&format!("step {step}: {name}"), p, &want, t);
            }
        }
        if let Some(t) = tol.moments {
            for (name, _, mm) in &m {
                let (want, _) = opt.moments(name).unwrap();
                within(&format!("step {step}: first moment of {name}"), mm, want, t);
            }
        }
    }
}

/// The encoder on `dev` after all layers and after one fewer, against the model's hidden states.
fn encode_matches_the_model_forward<D: Device>(dev: &D, tol: Tol) {
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
    let weights = dev.weights(&vals).unwrap();
    let refs = dev.weight_refs(&weights);
    let lens = [16usize, 11, 6];
    let input = EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &x.input_ids,
        token_type_ids: &x.token_type_ids,
        lens: &lens,
        packed: false,
    };
    for layers in [c.num_hidden_layers, c.num_hidden_layers - 1] {
        let got = dev
            .download(&encode(dev, &c, &refs, &input, layers).unwrap())
            .unwrap();
        let want = out.hidden_states[layers].value().to_vec();
        assert_close(
            &format!("after {layers} layers"),
            &got,
            &want,
            tol.hidden,
            0.0,
        );
    }
}

/// Evaluation on `dev` (the heads' forward, arg-max on the device), padded and packed, against
/// the tape's losses and arg-max predictions.
fn evaluation_matches_the_tape<D: Device>(dev: &D, tol: Tol) {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 11).unwrap();
    let (x, labels, nsp) = batch();
    let _g = engine::no_grad();
    let o = model
        .pretraining(&x, &labels, Some(&nsp), Forward::default())
        .unwrap();
    let (tape_mlm, tape_nsp) = (o.mlm_loss.item(), o.nsp_loss.as_ref().unwrap().item());
    let v = c.vocab_size;
    let logits = o.mlm_logits.value().to_vec();
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
    };
    let want_pred: Vec<i64> = logits.chunks(v).map(|r| argmax(r).0 as i64).collect();
    let nsp_logits = o.nsp_logits.value().to_vec();
    let want_nsp: Vec<i64> = nsp_logits.chunks(2).map(|r| argmax(r).0 as i64).collect();
    let mut tr =
        StepTrainer::new(dev, &c, &step_values(&c, &model), AdamWConfig::default(), 0).unwrap();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    for b in [sb.clone(), sb.to_packed()] {
        let got = tr.evaluate(&b).unwrap();
        println!("eval packed={}: {got:?}", b.packed);
        assert_eq!(got.mlm_targets, o.mlm_targets, "targets");
        assert_loss("MLM loss", got.mlm_loss.unwrap(), tape_mlm, tol.loss);
        assert_loss("NSP loss", got.nsp_loss, tape_nsp, tol.loss);
        // A prediction that differs from the tape's arg-max counts as equal when its logit
        // ties the maximum within 1e-4 (summation order decides such ties).
        let same = got
            .mlm_pred
            .iter()
            .zip(&want_pred)
            .zip(logits.chunks(v))
            .filter(|((&g, &w), row)| g == w || row[g as usize] >= argmax(row).1 - 1e-4)
            .count();
        assert!(
            same as f64 >= tol.predictions * want_pred.len() as f64,
            "{same} of {} predictions equal the tape's",
            want_pred.len()
        );
        if tol.predictions == 1.0 {
            assert_eq!(got.nsp_pred, want_nsp, "NSP predictions");
        }
    }
}

/// A fine-tuning head's model on the tape and its targets on the step test's batch: the
/// tape's loss after one forward and backward (`seed`: dropout), and the step's batch.
fn finetune_case(
    head: FtHead,
    seed: Option<u64>,
    packed: bool,
) -> (BertConfig, Bert, f32, FtBatch) {
    let mut c = config("gelu");
    c.num_labels = head.outputs();
    let model = Bert::init(&c, head.task(), 21).unwrap();
    let (x, _, _) = batch();
    let (b, s) = (x.batch, x.seq);
    let lens = [16usize, 11, 6];
    let classes = vec![2i64, 0, 4];
    let values = vec![0.5f32, -1.25, 2.0];
    // Tags on about two thirds of the valid tokens, -100 elsewhere (padding too).
    let tags: Vec<i64> = (0..b * s)
        .map(|i| {
            if i % s < lens[i / s] && i % 3 != 1 {
                (i % 5) as i64
            } else {
                -100
            }
        })
        .collect();
    let (start, end) = (vec![3i64, 0, 5], vec![7i64, 0, 40]);
    model.params.zero_grad();
    let o = model
        .forward(
            &x,
            Forward {
                dropout_seed: seed,
                ..Default::default()
            },
        )
        .unwrap();
    let (loss, targets) = match head {
        FtHead::Classify(_) => (
            model
                .sequence_classification_loss(
                    &model.classify(&o).unwrap(),
                    &SeqLabels::Classes(classes.clone()),
                )
                .unwrap(),
            FtTargets::Classes(classes),
        ),
        FtHead::Regress => (
            model
                .sequence_classification_loss(
                    &model.classify(&o).unwrap(),
                    &SeqLabels::Values(values.clone()),
                )
                .unwrap(),
            FtTargets::Values(values),
        ),
        FtHead::Tag(_) => (
            model
                .token_classification_loss(&model.token_logits(&o).unwrap(), &tags)
                .unwrap(),
            FtTargets::Tags(tags),
        ),
        FtHead::Span => {
            let (st, en) = model.qa_logits(&o).unwrap();
            (
                model.qa_loss(&st, &en, &start, &end).unwrap(),
                FtTargets::Spans { start, end },
            )
        }
    };
    loss.backward().unwrap();
    let mut fb = FtBatch {
        batch: b,
        seq: s,
        input_ids: x.input_ids.clone(),
        token_type_ids: x.token_type_ids.clone(),
        lens: lens.to_vec(),
        packed: false,
        targets,
    };
    if packed {
        let take = |v: &[i64]| -> Vec<i64> {
            (0..b)
                .flat_map(|bi| v[bi * s..bi * s + lens[bi]].to_vec())
                .collect()
        };
        fb.input_ids = take(&fb.input_ids);
        fb.token_type_ids = take(&fb.token_type_ids);
        if let FtTargets::Tags(t) = &fb.targets {
            fb.targets = FtTargets::Tags(take(t));
        }
        fb.packed = true;
    }
    (c, model, loss.item(), fb)
}

/// One fine-tuning step on `dev` against the tape: the head's loss and every gradient.
fn finetune_step_matches_the_tape<D: Device>(
    dev: &D,
    tol: Tol,
    head: FtHead,
    seed: Option<u64>,
    packed: bool,
) {
    let (c, model, tape_loss, fb) = finetune_case(head, seed, packed);
    let lay = head.layout(&c);
    assert_eq!(
        lay.len() + 4 * c.num_hidden_layers,
        model.params.iter().count(),
        "{head:?}: the layout stacks each layer's query, key and value"
    );
    let values = values_for(lay.clone(), |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let weights = dev.weights(&values).unwrap();
    let mut grads: Vec<D::Grad> = values
        .iter()
        .map(|v| dev.zeros_grad(v.len()).unwrap())
        .collect();
    let prefs = dev.weight_refs(&weights);
    let mut grefs: Vec<&mut D::Grad> = grads.iter_mut().collect();
    let loss = ft_forward_backward(dev, &c, head, &prefs, &mut grefs, &fb, seed, 1.0).unwrap();
    println!("{head:?} seed {seed:?} packed {packed}: loss {loss} (tape {tape_loss})");
    assert_loss(&format!("{head:?} loss"), loss, tape_loss, tol.loss);
    let host: Vec<Vec<f32>> = grads
        .iter()
        .map(|g| dev.download_grad(g).unwrap())
        .collect();
    let named = named_in(&lay, &host);
    assert_eq!(named.len(), model.params.iter().count(), "every parameter");
    let global = named
        .iter()
        .filter_map(|(n, _, _)| model.params.get(n).unwrap().grad())
        .flat_map(|t| t.to_vec())
        .map(|x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    for (name, _, g) in &named {
        let want = model
            .params
            .get(name)
            .unwrap()
            .grad()
            .map(|t| t.to_vec())
            .unwrap_or(vec![0.0; g.len()]);
        assert_close(
            &format!("{head:?}: gradient of {name}"),
            g,
            &want,
            tol.grad,
            global,
        );
    }
    // The logits without dropout, against the tape's.
    if seed.is_none() {
        let _g = engine::no_grad();
        let (x, _, _) = batch();
        let o = model.forward(&x, Forward::default()).unwrap();
        let want: Vec<f32> = match head {
            FtHead::Classify(_) | FtHead::Regress => model.classify(&o).unwrap().value().to_vec(),
            FtHead::Tag(_) => model.token_logits(&o).unwrap().value().to_vec(),
            FtHead::Span => {
                let (st, en) = model.qa_logits(&o).unwrap();
                let (st, en) = (st.value().to_vec(), en.value().to_vec());
                st.iter().zip(&en).flat_map(|(&a, &b)| [a, b]).collect()
            }
        };
        let got = ft_logits(dev, &c, head, &prefs, &fb.input()).unwrap();
        let l = head.outputs();
        let want = match (head, packed) {
            (FtHead::Tag(_) | FtHead::Span, true) => (0..fb.batch)
                .flat_map(|b| want[b * fb.seq * l..(b * fb.seq + fb.lens[b]) * l].to_vec())
                .collect(),
            _ => want,
        };
        assert_close(&format!("{head:?} logits"), &got, &want, tol.hidden, 0.0);
    }
}

/// The device-generic checks, instantiated for one device (candle's `test_device!`).
macro_rules! device_tests {
    ($module:ident, $device:expr, $tol:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn step_matches_the_tape_without_dropout() {
                step_matches_the_tape(&$device, $tol, "gelu", None, false);
            }

            #[test]
            fn step_matches_the_tape_with_dropout() {
                step_matches_the_tape(&$device, $tol, "gelu", Some(99), false);
            }

            #[test]
            fn step_matches_the_tape_with_gelu_tanh() {
                step_matches_the_tape(&$device, $tol, "gelu_new", Some(5), false);
            }

            #[test]
            fn packed_step_matches_the_padded_tape() {
                step_matches_the_tape(&$device, $tol, "gelu", None, true);
            }

            #[test]
            fn trainer_steps_match_the_tape_with_adamw_and_clipping() {
                trainer_matches_the_tape(&$device, $tol);
            }

            #[test]
            fn encode_matches_the_model_forward() {
                super::encode_matches_the_model_forward(&$device, $tol);
            }

            #[test]
            fn evaluation_matches_the_tape() {
                super::evaluation_matches_the_tape(&$device, $tol);
            }

            #[test]
            fn classification_head_matches_the_tape() {
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Classify(5), None, false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Classify(5), Some(3), false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Classify(5), None, true);
            }

            #[test]
            fn regression_head_matches_the_tape() {
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Regress, None, false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Regress, Some(4), false);
            }

            #[test]
            fn token_classification_head_matches_the_tape() {
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Tag(5), None, false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Tag(5), Some(6), false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Tag(5), None, true);
            }

            #[test]
            fn question_answering_head_matches_the_tape() {
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Span, None, false);
                finetune_step_matches_the_tape(&$device, $tol, FtHead::Span, Some(8), false);
            }
        }
    };
}

device_tests!(cpu, Cpu, CPU);
device_tests!(cpu_bf16, engine::device::CpuBf16, CPU_BF16);
#[cfg(feature = "cuda")]
device_tests!(cuda, engine::device::cuda::Cuda::new(0).unwrap(), CUDA);
#[cfg(feature = "cuda")]
device_tests!(
    cuda_bf16,
    engine::device::cuda::CudaBf16::new(0).unwrap(),
    CUDA_BF16
);

#[test]
fn layout_round_trips_and_rejects_missing_tensors() {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 3).unwrap();
    let vals = step_values(&c, &model);
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
fn encode_names_a_bad_token_id() {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 5).unwrap();
    let (x, _, _) = batch();
    let vals = encoder_from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let refs: Vec<&Vec<f32>> = vals.iter().collect();
    let mut bad = x.input_ids.clone();
    bad[20] = c.vocab_size as i64;
    let input = EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &bad,
        token_type_ids: &x.token_type_ids,
        lens: &[16, 11, 6],
        packed: false,
    };
    let err = encode(&Cpu, &c, &refs, &input, 2)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("token id 97 at batch 1 position 4"), "{err}");
}

#[test]
fn packed_batches_give_the_padded_losses_and_gradients() {
    // Without padding tokens (packed) the step computes the same losses and the same gradient
    // for every parameter as on the padded batch, to 1e-5 (no dropout: its hidden-state masks
    // follow the token index, which packing changes).
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 13).unwrap();
    let params = step_values(&c, &model);
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
        assert_close(&name, &b, &a, Close::MaxRel(1e-5), 0.0);
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
    // engine::device::Profiled only adds a stopwatch: the same losses and gradients as the
    // device it wraps, and a table with each op's call count.
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 17).unwrap();
    let params = step_values(&c, &model);
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap().to_packed();
    let p = engine::device::Profiled::new(&Cpu, || {});
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

#[cfg(feature = "cuda")]
#[test]
fn gpu_step_rejects_an_unsupported_head_size_with_an_error() {
    let gpu = engine::device::cuda::Cuda::new(0).unwrap();
    let mut c = config("gelu");
    c.hidden_size = 48; // head_dim 24: the fused attention kernels take 32, 64 or 128
    c.intermediate_size = 96;
    let model = Bert::init(&c, Task::PreTraining, 1).unwrap();
    let values = step_values(&c, &model);
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    let weights = gpu.weights(&values).unwrap();
    let mut grads: Vec<_> = values
        .iter()
        .map(|v| gpu.zeros_grad(v.len()).unwrap())
        .collect();
    let prefs = gpu.weight_refs(&weights);
    let mut grefs: Vec<_> = grads.iter_mut().collect();
    let err = forward_backward(&gpu, &c, &prefs, &mut grefs, &sb, None, 1.0)
        .err()
        .expect("head_dim 24 must be refused")
        .to_string();
    assert!(err.contains("head_dim"), "{err}");
}
