//! Token classification (HF `BertForTokenClassification`): CoNLL-style files or the Brown
//! corpus's part-of-speech tags; word accuracy, and entity-level precision, recall and F1 as
//! `seqeval` computes them (its default mode: IOB1, IOB2 and BIOES spans, exact match).
//!
//! Words are tokenized as pre-split words (HF's `is_split_into_words`: each word on its own,
//! so BERT's pre-tokenizer may cut it further, its pieces all keep the word's index). A word's
//! tag goes on its first piece; its later pieces, `[CLS]` and `[SEP]` take -100 (no loss), as
//! `run_ner.py` with `label_all_tokens=False`. Words past `--max-len` are cut, and left out of
//! the scores as `run_ner.py` leaves them.

use super::{Feature, LogitsFn, Metrics, Target};
use crate::{BertError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tokenizer::BertTokenizer;

/// A tagged sentence: its words and each word's tag (an index into the data set's tags).
#[derive(Clone, Debug, PartialEq)]
pub struct Sentence {
    pub words: Vec<String>,
    pub tags: Vec<usize>,
}

/// A tagging data set: splits and tag names.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub train: Vec<Sentence>,
    pub dev: Vec<Sentence>,
    pub test: Vec<Sentence>,
    pub tags: Vec<String>,
}

/// CoNLL files: one token per line (`token<TAB>tag`, or `token tag ... tag` separated by
/// spaces: the first field is the token, the last its tag), a blank line between sentences,
/// `-DOCSTART-` lines skipped. The dev and test files may use only the training file's tags.
pub fn load_conll(train: &Path, dev: &Path, test: Option<&Path>) -> Result<Dataset> {
    let mut tags = Vec::new();
    let train = read_conll(train, &mut tags, true)?;
    let dev = read_conll(dev, &mut tags, false)?;
    let test = match test {
        Some(t) => read_conll(t, &mut tags, false)?,
        None => vec![],
    };
    Ok(Dataset {
        train,
        dev,
        test,
        tags,
    })
}

/// One CoNLL file (see [`load_conll`]); new tags are added to `tags` when `grow`, else they
/// are an error naming the file and line.
pub fn read_conll(path: &Path, tags: &mut Vec<String>, grow: bool) -> Result<Vec<Sentence>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut cur = Sentence {
        words: vec![],
        tags: vec![],
    };
    let mut flush = |cur: &mut Sentence| {
        if !cur.words.is_empty() {
            out.push(std::mem::replace(
                cur,
                Sentence {
                    words: vec![],
                    tags: vec![],
                },
            ));
        }
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut cur);
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            continue;
        }
        let f: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        if f.len() < 2 || f[0].is_empty() || f[f.len() - 1].is_empty() {
            return Err(BertError::Input(format!(
                "{}:{}: expected a token and its tag (token<TAB>tag, or token ... tag), found '{}'",
                path.display(),
                n + 1,
                line.chars().take(80).collect::<String>()
            )));
        }
        let tag = f[f.len() - 1];
        let id = match tags.iter().position(|t| t == tag) {
            Some(i) => i,
            None if grow => {
                tags.push(tag.to_string());
                tags.len() - 1
            }
            None => {
                return Err(BertError::Input(format!(
                    "{}:{}: tag '{tag}' is not among the training file's {} tags",
                    path.display(),
                    n + 1,
                    tags.len()
                )))
            }
        };
        cur.words.push(f[0].to_string());
        cur.tags.push(id);
    }
    flush(&mut cur);
    Ok(out)
}

/// A Brown corpus tag without its modifiers: `-tl` (in a title), `-hl` (in a headline), `-nc`
/// (cited) and the `fw-` prefix (a foreign word) are dropped, so `nn-tl` is `nn` and `fw-in`
/// is `in`; combined tags (`ppss+bem`) stay.
pub fn brown_tag(t: &str) -> String {
    let mut t = t.to_ascii_lowercase();
    loop {
        let before = t.len();
        for s in ["-tl", "-hl", "-nc"] {
            if let Some(x) = t.strip_suffix(s) {
                t = x.to_string();
            }
        }
        if let Some(x) = t.strip_prefix("fw-") {
            t = x.to_string();
        }
        if t.len() == before {
            return t;
        }
    }
}

