//! WordPiece vocabulary training, scored as WordPiece scores merges (Schuster & Nakajima;
//! the scoring Google describes for BERT's vocabulary), not as BPE with a "##" prefix (which is
//! what HF's WordPieceTrainer does):
//!
//! ```text
//! score(a, b) = count(ab) / (count(a) * count(b))
//! ```
//! counts weighted by word frequency. A merge joins the pair that most raises the likelihood
//! of the training data under a unigram model of the units, favouring pairs whose parts are
//! rarely seen apart.
//!
//! Algorithm: words (normalized and pre-tokenized as the tokenizer will) are counted once;
//! each distinct word is a list of symbols, the first a word-start unit, the rest "##" units.
//! Pair counts, unit counts, and for each pair the words holding it are kept up to date
//! across merges. A max-heap holds pair scores; after merging (a, b) every pair that touches a
//! or b is pushed again (their scores rose, as a's and b's counts fell), and entries whose
//! score is stale are skipped when popped. Ties break on the pair's count, then on the symbols'
//! ids (creation order), so training is deterministic.

use crate::encoding::pre_tokenize_into;
use crate::normalizer::{normalize_into, Normalized, NormalizerConfig};
use crate::vocab::Vocab;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BinaryHeap;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// A pair seen fewer times (weighted) is never merged. It matters more than for BPE: the
    /// likelihood score is highest for pairs of rare units that only occur together.
    pub min_frequency: u64,
    /// First entries of the vocabulary, in order.
    pub special_tokens: Vec<String>,
    /// Keep at most this many distinct characters (the most frequent); words with others are
    /// left out of training (they become [UNK] when encoded).
    pub limit_alphabet: Option<usize>,
    pub continuing_subword_prefix: String,
    /// The normalization the tokenizer will apply (counts are taken after it).
    pub normalizer: NormalizerConfig,
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
        }
    }
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

/// A heap entry: score, then count, then earlier symbols first.
#[derive(PartialEq)]
struct Entry {
    score: f64,
    count: u64,
    pair: (u32, u32),
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then(self.count.cmp(&o.count))
            .then(o.pair.cmp(&self.pair))
    }
}

