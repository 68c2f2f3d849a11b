//! Google's top-down WordPiece learner (tensor2tensor's `SubwordTextEncoder.build_from_token_
//! counts`, which tensorflow_text's `bert_vocab_from_dataset` applies with "##" continuations).
//!
//! Each round, with the vocabulary so far (at first the alphabet alone):
//! 1. Tokenize every distinct training word by greedy longest match, and count (weighted by the
//!    word's count) every substring of at most `max_piece_chars` characters that starts where a
//!    piece starts: those are the pieces the tokenizer could take there. A substring that
//!    starts inside the word is a "##" piece.
//! 2. Walk the candidates longest first. A candidate whose count reaches the threshold `t` is
//!    kept, and its count is taken from each of its prefixes: wherever the longest match takes
//!    it, it does not take the prefix. So a kept count estimates how often the tokenizer will
//!    use the piece.
//! 3. Choose `t` by bisection as the largest threshold that keeps at least `keep_ratio` times
//!    the pieces wanted (`vocab_size` minus the alphabet), and keep the most used of those
//!    (ties by text), exactly as many as wanted.
//!
//! tensor2tensor bisects for a threshold that keeps exactly the pieces wanted (`keep_ratio`
//! 1). A lower threshold works better: at a high one, long pieces just under it are dropped
//! before they take their counts from their prefixes, so short prefixes look more used than
//! the tokenizer will use them; with twice the candidates kept, every plausible long piece
//! claims its occurrences first, and the most used are chosen among all of them. Pieces per
//! word on the demo corpus's held-out lines at 8,192 / 30,522 pieces, by `keep_ratio`:
//! 1: 1.2014 / 1.0609; 1.5: 1.198 / 1.058; 2: 1.196 / 1.057; 4: 1.199 / 1.058; the threshold
//! at `min_frequency` (every candidate kept): 1.211 / 1.058. HF's WordPieceTrainer: 1.2023 /
//! 1.0612.
//!
//! The kept pieces are the next round's vocabulary. A few rounds settle it (with `keep_ratio` 1
//! at 8,192: 1.214 pieces per word after 2 rounds, 1.2017 after 4, 1.2014 after 6). The output
//! is the alphabet, then the pieces, most used first.

use super::{greedy_pieces, Prepared, TrainerConfig, MAX_WORD_CHARS};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// A piece as (continuation, text without the "##" prefix).
type Key<'a> = (bool, &'a str);

/// Trains a vocabulary with Google's top-down learner (module docs).
pub fn train(cfg: &TrainerConfig, prep: &Prepared) -> Vec<String> {
    let prefix = cfg.continuing_subword_prefix.as_str();
    let n_alpha = prep.n_special + prep.n_start;
    let base: FxHashSet<Key> = prep.base[prep.n_special..]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i + prep.n_special < n_alpha {
                (false, t.as_str())
            } else {
                (true, &t[prefix.len()..])
            }
        })
        .collect();
    let need = cfg.vocab_size.saturating_sub(prep.base.len());
    let max_len = cfg.max_piece_chars.max(1);
    // The words the tokenizer can see (longer ones are [UNK]), with their char boundaries.
    let words: Vec<(&str, u64, Vec<usize>)> = prep
        .words
        .iter()
        .filter_map(|&(w, c)| {
            let b: Vec<usize> = w.char_indices().map(|(i, _)| i).chain([w.len()]).collect();
            (b.len() - 1 <= MAX_WORD_CHARS).then_some((w, c, b))
        })
        .collect();
    let mut vocab: FxHashSet<Key> = base.clone();
    let mut chosen: Vec<(u64, Key)> = Vec::new();
    for _ in 0..cfg.iterations.max(1) {
        // Longest first, then most frequent, so a candidate's count is final (all its
        // extensions already subtracted) when it is reached. Ties keep any order: within one
        // length no candidate changes another's count, and what is kept is sorted in full below.
        // (Those seen fewer than min_frequency times can never be kept.)
        let min = cfg.min_frequency.max(1);
        let mut cands = count_candidates(&words, &vocab, max_len, min);
        cands.par_sort_unstable_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)));
        // Where each length's run starts: a pass at threshold t reads, in each run, only the
        // candidates of count >= t (a prefix of the run, sorted by count).
        let mut runs: Vec<usize> = (0..cands.len())
            .filter(|&i| i == 0 || cands[i].2 != cands[i - 1].2)
            .collect();
        runs.push(cands.len());
        let keep = |t: u64| select(&cands, &runs, &base, t);
        // The largest threshold that keeps `keep_ratio` times the pieces wanted (the kept set
        // shrinks as t grows, nearly always: a higher t also returns counts to prefixes, so it
        // is not strictly monotone; bisection finds one such t, as tensor2tensor's does).
        let (mut lo, mut hi) = (min, cands.iter().map(|c| c.1).max().unwrap_or(1));
        hi = hi.max(lo);
        let want = (need as f64 * cfg.keep_ratio.max(1.0)).ceil() as usize;
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if keep(mid).len() >= want {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut kept = keep(lo);
        kept.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        kept.truncate(need);
        chosen = kept;
        vocab = base.clone();
        vocab.extend(chosen.iter().map(|&(_, k)| k));
    }
    let mut out = prep.base.clone();
    out.extend(chosen.into_iter().map(|(_, (cont, s))| {
        if cont {
            format!("{prefix}{s}")
        } else {
            s.to_string()
        }
    }));
    out
}

