//! Pretraining end to end on a tiny synthetic corpus: `bert data` builds shards, `bert pretrain`
//! trains a 2-layer BERT, and a run stopped after step 3 and resumed ends with exactly the
//! weights of a run that was not stopped; training lowers the loss.

mod common;
use bert::data::{create_instances, write_shard, DataConfig, Specials};
use bert::train::{pretrain, PretrainConfig, TrainDevice};
use bert_tests::max_abs_err;
use common::{tiny_config, tiny_data, tiny_tokenizer, tmp, weights};
use std::path::Path;

/// Metrics: one line per step (the resumed run appends), evaluations at steps 4 and 8.
fn check_metrics(dir: &Path) {
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    // The curves, redrawn at every checkpoint: a polyline per series with points.
    for f in ["pretrain_loss.svg", "pretrain_accuracy.svg"] {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{f}");
    }
}

#[test]
fn resumed_run_ends_with_the_same_weights_and_training_learns() {
    let data = tmp("data");
    tiny_data(&data);
    let config = tiny_config(&data);
    let cfg = PretrainConfig {
        steps: Some(8),
        batch: 8,
        accum: 2,
        lr: 3e-3,
        warmup: 2.0,
        eval_every: 4,
        eval_batches: 2,
        checkpoint_every: 100,
        progress: false,
        ..Default::default()
    };
    // Both CPU paths: the hand-written step (the default) and the tape.
    for device in [TrainDevice::CpuTape, TrainDevice::Cpu] {
        let cfg = PretrainConfig {
            device,
            ..cfg.clone()
        };
        let a = tmp("a");
        let sa = pretrain(&config, &data, &a, &cfg, false).unwrap();
        assert_eq!(sa.steps, 8);
        let b = tmp("b");
        let stopped = PretrainConfig {
            stop_after: Some(3),
            ..cfg.clone()
        };
        let sb = pretrain(&config, &data, &b, &stopped, false).unwrap();
        assert_eq!(sb.steps, 3);
        let sb = pretrain(&config, &data, &b, &cfg, true).unwrap();
        assert_eq!(sb.steps, 8);
        let (wa, wb) = (weights(&a), weights(&b));
        assert_eq!(wa.len(), wb.len());
        for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
            assert_eq!(na, nb);
            assert!(va == vb, "{na} differs after resuming ({device:?})");
        }
        check_metrics(&b);
        std::fs::remove_dir_all(a).unwrap();
        std::fs::remove_dir_all(b).unwrap();
    }

    // Learning: 60 steps lower the loss well below its start (each document cycles through
    // six tokens, so a masked one is predictable from its neighbours).
    let c = tmp("c");
    let long = PretrainConfig {
        steps: Some(60),
        eval_every: 60,
        ..cfg.clone()
    };
    pretrain(&config, &data, &c, &long, false).unwrap();
    let losses: Vec<f64> = std::fs::read_to_string(c.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .collect();
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < first - 0.5, "loss {first:.3} -> {last:.3}");
    for d in [data, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_hand_written_step_trains_as_the_tape_does_and_resumes_exactly() {
    // The hand-written step (the CPU default, and what the GPU runs) against the tape: same
    // losses at every step
    // and the same final weights to rounding; stopped and resumed, bit-identical to one run.
    let data = tmp("step-data");
    tiny_data(&data);
    let config = tiny_config(&data);
    let cfg = PretrainConfig {
        device: TrainDevice::CpuTape,
        steps: Some(6),
        batch: 8,
        accum: 2,
        lr: 3e-3,
        warmup: 2.0,
        eval_every: 3,
        eval_batches: 2,
        checkpoint_every: 100,
        progress: false,
        ..Default::default()
    };
    let step_cfg = PretrainConfig {
        device: TrainDevice::Cpu,
        packed: false,
        ..cfg.clone()
    };
    let (t, s, r) = (tmp("step-tape"), tmp("step-step"), tmp("step-resumed"));
    pretrain(&config, &data, &t, &cfg, false).unwrap();
    pretrain(&config, &data, &s, &step_cfg, false).unwrap();
    let losses = |d: &Path| -> Vec<f64> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
            .collect()
    };
    let (lt, ls) = (losses(&t), losses(&s));
    assert_eq!(lt.len(), 6);
    for (i, (a, b)) in lt.iter().zip(&ls).enumerate() {
        assert!(
            (a - b).abs() < 1e-4 * a.abs(),
            "step {}: tape {a}, step {b}",
            i + 1
        );
    }
    for ((na, va), (nb, vb)) in weights(&t).iter().zip(&weights(&s)) {
        assert_eq!(na, nb);
        let worst = max_abs_err(va, vb) as f32;
        assert!(worst < 1e-4, "{na}: tape and step differ by {worst:e}");
    }
    let stopped = PretrainConfig {
        stop_after: Some(2),
        ..step_cfg.clone()
    };
    pretrain(&config, &data, &r, &stopped, false).unwrap();
    pretrain(&config, &data, &r, &step_cfg, true).unwrap();
    for ((na, va), (_, vb)) in weights(&s).iter().zip(&weights(&r)) {
        assert!(
            va == vb,
            "{na} differs after resuming the hand-written step"
        );
    }
    for d in [data, t, s, r] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// Evaluation on a device (the step's forward, arg-max on the device) gives the host
/// evaluation's figures, padded and packed.
#[test]
fn device_evaluation_matches_the_host_evaluation() {
    let data = tmp("eval");
    tiny_data(&data);
    let c = bert::BertConfig::from_file(Path::new(&tiny_config(&data))).unwrap();
    let model = bert::Bert::init(&c, bert::Task::PreTraining, 5).unwrap();
    let held = bert::data::Shard::open(&data.join("heldout.bin"), 60).unwrap();
    let want = bert::train::evaluate(&model, &held, 4, 3, (0, 4)).unwrap();
    assert!(want.mlm_loss > 0.0 && want.nsp_loss > 0.0);
    let vals = bert::step::from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    let cpu = engine::device::Cpu;
    let mut tr = bert::step::StepTrainer::new(&cpu, &c, &vals, Default::default(), 0).unwrap();
    for packed in [false, true] {
        let got = bert::train::evaluate_device(&mut tr, &held, 4, 3, (0, 4), packed).unwrap();
        // Predictions: the same but for a near-tie flipped by rounding (none expected here).
        assert!(
            (got.mlm_accuracy - want.mlm_accuracy).abs() < 1e-9,
            "{got:?} vs {want:?}"
        );
        assert!(
            (got.nsp_accuracy - want.nsp_accuracy).abs() < 1e-9,
            "{got:?} vs {want:?}"
        );
        assert_eq!(got.majority_accuracy, want.majority_accuracy);
        assert!(
            (got.mlm_accuracy_at_mask - want.mlm_accuracy_at_mask).abs() < 1e-9,
            "{got:?} vs {want:?}"
        );
        assert_eq!(
            got.majority_accuracy_at_mask,
            want.majority_accuracy_at_mask
        );
        for (a, b) in [(got.mlm_loss, want.mlm_loss), (got.nsp_loss, want.nsp_loss)] {
            assert!(
                (a - b).abs() < 1e-5 * b.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }
}

/// NSP can be learnt at all: on documents of ten disjoint topics (five tokens each), a random
/// "next" segment comes from another topic 88% of the time, so a model that learns NSP scores
/// well above chance. Trained and evaluated on the same 64 pairs (an overfit test), with the
/// held-out pairs built by the same `create_instances`: NSP accuracy goes from chance to at
/// least 0.85 (the demo's NSP once sat at 0.506 in every evaluation; this says the head, its
/// loss and gradient, and the data can carry the signal).
#[test]
fn nsp_is_learnt_on_a_small_set_of_pairs() {
    let dir = tmp("nsp");
    let tok = tiny_tokenizer(&dir);
    // 40 documents, topic d % 10, eight sentences of four tokens drawn from the topic's five.
    let docs: Vec<Vec<Vec<u32>>> = (0..40u32)
        .map(|d| {
            (0..8u32)
                .map(|s| {
                    (0..4u32)
                        .map(|j| 5 + (d % 10) * 5 + (j * 3 + s + d) % 5)
                        .collect()
                })
                .collect()
        })
        .collect();
    let cfg = DataConfig {
        max_seq_len: 24,
        max_predictions: 3,
        short_seq_prob: 0.0,
        ..Default::default()
    };
    let sp = Specials::from_tokenizer(&tok).unwrap();
    let inst = create_instances(&docs, &cfg, &sp);
    let n_random = inst[..64].iter().filter(|i| i.is_random_next).count();
    assert!((16..=48).contains(&n_random), "{n_random} of 64 random");
    write_shard(&dir.join("train.bin"), &inst[..64], 24, 3).unwrap();
    write_shard(&dir.join("heldout.bin"), &inst[..64], 24, 3).unwrap();
    let meta = serde_json::json!({"max_seq_len": 24, "max_predictions": 3, "masked_lm_prob": 0.15, "whole_word_mask": false});
    std::fs::write(dir.join("data.json"), meta.to_string()).unwrap();
    let config = tiny_config(&dir);
    let run = |steps: u64, out: &str| {
        let cfg = PretrainConfig {
            steps: Some(steps),
            batch: 16,
            lr: 2e-3,
            warmup: 10.0,
            eval_every: 1000,
            eval_batches: 4,
            checkpoint_every: 1000,
            progress: false,
            ..Default::default()
        };
        pretrain(&config, &dir, &dir.join(out), &cfg, false).unwrap()
    };
    let before = run(1, "one-step");
    let after = run(600, "trained");
    assert!(
        before.eval.nsp_accuracy < 0.75,
        "NSP {:.3} after one step",
        before.eval.nsp_accuracy
    );
    assert!(
        after.eval.nsp_accuracy >= 0.85,
        "NSP {:.3} after 600 steps (loss {:.3})",
        after.eval.nsp_accuracy,
        after.eval.nsp_loss
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `--init-from`: a new run (step 1, fresh moments) starts from a checkpoint's weights; it keeps
/// that model's architecture and dropout, and refuses a data vocabulary or sequence length the
/// model does not fit.
#[test]
fn init_from_starts_a_new_run_from_a_checkpoints_weights() {
    let data = tmp("initfrom");
    tiny_data(&data);
    let first = data.join("first");
    let cfg = PretrainConfig {
        steps: Some(6),
        batch: 4,
        lr: 3e-3,
        eval_every: 3,
        eval_batches: 1,
        checkpoint_every: 100,
        progress: false,
        dropout: Some(0.0),
        ..Default::default()
    };
    pretrain(&tiny_config(&data), &data, &first, &cfg, false).unwrap();
    let second = data.join("second");
    let cont = PretrainConfig {
        steps: Some(1),
        lr: 1e-12,
        warmup: 0.0,
        init_from: Some(first.join("checkpoint")),
        ..cfg.clone()
    };
    let s = pretrain("", &data, &second, &cont, false).unwrap();
    assert_eq!((s.steps, s.total_steps), (1, 1));
    // One step at a negligible rate: the first run's weights, not a fresh initialisation.
    let (a, b) = (weights(&first), weights(&second));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = max_abs_err(va, vb) as f32;
        assert!(d < 1e-6, "{na}: differs by {d}");
    }
    // A --model-config given beside it must name the checkpoint's architecture.
    let other = data.join("other.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_config(&data)).unwrap()).unwrap();
    c["num_hidden_layers"] = serde_json::json!(3);
    std::fs::write(&other, c.to_string()).unwrap();
    let forced = PretrainConfig {
        force: true,
        ..cont.clone()
    };
    pretrain(&tiny_config(&data), &data, &second, &forced, false).unwrap();
    let e = pretrain(other.to_str().unwrap(), &data, &second, &forced, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--init-from") && e.contains("num_hidden_layers"),
        "{e}"
    );
    let dropout = PretrainConfig {
        dropout: Some(0.1),
        force: true,
        ..cont.clone()
    };
    let e = pretrain("", &data, &second, &dropout, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--init-from") && e.contains("dropout"), "{e}");
    let missing = PretrainConfig {
        init_from: Some(data.join("nothing-here")),
        force: true,
        ..cont
    };
    let e = pretrain("", &data, &second, &missing, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing-here"), "{e}");
    std::fs::remove_dir_all(&data).unwrap();
}
