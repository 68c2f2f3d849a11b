//! The pretraining step on the GPU against the same step on the CPU (feature `cuda`; compiled only
//! with it, run on a GPU machine by `scripts/device/gpu-check.sh`). f32 mode (cuBLAS in plain
//! f32): per-parameter gradients within 1e-4 of the largest, losses within 1e-5 relative, and ten
//! optimizer steps (dropout, clipping, AdamW) with losses within 1e-4 relative at every step.
//! bf16 mixed precision (`CudaBf16`): losses within 1e-2 relative, gradients within 10% (L2).
#![cfg(feature = "cuda")]

mod step_fixture;
use bert::step::{forward_backward, from_named, read_scalar, to_named, StepBatch, StepTrainer};
use bert::{Bert, Task};
use engine::device::cuda::Cuda;
use engine::device::{Cpu, Device};
use engine::optim::AdamWConfig;
use step_fixture::{batch, config, grads_on};

#[test]
fn gpu_step_gradients_match_the_cpu_step() {
    let gpu = Cuda::new(0).unwrap();
    for (act, seed) in [("gelu", None), ("gelu", Some(99u64)), ("gelu_new", Some(5))] {
        let c = config(act);
        let model = Bert::init(&c, Task::PreTraining, 7).unwrap();
        let values = from_named(&c, |n: &str| {
            model.params.get(n).map(|v| v.value().to_vec())
        })
        .unwrap();
        let (x, labels, nsp) = batch();
        let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
        let (cm, cn, cg) = grads_on(&Cpu, &c, &values, &sb, seed);
        let (gm, gn, gg) = grads_on(&gpu, &c, &values, &sb, seed);
        println!("{act} seed {seed:?}: MLM loss cpu {cm} gpu {gm}; NSP cpu {cn} gpu {gn}");
        assert!((cm - gm).abs() <= 1e-5 * cm.abs(), "MLM loss {gm} vs {cm}");
        assert!((cn - gn).abs() <= 1e-5 * cn.abs(), "NSP loss {gn} vs {cn}");
        for ((name, _, want), (_, _, got)) in to_named(&c, &cg).into_iter().zip(to_named(&c, &gg)) {
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            println!("  {name}: rel {:.2e}", worst / scale);
            assert!(
                worst <= 1e-4 * scale,
                "{name}: max |gpu - cpu| {worst:e}, largest {scale:e}"
            );
        }
    }
}

/// Ten optimizer steps (dropout, clipping at 1, AdamW) on `dev` and on the CPU from the same
/// weights: the losses agree within `tol` relative at every step; returns both trainers' final
/// parameters.
#[allow(clippy::type_complexity)]
fn ten_steps<D: Device>(
    dev: &D,
    tol: f32,
) -> (
    Vec<(String, Vec<usize>, Vec<f32>)>,
    Vec<(String, Vec<usize>, Vec<f32>)>,
) {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 11).unwrap();
    let values = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let mut cpu_tr = StepTrainer::new(&Cpu, &c, &values, AdamWConfig::default(), 0).unwrap();
    let mut dev_tr = StepTrainer::new(dev, &c, &values, AdamWConfig::default(), 0).unwrap();
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    for step in 1..=10u64 {
        let mb = vec![(sb.clone(), Some(step))];
        let a = cpu_tr.step(&mb, 1e-3, 1.0).unwrap();
        let b = dev_tr.step(&mb, 1e-3, 1.0).unwrap();
        let la = read_scalar(&Cpu, a.losses[0].mlm.as_ref().unwrap()).unwrap()
            + read_scalar(&Cpu, &a.losses[0].nsp).unwrap();
        let lb = read_scalar(dev, b.losses[0].mlm.as_ref().unwrap()).unwrap()
            + read_scalar(dev, &b.losses[0].nsp).unwrap();
        let (na, nb) = (
            read_scalar(&Cpu, &a.grad_norm).unwrap(),
            read_scalar(dev, &b.grad_norm).unwrap(),
        );
        println!("step {step}: loss cpu {la} device {lb}; grad norm cpu {na} device {nb}");
        assert!(
            (la - lb).abs() <= tol * la.abs(),
            "step {step}: loss {lb} vs {la}"
        );
        assert!(
            (na - nb).abs() <= 10.0 * tol * na.abs(),
            "step {step}: norm {nb} vs {na}"
        );
    }
    (
        cpu_tr.state_named().unwrap().0,
        dev_tr.state_named().unwrap().0,
    )
}