/// Step 1: every substring (at most `max_len` chars) starting where `vocab`'s greedy longest
/// match starts a piece, with the words' counts summed; those seen at least `min` times, with
/// their length in chars. The keys are split into one shard per thread by hash (bit 40 and up:
/// not the bits the map itself indexes by): each thread reads every word but counts only its
/// shard's keys, so no two maps need merging.
fn count_candidates<'a>(
    words: &[(&'a str, u64, Vec<usize>)],
    vocab: &FxHashSet<Key>,
    max_len: usize,
    min: u64,
) -> Vec<(Key<'a>, u64, usize)> {
    use std::hash::BuildHasher;
    let shards = rayon::current_num_threads().max(1) as u64;
    let hasher = rustc_hash::FxBuildHasher;
    (0..shards)
        .into_par_iter()
        .flat_map_iter(|shard| {
            let mut counts: FxHashMap<Key<'a>, u64> = FxHashMap::default();
            let mut pieces = Vec::new();
            let mut lookup = |cont: bool, s: &str| vocab.contains(&(cont, s)).then_some(());
            for &(w, c, ref b) in words {
                // Every word of allowed characters is encodable: the alphabet is in the vocabulary.
                if !greedy_pieces(w, max_len, &mut lookup, &mut pieces) {
                    continue;
                }
                let n = b.len() - 1;
                let mut start = 0; // char index
                for &(_, end_byte) in &pieces {
                    for end in start + 1..=n.min(start + max_len) {
                        let key = (start > 0, &w[b[start]..b[end]]);
                        if shards == 1 || (hasher.hash_one(key) >> 40) % shards == shard {
                            *counts.entry(key).or_insert(0) += c;
                        }
                    }
                    start += b[start..]
                        .iter()
                        .position(|&x| x == end_byte)
                        .expect("a char boundary");
                }
            }
            counts
                .into_iter()
                .filter(move |&(_, c)| c >= min)
                .map(|(k, c)| (k, c, k.1.chars().count()))
        })
        .collect()
}

/// Step 2 at threshold `t`: the candidates kept, with their counts after their extensions took
/// theirs, alphabet pieces left out (they are always in). `cands` is sorted by length (longest
/// first), then count (highest first); `runs` holds where each length starts, then the end.
/// The output's order follows `cands`' (its caller sorts it).
fn select<'a>(
    cands: &[(Key<'a>, u64, usize)],
    runs: &[usize],
    base: &FxHashSet<Key>,
    t: u64,
) -> Vec<(u64, Key<'a>)> {
    let mut taken: FxHashMap<Key<'a>, u64> = FxHashMap::default();
    let mut out = Vec::new();
    for run in runs.windows(2) {
        // Within one length the order does not matter: a piece gives counts only to shorter ones.
        for &(k, raw, _) in cands[run[0]..run[1]].iter().take_while(|c| c.1 >= t) {
            let c = raw.saturating_sub(taken.get(&k).copied().unwrap_or(0));
            if c >= t {
                for (i, _) in k.1.char_indices().skip(1) {
                    *taken.entry((k.0, &k.1[..i])).or_insert(0) += c;
                }
                if !base.contains(&k) {
                    out.push((c, k));
                }
            }
        }
    }
    out
}
