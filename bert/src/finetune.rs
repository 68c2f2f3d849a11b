//! Fine-tuning for sequence classification (HF `BertForSequenceClassification`): GLUE-style TSV
//! input (text, or text pair, then label) or the built-in WordNet supersense task, with accuracy
//! and macro-F1 on dev/test.
//!
//! The WordNet task: every synset of WordNet 3.0 (`data.noun/verb/adj/adv`) gives its gloss as the
//! text and its lexicographer file (`noun.animal`, `verb.motion`, ... 45 of them) as the label.
//! Synsets are split 80/10/10 into train/dev/test by a hash of (part of speech, offset), so the
//! split is the same everywhere.

use crate::config::{BertConfig, ProblemType};
use crate::heads::{Bert, SeqLabels, Task};
use crate::model::{BertInput, Forward};
use crate::{BertError, Result};
use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::rng::SplitMix64;
use std::io::Write;
use std::path::Path;

/// The 45 lexicographer files, by number (WordNet's lexnames).
pub const LEXNAMES: [&str; 45] = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
];

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub a: String,
    pub b: Option<String>,
    pub label: usize,
}

/// A classification dataset: splits and label names.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
    pub labels: Vec<String>,
}

/// The WordNet supersense task from a folder holding `data.noun`, `data.verb`, `data.adj`,
/// `data.adv` (scripts/fetch-corpus puts them in .cache/corpus/wordnet).
pub fn wordnet_supersense(dir: &Path) -> Result<Dataset> {
    let mut d = Dataset {
        train: vec![],
        dev: vec![],
        test: vec![],
        labels: LEXNAMES.iter().map(|s| s.to_string()).collect(),
    };
    for (pi, pos) in ["noun", "verb", "adj", "adv"].iter().enumerate() {
        let path = dir.join(format!("data.{pos}"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BertError::Io(format!(
                "{}: {e} (run scripts/fetch-corpus)",
                path.display()
            ))
        })?;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("  ") || line.is_empty() {
                continue; // the license header
            }
            let bad = || {
                BertError::Input(format!(
                    "{}:{}: not a WordNet data line",
                    path.display(),
                    n + 1
                ))
            };
            let mut f = line.split(' ');
            let offset: u64 = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let lex: usize = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let gloss = line.split_once(" | ").map(|x| x.1.trim()).ok_or_else(bad)?;
            if lex >= LEXNAMES.len() {
                return Err(bad());
            }
            let ex = Example {
                a: gloss.to_string(),
                b: None,
                label: lex,
            };
            let h = SplitMix64::new(offset ^ ((pi as u64) << 40) ^ 0x5EED).next_u64() % 10;
            match h {
                0 => d.test.push(ex),
                1 => d.dev.push(ex),
                _ => d.train.push(ex),
            }
        }
    }
    // The files come noun, verb, adj, adv: shuffle each split (seeded) so that any prefix of
    // dev or test, as evaluations during training use, has every part of speech.
    for (i, split) in [&mut d.train, &mut d.dev, &mut d.test]
        .into_iter()
        .enumerate()
    {
        let mut r = SplitMix64::new(0xD15C_0000 + i as u64);
        for k in (1..split.len()).rev() {
            split.swap(k, (r.next_u64() % (k as u64 + 1)) as usize);
        }
    }
    Ok(d)
}

/// GLUE-style TSV: `text<TAB>label` or `text_a<TAB>text_b<TAB>label`, an optional header
/// (a first line whose last field is `label`). Labels are mapped to ids in `labels`, new ones
/// appended (a training file).
pub fn read_tsv(path: &Path, labels: &mut Vec<String>) -> Result<Vec<Example>> {
    read_tsv_with(path, labels, true)
}

/// [`read_tsv`] for a dev or test file: a label the training file did not have is an error
/// naming it and its line (it would be a class the classifier never saw).
pub fn read_tsv_known(path: &Path, labels: &[String]) -> Result<Vec<Example>> {
    let mut l = labels.to_vec();
    read_tsv_with(path, &mut l, false)
}

