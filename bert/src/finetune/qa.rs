//! Extractive question answering (HF `BertForQuestionAnswering`): SQuAD v1.1 and v2.0 JSON, or
//! a built-in question set made from WordNet; exact match and F1 as the official SQuAD scripts.
//!
//! Features as HF's `run_qa.py` makes them: `[CLS] question [SEP] context [SEP]`, the question's
//! leading spaces stripped, only the context truncated, in windows of `--max-len` tokens that
//! overlap by `--doc-stride`; each window's target is the answer's first and last token, or
//! `[CLS]` (position 0) when the answer is not wholly inside it or there is none (v2).
//! Predictions as `utils_qa.py`'s `postprocess_qa_predictions`: for every window, the
//! `--n-best` largest start and end logits, spans inside the context of at most
//! `--max-answer-len` tokens, scored by start + end logit; the best over the windows; for v2 the
//! null answer (the smallest `[CLS]` score over the windows) wins when it exceeds the best span
//! by more than `--null-threshold`.

use super::{Feature, FinetuneConfig, LogitsFn, Metrics, Target};
use crate::{BertError, Result};
use engine::rng::SplitMix64;
use serde_json::{json, Value};
use std::path::Path;
use tokenizer::{BertTokenizer, Encoding};

/// One question about a context, with its gold answers (none: unanswerable, SQuAD v2).
#[derive(Clone, Debug, PartialEq)]
pub struct QaExample {
    pub id: String,
    pub question: String,
    pub context: String,
    /// (text, start): the answer's text and its first character's index in the context (in
    /// characters, as SQuAD's `answer_start`).
    pub answers: Vec<(String, usize)>,
}

/// A question answering data set.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub train: Vec<QaExample>,
    pub dev: Vec<QaExample>,
    pub test: Vec<QaExample>,
    /// SQuAD v2.0: unanswerable questions exist, and the null answer is predicted.
    pub version_2: bool,
    /// Answers whose text is not the context's at `answer_start` (counted per split: train,
    /// dev, test); they are kept, with the given start, as HF's scripts keep them.
    pub mismatched: [usize; 3],
}

/// SQuAD files (v1.1, or v2.0 when a file says `"version": "v2.0"` or has `is_impossible`).
pub fn load_squad(train: &Path, dev: &Path, test: Option<&Path>) -> Result<Dataset> {
    let (tr, v2a, m0) = read_squad(train)?;
    let (dv, v2b, m1) = read_squad(dev)?;
    let (te, v2c, m2) = match test {
        Some(t) => read_squad(t)?,
        None => (vec![], false, 0),
    };
    Ok(Dataset {
        train: tr,
        dev: dv,
        test: te,
        version_2: v2a || v2b || v2c,
        mismatched: [m0, m1, m2],
    })
}