/// The Brown corpus (`scripts/fetch-brown`: the files `ca01` ... `cr09` in `dir`, Latin-1, one
/// sentence a line of `word/tag` tokens): part-of-speech tagging with the tags of
/// [`brown_tag`]. Split by file, the same everywhere: files numbered 5, 15, 25 ... of each
/// genre are dev, 10, 20, ... test, the rest (80%) train.
pub fn brown(dir: &Path) -> Result<Dataset> {
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| BertError::Io(format!("{}: {e} (run scripts/fetch-brown)", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
        .filter(|(n, _)| {
            n.len() == 4 && n.starts_with('c') && n[2..].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(BertError::Io(format!(
            "{}: no Brown corpus files (ca01 ...): run scripts/fetch-brown",
            dir.display()
        )));
    }
    let mut d = Dataset::default();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (name, path) in &files {
        let bytes =
            std::fs::read(path).map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
        // Latin-1: every byte is its code point.
        let text: String = bytes.iter().map(|&b| b as char).collect();
        let num: usize = name[2..].parse().unwrap_or(0);
        let split = match num % 10 {
            0 => &mut d.test,
            5 => &mut d.dev,
            _ => &mut d.train,
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut s = Sentence {
                words: vec![],
                tags: vec![],
            };
            for tok in line.split_whitespace() {
                let (w, t) = tok
                    .rsplit_once('/')
                    .filter(|(w, t)| !w.is_empty() && !t.is_empty())
                    .ok_or_else(|| {
                        BertError::Input(format!(
                            "{}:{}: '{tok}' is not word/tag",
                            path.display(),
                            n + 1
                        ))
                    })?;
                let t = brown_tag(t);
                let next = index.len();
                let id = *index.entry(t).or_insert(next);
                s.words.push(w.to_string());
                s.tags.push(id);
            }
            split.push(s);
        }
    }
    let mut tags = vec![String::new(); index.len()];
    for (t, i) in index {
        tags[i] = t;
    }
    d.tags = tags;
    Ok(d)
}

/// Pre-split words encoded as HF's `is_split_into_words`: `[CLS]`, each word's pieces, `[SEP]`,
/// at most `max_len` tokens. Returns the ids and, per token, the index of its word (None for
/// the template tokens).
pub fn encode_words<S: AsRef<str>>(
    tok: &BertTokenizer,
    words: &[S],
    max_len: usize,
) -> (Vec<u32>, Vec<Option<usize>>) {
    let (cls, sep) = tok.template_tokens();
    let room = max_len.saturating_sub(2);
    let mut ids = vec![cls.1];
    let mut word_of = vec![None];
    'words: for (w, word) in words.iter().enumerate() {
        for id in tok.encode(word.as_ref(), false).ids {
            if ids.len() > room {
                break 'words;
            }
            ids.push(id);
            word_of.push(Some(w));
        }
    }
    ids.push(sep.1);
    word_of.push(None);
    (ids, word_of)
}

/// The tags on each word's first piece, -100 elsewhere.
fn first_piece_tags(word_of: &[Option<usize>], tags: &[usize]) -> Vec<i64> {
    let mut prev = None;
    word_of
        .iter()
        .map(|&w| {
            let t = match w {
                Some(i) if Some(i) != prev => tags[i] as i64,
                _ => -100,
            };
            prev = w;
            t
        })
        .collect()
}

/// The features of `sentences`: ids, and the tag on each word's first piece.
pub fn features(
    sentences: &[Sentence],
    tok: &BertTokenizer,
    max_len: usize,
) -> Result<Vec<Feature>> {
    Ok(sentences
        .iter()
        .map(|s| {
            let (ids, word_of) = encode_words(tok, &s.words, max_len);
            Feature {
                types: vec![0; ids.len()],
                target: Target::Tags(first_piece_tags(&word_of, &s.tags)),
                ids,
            }
        })
        .collect())
}

/// Each word's predicted tag from a feature's logits `(tokens x tags)`: the arg-max at its first
/// piece; None for a word with no piece (cut by `max_len`, or nothing left after normalization).
pub fn word_tags(
    word_of: &[Option<usize>],
    logits: &[f32],
    tags: usize,
    words: usize,
) -> Vec<Option<usize>> {
    let mut out = vec![None; words];
    let mut prev = None;
    for (t, &w) in word_of.iter().enumerate() {
        if let Some(i) = w {
            if Some(i) != prev {
                out[i] = Some(super::seqcls::argmax(&logits[t * tags..(t + 1) * tags]));
            }
        }
        prev = w;
    }
    out
}

/// Scores on `sentences`: word accuracy and, when every tag is `O` or has a B-/I-/E-/S- prefix,
/// `seqeval`'s entity-level micro precision, recall and F1 and the same per entity type.
pub fn evaluate(
    tags: &[String],
    sentences: &[Sentence],
    tok: &BertTokenizer,
    max_len: usize,
    logits: &mut LogitsFn<'_>,
) -> Result<Metrics> {
    let feats = features(sentences, tok, max_len)?;
    let refs: Vec<&Feature> = feats.iter().collect();
    let out = logits(&refs)?;
    let (mut gold, mut pred) = (Vec::new(), Vec::new());
    for (s, lg) in sentences.iter().zip(&out) {
        let (_, word_of) = encode_words(tok, &s.words, max_len);
        let p = word_tags(&word_of, lg, tags.len(), s.words.len());
        let (mut g1, mut p1) = (Vec::new(), Vec::new());
        for (i, pi) in p.iter().enumerate() {
            if let Some(pi) = pi {
                g1.push(tags[s.tags[i]].as_str());
                p1.push(tags[*pi].as_str());
            }
        }
        gold.push(g1);
        pred.push(p1);
    }
    let words: usize = gold.iter().map(Vec::len).sum();
    let right: usize = gold
        .iter()
        .zip(&pred)
        .map(|(g, p)| g.iter().zip(p).filter(|(a, b)| a == b).count())
        .sum();
    let accuracy = right as f64 / words.max(1) as f64;
    if !is_entity_scheme(tags) {
        let mut m = Metrics::new("accuracy");
        m.set("accuracy", accuracy);
        m.set("words", words);
        m.set("n", sentences.len());
        return Ok(m);
    }
    let e = entity_scores(&gold, &pred);
    let mut m = Metrics::new("f1");
    m.set("f1", e.f1);
    m.set("precision", e.precision);
    m.set("recall", e.recall);
    m.set("accuracy", accuracy);
    m.set("words", words);
    m.set("n", sentences.len());
    let per: serde_json::Map<String, serde_json::Value> = e
        .per_type
        .iter()
        .map(|(t, s)| {
            (
                t.clone(),
                serde_json::json!({"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.support}),
            )
        })
        .collect();
    m.set("per_type", serde_json::Value::Object(per));
    Ok(m)
}

/// Whether the tags name entities (`O`, or `B-`/`I-`/`E-`/`S-` prefixes): IOB1, IOB2, BIOES.
pub fn is_entity_scheme(tags: &[String]) -> bool {
    tags.iter().any(|t| t != "O")
        && tags.iter().all(|t| {
            t == "O"
                || ["B-", "I-", "E-", "S-"]
                    .iter()
                    .any(|p| t.starts_with(p) && t.len() > 2)
        })
}

/// Entities `(type, first, last)` (inclusive token indices) of one tag sequence, as
/// `seqeval.metrics.sequence_labeling.get_entities` finds them (its default, lenient mode).
pub fn get_entities<S: AsRef<str>>(seq: &[S]) -> Vec<(String, usize, usize)> {
    let mut chunks = Vec::new();
    let (mut prev_tag, mut prev_type) = ('O', String::new());
    let mut begin = 0;
    for i in 0..=seq.len() {
        let chunk = seq.get(i).map_or("O", |s| s.as_ref());
        let mut cs = chunk.chars();
        let tag = cs.next().unwrap_or('O');
        let rest = cs.as_str();
        // `chunk[1:].split('-', maxsplit=1)[-1] or '_'`
        let ty = match rest.split_once('-') {
            Some((_, t)) => t,
            None => rest,
        };
        let ty = if ty.is_empty() { "_" } else { ty }.to_string();
        if end_of_chunk(prev_tag, tag, &prev_type, &ty) {
            chunks.push((prev_type.clone(), begin, i - 1));
        }
        if start_of_chunk(prev_tag, tag, &prev_type, &ty) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = ty;
    }
    chunks
}

fn end_of_chunk(prev: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(prev, 'E' | 'S')
        || (prev == 'B' && matches!(tag, 'B' | 'S' | 'O'))
        || (prev == 'I' && matches!(tag, 'B' | 'S' | 'O'))
        || (prev != 'O' && prev != '.' && prev_type != ty)
}

fn start_of_chunk(prev: char, tag: char, prev_type: &str, ty: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (prev == 'E' && matches!(tag, 'E' | 'I'))
        || (prev == 'S' && matches!(tag, 'E' | 'I'))
        || (prev == 'O' && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != ty)
}

/// Precision, recall, F1 and support (gold entities) of one entity type or of all (micro).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Entity-level scores as `seqeval`'s `classification_report`: micro-averaged and per type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub per_type: BTreeMap<String, Prf>,
}

fn prf(correct: usize, pred: usize, gold: usize) -> Prf {
    let p = if pred == 0 {
        0.0
    } else {
        correct as f64 / pred as f64
    };
    let r = if gold == 0 {
        0.0
    } else {
        correct as f64 / gold as f64
    };
    Prf {
        precision: p,
        recall: r,
        f1: if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        },
        support: gold,
    }
}

/// `seqeval`'s scores over sentences (entities never cross a sentence: each is closed by an
/// `O` between sentences, as seqeval flattens them); zero divisions give 0, as its default.
pub fn entity_scores<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>]) -> EntityScores {
    let ents = |seqs: &[Vec<S>]| {
        let mut set = BTreeSet::new();
        let mut off = 0;
        for s in seqs {
            for (t, a, b) in get_entities(s) {
                set.insert((t, a + off, b + off));
            }
            off += s.len() + 1;
        }
        set
    };
    let (g, p) = (ents(gold), ents(pred));
    let types: BTreeSet<&String> = g.iter().chain(&p).map(|e| &e.0).collect();
    let mut per_type = BTreeMap::new();
    for t in types {
        let gt: BTreeSet<_> = g.iter().filter(|e| &e.0 == t).collect();
        let pt: BTreeSet<_> = p.iter().filter(|e| &e.0 == t).collect();
        per_type.insert(
            t.clone(),
            prf(gt.intersection(&pt).count(), pt.len(), gt.len()),
        );
    }
    let all = prf(g.intersection(&p).count(), p.len(), g.len());
    EntityScores {
        precision: all.precision,
        recall: all.recall,
        f1: all.f1,
        per_type,
    }
}