fn read_tsv_with(path: &Path, labels: &mut Vec<String>, grow: bool) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if n == 0 && f.last().is_some_and(|l| l.trim() == "label") {
            continue;
        }
        let (a, b, l) = match f.as_slice() {
            [a, l] => (a.to_string(), None, l.trim()),
            [a, b, l] => (a.to_string(), Some(b.to_string()), l.trim()),
            _ => {
                return Err(BertError::Input(format!(
                    "{}:{}: expected text<TAB>label or text<TAB>text<TAB>label, found {} fields",
                    path.display(),
                    n + 1,
                    f.len()
                )))
            }
        };
        let label = match labels.iter().position(|x| x == l) {
            Some(i) => i,
            None if !grow => {
                return Err(BertError::Input(format!(
                    "{}:{}: label '{l}' is not among the training file's {} labels",
                    path.display(),
                    n + 1,
                    labels.len()
                )))
            }
            None => {
                labels.push(l.to_string());
                labels.len() - 1
            }
        };
        out.push(Example { a, b, label });
    }
    Ok(out)
}

/// Flags of `bert finetune`.
#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    pub steps: Option<u64>,
    pub minutes: Option<f64>,
    pub batch: usize,
    pub lr: f32,
    pub warmup: f64,
    pub max_len: usize,
    pub seed: u64,
    /// Dev evaluations during training (the curve), on at most `eval_max` examples each.
    pub evals: u64,
    pub eval_max: usize,
    /// The final dev and test scores use at most this many examples of each.
    pub final_max: usize,
    pub progress: bool,
    /// Replace an OUT that holds a fine-tuning run (else such an OUT is an error).
    pub force: bool,
}

impl FinetuneConfig {
    /// Every option in its range, the limit in the message.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(BertError::Input(why));
        crate::train::check_budget(self.steps, self.minutes, self.lr)?;
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return bad(format!("warmup {} must be >= 0", self.warmup));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if self.max_len < 8 {
            return bad(format!(
                "--max-len {} is below 8 (a pair needs [CLS] a [SEP] b [SEP] and some text)",
                self.max_len
            ));
        }
        Ok(())
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            steps: Some(1000),
            minutes: None,
            batch: 32,
            lr: 1e-4,
            warmup: 0.1,
            max_len: 64,
            seed: 7,
            evals: 10,
            eval_max: 2000,
            final_max: usize::MAX,
            progress: true,
            force: false,
        }
    }
}

/// Accuracy and macro-F1 (over the classes present in the gold labels).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub n: usize,
}

pub fn scores(gold: &[usize], pred: &[usize], classes: usize) -> Scores {
    let mut tp = vec![0usize; classes];
    let mut fp = vec![0usize; classes];
    let mut fneg = vec![0usize; classes];
    for (&g, &p) in gold.iter().zip(pred) {
        if g == p {
            tp[g] += 1;
        } else {
            fp[p] += 1;
            fneg[g] += 1;
        }
    }
    let present: Vec<usize> = (0..classes).filter(|&c| tp[c] + fneg[c] > 0).collect();
    let f1 = present
        .iter()
        .map(|&c| {
            let d = 2 * tp[c] + fp[c] + fneg[c];
            if d == 0 {
                0.0
            } else {
                2.0 * tp[c] as f64 / d as f64
            }
        })
        .sum::<f64>()
        / present.len().max(1) as f64;
    Scores {
        accuracy: tp.iter().sum::<usize>() as f64 / gold.len().max(1) as f64,
        macro_f1: f1,
        n: gold.len(),
    }
}