/// One SQuAD JSON file: its questions, whether it is v2.0, and how many answers do not match
/// the context at their offset. Errors name the file and the JSON path of the bad entry (a
/// syntax error: its line and column).
pub fn read_squad(path: &Path) -> Result<(Vec<QaExample>, bool, usize)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| BertError::Input(format!("{}: not JSON: {e}", path.display())))?;
    let bad = |at: &str, why: &str| BertError::Input(format!("{}: {at}: {why}", path.display()));
    let mut v2 = v
        .get("version")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with("v2") || s.starts_with('2'));
    let data = v.get("data").and_then(Value::as_array).ok_or_else(|| {
        bad(
            "data",
            "missing, or not a list (a SQuAD file is {\"data\": [...]})",
        )
    })?;
    let (mut out, mut mismatched) = (Vec::new(), 0);
    for (i, art) in data.iter().enumerate() {
        let paras = art
            .get("paragraphs")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(&format!("data[{i}]"), "no 'paragraphs' list"))?;
        for (j, p) in paras.iter().enumerate() {
            let at = format!("data[{i}].paragraphs[{j}]");
            let context = p
                .get("context")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&at, "no 'context' string"))?;
            let chars: Vec<char> = context.chars().collect();
            let qas = p
                .get("qas")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(&at, "no 'qas' list"))?;
            for (k, q) in qas.iter().enumerate() {
                let at = format!("{at}.qas[{k}]");
                let s = |key: &str| {
                    q.get(key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&at, &format!("no '{key}' string")))
                };
                let impossible = match q.get("is_impossible") {
                    None => false,
                    Some(Value::Bool(b)) => {
                        v2 = true;
                        *b
                    }
                    Some(_) => return Err(bad(&at, "'is_impossible' is not true or false")),
                };
                let mut answers = Vec::new();
                let list = q.get("answers").and_then(Value::as_array);
                for (a, ans) in list.into_iter().flatten().enumerate() {
                    let at = format!("{at}.answers[{a}]");
                    let t = ans
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(&at, "no 'text' string"))?;
                    let st = ans
                        .get("answer_start")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| bad(&at, "no 'answer_start' count"))?
                        as usize;
                    let n = t.chars().count();
                    if st + n > chars.len() {
                        return Err(bad(
                            &at,
                            &format!(
                                "answer_start {st} + {n} characters is past the context's {}",
                                chars.len()
                            ),
                        ));
                    }
                    if chars[st..st + n].iter().collect::<String>() != t {
                        mismatched += 1;
                    }
                    answers.push((t.to_string(), st));
                }
                if answers.is_empty() && !impossible && list.is_none() {
                    return Err(bad(&at, "no 'answers' list"));
                }
                if impossible {
                    answers.clear();
                }
                out.push(QaExample {
                    id: s("id")?.to_string(),
                    question: s("question")?.to_string(),
                    context: context.to_string(),
                    answers,
                });
            }
        }
    }
    Ok((out, v2, mismatched))
}

/// Examples as a SQuAD JSON document (v2.0 with `is_impossible` when `version_2`), one
/// paragraph per example.
pub fn to_squad_json(examples: &[QaExample], version_2: bool) -> Value {
    let paras: Vec<Value> = examples
        .iter()
        .map(|e| {
            let mut q = json!({
                "id": e.id,
                "question": e.question,
                "answers": e.answers.iter().map(|(t, s)| json!({"text": t, "answer_start": s})).collect::<Vec<_>>(),
            });
            if version_2 {
                q["is_impossible"] = json!(e.answers.is_empty());
            }
            json!({"context": e.context, "qas": [q]})
        })
        .collect();
    json!({
        "version": if version_2 { "v2.0" } else { "1.1" },
        "data": [{"title": "examples", "paragraphs": paras}],
    })
}

/// One window of an example: its feature, the example's index and, per token, its character
/// span in the context (None outside the context).
#[derive(Clone, Debug)]
pub struct Window {
    pub feature: Feature,
    pub example: usize,
    pub offsets: Vec<Option<(usize, usize)>>,
}

/// The windows of one question (the tokenizer's truncation: only-second, with the stride).
fn windows_of(tok: &BertTokenizer, e: &QaExample) -> Result<Vec<Encoding>> {
    let mut enc = tok
        .encode_pair(e.question.trim_start(), &e.context, true)
        .map_err(|err| BertError::Input(format!("question '{}': {err}", e.id)))?;
    let mut all = std::mem::take(&mut enc.overflowing);
    all.insert(0, enc);
    Ok(all)
}

/// The windows of `examples` with their targets (HF's `prepare_train_features`).
pub fn windows(examples: &[QaExample], tok: &BertTokenizer) -> Result<Vec<Window>> {
    let mut out = Vec::new();
    for (ei, e) in examples.iter().enumerate() {
        for enc in windows_of(tok, e)? {
            let offsets: Vec<Option<(usize, usize)>> = enc
                .sequence_ids
                .iter()
                .zip(&enc.char_offsets)
                .map(|(s, &o)| (*s == Some(1)).then_some(o))
                .collect();
            let target = span_target(&offsets, e.answers.first());
            out.push(Window {
                feature: Feature {
                    ids: enc.ids,
                    types: enc.type_ids,
                    target,
                },
                example: ei,
                offsets,
            });
        }
    }
    Ok(out)
}

