//! Fine-tuning end to end, each family on a small synthetic task a randomly initialised
//! 2-layer BERT must learn in a few hundred steps: the run leaves its metrics, plot, summary and
//! a model folder whose predictions (`bert::predict`) equal what the run scored. Also: bad input
//! names its file and line, and an OUT is not replaced by a run that fails.

use bert::finetune::{
    finetune, load_dataset, qa, tokencls, Dataset, Example, Family, FinetuneConfig, TaskData,
};
use bert::{Bert, BertConfig};
use std::path::{Path, PathBuf};

const COLORS: [&str; 3] = ["red", "blue", "green"];
const ANIMALS: [&str; 4] = ["cat", "dog", "bird", "fish"];
const VERBS: [&str; 4] = ["runs", "sits", "sleeps", "eats"];
const FILLER: [&str; 6] = ["the", "near", "house", "is", "a", "what"];

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A word-level vocabulary of the synthetic tasks' words and a tokenizer over it.
fn tokenizer(dir: &Path) -> tokenizer::BertTokenizer {
    let mut vocab: Vec<&str> = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ":"];
    vocab.extend(COLORS.iter().chain(&ANIMALS).chain(&VERBS).chain(&FILLER));
    vocab.extend(["light", "dark", "color", "##s"]);
    let vpath = dir.join("vocab.txt");
    std::fs::write(&vpath, vocab.join("\n") + "\n").unwrap();
    tokenizer::BertTokenizer::from_vocab_file(&vpath.display().to_string(), false).unwrap()
}

/// A tiny model for `data`'s head, saved as a "pretrained" folder (random weights) so that
/// `bert::finetune::run` and `load_model` can start from it.
fn tiny_model(dir: &Path, tok: &tokenizer::BertTokenizer, data: &TaskData) -> (Bert, PathBuf) {
    let mut c = BertConfig::preset("bert-tiny", tok.vocab.len()).unwrap();
    c.hidden_size = 32;
    c.num_attention_heads = 2;
    c.intermediate_size = 64;
    c.max_position_embeddings = 64;
    let base = Bert::init(&c, bert::Task::PreTraining, 3).unwrap();
    let src = dir.join("init");
    base.save_dir(&src).unwrap();
    std::fs::copy(dir.join("vocab.txt"), src.join("vocab.txt")).unwrap();
    let (m, _) = bert::finetune::load_model(&src, data, false, 3).unwrap();
    (m, src)
}

fn cfg(steps: u64, lr: f32) -> FinetuneConfig {
    FinetuneConfig {
        steps: Some(steps),
        batch: 16,
        lr,
        evals: 3,
        progress: false,
        max_len: Some(48),
        ..Default::default()
    }
}

/// "the <animal> <verb> near the <color> house": the label is the color's index.
fn examples(n: usize, offset: usize) -> Vec<Example> {
    (offset..offset + n)
        .map(|i| {
            let c = (i * 7 + i / 3) % COLORS.len();
            Example::new(
                &format!(
                    "the {} {} near the {} house",
                    ANIMALS[i % 4],
                    VERBS[(i / 4) % 4],
                    COLORS[c]
                ),
                None,
                c,
            )
        })
        .collect()
}

