//! Sequence classification and regression (HF `BertForSequenceClassification`): GLUE-style TSV
//! input (text, or text pair, then a label or, for regression as STS-B, a real value) or the
//! built-in WordNet supersense task; accuracy and macro-F1, or Pearson and Spearman
//! correlations (and the mean squared error) for regression.
//!
//! The WordNet task: every synset of WordNet 3.0 (`data.noun/verb/adj/adv`) gives its gloss as the
//! text and its lexicographer file (`noun.animal`, `verb.motion`, ... 45 of them) as the label.
//! Synsets are split 80/10/10 into train/dev/test by a hash of (part of speech, offset), so the
//! split is the same everywhere.

use super::{Feature, LogitsFn, Metrics, Target};
use crate::{BertError, Result};
use engine::rng::SplitMix64;
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

/// One labelled example: a text or a pair, its class (an index into the data set's labels) or,
/// for regression, its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub a: String,
    pub b: Option<String>,
    pub label: usize,
    /// The target of a regression data set (0 for classification).
    pub value: f32,
}

impl Example {
    /// A classification example.
    pub fn new(a: &str, b: Option<&str>, label: usize) -> Self {
        Example {
            a: a.to_string(),
            b: b.map(str::to_string),
            label,
            value: 0.0,
        }
    }
}

/// A sequence classification (or regression) data set: splits and label names.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
    /// Class names (empty for regression).
    pub labels: Vec<String>,
    /// Real-valued targets (`Example::value`): MSE loss, correlation metrics.
    pub regression: bool,
}

/// The WordNet supersense task from a folder holding `data.noun`, `data.verb`, `data.adj`,
/// `data.adv` (scripts/fetch-corpus puts them in .cache/corpus/wordnet).
pub fn wordnet_supersense(dir: &Path) -> Result<Dataset> {
    let mut d = Dataset {
        labels: LEXNAMES.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    for s in super::wordnet::synsets(dir)? {
        if s.lex >= LEXNAMES.len() {
            return Err(BertError::Input(format!(
                "{}: synset {} of part of speech {} has lexicographer file {}, not a supersense",
                dir.display(),
                s.offset,
                s.pos,
                s.lex
            )));
        }
        let ex = Example::new(&s.gloss, None, s.lex);
        let h = SplitMix64::new(s.offset ^ ((s.pos as u64) << 40) ^ 0x5EED).next_u64() % 10;
        match h {
            0 => d.test.push(ex),
            1 => d.dev.push(ex),
            _ => d.train.push(ex),
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
    tsv_rows(path)?
        .into_iter()
        .map(|(n, a, b, l)| {
            let label = match labels.iter().position(|x| *x == l) {
                Some(i) => i,
                None if !grow => {
                    return Err(BertError::Input(format!(
                        "{}:{n}: label '{l}' is not among the training file's {} labels",
                        path.display(),
                        labels.len()
                    )))
                }
                None => {
                    labels.push(l);
                    labels.len() - 1
                }
            };
            Ok(Example {
                a,
                b,
                label,
                value: 0.0,
            })
        })
        .collect()
}

/// A TSV row: (line number, text, optional second text, label).
type TsvRow = (usize, String, Option<String>, String);

/// The rows of a TSV, the header skipped.
fn tsv_rows(path: &Path) -> Result<Vec<TsvRow>> {
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
        out.push((n + 1, a, b, l.to_string()));
    }
    Ok(out)
}

/// A TSV data set (see [`read_tsv`]): classification, or regression when `regression` says so
/// or, left to the labels (None), when every training label is a number and one has a decimal
/// point (STS-B's `3.800`; SST-2's `0`/`1` stay classes).
pub fn load_tsv(
    train: &Path,
    dev: &Path,
    test: Option<&Path>,
    regression: Option<bool>,
) -> Result<Dataset> {
    let mut labels = Vec::new();
    let tr = read_tsv(train, &mut labels)?;
    let numeric = labels.iter().all(|l| l.parse::<f64>().is_ok());
    let regression = regression.unwrap_or(numeric && labels.iter().any(|l| l.contains('.')));
    if !regression {
        return Ok(Dataset {
            dev: read_tsv_known(dev, &labels)?,
            test: match test {
                Some(t) => read_tsv_known(t, &labels)?,
                None => vec![],
            },
            train: tr,
            labels,
            regression: false,
        });
    }
    Ok(Dataset {
        train: read_tsv_values(train)?,
        dev: read_tsv_values(dev)?,
        test: match test {
            Some(t) => read_tsv_values(t)?,
            None => vec![],
        },
        labels: vec![],
        regression: true,
    })
}

/// A regression TSV: the last field a finite number (the error names file and line).
pub fn read_tsv_values(path: &Path) -> Result<Vec<Example>> {
    tsv_rows(path)?
        .into_iter()
        .map(|(n, a, b, l)| {
            let value = l.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                BertError::Input(format!(
                    "{}:{n}: label '{l}' is not a number (a regression file's last field is its target)",
                    path.display()
                ))
            })?;
            Ok(Example {
                a,
                b,
                label: 0,
                value,
            })
        })
        .collect()
}

