//! `bert predict`: a fine-tuned model (`bert finetune`'s `OUT/model`, or any HF
//! `BertFor{Sequence,Token}Classification` / `BertForQuestionAnswering` folder) on lines of
//! input, one JSON object per line out, in input order:
//!
//! | model | an input line | its output |
//! |---|---|---|
//! | sequence classifier | `text` or `text_a<TAB>text_b` | `label`, `score` (softmax), `top_k` |
//! | regression | the same | `value` |
//! | token classifier | raw text | `tokens` (words as BERT's pre-tokenizer cuts them), `tags`, `offsets` (characters), `entities` (`type`, `start`, `end`, `text`: character spans, for IOB/BIOES tags) |
//! | question answering | `{"question": ..., "context": ...}` | `answer`, `start`, `end` (characters in the context; "" and -1 for no answer), `score`, `top_k` |
//!
//! The model's `finetune.json` (written by `bert finetune`) gives the sequence length, QA
//! windows and post-processing; without it the families' defaults hold.

use crate::device::Devices;
use crate::finetune::qa::{self, PostProcess, QaExample};
use crate::finetune::{logits_by_length, tokencls, Family, Feature, Target};
use crate::step::FtHead;
use crate::train::TrainDevice;
use crate::{Bert, BertError, Result, Task};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::Path;
use tokenizer::BertTokenizer;

/// The settings a fine-tuning run leaves beside its model (`finetune.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadSettings {
    pub max_len: usize,
    pub doc_stride: usize,
    pub version_2: bool,
    pub pp: PostProcess,
}

impl HeadSettings {
    pub fn to_json(&self, family: Family) -> Value {
        json!({
            "task": family.name(),
            "max_len": self.max_len,
            "doc_stride": self.doc_stride,
            "version_2": self.version_2,
            "n_best": self.pp.n_best,
            "max_answer_len": self.pp.max_answer_len,
            "null_threshold": self.pp.null_threshold,
        })
    }