/// Runs `bert::predict` on `lines` with the model folder `dir`.
fn predict(dir: &Path, lines: &[String]) -> Vec<serde_json::Value> {
    let input = lines.join("\n") + "\n";
    let mut out = Vec::new();
    let n = bert::predict::run(
        dir,
        bert::train::TrainDevice::Cpu,
        2,
        &mut input.as_bytes(),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, lines.len());
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sequence_classification_learns_and_its_model_predicts_what_it_scored() {
    let dir = tmp("seq");
    let tok = tokenizer(&dir);
    let data = TaskData::Seq(Dataset {
        train: examples(96, 0),
        dev: examples(30, 1000),
        test: examples(30, 2000),
        labels: COLORS.iter().map(|s| s.to_string()).collect(),
        regression: false,
    });
    let (model, _) = tiny_model(&dir, &tok, &data);
    let out = dir.join("run");
    let r = finetune(&model, &tok, &data, &cfg(150, 3e-3), &out).unwrap();
    assert_eq!(r.steps, 150);
    let test = r.test.clone().unwrap();
    assert!(r.dev.get("accuracy") >= 0.9, "{:?} {:?}", r.dev, r.curve);
    assert!(test.get("accuracy") >= 0.9, "{test:?}");
    assert_eq!(r.curve.len(), 3, "{:?}", r.curve);
    // metrics.jsonl: one loss record per step and one dev record per evaluation.
    let recs = bert::report::read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(bert::report::metric_series(&recs, "loss").len(), 150);
    assert_eq!(bert::report::metric_series(&recs, "dev_accuracy").len(), 3);
    let svg = std::fs::read_to_string(out.join("finetune.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 3);
    // The saved folder: HF's class and labels in its config; predictions score as the run did.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "blue");
    assert_eq!(config["label2id"]["green"], 2);
    let ex = examples(30, 2000);
    let preds = predict(
        &out.join("model"),
        &ex.iter().map(|e| e.a.clone()).collect::<Vec<_>>(),
    );
    let right = preds
        .iter()
        .zip(&ex)
        .filter(|(p, e)| p["label"] == COLORS[e.label])
        .count();
    assert_eq!(right as f64 / 30.0, test.get("accuracy"));
    assert_eq!(preds[0]["top_k"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn regression_learns_a_score_from_pairs() {
    let dir = tmp("reg");
    let tok = tokenizer(&dir);
    // The value: how many of the two sentences' colors agree, plus the first's color index / 2.
    let make = |n: usize, off: usize| -> Vec<Example> {
        (off..off + n)
            .map(|i| {
                let (a, b) = ((i * 5 + i / 7) % 3, (i * 3 + i / 5) % 3);
                Example {
                    a: format!("the {} cat", COLORS[a]),
                    b: Some(format!("a {} dog", COLORS[b])),
                    label: 0,
                    value: (a == b) as u8 as f32 * 2.0 + a as f32 * 0.5,
                }
            })
            .collect()
    };
    let data = TaskData::Seq(Dataset {
        train: make(128, 0),
        dev: make(40, 500),
        test: make(40, 900),
        labels: vec![],
        regression: true,
    });
    let (model, _) = tiny_model(&dir, &tok, &data);
    assert_eq!(model.config.num_labels, 1);
    let r = finetune(&model, &tok, &data, &cfg(300, 3e-3), &dir.join("run")).unwrap();
    let t = r.test.unwrap();
    assert!(t.get("pearson") > 0.9 && t.get("spearman") > 0.8, "{t:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["problem_type"], "regression");
    let p = predict(
        &dir.join("run/model"),
        &["the red cat\ta red dog".to_string()],
    );
    assert!(p[0]["value"].as_f64().unwrap() > 1.0, "{p:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sentences of animals, verbs and colors (a color may be "light blue"); tags B-/I-COLOR,
/// B-ANIMAL, O, written as a CoNLL file.
fn conll(dir: &Path, name: &str, n: usize, off: usize) -> PathBuf {
    let mut text = String::from("-DOCSTART- O\n\n");
    for i in off..off + n {
        let mut toks: Vec<(&str, &str)> = vec![("the", "O"), (ANIMALS[i % 4], "B-ANIMAL")];
        toks.push((VERBS[(i / 4) % 4], "O"));
        toks.push(("near", "O"));
        if i % 3 == 0 {
            toks.push(("light", "B-COLOR"));
            toks.push((COLORS[(i / 3) % 3], "I-COLOR"));
        } else {
            toks.push((COLORS[(i / 2) % 3], "B-COLOR"));
        }
        toks.push(("house", "O"));
        toks.push((".", "O"));
        for (w, t) in toks {
            text += &format!("{w}\t{t}\n");
        }
        text += "\n";
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn token_classification_learns_entities_and_predicts_character_spans() {
    let dir = tmp("tok");
    let tok = tokenizer(&dir);
    let (tr, dv, te) = (
        conll(&dir, "train.txt", 96, 0),
        conll(&dir, "dev.txt", 24, 300),
        conll(&dir, "test.txt", 24, 600),
    );
    let data = load_dataset(
        Family::TokenCls,
        None,
        (Some(&tr), Some(&dv), Some(&te)),
        &Default::default(),
        None,
    )
    .unwrap();
    let (model, _) = tiny_model(&dir, &tok, &data);
    let out = dir.join("run");
    let r = finetune(&model, &tok, &data, &cfg(200, 3e-3), &out).unwrap();
    let t = r.test.unwrap();
    assert!(t.get("f1") >= 0.9 && t.get("accuracy") >= 0.9, "{t:?}");
    assert_eq!(r.dev.primary, "f1");
    assert!(t.values["per_type"]["COLOR"]["support"] == 24, "{t:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    // Raw text: words as BERT's pre-tokenizer cuts them, character offsets into the line.
    let p = predict(
        &out.join("model"),
        &["The dog sleeps near  light green house.".into()],
    );
    assert_eq!(p[0]["tokens"][7], ".");
    assert_eq!(p[0]["tags"][1], "B-ANIMAL");
    let ents = p[0]["entities"].as_array().unwrap();
    assert!(
        ents.iter().any(|e| e["type"] == "COLOR"
            && e["start"] == 21
            && e["end"] == 32
            && e["text"] == "light green"),
        "{p:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// "the cat runs . the dog is blue . the bird eats ." and "what color is the dog ?": the answer
/// is the one color of the context; one context in four has none (no answer).
fn qa_examples(n: usize, off: usize) -> Vec<qa::QaExample> {
    (off..off + n)
        .map(|i| {
            let absent = i % 4 == 0;
            let at = (i / 4) % 3;
            let asked = ANIMALS[(i / 2) % 4];
            let color = COLORS[(i / 3) % 3];
            let mut context = String::new();
            let mut answers = vec![];
            for k in 0..3 {
                if k == at && !absent {
                    context += &format!("the {asked} is ");
                    answers.push((color.to_string(), context.chars().count()));
                    context += &format!("{color} . ");
                } else {
                    context +=
                        &format!("the {} {} . ", ANIMALS[(i + k + 1) % 4], VERBS[(i + k) % 4]);
                }
            }
            qa::QaExample {
                id: format!("q{i}"),
                question: format!("what color is the {asked} ?"),
                context: context.trim_end().to_string(),
                answers,
            }
        })
        .collect()
}

#[test]
fn question_answering_learns_spans_and_the_null_answer() {
    let dir = tmp("qa");
    let tok = tokenizer(&dir);
    // Through SQuAD v2.0 JSON files, as a user's data comes.
    let write = |name: &str, ex: &[qa::QaExample]| {
        let p = dir.join(name);
        std::fs::write(&p, qa::to_squad_json(ex, true).to_string()).unwrap();
        p
    };
    let (tr, dv, te) = (
        write("train.json", &qa_examples(160, 0)),
        write("dev.json", &qa_examples(40, 1000)),
        write("test.json", &qa_examples(40, 2000)),
    );
    let data = load_dataset(
        Family::Qa,
        None,
        (Some(&tr), Some(&dv), Some(&te)),
        &Default::default(),
        None,
    )
    .unwrap();
    let TaskData::Qa(d) = &data else { panic!() };
    assert!(d.version_2 && d.mismatched == [0, 0, 0]);
    assert_eq!(d.train, qa_examples(160, 0));
    let (model, _) = tiny_model(&dir, &tok, &data);
    let out = dir.join("run");
    let r = finetune(&model, &tok, &data, &cfg(400, 3e-3), &out).unwrap();
    let t = r.test.unwrap();
    if std::env::var("QA_DEBUG").is_ok() {
        eprintln!(
            "{}",
            std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()
        );
    }
    assert!(t.get("f1") >= 80.0 && t.get("NoAns_exact") >= 70.0, "{t:?}");
    let p = predict(
        &out.join("model"),
        &[
            r#"{"question": "what color is the fish ?", "context": "the cat runs . the fish is green . the dog eats ."}"#.into(),
            r#"{"question": "what color is the fish ?", "context": "the cat runs . the fish sits . the dog eats ."}"#.into(),
        ],
    );
    assert_eq!(p[0]["answer"], "green", "{p:?}");
    assert_eq!(
        (p[0]["start"].as_i64(), p[0]["end"].as_i64()),
        (Some(27), Some(32))
    );
    assert_eq!(
        (p[1]["answer"].as_str(), p[1]["start"].as_i64()),
        (Some(""), Some(-1)),
        "{p:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_name_file_and_line_and_a_failed_run_leaves_out_as_it_was() {
    let dir = tmp("bad");
    let tok = tokenizer(&dir);
    // A dev label the training file lacks.
    std::fs::write(dir.join("train.tsv"), "a red cat\tred\nthe dog\tblue\n").unwrap();
    std::fs::write(dir.join("dev.tsv"), "a cat\tred\nthe fish\tgreen\n").unwrap();
    let files = (
        Some(dir.join("train.tsv")),
        Some(dir.join("dev.tsv")),
        None::<PathBuf>,
    );
    let e = load_dataset(
        Family::SeqCls,
        None,
        (files.0.as_deref(), files.1.as_deref(), None),
        &Default::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("dev.tsv:2") && e.contains("'green'"), "{e}");
    // Malformed SQuAD JSON: the file and the entry.
    std::fs::write(
        dir.join("bad.json"),
        r#"{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "x", "question": "q?", "answers": [{"text": "abc", "answer_start": 2}]}]}]}]}"#,
    )
    .unwrap();
    let e = qa::read_squad(&dir.join("bad.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.json") && e.contains("data[0].paragraphs[0].qas[0].answers[0]"),
        "{e}"
    );
    std::fs::write(dir.join("bad.json"), "{\"data\": [\n{]").unwrap();
    let e = qa::read_squad(&dir.join("bad.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.json") && e.contains("line 2"), "{e}");
    // A CoNLL line without a tag.
    std::fs::write(dir.join("bad.conll"), "the O\ncat\n").unwrap();
    let mut tags = vec![];
    let e = tokencls::read_conll(&dir.join("bad.conll"), &mut tags, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.conll:2"), "{e}");

    // A run that succeeds, then one that diverges at its first step (targets of 1e30 make an
    // infinite loss) with --force: OUT keeps the first run's model and metrics.
    let ok = TaskData::Seq(Dataset {
        train: examples(32, 0),
        dev: examples(8, 100),
        test: vec![],
        labels: COLORS.iter().map(|s| s.to_string()).collect(),
        regression: false,
    });
    let (model, _) = tiny_model(&dir, &tok, &ok);
    let out = dir.join("run");
    finetune(&model, &tok, &ok, &cfg(5, 1e-3), &out).unwrap();
    let before = (
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        std::fs::read(out.join("metrics.jsonl")).unwrap(),
    );
    let e = finetune(&model, &tok, &ok, &cfg(5, 1e-3), &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    let huge = |mut v: Vec<Example>| {
        for e in &mut v {
            e.value = 1e30;
        }
        v
    };
    let bad = TaskData::Seq(Dataset {
        train: huge(examples(32, 0)),
        dev: huge(examples(8, 100)),
        test: vec![],
        labels: vec![],
        regression: true,
    });
    let (m2, _) = tiny_model(&dir, &tok, &bad);
    let c = FinetuneConfig {
        force: true,
        ..cfg(5, 1e-3)
    };
    let e = finetune(&m2, &tok, &bad, &c, &out).unwrap_err().to_string();
    assert!(e.contains("step 1"), "{e}");
    assert_eq!(
        std::fs::read(out.join("model/model.safetensors")).unwrap(),
        before.0
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), before.1);
    let _ = std::fs::remove_dir_all(&dir);
}
