//! WordPiece vocabulary training: which pieces a vocabulary of `vocab_size` should hold so
//! that the tokenizer's greedy longest match ([`crate::wordpiece`]) cuts text into few pieces.
//!
//! Two learners, both WordPiece as Google describes it for BERT, both deterministic:
//! - [`top_down`] (the default): Google's released learner (tensor2tensor's
//!   SubwordTextEncoder, which tensorflow_text's `bert_vocab_from_dataset` applies with "##"
//!   continuations). It counts every substring that starts where the current vocabulary's
//!   greedy longest match starts a piece, keeps the most used, longest first, each taking its
//!   count from its prefixes (the longest match would have taken it instead), and iterates.
//!   It models the tokenizer that will use the vocabulary, and it is the better of the two
//!   on held-out text (README, "WordPiece vocabulary": at most HF's pieces per word at 8,192
//!   and 30,522 pieces).
//! - [`likelihood`]: bottom-up merges scored by the unigram likelihood gain (Schuster &
//!   Nakajima 2012), then pruned of the pieces the tokenizer never uses.
//!
//! Both start from the same alphabet ([`Prepared`]): the special tokens, the `limit_alphabet`
//! most frequent characters as word starts, and the same characters with the "##" prefix
//! where they occur inside a word, so every training word can be encoded.
//!
//! HF's WordPieceTrainer is BPE with a "##" prefix (merges scored by count alone), whose
//! vocabulary keeps the stepping-stone pieces of its merges; scripts/bench-vocab compares.

pub mod likelihood;
pub mod top_down;

pub use likelihood::merge_gain;

use crate::encoding::pre_tokenize_into;
use crate::normalizer::{normalize_into, Normalized, NormalizerConfig};
use crate::vocab::Vocab;
use rustc_hash::{FxHashMap, FxHashSet};

/// Which learner trains the vocabulary (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// Google's top-down learner.
    #[default]
    TopDown,
    /// Bottom-up likelihood-gain merges.
    Likelihood,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "top-down" => Ok(Algorithm::TopDown),
            "likelihood" => Ok(Algorithm::Likelihood),
            _ => Err(format!(
                "unknown vocabulary algorithm '{s}' (known: top-down, likelihood)"
            )),
        }
    }
}

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// A piece (top-down) or pair (likelihood) seen fewer times (weighted) is never added.
    pub min_frequency: u64,
    /// First entries of the vocabulary, in order.
    pub special_tokens: Vec<String>,
    /// Keep at most this many distinct characters (the most frequent); words with others are
    /// left out of training (they become [UNK] when encoded).
    pub limit_alphabet: Option<usize>,
    pub continuing_subword_prefix: String,
    /// The normalization the tokenizer will apply (counts are taken after it).
    pub normalizer: NormalizerConfig,
    pub algorithm: Algorithm,
    /// Rounds of the top-down learner (each re-tokenizes with the last round's vocabulary).
    pub iterations: usize,
    /// The longest piece the top-down learner considers, in characters.
    pub max_piece_chars: usize,
    /// The top-down learner's threshold keeps this many times the pieces wanted, the most
    /// used of which are chosen ([`top_down`]: 2 measured best of 1, 1.5, 2 and 4).
    pub keep_ratio: f64,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            vocab_size: 30_000,
            min_frequency: 2,
            special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                .map(String::from)
                .to_vec(),
            limit_alphabet: Some(1000),
            continuing_subword_prefix: "##".into(),
            normalizer: NormalizerConfig::default(),
            algorithm: Algorithm::TopDown,
            iterations: 6,
            max_piece_chars: 24,
            keep_ratio: 2.0,
        }
    }
}

/// Words longer than this (in chars) are `[UNK]` to the tokenizer (HF's
/// `max_input_chars_per_word`).
pub const MAX_WORD_CHARS: usize = 100;