    /// From `finetune.json` in `dir`, else the defaults for `family` and the model's positions.
    pub fn read(dir: &Path, family: Family, positions: usize) -> Result<Self> {
        let d = crate::finetune::FinetuneConfig::default();
        let mut s = HeadSettings {
            max_len: family.default_max_len().min(positions),
            doc_stride: d.doc_stride,
            version_2: false,
            pp: PostProcess::from(&d),
        };
        let p = dir.join("finetune.json");
        if !p.exists() {
            return Ok(s);
        }
        let text = std::fs::read_to_string(&p)
            .map_err(|e| BertError::Io(format!("{}: {e}", p.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| BertError::Input(format!("{}: {e}", p.display())))?;
        let n = |k: &str, d: usize| v.get(k).and_then(Value::as_u64).map_or(d, |x| x as usize);
        s.max_len = n("max_len", s.max_len).clamp(8, positions);
        s.doc_stride = n("doc_stride", s.doc_stride);
        s.version_2 = v.get("version_2").and_then(Value::as_bool).unwrap_or(false);
        s.pp.n_best = n("n_best", s.pp.n_best).max(1);
        s.pp.max_answer_len = n("max_answer_len", s.pp.max_answer_len).max(1);
        s.pp.null_threshold = v
            .get("null_threshold")
            .and_then(Value::as_f64)
            .map_or(s.pp.null_threshold, |x| x as f32);
        Ok(s)
    }
}

/// The fine-tuning head of a loaded model (an error for a model without one).
pub fn head_of(model: &Bert) -> Result<FtHead> {
    let c = &model.config;
    Ok(match model.task {
        Task::SequenceClassification
            if c.problem_type == Some(crate::ProblemType::Regression) || c.num_labels == 1 =>
        {
            FtHead::Regress
        }
        Task::SequenceClassification => FtHead::Classify(c.num_labels),
        Task::TokenClassification => FtHead::Tag(c.num_labels),
        Task::QuestionAnswering => FtHead::Span,
        t => {
            return Err(BertError::Input(format!(
                "{} has no fine-tuned head to predict with (sequence or token classification, question answering)",
                t.architecture()
            )))
        }
    })
}

/// A fine-tuned model ready to predict.
pub struct Predictor {
    pub model: Bert,
    pub tok: BertTokenizer,
    pub head: FtHead,
    pub settings: HeadSettings,
    pub labels: Vec<String>,
}

impl Predictor {
    /// The model folder `dir` (config, weights, tokenizer; `finetune.json` if present).
    pub fn load(dir: &Path) -> Result<Self> {
        let md = crate::ModelDir::load(dir, &crate::LoadOptions::default())?;
        let tok = md.tokenizer.ok_or_else(|| {
            BertError::Io(format!("{}: no tokenizer.json or vocab.txt", dir.display()))
        })?;
        let head = head_of(&md.model)?;
        let family = match head {
            FtHead::Classify(_) | FtHead::Regress => Family::SeqCls,
            FtHead::Tag(_) => Family::TokenCls,
            FtHead::Span => Family::Qa,
        };
        let c = &md.model.config;
        let labels = (0..c.num_labels)
            .map(|i| c.id2label.get(i).cloned().unwrap_or(format!("LABEL_{i}")))
            .collect();
        Ok(Predictor {
            settings: HeadSettings::read(dir, family, c.max_position_embeddings)?,
            tok,
            head,
            labels,
            model: md.model,
        })
    }

    /// Predictions for `lines` (see the module comment), one JSON value each; `first_line` is
    /// the first one's line number, for errors.
    pub fn predict(
        &self,
        lines: &[String],
        first_line: usize,
        top_k: usize,
        logits: &mut dyn FnMut(&FtBatch) -> Result<Vec<f32>>,
    ) -> Result<Vec<Value>> {
        let pad = self.tok.vocab.id("[PAD]").unwrap_or(0);
        let mut lf = |f: &[&Feature]| logits_by_length(f, 64, self.head, pad, false, &mut *logits);
        let s = &self.settings;
        match self.head {
            FtHead::Classify(_) | FtHead::Regress => {
                let mut tok = self.tok.clone();
                tok.padding = None;
                tok.truncation = Some(tokenizer::Truncation {
                    max_length: s.max_len,
                    strategy: tokenizer::TruncationStrategy::LongestFirst,
                    stride: 0,
                    left: false,
                });
                let feats: Vec<Feature> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let enc = match l.split_once('\t') {
                            Some((a, b)) => tok.encode_pair(a, b, true).map_err(|e| {
                                BertError::Input(format!("line {}: {e}", first_line + i))
                            })?,
                            None => tok.encode(l, true),
                        };
                        Ok(Feature {
                            ids: enc.ids,
                            types: enc.type_ids,
                            target: Target::Class(0),
                        })
                    })
                    .collect::<Result<_>>()?;
                let out = lf(&feats.iter().collect::<Vec<_>>())?;
                Ok(out
                    .iter()
                    .map(|lg| {
                        if self.head == FtHead::Regress {
                            return json!({"value": lg[0]});
                        }
                        let m = lg.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        let z: f32 = lg.iter().map(|&x| (x - m).exp()).sum();
                        let mut idx: Vec<usize> = (0..lg.len()).collect();
                        idx.sort_by(|&a, &b| lg[b].total_cmp(&lg[a]).then(a.cmp(&b)));
                        let top: Vec<Value> = idx
                            .iter()
                            .take(top_k.max(1))
                            .map(|&i| json!({"label": self.labels[i], "score": (lg[i] - m).exp() / z}))
                            .collect();
                        json!({"label": top[0]["label"], "score": top[0]["score"], "top_k": top})
                    })
                    .collect())
            }
            FtHead::Tag(_) => {
                let words: Vec<Vec<(String, usize, usize)>> =
                    lines.iter().map(|l| tokencls::split_words(l)).collect();
                let encs: Vec<(Vec<u32>, Vec<Option<usize>>)> = words
                    .iter()
                    .map(|w| {
                        let ws: Vec<&str> = w.iter().map(|x| x.0.as_str()).collect();
                        tokencls::encode_words(&self.tok, &ws, s.max_len)
                    })
                    .collect();
                let feats: Vec<Feature> = encs
                    .iter()
                    .map(|(ids, _)| Feature {
                        ids: ids.clone(),
                        types: vec![0; ids.len()],
                        target: Target::Tags(vec![]),
                    })
                    .collect();
                let out = lf(&feats.iter().collect::<Vec<_>>())?;
                let scheme = tokencls::is_entity_scheme(&self.labels);
                Ok(lines
                    .iter()
                    .zip(&words)
                    .zip(encs.iter().zip(&out))
                    .map(|((line, w), ((_, word_of), lg))| {
                        let t = tokencls::word_tags(word_of, lg, self.labels.len(), w.len());
                        let tags: Vec<Option<&str>> = t
                            .iter()
                            .map(|x| x.map(|i| self.labels[i].as_str()))
                            .collect();
                        let chars: Vec<char> = line.chars().collect();
                        let entities: Vec<Value> = if scheme {
                            let seq: Vec<&str> = tags.iter().map(|x| x.unwrap_or("O")).collect();
                            tokencls::get_entities(&seq)
                                .into_iter()
                                .map(|(ty, a, b)| {
                                    let (s, e) = (w[a].1, w[b].2);
                                    json!({"type": ty, "start": s, "end": e,
                                           "text": chars[s..e].iter().collect::<String>()})
                                })
                                .collect()
                        } else {
                            vec![]
                        };
                        json!({
                            "tokens": w.iter().map(|x| &x.0).collect::<Vec<_>>(),
                            "tags": tags,
                            "offsets": w.iter().map(|x| [x.1, x.2]).collect::<Vec<_>>(),
                            "entities": entities,
                        })
                    })
                    .collect())
            }
            FtHead::Span => {
                let examples: Vec<QaExample> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let bad = |why: &str| {
                            BertError::Input(format!("line {}: {why}", first_line + i))
                        };
                        let v: Value = serde_json::from_str(l)
                            .map_err(|e| bad(&format!("not JSON ({e})")))?;
                        let f = |k: &str| {
                            v.get(k)
                                .and_then(Value::as_str)
                                .map(str::to_string)
                                .ok_or_else(|| {
                                    bad(&format!(
                                        "no '{k}' string (a line is {{\"question\": ..., \"context\": ...}})"
                                    ))
                                })
                        };
                        Ok(QaExample {
                            id: format!("{}", first_line + i),
                            question: f("question")?,
                            context: f("context")?,
                            answers: vec![],
                        })
                    })
                    .collect::<Result<_>>()?;
                let mut tok = self.tok.clone();
                tok.padding = None;
                tok.truncation = Some(tokenizer::Truncation {
                    max_length: s.max_len,
                    strategy: tokenizer::TruncationStrategy::OnlySecond,
                    stride: s.doc_stride,
                    left: false,
                });
                let preds = qa::predict(&examples, &tok, s.version_2, &s.pp, &mut lf)?;
                Ok(preds
                    .iter()
                    .map(|p| {
                        let a = &p.answer;
                        let none = a.text.is_empty();
                        let top: Vec<Value> = p
                            .nbest
                            .iter()
                            .take(top_k.max(1))
                            .map(|c| json!({"answer": c.text, "start": c.start, "end": c.end, "score": c.probability}))
                            .collect();
                        json!({
                            "answer": a.text,
                            "start": if none { -1 } else { a.start as i64 },
                            "end": if none { -1 } else { a.end as i64 },
                            "score": a.probability,
                            "null_score_diff": p.null_score_diff,
                            "top_k": top,
                        })
                    })
                    .collect())
            }
        }
    }
}

use crate::step::FtBatch;

/// `bert predict`: the model folder `dir` on the lines of `input`, a JSON line each to `out`,
/// in windows of 256 lines (each window tokenized and batched by length). Returns the lines
/// read.
pub fn run(
    dir: &Path,
    device: TrainDevice,
    top_k: usize,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<usize> {
    let p = Predictor::load(dir)?;
    let devices = Devices::open(device)?;
    let mut logits = devices.head_logits(&p.model, p.head)?;
    let mut n = 0;
    let mut window = Vec::new();
    let mut lines = input.lines();
    loop {
        let line = lines
            .next()
            .transpose()
            .map_err(|e| BertError::Io(format!("stdin: {e}")))?;
        let done = line.is_none();
        if let Some(l) = line {
            window.push(l);
        }
        if window.len() == 256 || (done && !window.is_empty()) {
            let vals = p.predict(&window, n + 1, top_k, &mut *logits)?;
            for v in vals {
                writeln!(out, "{v}").map_err(|e| BertError::Io(format!("stdout: {e}")))?;
            }
            n += window.len();
            window.clear();
        }
        if done {
            break;
        }
    }
    out.flush()
        .map_err(|e| BertError::Io(format!("stdout: {e}")))?;
    Ok(n)
}