#[test]
fn gpu_trainer_ten_steps_match_the_cpu_trainer() {
    let gpu = Cuda::new(0).unwrap();
    let (pa, pb) = ten_steps(&gpu, 1e-4);
    for ((name, _, a), (_, _, b)) in pa.into_iter().zip(pb) {
        let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name} after 10 steps: {worst:e} of {scale:e}"
        );
    }
}

#[test]
fn gpu_step_rejects_an_unsupported_head_size_with_an_error() {
    let gpu = Cuda::new(0).unwrap();
    let mut c = config("gelu");
    c.hidden_size = 48; // head_dim 24: the fused attention kernels take 32, 64 or 128
    c.intermediate_size = 96;
    let model = Bert::init(&c, Task::PreTraining, 1).unwrap();
    let values = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
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

/// The encoder's output on `dev` and on the CPU (a padded batch, two layers).
fn encoder_outputs<D: Device>(dev: &D) -> (Vec<f32>, Vec<f32>) {
    use bert::step::{encode, encoder_from_named, EncoderInput};
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 3).unwrap();
    let vals = encoder_from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let (x, _, _) = batch();
    let lens = [16usize, 11, 6];
    let input = EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &x.input_ids,
        token_type_ids: &x.token_type_ids,
        lens: &lens,
        packed: false,
    };
    let cpu_refs: Vec<&Vec<f32>> = vals.iter().collect();
    let want = encode(&Cpu, &c, &cpu_refs, &input, 2).unwrap();
    let weights = dev.weights(&vals).unwrap();
    let refs = dev.weight_refs(&weights);
    let got = dev
        .download(&encode(dev, &c, &refs, &input, 2).unwrap())
        .unwrap();
    (got, want)
}

#[test]
fn gpu_encoder_matches_the_cpu_encoder() {
    let (got, want) = encoder_outputs(&Cuda::new(0).unwrap());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("encoder: max |gpu - cpu| = {worst:e}");
    assert!(worst < 1e-4, "encoder output differs by {worst:e}");
}

/// Relative L2 distance |a - b| / |b| (f64 sums).
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn gpu_bf16_step_is_close_to_the_cpu_step() {
    // bf16 mixed precision: losses within 1e-2 relative of the f32 CPU step's, every gradient
    // within 10% in relative L2 (bf16 keeps 8 bits of mantissa; a wiring error is off by ~100%).
    let gpu = engine::device::cuda::CudaBf16::new(0).unwrap();
    for (act, seed) in [("gelu", None), ("gelu", Some(99u64))] {
        let c = config(act);
        let model = Bert::init(&c, Task::PreTraining, 7).unwrap();
        let values = from_named(&c, |n: &str| {
            model.params.get(n).map(|v| v.value().to_vec())
        })
        .unwrap();
        let (x, labels, nsp) = batch();
        let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
        let (cm, cn, cg) = grads_on(&Cpu, &c, &values, &sb, seed);
        let (gm, gn, gg) = grads_on(&gpu, &c, &values, &sb, seed);
        println!("bf16 {act} seed {seed:?}: MLM loss cpu {cm} gpu {gm}; NSP cpu {cn} gpu {gn}");
        assert!((cm - gm).abs() <= 1e-2 * cm.abs(), "MLM loss {gm} vs {cm}");
        assert!((cn - gn).abs() <= 1e-2 * cn.abs(), "NSP loss {gn} vs {cn}");
        // Gradients that are zero in exact arithmetic (the key bias: softmax ignores a constant
        // added to every key) are rounding noise on both sides: measure each tensor against at
        // least 1% of the whole gradient's norm.
        let global: f64 = cg
            .iter()
            .flatten()
            .map(|&g| (g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        for ((name, _, want), (_, _, got)) in to_named(&c, &cg).into_iter().zip(to_named(&c, &gg)) {
            let n: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum::<f64>().sqrt();
            let d: f64 = got
                .iter()
                .zip(&want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let r = d / n.max(0.01 * global);
            println!("  {name}: relative L2 {r:.2e}");
            assert!(
                r <= 0.1,
                "{name}: bf16 gradient off by {r:.3} (relative L2)"
            );
        }
    }
}

#[test]
fn gpu_bf16_trainer_losses_follow_the_cpu_trainer() {
    ten_steps(&engine::device::cuda::CudaBf16::new(0).unwrap(), 1e-2);
}

#[test]
fn gpu_bf16_encoder_is_close_to_the_cpu_encoder() {
    let (got, want) = encoder_outputs(&engine::device::cuda::CudaBf16::new(0).unwrap());
    let r = rel_l2(&got, &want);
    println!("bf16 encoder: relative L2 {r:.2e}");
    assert!(r < 2e-2, "bf16 encoder output off by {r:.3} (relative L2)");
}
#[test]
fn gpu_packed_step_matches_the_cpu_packed_step() {
    // Packed batches (no padding tokens; attention over AttnBatch::packed, positions given per
    // token), dropout on: the GPU step against the CPU's, as for padded batches.
    let gpu = Cuda::new(0).unwrap();
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 5).unwrap();
    let values = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap().to_packed();
    let (cm, cn, cg) = grads_on(&Cpu, &c, &values, &sb, Some(21));
    let (gm, gn, gg) = grads_on(&gpu, &c, &values, &sb, Some(21));
    println!("packed: MLM loss cpu {cm} gpu {gm}; NSP cpu {cn} gpu {gn}");
    assert!((cm - gm).abs() <= 1e-5 * cm.abs(), "MLM loss {gm} vs {cm}");
    assert!((cn - gn).abs() <= 1e-5 * cn.abs(), "NSP loss {gn} vs {cn}");
    for ((name, _, want), (_, _, got)) in to_named(&c, &cg).into_iter().zip(to_named(&c, &gg)) {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-3);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "packed {name}: max |gpu - cpu| {worst:e}, largest {scale:e}"
        );
    }
}