/// What both learners start from: the base vocabulary and the distinct training words.
pub struct Prepared<'a> {
    /// The special tokens (deduplicated), the word-start characters, then the "##"
    /// characters, each group sorted: `base[..n_special]`, `base[n_special..n_special +
    /// n_start]`, the rest.
    pub base: Vec<String>,
    pub n_special: usize,
    pub n_start: usize,
    /// Distinct words of allowed characters only, sorted, with their counts.
    pub words: Vec<(&'a str, u64)>,
}

impl<'a> Prepared<'a> {
    pub fn new(cfg: &TrainerConfig, counts: &'a FxHashMap<String, u64>) -> Self {
        let prefix = &cfg.continuing_subword_prefix;
        // Alphabet: the most frequent chars (ties by char, for determinism).
        let mut char_counts: FxHashMap<char, u64> = FxHashMap::default();
        for (w, &c) in counts {
            for ch in w.chars() {
                *char_counts.entry(ch).or_insert(0) += c;
            }
        }
        let mut alphabet: Vec<(char, u64)> = char_counts.into_iter().collect();
        alphabet.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(limit) = cfg.limit_alphabet {
            alphabet.truncate(limit);
        }
        let allowed: FxHashSet<char> = alphabet.iter().map(|&(c, _)| c).collect();
        let mut words: Vec<(&str, u64)> = counts
            .iter()
            .filter(|(w, _)| w.chars().all(|c| allowed.contains(&c)))
            .map(|(w, &c)| (w.as_str(), c))
            .collect();
        words.sort_unstable();
        let mut base: Vec<String> = Vec::new();
        for s in &cfg.special_tokens {
            if !base.contains(s) {
                base.push(s.clone());
            }
        }
        let n_special = base.len();
        let mut starts: Vec<char> = allowed.iter().copied().collect();
        starts.sort_unstable();
        let mut conts: Vec<char> = words.iter().flat_map(|(w, _)| w.chars().skip(1)).collect();
        conts.sort_unstable();
        conts.dedup();
        let mut seen: FxHashSet<String> = base.iter().cloned().collect();
        let mut n_start = 0;
        for c in starts {
            if seen.insert(c.to_string()) {
                base.push(c.to_string());
                n_start += 1;
            }
        }
        for c in conts {
            let t = format!("{prefix}{c}");
            if seen.insert(t.clone()) {
                base.push(t);
            }
        }
        Prepared {
            base,
            n_special,
            n_start,
            words,
        }
    }
}

/// The tokenizer's greedy longest match on one normalized word: `lookup(continuation, text)`
/// says whether the piece `text` (without the "##" prefix, which `continuation` stands for) is
/// in the vocabulary, with its id. Pieces of at most `max_chars` characters are tried. Fills
/// `out` with (id, end byte) and returns true, or returns false when the word cannot be
/// encoded (it would be `[UNK]`) or is longer than [`MAX_WORD_CHARS`].
pub fn greedy_pieces<T>(
    word: &str,
    max_chars: usize,
    lookup: &mut impl FnMut(bool, &str) -> Option<T>,
    out: &mut Vec<(T, usize)>,
) -> bool {
    out.clear();
    let bounds: Vec<usize> = word
        .char_indices()
        .map(|(i, _)| i)
        .chain([word.len()])
        .collect();
    let n = bounds.len() - 1;
    if n > MAX_WORD_CHARS {
        return false;
    }
    let mut start = 0;
    while start < n {
        let mut end = n.min(start.saturating_add(max_chars));
        loop {
            if end == start {
                out.clear();
                return false;
            }
            if let Some(id) = lookup(start > 0, &word[bounds[start]..bounds[end]]) {
                out.push((id, bounds[end]));
                break;
            }
            end -= 1;
        }
        start = end;
    }
    true
}