fn encode(tok: &tokenizer::BertTokenizer, ex: &[&Example], pad: u32) -> Result<BertInput> {
    let encs: Vec<tokenizer::Encoding> = ex
        .iter()
        .map(|e| encode_one(tok, e))
        .collect::<Result<_>>()?;
    BertInput::from_encodings(&encs, pad)
}

/// One example's tokens: a single text or a pair, with the special tokens.
fn encode_one(tok: &tokenizer::BertTokenizer, e: &Example) -> Result<tokenizer::Encoding> {
    match &e.b {
        Some(b) => tok
            .encode_pair(&e.a, b, true)
            .map_err(|err| BertError::Input(err.to_string())),
        None => Ok(tok.encode(&e.a, true)),
    }
}

/// Predicted labels for `ex` (no gradients).
pub fn predict(
    model: &Bert,
    tok: &tokenizer::BertTokenizer,
    ex: &[Example],
    batch: usize,
) -> Result<Vec<usize>> {
    let _g = engine::no_grad();
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let l = model.config.num_labels;
    // Tokenized once, then batched by token count ([`crate::batching`]); the predictions come
    // back in the examples' order.
    let encs: Vec<tokenizer::Encoding> = ex
        .iter()
        .map(|e| encode_one(tok, e))
        .collect::<Result<_>>()?;
    let logits = crate::batching::by_length(encs, batch, l, |group| {
        let x = BertInput::from_encodings(group, pad)?;
        Ok::<_, BertError>(
            model
                .classify(&model.forward(&x, Forward::default())?)?
                .value()
                .to_vec(),
        )
    })?;
    Ok(logits
        .chunks(l)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |b, (i, &v)| if v > row[b] { i } else { b })
        })
        .collect())
}

/// What a fine-tuning run reports.
#[derive(Clone, Debug)]
pub struct FinetuneReport {
    pub steps: u64,
    pub seconds: f64,
    pub dev: Scores,
    pub test: Option<Scores>,
    /// (step, dev accuracy) along the way.
    pub curve: Vec<(u64, f64)>,
}

