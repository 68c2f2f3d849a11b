//! Fine-tuning end to end on a small synthetic task whose label is a word of the text: a
//! randomly initialised 2-layer classifier must learn it, and the run must leave its metrics,
//! its plot and a model directory that loads back and predicts the same labels.

use bert::finetune::{finetune, predict, Dataset, Example, FinetuneConfig};
use bert::{Bert, BertConfig, LoadOptions, ModelDir, Task};

const COLORS: [&str; 3] = ["red", "blue", "green"];
const ANIMALS: [&str; 4] = ["cat", "dog", "bird", "fish"];
const VERBS: [&str; 4] = ["runs", "sits", "sleeps", "eats"];

/// "the <animal> <verb> near the <color> house": the label is the color's index.
fn examples(n: usize, offset: usize) -> Vec<Example> {
    (offset..offset + n)
        .map(|i| {
            let c = (i * 7 + i / 3) % COLORS.len();
            Example {
                a: format!(
                    "the {} {} near the {} house",
                    ANIMALS[i % 4],
                    VERBS[(i / 4) % 4],
                    COLORS[c]
                ),
                b: None,
                label: c,
            }
        })
        .collect()
}

#[test]
fn finetune_learns_a_keyword_task_and_saves_a_model_that_predicts_the_same() {
    let dir = std::env::temp_dir().join(format!("finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut vocab: Vec<&str> = vec![
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "near", "house",
    ];
    vocab.extend(COLORS.iter().chain(&ANIMALS).chain(&VERBS));
    let vpath = dir.join("vocab.txt");
    std::fs::write(&vpath, vocab.join("\n") + "\n").unwrap();
    let tok =
        tokenizer::BertTokenizer::from_vocab_file(&vpath.display().to_string(), false).unwrap();
    let data = Dataset {
        train: examples(96, 0),
        dev: examples(30, 1000),
        test: examples(30, 2000),
        labels: COLORS.iter().map(|s| s.to_string()).collect(),
    };
    let mut c = BertConfig::preset("bert-tiny", vocab.len()).unwrap();
    c.hidden_size = 32;
    c.num_attention_heads = 2;
    c.intermediate_size = 64;
    c.max_position_embeddings = 32;
    c.num_labels = COLORS.len();
    let model = Bert::init(&c, Task::SequenceClassification, 3).unwrap();
    let cfg = FinetuneConfig {
        steps: Some(150),
        batch: 16,
        lr: 3e-3,
        evals: 3,
        progress: false,
        ..Default::default()
    };
    let out = dir.join("run");
    let r = finetune(&model, &tok, &data, &cfg, &out).unwrap();
    assert_eq!(r.steps, 150);
    let test = r.test.unwrap();
    assert!(
        r.dev.accuracy >= 0.9,
        "dev accuracy {} {:?}",
        r.dev.accuracy,
        r.curve
    );
    assert!(test.accuracy >= 0.9, "test accuracy {}", test.accuracy);
    assert_eq!(r.curve.len(), 3, "{:?}", r.curve);

    // metrics.jsonl: one loss record per step and one dev record per evaluation.
    let recs = bert::report::read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(bert::report::metric_series(&recs, "loss").len(), 150);
    assert_eq!(bert::report::metric_series(&recs, "dev_accuracy").len(), 3);
    let svg = std::fs::read_to_string(out.join("finetune.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 3);

    // The saved model directory loads as one and predicts exactly what the trained model does.
    let md = ModelDir::load(&out.join("model"), &LoadOptions::default()).unwrap();
    assert_eq!(md.model.task, Task::SequenceClassification);
    let want = predict(&model, &tok, &data.test, 8).unwrap();
    let got = predict(&md.model, &tok, &data.test, 8).unwrap();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}