/// Evaluation on the GPU (the heads' forward, arg-max on the device): the CPU's predictions
/// and losses, in f32 (predictions equal, losses 1e-5 relative) and bf16 (losses 1e-2, at least
/// 90% of the predictions equal); padded and packed.
#[test]
fn gpu_evaluation_matches_the_cpu_evaluation() {
    let c = config("gelu");
    let model = Bert::init(&c, Task::PreTraining, 11).unwrap();
    let values = from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let (x, labels, nsp) = batch();
    let sb = StepBatch::new(&x, &labels, &nsp).unwrap();
    let mut cpu = StepTrainer::new(&Cpu, &c, &values, AdamWConfig::default(), 0).unwrap();
    let gpu = Cuda::new(0).unwrap();
    let mut g = StepTrainer::new(&gpu, &c, &values, AdamWConfig::default(), 0).unwrap();
    let bf = engine::device::cuda::CudaBf16::new(0).unwrap();
    let mut gb = StepTrainer::new(&bf, &c, &values, AdamWConfig::default(), 0).unwrap();
    for b in [sb.clone(), sb.to_packed()] {
        let want = cpu.evaluate(&b).unwrap();
        assert!(!want.mlm_pred.is_empty());
        let got = g.evaluate(&b).unwrap();
        println!("eval packed={}: cpu {want:?}\n  gpu {got:?}", b.packed);
        assert_eq!(
            (&got.mlm_pred, &got.nsp_pred),
            (&want.mlm_pred, &want.nsp_pred)
        );
        assert_eq!(got.mlm_targets, want.mlm_targets);
        let (wm, gm) = (want.mlm_loss.unwrap(), got.mlm_loss.unwrap());
        assert!((wm - gm).abs() <= 1e-5 * wm.abs(), "MLM loss {gm} vs {wm}");
        assert!((want.nsp_loss - got.nsp_loss).abs() <= 1e-5 * want.nsp_loss.abs());
        let got = gb.evaluate(&b).unwrap();
        let same = got
            .mlm_pred
            .iter()
            .zip(&want.mlm_pred)
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            same * 10 >= want.mlm_pred.len() * 9,
            "bf16: {same} of {} predictions",
            want.mlm_pred.len()
        );
        let gm = got.mlm_loss.unwrap();
        assert!(
            (wm - gm).abs() <= 1e-2 * wm.abs(),
            "bf16 MLM loss {gm} vs {wm}"
        );
    }
}
