//! Fine-tuning parity with HuggingFace (fixture: scripts/fixtures/make_finetune_fixtures.py):
//! - for each family (sequence classification, regression, token classification, question
//!   answering), 20 steps of the hand-written step ([`bert::finetune::FtTrainer`] on the CPU)
//!   from transformers' saved model on its batches, with the same AdamW, warmup, decay and
//!   clipping, give transformers' loss at every step to 1e-4 relative;
//! - QA post-processing gives utils_qa.py's answers and null-score differences;
//! - the SQuAD scores equal evaluate-v2.0.py's, the entity scores seqeval's.

use bert::finetune::{qa, tokencls, FtRunner, FtTrainer};
use bert::safetensors::SafeTensors;
use bert::step::{FtBatch, FtHead, FtTargets};
use bert::{LoadOptions, ModelDir};
use engine::device::Cpu;
use engine::optim::{AdamWConfig, LrSchedule};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/finetune")
}

/// Trains `family`'s saved model on its batches; returns (ours, transformers') per step.
fn losses(family: &str) -> Vec<(f32, f32)> {
    let dir = fixtures().join(family);
    let md = ModelDir::load(&dir.join("init"), &LoadOptions::default()).unwrap();
    let head = bert::predict::head_of(&md.model).unwrap();
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        weight_decay: 0.01,
        bias_correction: true,
    };
    let mut tr = FtTrainer::new(&Cpu, &md.model, head, adam).unwrap();
    let st = SafeTensors::open(&dir.join("batches.safetensors")).unwrap();
    let want = st.tensor("losses").unwrap().to_vec();
    let sched = LrSchedule::linear(1e-3, 2, want.len() as u64);
    let ints = |k: &str| -> Vec<i64> {
        st.tensor(k)
            .unwrap()
            .to_vec()
            .iter()
            .map(|&x| x as i64)
            .collect()
    };
    let mut out = Vec::new();
    for (s, &w) in want.iter().enumerate() {
        let shape = st.info(&format!("{s}.input_ids")).unwrap().shape.clone();
        let (b, t) = (shape[0], shape[1]);
        let mask = ints(&format!("{s}.attention_mask"));
        let lens = (0..b)
            .map(|i| mask[i * t..(i + 1) * t].iter().sum::<i64>() as usize)
            .collect();
        let targets = match head {
            FtHead::Classify(_) => FtTargets::Classes(ints(&format!("{s}.labels"))),
            FtHead::Regress => {
                FtTargets::Values(st.tensor(&format!("{s}.labels")).unwrap().to_vec())
            }
            FtHead::Tag(_) => FtTargets::Tags(ints(&format!("{s}.labels"))),
            FtHead::Span => FtTargets::Spans {
                start: ints(&format!("{s}.start_positions")),
                end: ints(&format!("{s}.end_positions")),
            },
        };
        let x = FtBatch {
            batch: b,
            seq: t,
            input_ids: ints(&format!("{s}.input_ids")),
            token_type_ids: ints(&format!("{s}.token_type_ids")),
            lens,
            packed: false,
            targets,
        };
        let (loss, _) = tr.step(&x, None, sched.lr(s as u64 + 1), 1.0).unwrap();
        out.push((loss, w));
    }
    out
}

fn assert_losses(family: &str) {
    let l = losses(family);
    assert_eq!(l.len(), 20);
    let mut worst = 0.0f64;
    for (s, &(got, want)) in l.iter().enumerate() {
        let rel = ((got - want).abs() / want.abs().max(1e-6)) as f64;
        worst = worst.max(rel);
        assert!(
            rel <= 1e-4,
            "{family} step {}: loss {got} vs transformers' {want} ({rel:e} relative)",
            s + 1
        );
    }
    println!("{family}: 20 steps, worst relative difference {worst:.2e}");
}

#[test]
fn sequence_classification_trains_as_transformers() {
    assert_losses("seq");
}

#[test]
fn regression_trains_as_transformers() {
    assert_losses("reg");
}

#[test]
fn token_classification_trains_as_transformers() {
    assert_losses("tok");
}

#[test]
fn question_answering_trains_as_transformers() {
    assert_losses("qa");
}

/// A window's start logits, end logits and offsets, owned.
type Window = (Vec<f32>, Vec<f32>, Vec<Option<(usize, usize)>>);

