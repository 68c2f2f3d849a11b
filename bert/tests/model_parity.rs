//! Whole-model parity with HuggingFace transformers (PyTorch, CPU, eager attention): a tiny
//! random BERT saved by `save_pretrained` for every head class, fed a padded batch with token
//! types, against the outputs and losses transformers computed
//! (fixtures by scripts/fixtures/make_bert_fixtures.py). Also: every hidden state and
//! attention map, padding invariance, and the pretraining loss's gradient with respect to
//! every parameter against float64 PyTorch.

use bert::heads::SeqLabels;
use bert::safetensors::SafeTensors;
use bert::{BertInput, Forward, LoadOptions, ModelDir, Task};
use engine::{Tensor, Var};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

struct Io(SafeTensors);
impl Io {
    fn open() -> Self {
        Io(SafeTensors::open(&fixtures().join("io.safetensors")).unwrap())
    }
    fn t(&self, name: &str) -> Tensor {
        self.0.tensor(name).unwrap()
    }
    fn v(&self, name: &str) -> Vec<f32> {
        self.t(name).to_vec()
    }
    fn ids(&self, name: &str) -> Vec<i64> {
        self.v(name).iter().map(|&x| x as i64).collect()
    }
    fn input(&self) -> BertInput {
        let s = self.t("input_ids").shape().to_vec();
        BertInput {
            batch: s[0],
            seq: s[1],
            input_ids: self.ids("input_ids"),
            token_type_ids: self.ids("token_type_ids"),
            attention_mask: self.v("attention_mask"),
        }
    }
}

fn load(class: &str) -> bert::Bert {
    let d = ModelDir::load(&fixtures().join(class), &LoadOptions::default()).unwrap();
    assert_eq!(d.model.task.architecture(), class);
    assert!(d.report.dropped.is_empty() && d.report.initialised.is_empty());
    d.model
}

/// max |ours - ref|, asserting it is at most `tol * max(1, max |ref|)`.
#[track_caller]
fn close(what: &str, ours: &[f32], reference: &[f32], tol: f64) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: sizes differ");
    let (diff, rel) = (
        bert_tests::max_abs_err(ours, reference),
        bert_tests::rel_max(ours, reference, 1.0),
    );
    assert!(
        rel <= tol,
        "{what}: max |diff| {diff:.3e} is {rel:.2e} of the scale > {tol:.0e}"
    );
    eprintln!("{what:48} max |diff| {diff:.2e} ({rel:.2e} of the scale)");
    diff
}

fn eval() -> Forward {
    Forward::default()
}

#[test]
fn base_model_hidden_states_attentions_and_pooler() {
    let io = Io::open();
    let m = load("BertModel");
    let _g = engine::no_grad();
    let out = m
        .forward(
            &io.input(),
            Forward {
                hidden_states: true,
                attentions: true,
                ..eval()
            },
        )
        .unwrap();
    close(
        "last_hidden",
        &out.last_hidden.value().to_vec(),
        &io.v("BertModel.last_hidden"),
        1e-5,
    );
    close(
        "pooled",
        &out.pooled.as_ref().unwrap().value().to_vec(),
        &io.v("BertModel.pooled"),
        1e-5,
    );
    assert_eq!(out.hidden_states.len(), 3);
    for (l, h) in out.hidden_states.iter().enumerate() {
        close(
            &format!("hidden_states.{l}"),
            &h.value().to_vec(),
            &io.v(&format!("BertModel.hidden_states.{l}")),
            1e-5,
        );
    }
    assert_eq!(out.attentions.len(), 2);
    for (l, a) in out.attentions.iter().enumerate() {
        close(
            &format!("attentions.{l}"),
            &a.to_vec(),
            &io.v(&format!("BertModel.attentions.{l}")),
            1e-5,
        );
    }
}

#[test]
fn padded_batch_gives_each_sequence_what_it_gives_alone() {
    let io = Io::open();
    let m = load("BertModel");
    let _g = engine::no_grad();
    let x = io.input();
    let batch = m.forward(&x, eval()).unwrap().last_hidden.value().to_vec();
    let h = m.config.hidden_size;
    for i in 0..x.batch {
        let n = x.attention_mask[i * x.seq..(i + 1) * x.seq]
            .iter()
            .filter(|&&v| v == 1.0)
            .count();
        let alone = BertInput {
            batch: 1,
            seq: n,
            input_ids: x.input_ids[i * x.seq..i * x.seq + n].to_vec(),
            token_type_ids: x.token_type_ids[i * x.seq..i * x.seq + n].to_vec(),
            attention_mask: vec![1.0; n],
        };
        let ours_alone = m
            .forward(&alone, eval())
            .unwrap()
            .last_hidden
            .value()
            .to_vec();
        let rows = &batch[i * x.seq * h..(i * x.seq + n) * h];
        close(
            &format!("sequence {i}: padded vs alone"),
            rows,
            &ours_alone,
            1e-6,
        );
        close(
            &format!("sequence {i}: alone vs transformers"),
            &ours_alone,
            &io.v(&format!("BertModel.alone.{i}")),
            1e-5,
        );
    }
}