/// One example's tokens: a single text or a pair, with the special tokens (the tokenizer's
/// truncation applies).
pub fn encode_one(tok: &tokenizer::BertTokenizer, e: &Example) -> Result<tokenizer::Encoding> {
    match &e.b {
        Some(b) => tok
            .encode_pair(&e.a, b, true)
            .map_err(|err| BertError::Input(err.to_string())),
        None => Ok(tok.encode(&e.a, true)),
    }
}

/// The features of `ex`: their tokens and class or value.
pub fn features(
    d: &Dataset,
    ex: &[Example],
    tok: &tokenizer::BertTokenizer,
) -> Result<Vec<Feature>> {
    ex.iter()
        .map(|e| {
            let enc = encode_one(tok, e)?;
            Ok(Feature {
                ids: enc.ids,
                types: enc.type_ids,
                target: if d.regression {
                    Target::Value(e.value)
                } else {
                    Target::Class(e.label)
                },
            })
        })
        .collect()
}

/// Scores on `ex`: accuracy and macro-F1, or (regression) Pearson, Spearman and MSE.
pub fn evaluate(
    d: &Dataset,
    ex: &[Example],
    tok: &tokenizer::BertTokenizer,
    logits: &mut LogitsFn<'_>,
) -> Result<Metrics> {
    let feats = features(d, ex, tok)?;
    let refs: Vec<&Feature> = feats.iter().collect();
    let out = logits(&refs)?;
    if d.regression {
        let pred: Vec<f32> = out.iter().map(|l| l[0]).collect();
        let gold: Vec<f32> = ex.iter().map(|e| e.value).collect();
        let r = regression_scores(&gold, &pred);
        let mut m = Metrics::new("pearson");
        m.set("pearson", r.pearson);
        m.set("spearman", r.spearman);
        m.set("mse", r.mse);
        m.set("n", r.n);
        return Ok(m);
    }
    let pred: Vec<usize> = out.iter().map(|l| argmax(l)).collect();
    let gold: Vec<usize> = ex.iter().map(|e| e.label).collect();
    let s = scores(&gold, &pred, d.labels.len());
    let mut m = Metrics::new("accuracy");
    m.set("accuracy", s.accuracy);
    m.set("macro_f1", s.macro_f1);
    m.set("n", s.n);
    Ok(m)
}

/// The first index of the largest value (NaNs never win).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(
        0,
        |b, (i, &v)| if v > row[b] || row[b].is_nan() { i } else { b },
    )
}

/// Regression scores, as GLUE reports STS-B.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RegressionScores {
    pub pearson: f64,
    pub spearman: f64,
    pub mse: f64,
    pub n: usize,
}

/// Pearson's r, Spearman's rho (Pearson's r of the ranks, ties given their mean rank, as
/// scipy.stats.spearmanr) and the mean squared error of `pred` against `gold`.
pub fn regression_scores(gold: &[f32], pred: &[f32]) -> RegressionScores {
    let g: Vec<f64> = gold.iter().map(|&x| x as f64).collect();
    let p: Vec<f64> = pred.iter().map(|&x| x as f64).collect();
    let n = g.len();
    RegressionScores {
        pearson: pearson(&g, &p),
        spearman: pearson(&ranks(&g), &ranks(&p)),
        mse: g.iter().zip(&p).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n.max(1) as f64,
        n,
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

/// 1-based ranks, ties sharing their mean rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
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

    #[test]
    fn regression_scores_match_hand_computed_values() {
        // scipy: pearsonr([1,2,3,4],[1,3,2,4]) = 0.8, spearmanr(...) = 0.8.
        let r = regression_scores(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!(
            (r.pearson - 0.8).abs() < 1e-12 && (r.spearman - 0.8).abs() < 1e-12,
            "{r:?}"
        );
        assert!((r.mse - 0.5).abs() < 1e-12);
        // Ties take their mean rank: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4].
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), vec![1.0, 2.5, 2.5, 4.0]);
        let r = regression_scores(&[1.0, 2.0, 2.0, 3.0], &[0.1, 0.5, 0.4, 0.9]);
        // scipy.stats.spearmanr([1,2,2,3],[0.1,0.5,0.4,0.9]).statistic = 0.9486832980505138
        assert!((r.spearman - 0.9486832980505138).abs() < 1e-12, "{r:?}");
    }

    #[test]
    fn tsv_labels_decide_regression() {
        let dir = std::env::temp_dir().join(format!("sts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tr, dv) = (dir.join("train.tsv"), dir.join("dev.tsv"));
        std::fs::write(&tr, "a man\ta woman\t3.800\nx\ty\t0\n").unwrap();
        std::fs::write(&dv, "b\tc\t1.5\n").unwrap();
        let d = load_tsv(&tr, &dv, None, None).unwrap();
        assert!(d.regression && d.labels.is_empty());
        assert_eq!((d.train[0].value, d.dev[0].value), (3.8, 1.5));
        // 0/1 labels stay classes unless asked.
        std::fs::write(&tr, "good\t1\nbad\t0\n").unwrap();
        std::fs::write(&dv, "fine\t1\n").unwrap();
        assert!(!load_tsv(&tr, &dv, None, None).unwrap().regression);
        assert!(load_tsv(&tr, &dv, None, Some(true)).unwrap().regression);
        std::fs::write(&dv, "fine\thigh\n").unwrap();
        let e = load_tsv(&tr, &dv, None, Some(true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev.tsv") && e.contains("'high'"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