/// Counts normalized, pre-tokenized words over `texts` (lines), in parallel.
pub fn count_words(texts: &[&str], normalizer: &NormalizerConfig) -> FxHashMap<String, u64> {
    use rayon::prelude::*;
    texts
        .par_chunks(4096)
        .map(|chunk| {
            let mut counts: FxHashMap<String, u64> = FxHashMap::default();
            let (mut norm, mut words, mut w) = (Normalized::default(), Vec::new(), String::new());
            for t in chunk {
                normalize_into(normalizer, t, 0, 0, &mut norm);
                pre_tokenize_into(&norm.chars, &mut words);
                for &(s, e) in &words {
                    w.clear();
                    w.extend(&norm.chars[s..e]);
                    match counts.get_mut(w.as_str()) {
                        Some(c) => *c += 1,
                        None => {
                            counts.insert(w.clone(), 1);
                        }
                    }
                }
            }
            counts
        })
        .reduce(FxHashMap::default, |mut a, b| {
            let (mut big, small) = if a.len() >= b.len() {
                (a, b)
            } else {
                (b, std::mem::take(&mut a))
            };
            for (k, v) in small {
                *big.entry(k).or_insert(0) += v;
            }
            big
        })
}

/// Trains on lines of text and returns the vocabulary.
pub fn train(cfg: &TrainerConfig, texts: &[&str]) -> Vocab {
    let counts = count_words(texts, &cfg.normalizer);
    Vocab::from_tokens(&train_from_counts(cfg, &counts))
}

/// Trains a vocabulary from word counts ([`count_words`]) with `cfg.algorithm`. Returns the
/// tokens in id order: the special tokens, the alphabet (word-start characters, then "##"
/// characters), then the learnt pieces.
pub fn train_from_counts(cfg: &TrainerConfig, counts: &FxHashMap<String, u64>) -> Vec<String> {
    let prep = Prepared::new(cfg, counts);
    match cfg.algorithm {
        Algorithm::TopDown => top_down::train(cfg, &prep),
        Algorithm::Likelihood => likelihood::train(cfg, &prep),
    }
}

/// One line in this many is held out of vocabulary training (`bert vocab`), to score the
/// vocabulary on text it was not trained on.
pub const HELDOUT_EVERY: usize = 50;

/// Splits lines into (training, held-out): every [`HELDOUT_EVERY`]th line (index % 50 == 49)
/// is held out. scripts/bench_vocab_hf.py holds out the same lines for HF's trainer.
pub fn heldout_split<'a>(lines: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, &l) in lines.iter().enumerate() {
        if i % HELDOUT_EVERY == HELDOUT_EVERY - 1 {
            held.push(l);
        } else {
            train.push(l);
        }
    }
    (train, held)
}

/// How finely a vocabulary cuts text: WordPiece tokens per pre-tokenized word (a punctuation
/// mark is a word, as BERT's pre-tokenizer splits it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PiecesPerWord {
    pub pieces: usize,
    pub words: usize,
    /// Words that became `[UNK]`.
    pub unknown: usize,
    /// The most frequent pieces, most frequent first, with their share of all pieces.
    pub top: Vec<(String, f64)>,
}

impl PiecesPerWord {
    pub fn ratio(&self) -> f64 {
        self.pieces as f64 / self.words.max(1) as f64
    }
}

/// Tokenizes `texts` (no special tokens) and counts pieces, words and `[UNK]`s.
pub fn pieces_per_word(tok: &crate::BertTokenizer, texts: &[&str]) -> PiecesPerWord {
    let unk = tok.vocab.id("[UNK]");
    let mut freq = vec![0usize; tok.vocab.len()];
    let mut r = PiecesPerWord::default();
    for chunk in texts.chunks(4096) {
        for e in tok.encode_batch(chunk, false) {
            r.pieces += e.ids.len();
            let mut last = None;
            for (&id, &w) in e.ids.iter().zip(&e.word_ids) {
                if w != last {
                    r.words += 1;
                    last = w;
                }
                if Some(id) == unk {
                    r.unknown += 1;
                }
                freq[id as usize] += 1;
            }
        }
    }
    let mut order: Vec<usize> = (0..freq.len()).filter(|&i| freq[i] > 0).collect();
    order.sort_by(|&a, &b| freq[b].cmp(&freq[a]).then(a.cmp(&b)));
    r.top = order
        .iter()
        .take(5)
        .map(|&i| {
            (
                tok.vocab.tokens()[i].clone(),
                freq[i] as f64 / r.pieces.max(1) as f64,
            )
        })
        .collect();
    r
}