/// A window's target: the first and last token of the answer when the window holds all of
/// it, else (0, 0) (`[CLS]`), as `prepare_train_features`.
fn span_target(offsets: &[Option<(usize, usize)>], answer: Option<&(String, usize)>) -> Target {
    let Some((text, start)) = answer else {
        return Target::Span(0, 0);
    };
    let (sc, ec) = (*start, start + text.chars().count());
    let ctx: Vec<usize> = (0..offsets.len())
        .filter(|&i| offsets[i].is_some())
        .collect();
    let (Some(&first), Some(&last)) = (ctx.first(), ctx.last()) else {
        return Target::Span(0, 0);
    };
    let o = |i: usize| offsets[i].expect("a context token");
    if !(o(first).0 <= sc && o(last).1 >= ec) {
        return Target::Span(0, 0);
    }
    let mut s = first;
    while s <= last && o(s).0 <= sc {
        s += 1;
    }
    let mut e = last;
    while e >= first && o(e).1 >= ec {
        if e == 0 {
            break;
        }
        e -= 1;
    }
    Target::Span(s - 1, e + 1)
}

/// The training features of `examples`.
pub fn train_features(examples: &[QaExample], tok: &BertTokenizer) -> Result<Vec<Feature>> {
    Ok(windows(examples, tok)?
        .into_iter()
        .map(|w| w.feature)
        .collect())
}

/// The post-processing's settings (`utils_qa.py`'s arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PostProcess {
    pub n_best: usize,
    pub max_answer_len: usize,
    pub null_threshold: f32,
}

impl From<&FinetuneConfig> for PostProcess {
    fn from(c: &FinetuneConfig) -> Self {
        PostProcess {
            n_best: c.n_best,
            max_answer_len: c.max_answer_len,
            null_threshold: c.null_threshold,
        }
    }
}

/// A candidate answer: its character span in the context (empty: no answer), text and logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub start_logit: f32,
    pub end_logit: f32,
    pub score: f32,
    /// Softmax of the scores over the n-best list.
    pub probability: f32,
}

/// An example's prediction: the answer ("" for none), the n-best list, and for v2 the null
/// score minus the best span's (the null answer wins above the threshold).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub answer: Candidate,
    pub nbest: Vec<Candidate>,
    pub null_score_diff: Option<f32>,
}

/// One window's start logits, end logits and its tokens' character spans in the context.
pub type WindowLogits<'a> = (&'a [f32], &'a [f32], &'a [Option<(usize, usize)>]);