#[test]
fn pretraining_logits_loss_and_every_gradient() {
    let io = Io::open();
    let m = load("BertForPreTraining");
    let x = io.input();
    let labels = io.ids("mlm_labels");
    let nsp = io.ids("nsp_labels");
    let out = m.pretraining(&x, &labels, Some(&nsp), eval()).unwrap();
    // HF computes logits everywhere; compare ours (masked rows only) with those rows.
    let full = io.v("BertForPreTraining.prediction_logits");
    let v = m.config.vocab_size;
    let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != -100).collect();
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&r| full[r * v..(r + 1) * v].to_vec())
        .collect();
    close(
        "prediction_logits (masked rows)",
        &out.mlm_logits.value().to_vec(),
        &want,
        1e-5,
    );
    close(
        "seq_relationship_logits",
        &out.nsp_logits.value().to_vec(),
        &io.v("BertForPreTraining.seq_relationship_logits"),
        1e-5,
    );
    close(
        "loss",
        &[out.loss.item()],
        &io.v("BertForPreTraining.loss"),
        1e-5,
    );
    out.loss.backward().unwrap();
    let mut checked = 0;
    for (name, p) in m.params.iter() {
        let reference = io.v(&format!("BertForPreTraining.grad.{name}"));
        let g = p.grad().unwrap().to_vec();
        close(&format!("grad {name}"), &g, &reference, 1e-5);
        checked += 1;
    }
    assert_eq!(checked, m.params.len());
    // The tied decoder: the word embeddings' gradient includes the decoder's (checked above,
    // since HF's grad of bert.embeddings.word_embeddings.weight sums both uses).
    assert!(m
        .params
        .get("bert.embeddings.word_embeddings.weight")
        .is_some());
}

#[test]
fn masked_lm_and_next_sentence_heads() {
    let io = Io::open();
    let _g = engine::no_grad();
    let x = io.input();
    let labels = io.ids("mlm_labels");
    let m = load("BertForMaskedLM");
    assert!(!m.encoder.has_pooler());
    let out = m.forward(&x, eval()).unwrap();
    let logits = m.mlm_logits(&out, None).unwrap();
    close(
        "masked_lm logits",
        &logits.value().to_vec(),
        &io.v("BertForMaskedLM.logits"),
        1e-5,
    );
    let loss = logits.cross_entropy(&labels, -100).unwrap();
    close(
        "masked_lm loss",
        &[loss.item()],
        &io.v("BertForMaskedLM.loss"),
        1e-5,
    );

    let m = load("BertForNextSentencePrediction");
    let out = m.forward(&x, eval()).unwrap();
    let logits = m.nsp_logits(&out).unwrap();
    close(
        "nsp logits",
        &logits.value().to_vec(),
        &io.v("BertForNextSentencePrediction.logits"),
        1e-5,
    );
    let loss = logits.cross_entropy(&io.ids("nsp_labels"), -100).unwrap();
    close(
        "nsp loss",
        &[loss.item()],
        &io.v("BertForNextSentencePrediction.loss"),
        1e-5,
    );
}

#[test]
fn sequence_classification_with_each_problem_type() {
    let io = Io::open();
    let _g = engine::no_grad();
    let m = load("BertForSequenceClassification");
    assert_eq!(m.config.num_labels, 3);
    let out = m.forward(&io.input(), eval()).unwrap();
    let logits = m.classify(&out).unwrap();
    close(
        "seq logits",
        &logits.value().to_vec(),
        &io.v("BertForSequenceClassification.logits"),
        1e-5,
    );
    let cases = [
        (
            "single_label_classification",
            SeqLabels::Classes(io.ids("seq_single")),
        ),
        (
            "multi_label_classification",
            SeqLabels::MultiLabel(io.t("seq_multi")),
        ),
        ("regression", SeqLabels::Values(io.v("seq_reg"))),
    ];
    for (problem, labels) in cases {
        let loss = m.sequence_classification_loss(&logits, &labels).unwrap();
        close(
            &format!("seq loss {problem}"),
            &[loss.item()],
            &io.v(&format!("BertForSequenceClassification.{problem}.loss")),
            1e-5,
        );
    }
}