/// Trains a vocabulary from word counts. Returns the tokens in id order.
pub fn train_from_counts(cfg: &TrainerConfig, counts: &FxHashMap<String, u64>) -> Vec<String> {
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
    // Distinct words, sorted (determinism), as symbol lists.
    let mut word_list: Vec<(&str, u64)> = counts
        .iter()
        .filter(|(w, _)| w.chars().all(|c| allowed.contains(&c)))
        .map(|(w, &c)| (w.as_str(), c))
        .collect();
    word_list.sort_unstable();
    let mut tokens: Vec<String> = Vec::new();
    let mut id_of: FxHashMap<String, u32> = FxHashMap::default();
    fn intern(t: String, tokens: &mut Vec<String>, id_of: &mut FxHashMap<String, u32>) -> u32 {
        *id_of.entry(t.clone()).or_insert_with(|| {
            tokens.push(t);
            (tokens.len() - 1) as u32
        })
    }
    for s in &cfg.special_tokens {
        intern(s.clone(), &mut tokens, &mut id_of);
    }
    let mut chars: Vec<char> = allowed.iter().copied().collect();
    chars.sort_unstable();
    for &c in &chars {
        intern(c.to_string(), &mut tokens, &mut id_of);
    }
    let mut words: Vec<Vec<u32>> = Vec::with_capacity(word_list.len());
    let mut conts: Vec<String> = Vec::new();
    for (w, _) in &word_list {
        for c in w.chars().skip(1) {
            conts.push(format!("{prefix}{c}"));
        }
    }
    conts.sort_unstable();
    conts.dedup();
    for c in conts {
        intern(c, &mut tokens, &mut id_of);
    }
    for (w, _) in &word_list {
        let syms = w
            .chars()
            .enumerate()
            .map(|(i, c)| {
                id_of[&if i == 0 {
                    c.to_string()
                } else {
                    format!("{prefix}{c}")
                }]
            })
            .collect();
        words.push(syms);
    }
    let weights: Vec<u64> = word_list.iter().map(|&(_, c)| c).collect();
    // Statistics.
    let mut unit = vec![0u64; tokens.len()];
    let mut pair_count: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    let mut where_: FxHashMap<(u32, u32), FxHashSet<u32>> = FxHashMap::default();
    let mut pairs_of: Vec<FxHashSet<(u32, u32)>> = vec![FxHashSet::default(); tokens.len()];
    for (wi, syms) in words.iter().enumerate() {
        for &s in syms {
            unit[s as usize] += weights[wi];
        }
        for p in syms.windows(2) {
            let key = (p[0], p[1]);
            *pair_count.entry(key).or_insert(0) += weights[wi];
            where_.entry(key).or_default().insert(wi as u32);
            pairs_of[p[0] as usize].insert(key);
            pairs_of[p[1] as usize].insert(key);
        }
    }
    let score = |p: (u32, u32), c: u64, unit: &[u64]| {
        c as f64 / (unit[p.0 as usize] as f64 * unit[p.1 as usize] as f64)
    };
    // Only pairs frequent enough to merge go in the heap. The others score highest (rare parts
    // that occur together) and would sit at its top to be popped and skipped again and again.
    // A pair's count only rises when a merge rewrites a word holding it, which pushes it then.
    let min_count = cfg.min_frequency.max(1);
    let mut heap: BinaryHeap<Entry> = pair_count
        .iter()
        .filter(|(_, &c)| c >= min_count)
        .map(|(&p, &c)| Entry {
            score: score(p, c, &unit),
            count: c,
            pair: p,
        })
        .collect();
    while tokens.len() < cfg.vocab_size {
        let Some(top) = heap.pop() else { break };
        let count = pair_count.get(&top.pair).copied().unwrap_or(0);
        if count == 0 || count != top.count || score(top.pair, count, &unit) != top.score {
            continue; // stale: a fresher entry for this pair is in the heap
        }
        if count < cfg.min_frequency {
            // Too rare to merge. The score favours rare pairs, so this is common at the top of
            // the heap: skip it (it comes back if a later merge raises its count).
            continue;
        }
        let (a, b) = top.pair;
        let merged = format!(
            "{}{}",
            tokens[a as usize],
            tokens[b as usize]
                .strip_prefix(prefix.as_str())
                .unwrap_or(&tokens[b as usize])
        );
        let m = intern(merged, &mut tokens, &mut id_of);
        if m as usize == unit.len() {
            unit.push(0);
            pairs_of.push(FxHashSet::default());
        }
        // Rewrite every word holding (a, b), updating the counts of the pairs around it.
        let holders: Vec<u32> = where_
            .remove(&top.pair)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        let mut touched: FxHashSet<(u32, u32)> = FxHashSet::default();
        for wi in holders {
            let w = weights[wi as usize];
            let syms = &words[wi as usize];
            if !syms.windows(2).any(|p| p == [a, b]) {
                continue;
            }
            for p in syms.windows(2) {
                let key = (p[0], p[1]);
                let c = pair_count.get_mut(&key).expect("pair of a word is counted");
                *c -= w;
                touched.insert(key);
            }
            let mut out = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    out.push(m);
                    unit[a as usize] -= w;
                    unit[b as usize] -= w;
                    unit[m as usize] += w;
                    i += 2;
                } else {
                    out.push(syms[i]);
                    i += 1;
                }
            }
            for p in out.windows(2) {
                let key = (p[0], p[1]);
                *pair_count.entry(key).or_insert(0) += w;
                where_.entry(key).or_default().insert(wi);
                pairs_of[p[0] as usize].insert(key);
                pairs_of[p[1] as usize].insert(key);
                touched.insert(key);
            }
            words[wi as usize] = out;
        }
        // Scores that changed: pairs whose count changed, and every pair touching a or b (dead
        // pairs, count 0, are dropped from those sets on the way). The heap's order is total,
        // so the order of these pushes does not matter.
        for x in [a, b] {
            pairs_of[x as usize].retain(|p| pair_count.get(p).is_some_and(|&c| c > 0));
            touched.extend(pairs_of[x as usize].iter().copied());
        }
        for p in touched {
            let c = pair_count.get(&p).copied().unwrap_or(0);
            if c >= min_count && p != (a, b) {
                heap.push(Entry {
                    score: score(p, c, &unit),
                    count: c,
                    pair: p,
                });
            }
        }
        pair_count.remove(&(a, b));
    }
    tokens
}

/// Trains on lines of text and returns the vocabulary.
pub fn train(cfg: &TrainerConfig, texts: &[&str]) -> Vocab {
    let counts = count_words(texts, &cfg.normalizer);
    Vocab::from_tokens(&train_from_counts(cfg, &counts))
}