/// `postprocess_qa_predictions` for one example: `windows` holds, per window, its start and
/// end logits and its tokens' character spans in the context.
pub fn postprocess(
    context: &str,
    windows: &[WindowLogits<'_>],
    version_2: bool,
    pp: &PostProcess,
) -> Prediction {
    let mut prelim: Vec<Candidate> = Vec::new();
    let mut null: Option<Candidate> = None;
    let cand = |s: usize, e: usize, sl: f32, el: f32| Candidate {
        text: String::new(),
        start: s,
        end: e,
        start_logit: sl,
        end_logit: el,
        score: sl + el,
        probability: 0.0,
    };
    for &(st, en, offsets) in windows {
        let null_score = st[0] + en[0];
        if null.as_ref().is_none_or(|n| n.score > null_score) {
            null = Some(cand(0, 0, st[0], en[0]));
        }
        let top = |v: &[f32]| {
            // np.argsort(v)[-1 : -n - 1 : -1]: the largest first; of equal values the later one.
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(b.cmp(&a)));
            idx.truncate(pp.n_best);
            idx
        };
        let (ts, te) = (top(st), top(en));
        for &s in &ts {
            for &e in &te {
                let (Some(Some(os)), Some(Some(oe))) = (offsets.get(s), offsets.get(e)) else {
                    continue;
                };
                if e < s || e - s + 1 > pp.max_answer_len {
                    continue;
                }
                prelim.push(cand(os.0, oe.1, st[s], en[e]));
            }
        }
    }
    let null_score = null.as_ref().map(|n| n.score);
    if version_2 {
        if let Some(n) = &null {
            prelim.push(n.clone());
        }
    }
    // sorted(..., key=score, reverse=True): stable, so equal scores keep their order.
    prelim.sort_by(|a, b| b.score.total_cmp(&a.score));
    prelim.truncate(pp.n_best);
    if version_2 {
        if let Some(n) = &null {
            if !prelim.iter().any(|p| (p.start, p.end) == (0, 0)) {
                prelim.push(n.clone());
            }
        }
    }
    let chars: Vec<char> = context.chars().collect();
    for p in &mut prelim {
        p.text = chars[p.start.min(chars.len())..p.end.min(chars.len())]
            .iter()
            .collect();
    }
    if prelim.is_empty() || (prelim.len() == 1 && prelim[0].text.is_empty()) {
        prelim.insert(
            0,
            Candidate {
                text: "empty".into(),
                ..cand(0, 0, 0.0, 0.0)
            },
        );
    }
    let m = prelim.iter().fold(f32::NEG_INFINITY, |m, p| m.max(p.score));
    let sum: f32 = prelim.iter().map(|p| (p.score - m).exp()).sum();
    for p in &mut prelim {
        p.probability = (p.score - m).exp() / sum;
    }
    if !version_2 {
        return Prediction {
            answer: prelim[0].clone(),
            nbest: prelim,
            null_score_diff: None,
        };
    }
    let best = prelim
        .iter()
        .find(|p| !p.text.is_empty())
        .cloned()
        .unwrap_or_else(|| prelim[0].clone());
    let diff = null_score.unwrap_or(0.0) - best.start_logit - best.end_logit;
    let answer = if diff > pp.null_threshold {
        Candidate {
            text: String::new(),
            ..null.clone().unwrap_or(best.clone())
        }
    } else {
        best
    };
    Prediction {
        answer,
        nbest: prelim,
        null_score_diff: Some(diff),
    }
}

/// Predictions for `examples` from the windows' logits (`logits` gives `(tokens x 2)` per
/// window: start, end interleaved).
pub fn predict(
    examples: &[QaExample],
    tok: &BertTokenizer,
    version_2: bool,
    pp: &PostProcess,
    logits: &mut LogitsFn<'_>,
) -> Result<Vec<Prediction>> {
    let wins = windows(examples, tok)?;
    let refs: Vec<&Feature> = wins.iter().map(|w| &w.feature).collect();
    let out = logits(&refs)?;
    let split: Vec<(Vec<f32>, Vec<f32>)> = out
        .iter()
        .map(|l| {
            (
                l.iter().step_by(2).copied().collect(),
                l.iter().skip(1).step_by(2).copied().collect(),
            )
        })
        .collect();
    let mut by_example: Vec<Vec<usize>> = vec![Vec::new(); examples.len()];
    for (i, w) in wins.iter().enumerate() {
        by_example[w.example].push(i);
    }
    Ok(examples
        .iter()
        .zip(&by_example)
        .map(|(e, ws)| {
            let w: Vec<WindowLogits<'_>> = ws
                .iter()
                .map(|&i| {
                    (
                        split[i].0.as_slice(),
                        split[i].1.as_slice(),
                        wins[i].offsets.as_slice(),
                    )
                })
                .collect();
            postprocess(&e.context, &w, version_2, pp)
        })
        .collect())
}

/// Exact match and F1 on `examples` (percentages, as the official scripts print them), and for
/// v2 the same over the answerable (`HasAns_`) and unanswerable (`NoAns_`) questions.
pub fn evaluate(
    examples: &[QaExample],
    tok: &BertTokenizer,
    version_2: bool,
    pp: &PostProcess,
    logits: &mut LogitsFn<'_>,
) -> Result<Metrics> {
    let preds = predict(examples, tok, version_2, pp, logits)?;
    let texts: Vec<&str> = preds.iter().map(|p| p.answer.text.as_str()).collect();
    let s = squad_scores(examples, &texts);
    let mut m = Metrics::new("f1");
    for (k, v) in s {
        if k.ends_with("total") {
            m.set(&k, v as u64);
        } else {
            m.set(&k, v);
        }
    }
    Ok(m)
}