/// Fine-tunes `model` (a sequence classifier with `labels.len()` labels) on `data`, writing
/// metrics to `out/metrics.jsonl` and the model to `out/model` (HF layout, with tokenizer files).
pub fn finetune(
    model: &Bert,
    tok: &tokenizer::BertTokenizer,
    data: &Dataset,
    cfg: &FinetuneConfig,
    out: &Path,
) -> Result<FinetuneReport> {
    if data.train.is_empty() || data.dev.is_empty() {
        return Err(BertError::Input(
            "fine-tuning needs training and dev examples".into(),
        ));
    }
    if model.task != Task::SequenceClassification || model.config.num_labels != data.labels.len() {
        return Err(BertError::Input(format!(
            "the model is a {} with {} labels; the data has {} labels",
            model.task.architecture(),
            model.config.num_labels,
            data.labels.len()
        )));
    }
    cfg.validate()?;
    let has_run = out.join("metrics.jsonl").exists() || out.join("model").exists();
    if has_run && !cfg.force {
        return Err(BertError::Input(format!(
            "{} holds a fine-tuning run (model/ or metrics.jsonl): pass --force to replace it",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| BertError::Io(format!("{}: {e}", out.display())))?;
    let mut metrics = std::fs::File::create(out.join("metrics.jsonl"))
        .map_err(|e| BertError::Io(format!("{}: {e}", out.display())))?;
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let mut tok = tok.clone();
    tok.padding = None;
    tok.truncation = Some(tokenizer::Truncation {
        // No longer than the model's position table.
        max_length: cfg.max_len.min(model.config.max_position_embeddings),
        strategy: tokenizer::TruncationStrategy::LongestFirst,
        stride: 0,
        left: false,
    });
    let dev_eval: Vec<Example> = data.dev.iter().take(cfg.eval_max).cloned().collect();
    let mut opt = AdamW::new(AdamWConfig::default());
    let t0 = std::time::Instant::now();
    let mut total = cfg.steps.filter(|_| cfg.minutes.is_none());
    let mut sched: Option<LrSchedule> = None;
    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch: Option<u64> = None;
    let mut curve = Vec::new();
    let mut step = 0u64;
    let bar = cfg.progress.then(|| {
        let b = indicatif::ProgressBar::new(total.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap(),
        );
        b
    });
    loop {
        if let Some(t) = total {
            if step >= t {
                break;
            }
            if sched.is_none() {
                sched = Some(LrSchedule::linear(
                    cfg.lr,
                    (cfg.warmup * t as f64) as u64,
                    t,
                ));
                if let Some(b) = &bar {
                    b.set_length(t);
                }
            }
        }
        step += 1;
        let lr = sched.as_ref().map_or(cfg.lr * 0.01, |s| s.lr(step));
        let start = (step - 1) as usize * cfg.batch;
        let ids: Vec<usize> = (start..start + cfg.batch)
            .map(|p| {
                let n = data.train.len();
                let epoch = (p / n) as u64;
                if order_epoch != Some(epoch) {
                    order_epoch = Some(epoch);
                    order = (0..n).collect();
                    let mut r =
                        SplitMix64::new(cfg.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    for i in (1..n).rev() {
                        order.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
                    }
                }
                order[p % n]
            })
            .collect();
        let ex: Vec<&Example> = ids.iter().map(|&i| &data.train[i]).collect();
        let x = encode(&tok, &ex, pad)?;
        let labels: Vec<i64> = ex.iter().map(|e| e.label as i64).collect();
        model.params.zero_grad();
        let o = model.forward(
            &x,
            Forward {
                dropout_seed: Some(cfg.seed.wrapping_mul(7919).wrapping_add(step)),
                ..Default::default()
            },
        )?;
        let loss = model
            .sequence_classification_loss(&model.classify(&o)?, &SeqLabels::Classes(labels))?;
        engine::optim::check_finite_loss(loss.item(), step)?;
        loss.backward()?;
        clip_grad_norm(&model.params, 1.0)?;
        opt.step(&model.params, lr)?;
        if total.is_none() && step >= 3 {
            let per = t0.elapsed().as_secs_f64() / step as f64;
            total = Some(((cfg.minutes.unwrap_or(1.0) * 60.0 / per) as u64).max(step + 1));
        }
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": step, "loss": loss.item(), "lr": lr})
        )
        .map_err(|e| BertError::Io(e.to_string()))?;
        if let Some(b) = &bar {
            b.set_position(step);
            b.set_message(format!("loss {:.3}", loss.item()));
        }
        let t = total.unwrap_or(u64::MAX);
        let every = (t / cfg.evals.max(1)).max(1);
        if step.is_multiple_of(every) || step == t {
            let pred = predict(model, &tok, &dev_eval, 64)?;
            let gold: Vec<usize> = dev_eval.iter().map(|e| e.label).collect();
            let s = scores(&gold, &pred, data.labels.len());
            curve.push((step, s.accuracy));
            writeln!(metrics, "{}", serde_json::json!({"step": step, "dev_accuracy": s.accuracy, "dev_macro_f1": s.macro_f1}))
                .map_err(|e| BertError::Io(e.to_string()))?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let eval = |ex: &[Example]| -> Result<Scores> {
        let pred = predict(model, &tok, ex, 64)?;
        let gold: Vec<usize> = ex.iter().map(|e| e.label).collect();
        Ok(scores(&gold, &pred, data.labels.len()))
    };
    let cap = |v: &[Example]| v[..v.len().min(cfg.final_max)].to_vec();
    let dev = eval(&cap(&data.dev))?;
    let test = if data.test.is_empty() {
        None
    } else {
        Some(eval(&cap(&data.test))?)
    };
    drop(metrics);
    crate::report::write_finetune_plot(&out.join("metrics.jsonl"), out)?;
    // The model folder as one set, switched in whole.
    let staged = crate::io::StagedDir::new(&out.join("model"))?;
    model.save_dir(staged.path())?;
    crate::io::write_atomic(
        &staged.path().join("tokenizer.json"),
        tokenizer::tokenizer_json(&tok).as_bytes(),
    )?;
    staged.commit()?;
    Ok(FinetuneReport {
        steps: step,
        seconds,
        dev,
        test,
        curve,
    })
}

/// A sequence classifier over a pretrained encoder in `dir` (the head freshly initialised), or,
/// with `scratch`, the same architecture from random initialisation.
pub fn classifier(
    dir: &Path,
    labels: &[String],
    scratch: bool,
    seed: u64,
) -> Result<(Bert, tokenizer::BertTokenizer)> {
    let mut config = BertConfig::from_file(&dir.join("config.json"))?;
    config.num_labels = labels.len();
    config.id2label = labels.to_vec();
    config.problem_type = Some(ProblemType::SingleLabel);
    config.architecture = Some(Task::SequenceClassification.architecture().to_string());
    let tj = dir.join("tokenizer.json");
    let tok = if tj.exists() {
        tokenizer::load_tokenizer_json(&tj.display().to_string())
            .map_err(|e| BertError::Io(e.to_string()))?
    } else {
        tokenizer::BertTokenizer::from_vocab_file(
            &dir.join("vocab.txt").display().to_string(),
            false,
        )
        .map_err(|e| BertError::Io(e.to_string()))?
    };
    let model = if scratch {
        Bert::init(&config, Task::SequenceClassification, seed)?
    } else {
        let st = crate::safetensors::SafeTensors::open(&dir.join("model.safetensors"))?;
        let (m, _) =
            Bert::from_safetensors(&st, &config, Task::SequenceClassification, Some(seed))?;
        // Owned copies, so the optimizer's updates never alias the mapped file.
        for (_, v) in m.params.iter() {
            v.set_value(engine::Tensor::from_vec(v.value().to_vec(), &v.shape())?)?;
        }
        m
    };
    Ok((model, tok))
}

/// The data `bert finetune` trains on: a built-in `task` (`wordnet-supersense`, read from the
/// WordNet folder `wordnet`), or `train` and `dev` (and optionally `test`) TSV files whose dev and
/// test labels must all occur in train.
pub fn load_dataset(
    task: Option<&str>,
    train: Option<&Path>,
    dev: Option<&Path>,
    test: Option<&Path>,
    wordnet: &Path,
) -> std::result::Result<Dataset, Box<dyn std::error::Error>> {
    Ok(match (task, train, dev) {
        (Some("wordnet-supersense"), _, _) => wordnet_supersense(wordnet)?,
        (Some(other), _, _) => {
            return Err(format!("unknown task '{other}' (known: wordnet-supersense)").into())
        }
        (None, Some(tr), Some(dv)) => {
            let mut labels = Vec::new();
            let train = read_tsv(tr, &mut labels)?;
            let dev = read_tsv_known(dv, &labels)?;
            let test = match test {
                Some(t) => read_tsv_known(t, &labels)?,
                None => vec![],
            };
            Dataset {
                train,
                dev,
                test,
                labels,
            }
        }
        _ => return Err("give --task wordnet-supersense, or --train and --dev TSV files".into()),
    })
}

/// `bert finetune`: a classifier over the encoder in `model` (or, with `scratch`, a freshly
/// initialised one of its architecture) fine-tuned on `data`; writes OUT/model,
/// OUT/metrics.jsonl and OUT/summary.json, reports on stderr.
pub fn run(
    model: &Path,
    data: &Dataset,
    out: &Path,
    cfg: &FinetuneConfig,
    scratch: bool,
) -> std::result::Result<FinetuneReport, Box<dyn std::error::Error>> {
    eprintln!(
        "bert finetune: {} labels; {} train, {} dev, {} test examples; {} from {}",
        data.labels.len(),
        data.train.len(),
        data.dev.len(),
        data.test.len(),
        if scratch {
            "random initialisation, architecture"
        } else {
            "encoder"
        },
        model.display()
    );
    let (m, tok) = classifier(model, &data.labels, scratch, cfg.seed)?;
    let r = finetune(&m, &tok, data, cfg, out)?;
    let test = r
        .test
        .map(|t| {
            format!(
                "; test accuracy {:.4}, macro-F1 {:.4} ({} examples)",
                t.accuracy, t.macro_f1, t.n
            )
        })
        .unwrap_or_default();
    eprintln!(
        "bert finetune: {} steps in {:.1} s; dev accuracy {:.4}, macro-F1 {:.4}{test} -> {}/model",
        r.steps,
        r.seconds,
        r.dev.accuracy,
        r.dev.macro_f1,
        out.display()
    );
    let summary = serde_json::json!({
        "steps": r.steps, "seconds": r.seconds, "scratch": scratch,
        "dev_accuracy": r.dev.accuracy, "dev_macro_f1": r.dev.macro_f1,
        "test_accuracy": r.test.map(|t| t.accuracy), "test_macro_f1": r.test.map(|t| t.macro_f1),
        "curve": r.curve,
    });
    crate::io::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_and_accuracy() {
        let s = scores(&[0, 0, 1, 2], &[0, 1, 1, 2], 4);
        assert!((s.accuracy - 0.75).abs() < 1e-12);
        // class 0: p=1 r=.5 f=2/3; class 1: p=.5 r=1 f=2/3; class 2: 1 -> mean 7/9.
        assert!((s.macro_f1 - 7.0 / 9.0).abs() < 1e-12, "{}", s.macro_f1);
    }

    #[test]
    fn wordnet_lines_give_gloss_and_lexicographer_file() {
        let dir = std::env::temp_dir().join(format!("wn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let noun = "  1 This software and database is being provided\n\
            00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to have its own distinct existence\n\
            01503061 05 n 01 bird 0 000 | warm-blooded egg-laying vertebrates\n";
        std::fs::write(dir.join("data.noun"), noun).unwrap();
        std::fs::write(
            dir.join("data.verb"),
            "01835496 38 v 01 travel 0 000 | change location; move\n",
        )
        .unwrap();
        std::fs::write(dir.join("data.adj"), "").unwrap();
        std::fs::write(dir.join("data.adv"), "").unwrap();
        let d = wordnet_supersense(&dir).unwrap();
        let mut all: Vec<Example> = d
            .train
            .iter()
            .chain(&d.dev)
            .chain(&d.test)
            .cloned()
            .collect();
        all.sort_by_key(|e| e.label);
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[0].label, d.labels[all[0].label].as_str()),
            (3, "noun.Tops")
        );
        assert_eq!(all[1].a, "warm-blooded egg-laying vertebrates");
        assert_eq!(d.labels[all[2].label], "verb.motion");
        std::fs::write(dir.join("data.adv"), "garbage line\n").unwrap();
        let e = wordnet_supersense(&dir).unwrap_err().to_string();
        assert!(e.contains("data.adv:1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tsv_with_header_pairs_and_errors() {
        let p = std::env::temp_dir().join(format!("ft-{}.tsv", std::process::id()));
        std::fs::write(
            &p,
            "sentence\tlabel\ngood movie\tpos\nbad one\tneg\nfine\tpos\n",
        )
        .unwrap();
        let mut labels = vec![];
        let ex = read_tsv(&p, &mut labels).unwrap();
        assert_eq!(labels, vec!["pos", "neg"]);
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[1].label, 1);
        std::fs::write(&p, "a\tb\tentailment\nc\n").unwrap();
        let e = read_tsv(&p, &mut labels).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
        std::fs::remove_file(p).unwrap();
    }
}
