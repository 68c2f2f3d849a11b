//! The bottom-up WordPiece learner: likelihood-gain merges (Schuster & Nakajima 2012, "Japanese
//! and Korean voice search"): start from the characters, and repeatedly add the merge of two
//! adjacent units that most raises the log-likelihood of the training words under a unigram
//! model of the units.
//!
//! With unit counts `c`, `N = sum c` and `f(x) = x ln x`, the log-likelihood is
//! `sum f(c_u) - f(N)`. Merging `(a, b)`, seen `k` times, moves `k` from `a` and `b` to the new
//! unit and removes `k` units in all, so the gain is
//!
//! ```text
//! gain(a, b) = f(k) + f(c_a - k) + f(c_b - k) - f(c_a) - f(c_b) + f(N) - f(N - k)
//!            ~ k ln(k N / (c_a c_b))        (k small against c_a, c_b, N)
//! ```
//! (for `a == b`: `f(k) + f(c_a - 2k) - f(c_a) + f(N) - f(N - k)`). The factor `k` matters: an
//! earlier version scored `k / (c_a c_b)` alone, which picks rare, tightly bound pairs and
//! never merges frequent letters ("september" became `s ##e ##p ##t ##e ##mb ##e ##r` at 8,192
//! pieces). HF's WordPieceTrainer is BPE with a "##" prefix: it scores by `k` alone.
//!
//! Algorithm: each distinct word is a list of units, the first a word-start unit, the rest "##"
//! units. Pair counts, unit counts, and for each pair the words holding it are kept up to date
//! across merges. A max-heap holds each pair's gain with the counts it was computed from;
//! after merging (a, b) every pair whose count changed or that touches a or b is pushed again,
//! and popped entries whose counts are stale are dropped. `N` falls with every merge, and the
//! gain falls with `N` (`f(N) - f(N - k)` rises with `N`), so an entry computed at an older `N`
//! is an upper bound: it is recomputed and pushed back, and a merge is taken only when the
//! entry at the top is current. Ties break on the pair's count, then on the units' ids
//! (creation order), so training is deterministic.
//!
//! Merging alone leaves pieces that the tokenizer never emits: "##tio" once "##tion" exists
//! is only ever a stepping stone, since greedy longest-match always takes the longer piece. So
//! training runs in rounds: merge until the vocabulary has `vocab_size` pieces in use, tokenize
//! every training word with the pieces so far (greedy longest match, as [`crate::wordpiece`]
//! does) and mark which merged pieces some word's tokenization uses, then merge further to
//! replace the unused ones. Dropping an unused piece changes no training word's tokenization,
//! so the last round's count is exact. The alphabet is always kept.

use super::{greedy_pieces, Prepared, TrainerConfig};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BinaryHeap;

/// Trains a vocabulary by likelihood-gain merges (module docs). Returns the tokens in id
/// order: the specials and the alphabet, then the merged pieces in the order they were merged.
pub fn train(cfg: &TrainerConfig, prep: &Prepared) -> Vec<String> {
    let mut m = Merger::new(cfg, prep);
    let mut target = cfg.vocab_size;
    let mut kept;
    // Each round adds as many merges as there are pieces short; a new piece can make an older
    // one unused, so a few rounds are needed (3 on the demo corpus at 8,192).
    loop {
        let more = m.merge_until(target);
        kept = m.used_pieces(prep);
        let n_kept = kept.iter().filter(|&&k| k).count();
        if n_kept >= cfg.vocab_size || !more {
            break;
        }
        target += cfg.vocab_size - n_kept;
    }
    m.tokens
        .into_iter()
        .zip(kept)
        .filter_map(|(t, k)| k.then_some(t))
        .take(cfg.vocab_size.max(prep.base.len()))
        .collect()
}