/// The official SQuAD scores of `predictions` (one text per example): `exact` and `f1` (0-100)
/// and `total`; with unanswerable questions also `HasAns_*` and `NoAns_*` (evaluate-v2.0.py;
/// on v1.1 data it gives evaluate-v1.1.py's figures).
pub fn squad_scores(examples: &[QaExample], predictions: &[&str]) -> Vec<(String, f64)> {
    let (mut ex, mut f1) = (Vec::new(), Vec::new());
    for (e, p) in examples.iter().zip(predictions) {
        // Gold answers that normalise to nothing count as no answer.
        let mut gold: Vec<&str> = e
            .answers
            .iter()
            .map(|a| a.0.as_str())
            .filter(|a| !normalize_answer(a).is_empty())
            .collect();
        if gold.is_empty() {
            gold.push("");
        }
        ex.push(
            gold.iter()
                .map(|g| (normalize_answer(g) == normalize_answer(p)) as u8 as f64)
                .fold(0.0, f64::max),
        );
        f1.push(gold.iter().map(|g| f1_score(g, p)).fold(0.0, f64::max));
    }
    let mean = |v: &[f64], keep: &dyn Fn(usize) -> bool| {
        let sel: Vec<f64> = (0..v.len()).filter(|&i| keep(i)).map(|i| v[i]).collect();
        (
            100.0 * sel.iter().sum::<f64>() / sel.len().max(1) as f64,
            sel.len(),
        )
    };
    let all = |_: usize| true;
    let mut out = vec![
        ("exact".to_string(), mean(&ex, &all).0),
        ("f1".to_string(), mean(&f1, &all).0),
        ("total".to_string(), examples.len() as f64),
    ];
    let has = |i: usize| !examples[i].answers.is_empty();
    let no = |i: usize| examples[i].answers.is_empty();
    if examples.iter().any(|e| e.answers.is_empty()) {
        for (name, keep) in [("HasAns", &has as &dyn Fn(usize) -> bool), ("NoAns", &no)] {
            let (e, n) = mean(&ex, keep);
            if n == 0 {
                continue;
            }
            out.push((format!("{name}_exact"), e));
            out.push((format!("{name}_f1"), mean(&f1, keep).0));
            out.push((format!("{name}_total"), n as f64));
        }
    }
    out
}