#[test]
fn token_classification_and_question_answering() {
    let io = Io::open();
    let _g = engine::no_grad();
    let x = io.input();
    let m = load("BertForTokenClassification");
    let out = m.forward(&x, eval()).unwrap();
    let logits = m.token_logits(&out).unwrap();
    assert_eq!(logits.shape(), vec![x.batch, x.seq, 5]);
    close(
        "token logits",
        &logits.value().to_vec(),
        &io.v("BertForTokenClassification.logits"),
        1e-5,
    );
    let loss = m
        .token_classification_loss(&logits, &io.ids("token_labels"))
        .unwrap();
    close(
        "token loss",
        &[loss.item()],
        &io.v("BertForTokenClassification.loss"),
        1e-5,
    );

    let m = load("BertForQuestionAnswering");
    let out = m.forward(&x, eval()).unwrap();
    let (s, e) = m.qa_logits(&out).unwrap();
    close(
        "qa start",
        &s.value().to_vec(),
        &io.v("BertForQuestionAnswering.start_logits"),
        1e-5,
    );
    close(
        "qa end",
        &e.value().to_vec(),
        &io.v("BertForQuestionAnswering.end_logits"),
        1e-5,
    );
    let loss = m
        .qa_loss(&s, &e, &io.ids("qa_start"), &io.ids("qa_end"))
        .unwrap();
    close(
        "qa loss (one position clamped and ignored)",
        &[loss.item()],
        &io.v("BertForQuestionAnswering.loss"),
        1e-5,
    );
}

#[test]
fn dropout_only_in_training_and_reproducible() {
    let io = Io::open();
    let m = load("BertForSequenceClassification");
    let x = io.input();
    let run = |seed: Option<u64>| {
        let out = m
            .forward(
                &x,
                Forward {
                    dropout_seed: seed,
                    ..eval()
                },
            )
            .unwrap();
        m.classify(&out).unwrap().value().to_vec()
    };
    let e1 = run(None);
    assert_eq!(e1, run(None));
    let t1 = run(Some(5));
    assert_eq!(t1, run(Some(5)), "same seed, same masks");
    assert_ne!(t1, e1, "dropout changes training outputs");
    assert_ne!(t1, run(Some(6)));
    let _ = Var::constant(Tensor::scalar(0.0));
}

#[test]
fn saved_checkpoints_reload_identically_and_load_across_classes() {
    let io = Io::open();
    let m = load("BertForPreTraining");
    let dir = std::env::temp_dir().join(format!("bert-save-{}", std::process::id()));
    m.save_dir(&dir).unwrap();
    let back = ModelDir::load(&dir, &LoadOptions::default()).unwrap().model;
    assert_eq!(back.task, Task::PreTraining);
    for (name, p) in m.params.iter() {
        assert_eq!(
            p.value().to_vec(),
            back.params.get(name).unwrap().value().to_vec(),
            "{name}"
        );
    }
    // The pretraining checkpoint as a bare encoder (heads dropped, as HF warns) ...
    let base = ModelDir::load(
        &dir,
        &LoadOptions {
            task: Some(Task::Base),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(base.report.dropped.len(), 7);
    // ... and as a classifier: the head is missing, an error unless initialisation is asked for.
    let as_cls = LoadOptions {
        task: Some(Task::SequenceClassification),
        ..Default::default()
    };
    let e = ModelDir::load(&dir, &as_cls).err().unwrap().to_string();
    assert!(e.contains("missing tensor 'classifier.bias'"), "{e}");
    let cls = ModelDir::load(
        &dir,
        &LoadOptions {
            init_missing_head: Some(1),
            ..as_cls
        },
    )
    .unwrap();
    assert_eq!(
        cls.report.initialised,
        vec!["classifier.bias", "classifier.weight"]
    );
    let _g = engine::no_grad();
    let x = io.input();
    let a = m.forward(&x, eval()).unwrap().last_hidden.value().to_vec();
    let b = cls
        .model
        .forward(&x, eval())
        .unwrap()
        .last_hidden
        .value()
        .to_vec();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inference_fast_path_equals_the_recorded_path() {
    // Under no_grad the layers run prepacked, fused kernels; recording, the tape's ops.
    let io = Io::open();
    let m = load("BertModel");
    let x = io.input();
    let taped = m.forward(&x, eval()).unwrap().last_hidden.value().to_vec();
    let fast = {
        let _g = engine::no_grad();
        m.forward(&x, eval()).unwrap().last_hidden.value().to_vec()
    };
    close("fast path vs taped path", &fast, &taped, 1e-6);
}