/// Words of a raw text line as BERT's pre-tokenizer cuts them (whitespace, punctuation on its
/// own), with their character spans in the line.
pub fn split_words(line: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = line.chars().collect();
    tokenizer::encoding::pre_tokenize(&chars)
        .into_iter()
        .map(|(a, b)| (chars[a..b].iter().collect(), a, b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_as_seqeval_finds_them() {
        // seqeval's docstring examples, and IOB1, BIOES and stray I- cases.
        assert_eq!(
            get_entities(&["B-PER", "I-PER", "O", "B-LOC"]),
            vec![("PER".into(), 0, 1), ("LOC".into(), 3, 3)]
        );
        // IOB1: I- opens an entity; B- only splits two adjacent ones of a type.
        assert_eq!(
            get_entities(&["I-PER", "I-PER", "B-PER", "O", "I-LOC"]),
            vec![
                ("PER".into(), 0, 1),
                ("PER".into(), 2, 2),
                ("LOC".into(), 4, 4)
            ]
        );
        // BIOES, an entity at the end, a type change inside.
        assert_eq!(
            get_entities(&["S-ORG", "B-MISC", "E-MISC", "B-PER", "I-LOC"]),
            vec![
                ("ORG".into(), 0, 0),
                ("MISC".into(), 1, 2),
                ("PER".into(), 3, 3),
                ("LOC".into(), 4, 4)
            ]
        );
        let gold = vec![
            vec!["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"],
            vec!["B-PER", "I-PER", "O"],
        ];
        let pred = vec![
            vec!["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"],
            vec!["B-PER", "I-PER", "O"],
        ];
        let s = entity_scores(&gold, &pred);
        assert_eq!((s.precision, s.recall, s.f1), (0.5, 0.5, 0.5));
        assert_eq!(s.per_type["MISC"].f1, 0.0);
        assert_eq!(s.per_type["PER"].f1, 1.0);
    }

    #[test]
    fn brown_tags_lose_their_modifiers() {
        assert_eq!(brown_tag("nn-tl"), "nn");
        assert_eq!(brown_tag("NP-TL-HL"), "np");
        assert_eq!(brown_tag("fw-in-tl"), "in");
        assert_eq!(brown_tag("ppss+bem"), "ppss+bem");
        assert_eq!(brown_tag("np$"), "np$");
    }

    #[test]
    fn conll_reads_tabs_spaces_docstart_and_names_bad_lines() {
        let dir = std::env::temp_dir().join(format!("conll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tr = dir.join("train.txt");
        std::fs::write(
            &tr,
            "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter\tB-PER\nBlackburn\tI-PER\n",
        )
        .unwrap();
        let dv = dir.join("dev.txt");
        std::fs::write(&dv, "Peter B-PER\n\nParis B-LOC\n").unwrap();
        let mut tags = vec![];
        let s = read_conll(&tr, &mut tags, true).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].words, vec!["EU", "rejects"]);
        assert_eq!(tags, vec!["B-ORG", "O", "B-PER", "I-PER"]);
        let e = load_conll(&tr, &dv, None).unwrap_err().to_string();
        assert!(e.contains("dev.txt:3") && e.contains("'B-LOC'"), "{e}");
        std::fs::write(&dv, "Peter\n").unwrap();
        let e = load_conll(&tr, &dv, None).unwrap_err().to_string();
        assert!(e.contains("dev.txt:1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn first_pieces_carry_the_tags() {
        let w = [None, Some(0), Some(0), Some(1), None];
        assert_eq!(first_piece_tags(&w, &[3, 5]), vec![-100, 3, -100, 5, -100]);
        // Two tags, logits favour tag 1 on token 1 and tag 0 on token 3.
        let lg = [0.0, 0.0, 0.0, 9.0, 5.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(word_tags(&w, &lg, 2, 3), vec![Some(1), Some(0), None]);
    }
}