/// SQuAD's answer normalisation: lower case, ASCII punctuation removed, the articles a, an and
/// the removed as whole words, whitespace collapsed.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `re.sub(r'\b(a|an|the)\b', ' ', text)`: runs of word characters that are an article.
    let mut out = String::with_capacity(no_punct.len());
    let chars: Vec<char> = no_punct.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        if word(chars[i]) {
            let mut j = i;
            while j < chars.len() && word(chars[j]) {
                j += 1;
            }
            let w: String = chars[i..j].iter().collect();
            if matches!(w.as_str(), "a" | "an" | "the") {
                out.push(' ');
            } else {
                out.push_str(&w);
            }
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Token F1 of a prediction against one gold answer (evaluate-v2.0.py's `compute_f1`: two
/// empty answers score 1, one empty 0).
pub fn f1_score(gold: &str, pred: &str) -> f64 {
    let g = normalize_answer(gold);
    let p = normalize_answer(pred);
    let gt: Vec<&str> = g.split_whitespace().collect();
    let pt: Vec<&str> = p.split_whitespace().collect();
    if gt.is_empty() || pt.is_empty() {
        return (gt == pt) as u8 as f64;
    }
    let mut counts = std::collections::HashMap::new();
    for t in &gt {
        *counts.entry(*t).or_insert(0i64) += 1;
    }
    let mut same = 0;
    for t in &pt {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let (prec, rec) = (same as f64 / pt.len() as f64, same as f64 / gt.len() as f64);
    2.0 * prec * rec / (prec + rec)
}

/// A WordNet entry: its first lemma (spaces for underscores) and its definition (the gloss
/// before any quoted example).
#[derive(Clone, Debug)]
struct Entry {
    key: u64,
    word: String,
    definition: String,
}

fn wordnet_entries(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for s in super::wordnet::synsets(dir)? {
        // The definition: before the first quoted example; no trailing ';'.
        let def = s.gloss.split("; \"").next().unwrap_or(&s.gloss);
        let def = def.trim().trim_end_matches(';').trim();
        // Adjective markers such as "(a)", "(p)".
        let word = s
            .word
            .split('(')
            .next()
            .unwrap_or(&s.word)
            .replace('_', " ");
        let nw = def.split_whitespace().count();
        if !(3..=20).contains(&nw) || def.contains('"') || word.len() < 2 {
            continue;
        }
        out.push(Entry {
            key: s.offset ^ ((s.pos as u64) << 40),
            word,
            definition: def.to_string(),
        });
    }
    Ok(out)
}

/// The built-in question set (SQuAD v2.0 in form), made from WordNet 3.0's glosses in `dir`:
/// each context lists four entries, `word: definition.`, in a random order; a question asks
/// for a listed word's definition ("What does X mean?", the answer the definition's span), or
/// for the word a listed definition defines ("Which word means D?", the answer the word), or,
/// one time in five, for the definition of a word that is not listed (no answer). The asked
/// entry's hash puts the question in train (80%), dev or test (10% each), the same everywhere;
/// dev and test hold at most 2,000 questions each.
pub fn wordnet_qa(dir: &Path) -> Result<Dataset> {
    let entries = wordnet_entries(dir)?;
    let mut splits: [Vec<usize>; 3] = [vec![], vec![], vec![]];
    for (i, e) in entries.iter().enumerate() {
        let h = SplitMix64::new(e.key ^ 0x0A5E_ED00).next_u64() % 10;
        splits[match h {
            0 => 2,
            1 => 1,
            _ => 0,
        }]
        .push(i);
    }
    let mut d = Dataset {
        version_2: true,
        ..Default::default()
    };
    for (si, pool) in splits.iter().enumerate() {
        let mut r = SplitMix64::new(0x9A_0000 + si as u64);
        let pick = |r: &mut SplitMix64| pool[(r.next_u64() % pool.len() as u64) as usize];
        let cap = if si == 0 { usize::MAX } else { 2000 };
        let mut out = Vec::new();
        for &asked in pool.iter().take(cap) {
            let a = &entries[asked];
            // Three other entries whose words differ from each other and from the asked one.
            let mut listed = vec![asked];
            while listed.len() < 4 {
                let c = pick(&mut r);
                if listed.iter().all(|&l| entries[l].word != entries[c].word) {
                    listed.push(c);
                }
            }
            let kind = r.next_u64() % 5;
            // Unanswerable: ask about a word that is not listed (the asked entry is replaced).
            if kind == 0 {
                let mut c = pick(&mut r);
                while listed.iter().any(|&l| entries[l].word == entries[c].word) {
                    c = pick(&mut r);
                }
                listed[0] = c;
            }
            for k in (1..listed.len()).rev() {
                listed.swap(k, (r.next_u64() % (k as u64 + 1)) as usize);
            }
            let mut context = String::new();
            let mut spans = Vec::new(); // (word start, definition start) in characters
            for &l in &listed {
                if !context.is_empty() {
                    context.push(' ');
                }
                let ws = context.chars().count();
                context.push_str(&entries[l].word);
                context.push_str(": ");
                let ds = context.chars().count();
                context.push_str(&entries[l].definition);
                context.push('.');
                spans.push((l, ws, ds));
            }
            let (question, answers) = match kind {
                0 => (format!("What does {} mean?", a.word), vec![]),
                1 | 2 => {
                    let &(_, _, ds) = spans.iter().find(|s| s.0 == asked).expect("listed");
                    (
                        format!("What does {} mean?", a.word),
                        vec![(a.definition.clone(), ds)],
                    )
                }
                _ => {
                    let &(_, ws, _) = spans.iter().find(|s| s.0 == asked).expect("listed");
                    (
                        format!("Which word means {}?", a.definition),
                        vec![(a.word.clone(), ws)],
                    )
                }
            };
            out.push(QaExample {
                id: format!("wnqa-{:x}", a.key),
                question,
                context,
                answers,
            });
        }
        match si {
            0 => d.train = out,
            1 => d.dev = out,
            _ => d.test = out,
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation_and_f1_as_the_official_script() {
        assert_eq!(normalize_answer("The  Cat, sat!"), "cat sat");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        assert_eq!(normalize_answer("theatre"), "theatre");
        assert_eq!(f1_score("the cat sat", "cat"), 2.0 * 1.0 * 0.5 / 1.5);
        assert_eq!(f1_score("", ""), 1.0);
        assert_eq!(f1_score("cat", ""), 0.0);
        let ex = |answers: Vec<(&str, usize)>| QaExample {
            id: "q".into(),
            question: "?".into(),
            context: "x".into(),
            answers: answers
                .into_iter()
                .map(|(t, s)| (t.to_string(), s))
                .collect(),
        };
        // The best over the gold answers; an unanswerable question with an empty prediction.
        let s = squad_scores(
            &[ex(vec![("Denver Broncos", 0), ("Broncos", 7)]), ex(vec![])],
            &["broncos", ""],
        );
        let get = |k: &str| s.iter().find(|x| x.0 == k).unwrap().1;
        assert_eq!(get("exact"), 100.0);
        assert_eq!(get("HasAns_total"), 1.0);
        assert_eq!(get("NoAns_exact"), 100.0);
    }

    #[test]
    fn span_targets_as_prepare_train_features() {
        // [CLS] q [SEP] c0 c1 c2 [SEP]: context tokens at chars (0,3) (4,7) (8,11).
        let off = vec![
            None,
            None,
            None,
            Some((0, 3)),
            Some((4, 7)),
            Some((8, 11)),
            None,
        ];
        let a = ("def ghi".to_string(), 4);
        assert_eq!(span_target(&off, Some(&a)), Target::Span(4, 5));
        // Outside the window, or no answer: [CLS].
        assert_eq!(
            span_target(&off, Some(&("zzz".to_string(), 20))),
            Target::Span(0, 0)
        );
        assert_eq!(span_target(&off, None), Target::Span(0, 0));
    }

    #[test]
    fn postprocessing_takes_the_best_valid_span_and_the_null_answer() {
        let ctx = "abc def ghi";
        let off = vec![None, Some((0, 3)), Some((4, 7)), Some((8, 11)), None];
        let st = [5.0, 1.0, 4.0, 0.0, 9.0];
        let en = [5.0, 0.0, 0.5, 3.0, 9.0];
        let pp = PostProcess {
            n_best: 20,
            max_answer_len: 30,
            null_threshold: 0.0,
        };
        // Token 4 is outside the context; the best span is tokens 2..3 (4 + 3 = 7).
        let p = postprocess(ctx, &[(&st, &en, &off)], false, &pp);
        assert_eq!(p.answer.text, "def ghi");
        // v2: the null score 10 beats 7 by 3 > 0: no answer; with a threshold of 5, the span.
        let p = postprocess(ctx, &[(&st, &en, &off)], true, &pp);
        assert_eq!((p.answer.text.as_str(), p.null_score_diff), ("", Some(3.0)));
        let p = postprocess(
            ctx,
            &[(&st, &en, &off)],
            true,
            &PostProcess {
                null_threshold: 5.0,
                ..pp
            },
        );
        assert_eq!(p.answer.text, "def ghi");
        // An answer longer than max_answer_len tokens is never taken.
        let p = postprocess(
            ctx,
            &[(&st, &en, &off)],
            false,
            &PostProcess {
                max_answer_len: 1,
                ..pp
            },
        );
        assert_eq!(p.answer.text, "def");
    }
}