fn metrics() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("metrics.json")).unwrap())
        .unwrap()
}

#[test]
fn qa_postprocessing_gives_utils_qa_answers() {
    let m = metrics();
    let cases = m["qa"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for (i, c) in cases.iter().enumerate() {
        let floats = |v: &Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let windows: Vec<Window> = c["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    floats(&w[0]),
                    floats(&w[1]),
                    w[2].as_array()
                        .unwrap()
                        .iter()
                        .map(|o| {
                            o.as_array().map(|p| {
                                (
                                    p[0].as_u64().unwrap() as usize,
                                    p[1].as_u64().unwrap() as usize,
                                )
                            })
                        })
                        .collect(),
                )
            })
            .collect();
        let refs: Vec<qa::WindowLogits<'_>> = windows
            .iter()
            .map(|(s, e, o)| (s.as_slice(), e.as_slice(), o.as_slice()))
            .collect();
        let pp = qa::PostProcess {
            n_best: c["n_best"].as_u64().unwrap() as usize,
            max_answer_len: c["max_answer_len"].as_u64().unwrap() as usize,
            null_threshold: c["null_threshold"].as_f64().unwrap() as f32,
        };
        let p = qa::postprocess(
            c["context"].as_str().unwrap(),
            &refs,
            c["version_2"].as_bool().unwrap(),
            &pp,
        );
        assert_eq!(
            p.answer.text,
            c["answer"].as_str().unwrap(),
            "case {i}: {c}"
        );
        match (p.null_score_diff, c["null_score_diff"].as_f64()) {
            (Some(got), Some(want)) => {
                assert!(
                    (got as f64 - want).abs() < 1e-4,
                    "case {i}: {got} vs {want}"
                )
            }
            (None, None) => {}
            other => panic!("case {i}: null score difference {other:?}"),
        }
    }
}

#[test]
fn squad_scores_equal_the_official_script() {
    let m = metrics();
    let ex: Vec<qa::QaExample> = m["squad"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, e)| qa::QaExample {
            id: i.to_string(),
            question: String::new(),
            context: String::new(),
            answers: e["answers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["text"].as_str().unwrap().to_string(), 0))
                .collect(),
        })
        .collect();
    let preds: Vec<&str> = m["squad"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pred"].as_str().unwrap())
        .collect();
    let got = qa::squad_scores(&ex, &preds);
    let want = m["squad"]["scores"].as_object().unwrap();
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (k, v) in got {
        let w = want[&k].as_f64().unwrap();
        assert!((v - w).abs() < 1e-9, "{k}: {v} vs the official {w}");
    }
}

#[test]
fn entity_scores_equal_seqeval() {
    let m = metrics();
    for (i, c) in m["seqeval"].as_array().unwrap().iter().enumerate() {
        let seqs = |v: &Value| -> Vec<Vec<String>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_string())
                        .collect()
                })
                .collect()
        };
        let (gold, pred) = (seqs(&c["gold"]), seqs(&c["pred"]));
        for (s, want) in gold.iter().zip(c["entities"].as_array().unwrap()) {
            let got: Vec<Value> = tokencls::get_entities(s)
                .into_iter()
                .map(|(t, a, b)| serde_json::json!([t, a, b]))
                .collect();
            assert_eq!(
                &Value::Array(got),
                want,
                "case {i} ({}): {s:?}",
                c["scheme"]
            );
        }
        let e = tokencls::entity_scores(&gold, &pred);
        let close = |a: f64, b: &Value| (a - b.as_f64().unwrap()).abs() < 1e-12;
        assert!(
            close(e.precision, &c["precision"])
                && close(e.recall, &c["recall"])
                && close(e.f1, &c["f1"]),
            "case {i}: {e:?} vs {c}"
        );
        let per = c["per_type"].as_object().unwrap();
        assert_eq!(e.per_type.len(), per.len(), "case {i}");
        for (t, s) in &e.per_type {
            let w = &per[t];
            assert!(
                close(s.precision, &w["precision"])
                    && close(s.recall, &w["recall"])
                    && close(s.f1, &w["f1"])
                    && s.support as u64 == w["support"].as_u64().unwrap(),
                "case {i} type {t}: {s:?} vs {w}"
            );
        }
    }
}