/// `x ln x`, with `0 ln 0 = 0`.
fn xlogx(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

/// The unigram log-likelihood gain of merging a pair seen `k` times whose units are seen `ca`
/// and `cb` times (`same`: the pair is a unit twice), among `n` units in all (module docs).
pub fn merge_gain(k: u64, ca: u64, cb: u64, n: u64, same: bool) -> f64 {
    let (k, ca, cb, n) = (k as f64, ca as f64, cb as f64, n as f64);
    let parts = if same {
        xlogx(k) + xlogx((ca - 2.0 * k).max(0.0)) - xlogx(ca)
    } else {
        xlogx(k) + xlogx((ca - k).max(0.0)) + xlogx((cb - k).max(0.0)) - xlogx(ca) - xlogx(cb)
    };
    parts + (xlogx(n) - xlogx((n - k).max(0.0)))
}

/// A heap entry: gain, then count, then earlier symbols first; with the counts the gain was
/// computed from (`ca`, `cb`, `n`), to tell a current entry from a stale one.
#[derive(PartialEq)]
struct Entry {
    score: f64,
    count: u64,
    pair: (u32, u32),
    ca: u64,
    cb: u64,
    n: u64,
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

/// The merge state: words as unit ids, unit and pair counts, and a heap of gains.
struct Merger<'a> {
    prefix: &'a str,
    min_count: u64,
    /// Every unit, in creation order: specials, alphabet, then merges.
    tokens: Vec<String>,
    id_of: FxHashMap<String, u32>,
    /// The specials and the alphabet: `tokens[..base]`, always kept.
    base: usize,
    /// The distinct training words' counts and current units.
    weights: Vec<u64>,
    words: Vec<Vec<u32>>,
    /// Weighted occurrences of each unit, and their sum.
    unit: Vec<u64>,
    n_units: u64,
    pair_count: FxHashMap<(u32, u32), u64>,
    /// The words that hold a pair (possibly with repeats, and words that no longer hold it:
    /// checked when used).
    holders: FxHashMap<(u32, u32), Vec<u32>>,
    /// The pairs each unit is part of (some dead: pruned when the unit is merged).
    pairs_of: Vec<FxHashSet<(u32, u32)>>,
    heap: BinaryHeap<Entry>,
}

impl<'a> Merger<'a> {
    fn new(cfg: &'a TrainerConfig, prep: &'a Prepared<'a>) -> Self {
        let prefix = cfg.continuing_subword_prefix.as_str();
        let mut m = Merger {
            prefix,
            min_count: cfg.min_frequency.max(1),
            tokens: Vec::new(),
            id_of: FxHashMap::default(),
            base: prep.base.len(),
            weights: prep.words.iter().map(|&(_, c)| c).collect(),
            words: Vec::with_capacity(prep.words.len()),
            unit: Vec::new(),
            n_units: 0,
            pair_count: FxHashMap::default(),
            holders: FxHashMap::default(),
            pairs_of: Vec::new(),
            heap: BinaryHeap::new(),
        };
        for t in &prep.base {
            m.intern(t.clone());
        }
        for (w, _) in &prep.words {
            let syms = w
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    m.id_of[&if i == 0 {
                        c.to_string()
                    } else {
                        format!("{prefix}{c}")
                    }]
                })
                .collect();
            m.words.push(syms);
        }
        for (wi, syms) in m.words.iter().enumerate() {
            let w = m.weights[wi];
            for &s in syms {
                m.unit[s as usize] += w;
            }
            for p in syms.windows(2) {
                let key = (p[0], p[1]);
                *m.pair_count.entry(key).or_insert(0) += w;
                m.holders.entry(key).or_default().push(wi as u32);
                m.pairs_of[p[0] as usize].insert(key);
                m.pairs_of[p[1] as usize].insert(key);
            }
        }
        m.n_units = m.unit.iter().sum();
        m.rebuild_heap();
        m
    }

    fn intern(&mut self, t: String) -> u32 {
        if let Some(&id) = self.id_of.get(&t) {
            return id;
        }
        self.tokens.push(t.clone());
        self.unit.push(0);
        self.pairs_of.push(FxHashSet::default());
        let id = (self.tokens.len() - 1) as u32;
        self.id_of.insert(t, id);
        id
    }

    fn entry(&self, p: (u32, u32), c: u64) -> Entry {
        let (ca, cb) = (self.unit[p.0 as usize], self.unit[p.1 as usize]);
        Entry {
            score: merge_gain(c, ca, cb, self.n_units, p.0 == p.1),
            count: c,
            pair: p,
            ca,
            cb,
            n: self.n_units,
        }
    }

    /// One current entry per pair that may be merged (heapified, not pushed one by one). Stale
    /// entries pile up as counts change; rebuilding drops them, which keeps the heap (and its
    /// cache misses) proportional to the live pairs.
    fn rebuild_heap(&mut self) {
        let entries: Vec<Entry> = self
            .pair_count
            .iter()
            .filter(|(_, &c)| c >= self.min_count)
            .map(|(&p, &c)| self.entry(p, c))
            .collect();
        self.heap = BinaryHeap::from(entries);
    }

    /// Merges the best pair until there are `len` units; false if no pair is left to merge.
    fn merge_until(&mut self, len: usize) -> bool {
        while self.tokens.len() < len {
            if self.heap.len() > 4 * self.pair_count.len() + 1024 {
                self.rebuild_heap();
            }
            let Some(top) = self.heap.pop() else {
                return false;
            };
            let count = self.pair_count.get(&top.pair).copied().unwrap_or(0);
            let (ca, cb) = (
                self.unit[top.pair.0 as usize],
                self.unit[top.pair.1 as usize],
            );
            if count < self.min_count || count != top.count || ca != top.ca || cb != top.cb {
                continue; // stale: a fresher entry for this pair is in the heap, or none is due
            }
            if top.n != self.n_units {
                // Computed before the last merges: an upper bound of the gain now. Recompute
                // it and let the heap order it again.
                self.heap.push(self.entry(top.pair, count));
                continue;
            }
            self.merge(top.pair);
        }
        true
    }

    /// Adds the merge of `(a, b)` and rewrites every word holding the pair.
    fn merge(&mut self, (a, b): (u32, u32)) {
        let right = &self.tokens[b as usize];
        let merged = format!(
            "{}{}",
            self.tokens[a as usize],
            right.strip_prefix(self.prefix).unwrap_or(right)
        );
        let m = self.intern(merged);
        let mut holders = self.holders.remove(&(a, b)).unwrap_or_default();
        holders.sort_unstable();
        holders.dedup();
        let mut touched: FxHashSet<(u32, u32)> = FxHashSet::default();
        for wi in holders {
            let w = self.weights[wi as usize];
            let syms = &self.words[wi as usize];
            if !syms.windows(2).any(|p| p == [a, b]) {
                continue;
            }
            for p in syms.windows(2) {
                let key = (p[0], p[1]);
                let c = self
                    .pair_count
                    .get_mut(&key)
                    .expect("pair of a word is counted");
                *c -= w;
                touched.insert(key);
            }
            let mut out = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    out.push(m);
                    self.unit[a as usize] -= w;
                    self.unit[b as usize] -= w;
                    self.unit[m as usize] += w;
                    self.n_units -= w;
                    i += 2;
                } else {
                    out.push(syms[i]);
                    i += 1;
                }
            }
            for p in out.windows(2) {
                let key = (p[0], p[1]);
                *self.pair_count.entry(key).or_insert(0) += w;
                let h = self.holders.entry(key).or_default();
                if h.last() != Some(&wi) {
                    h.push(wi);
                }
                self.pairs_of[p[0] as usize].insert(key);
                self.pairs_of[p[1] as usize].insert(key);
                touched.insert(key);
            }
            self.words[wi as usize] = out;
        }
        // Gains that changed: pairs whose count changed, and every pair touching a or b (their
        // unit counts fell). Dead pairs (count 0) are dropped from those sets on the way. The
        // heap's order is total, so the order of these pushes does not matter.
        for x in [a, b] {
            let pc = &self.pair_count;
            self.pairs_of[x as usize].retain(|p| pc.get(p).is_some_and(|&c| c > 0));
            touched.extend(self.pairs_of[x as usize].iter().copied());
        }
        self.pair_count.remove(&(a, b));
        for p in touched {
            let c = self.pair_count.get(&p).copied().unwrap_or(0);
            if c == 0 {
                self.pair_count.remove(&p);
                self.holders.remove(&p);
            } else if c >= self.min_count {
                let e = self.entry(p, c);
                self.heap.push(e);
            }
        }
    }

    /// Which units the tokenizer's greedy longest match uses on some training word (the
    /// specials and the alphabet always count as used).
    fn used_pieces(&self, prep: &Prepared) -> Vec<bool> {
        use rayon::prelude::*;
        let n = self.tokens.len();
        let used = prep
            .words
            .par_chunks(2048)
            .map(|chunk| {
                let mut used = vec![false; n];
                let (mut pieces, mut buf) = (Vec::new(), String::new());
                let mut lookup = |cont: bool, piece: &str| {
                    buf.clear();
                    if cont {
                        buf.push_str(self.prefix);
                    }
                    buf.push_str(piece);
                    self.id_of.get(buf.as_str()).copied()
                };
                for (w, _) in chunk {
                    if greedy_pieces(w, usize::MAX, &mut lookup, &mut pieces) {
                        for &(id, _) in &pieces {
                            used[id as usize] = true;
                        }
                    }
                }
                used
            })
            .reduce(
                || vec![false; n],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(x, y)| *x |= y);
                    a
                },
            );
        used.into_iter()
            .enumerate()
            .map(|(i, u)| u || i < self.base)
            .collect()
    }
}
