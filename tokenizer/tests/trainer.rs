//! The WordPiece learners against naive references that recompute everything from scratch
//! each round with plain strings (same rules, same tie order): identical vocabularies on random
//! corpora. Plus the likelihood gain against the log-likelihood itself, hand-checked examples,
//! determinism, coverage and the held-out score.

use proptest::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::{HashMap, HashSet};
use tokenizer::trainer::{
    count_words, heldout_split, merge_gain, pieces_per_word, train_from_counts, Algorithm,
};
use tokenizer::{BertTokenizer, NormalizerConfig, TrainerConfig, Vocab};

/// The base vocabulary, slowly: specials, the allowed chars sorted, "##" + every char seen
/// inside a word, sorted; and the words made only of allowed chars, sorted.
fn naive_base(
    cfg: &TrainerConfig,
    counts: &FxHashMap<String, u64>,
) -> (Vec<String>, Vec<(String, u64)>) {
    let p = &cfg.continuing_subword_prefix;
    let mut cc: HashMap<char, u64> = HashMap::new();
    for (w, &c) in counts {
        for ch in w.chars() {
            *cc.entry(ch).or_insert(0) += c;
        }
    }
    let mut alpha: Vec<(char, u64)> = cc.into_iter().collect();
    alpha.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(l) = cfg.limit_alphabet {
        alpha.truncate(l);
    }
    let allowed: Vec<char> = alpha.iter().map(|a| a.0).collect();
    let mut wl: Vec<(String, u64)> = counts
        .iter()
        .filter(|(w, _)| w.chars().all(|c| allowed.contains(&c)))
        .map(|(w, &c)| (w.clone(), c))
        .collect();
    wl.sort();
    let mut tokens: Vec<String> = cfg.special_tokens.clone();
    let mut chars = allowed.clone();
    chars.sort_unstable();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    let mut conts: Vec<String> = wl
        .iter()
        .flat_map(|(w, _)| {
            w.chars()
                .skip(1)
                .map(|c| format!("{p}{c}"))
                .collect::<Vec<_>>()
        })
        .collect();
    conts.sort_unstable();
    conts.dedup();
    tokens.extend(conts);
    (tokens, wl)
}

/// Greedy longest match of a word over a set of full token strings ("##" included); None if
/// some position matches nothing or the word is over 100 chars.
fn naive_greedy(
    word: &str,
    vocab: &HashSet<String>,
    max_chars: usize,
) -> Option<Vec<(usize, usize)>> {
    let chars: Vec<char> = word.chars().collect();
    if chars.len() > 100 {
        return None;
    }
    let mut out = Vec::new();
    let mut s = 0;
    while s < chars.len() {
        let mut e = chars.len().min(s.saturating_add(max_chars));
        loop {
            if e == s {
                return None;
            }
            let piece: String = chars[s..e].iter().collect();
            let full = if s > 0 { format!("##{piece}") } else { piece };
            if vocab.contains(&full) {
                break;
            }
            e -= 1;
        }
        out.push((s, e));
        s = e;
    }
    Some(out)
}

/// Likelihood merges until `target` tokens (or no pair of count >= min_frequency is left).
fn naive_merges(
    cfg: &TrainerConfig,
    counts: &FxHashMap<String, u64>,
    target: usize,
) -> (Vec<String>, bool) {
    let p = &cfg.continuing_subword_prefix;
    let (mut tokens, wl) = naive_base(cfg, counts);
    let id = |t: &str, tokens: &[String]| tokens.iter().position(|x| x == t).unwrap() as u32;
    let mut words: Vec<(Vec<u32>, u64)> = wl
        .iter()
        .map(|(w, c)| {
            let ids = w
                .chars()
                .enumerate()
                .map(|(i, ch)| {
                    id(
                        &if i == 0 {
                            ch.to_string()
                        } else {
                            format!("{p}{ch}")
                        },
                        &tokens,
                    )
                })
                .collect();
            (ids, *c)
        })
        .collect();
    while tokens.len() < target {
        let mut unit = vec![0u64; tokens.len()];
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        for (s, c) in &words {
            for &x in s {
                unit[x as usize] += c;
            }
            for w in s.windows(2) {
                *pairs.entry((w[0], w[1])).or_insert(0) += c;
            }
        }
        let n: u64 = unit.iter().sum();
        let best = pairs
            .iter()
            .filter(|(_, &c)| c >= cfg.min_frequency.max(1))
            .map(|(&pr, &c)| {
                let g = merge_gain(c, unit[pr.0 as usize], unit[pr.1 as usize], n, pr.0 == pr.1);
                (g, c, pr)
            })
            .max_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(y.2.cmp(&x.2)));
        let Some((_, _, (a, b))) = best else {
            return (tokens, false);
        };
        let merged = format!(
            "{}{}",
            tokens[a as usize],
            tokens[b as usize]
                .strip_prefix(p.as_str())
                .unwrap_or(&tokens[b as usize])
        );
        let m = match tokens.iter().position(|t| *t == merged) {
            Some(i) => i as u32,
            None => {
                tokens.push(merged);
                (tokens.len() - 1) as u32
            }
        };
        for (s, _) in words.iter_mut() {
            let mut out = Vec::new();
            let mut i = 0;
            while i < s.len() {
                if i + 1 < s.len() && s[i] == a && s[i + 1] == b {
                    out.push(m);
                    i += 2;
                } else {
                    out.push(s[i]);
                    i += 1;
                }
            }
            *s = out;
        }
    }
    (tokens, true)
}

/// The likelihood learner's rounds: merge to a target, keep the alphabet and the pieces some
/// training word's greedy tokenization uses, raise the target by the shortfall, repeat.
fn naive_likelihood(cfg: &TrainerConfig, counts: &FxHashMap<String, u64>) -> Vec<String> {
    let (base, wl) = naive_base(cfg, counts);
    let mut target = cfg.vocab_size;
    loop {
        let (tokens, more) = naive_merges(cfg, counts, target);
        let set: HashSet<String> = tokens.iter().cloned().collect();
        let mut used: HashSet<String> = base.iter().cloned().collect();
        for (w, _) in &wl {
            if let Some(pieces) = naive_greedy(w, &set, usize::MAX) {
                let chars: Vec<char> = w.chars().collect();
                for (s, e) in pieces {
                    let piece: String = chars[s..e].iter().collect();
                    used.insert(if s > 0 { format!("##{piece}") } else { piece });
                }
            }
        }
        let kept: Vec<String> = tokens.into_iter().filter(|t| used.contains(t)).collect();
        if kept.len() >= cfg.vocab_size || !more {
            return kept
                .into_iter()
                .take(cfg.vocab_size.max(base.len()))
                .collect();
        }
        target += cfg.vocab_size - kept.len();
    }
}

/// Google's top-down learner, slowly (tokenizer::trainer::top_down's docs are the definition).
fn naive_top_down(cfg: &TrainerConfig, counts: &FxHashMap<String, u64>) -> Vec<String> {
    let (base, wl) = naive_base(cfg, counts);
    let alphabet: HashSet<String> = base[cfg.special_tokens.len()..].iter().cloned().collect();
    let need = cfg.vocab_size.saturating_sub(base.len());
    let want = (need as f64 * cfg.keep_ratio.max(1.0)).ceil() as usize;
    let max_len = cfg.max_piece_chars;
    // Keys as (continuation, text): the learner's tie order.
    let full = |k: &(bool, String)| {
        if k.0 {
            format!("##{}", k.1)
        } else {
            k.1.clone()
        }
    };
    let mut vocab: HashSet<String> = alphabet.clone();
    let mut chosen: Vec<(u64, (bool, String))> = Vec::new();
    for _ in 0..cfg.iterations.max(1) {
        let mut sub: HashMap<(bool, String), u64> = HashMap::new();
        for (w, c) in &wl {
            let chars: Vec<char> = w.chars().collect();
            let Some(pieces) = naive_greedy(w, &vocab, max_len) else {
                continue;
            };
            for (s, _) in pieces {
                for e in s + 1..=chars.len().min(s + max_len) {
                    *sub.entry((s > 0, chars[s..e].iter().collect()))
                        .or_insert(0) += c;
                }
            }
        }
        let mut cands: Vec<((bool, String), u64)> = sub.into_iter().collect();
        cands.sort_by(|a, b| {
            let (la, lb) = (a.0 .1.chars().count(), b.0 .1.chars().count());
            lb.cmp(&la).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0))
        });
        let keep = |t: u64| {
            let mut taken: HashMap<(bool, String), u64> = HashMap::new();
            let mut out = Vec::new();
            for (k, raw) in &cands {
                let c = raw.saturating_sub(*taken.get(k).unwrap_or(&0));
                if *raw >= t && c >= t {
                    let chars: Vec<char> = k.1.chars().collect();
                    for l in 1..chars.len() {
                        *taken.entry((k.0, chars[..l].iter().collect())).or_insert(0) += c;
                    }
                    if !alphabet.contains(&full(k)) {
                        out.push((c, k.clone()));
                    }
                }
            }
            out
        };
        let mut lo = cfg.min_frequency.max(1);
        let mut hi = cands.iter().map(|c| c.1).max().unwrap_or(1).max(lo);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if keep(mid).len() >= want {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut kept = keep(lo);
        kept.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        kept.truncate(need);
        chosen = kept;
        vocab = alphabet.clone();
        vocab.extend(chosen.iter().map(|(_, k)| full(k)));
    }
    let mut out = base;
    out.extend(chosen.iter().map(|(_, k)| full(k)));
    out
}

fn corpus() -> impl Strategy<Value = Vec<String>> {
    // Small alphabets so words share pieces and merges chain.
    proptest::collection::vec(
        proptest::collection::vec("[abcde]{1,6}|[xyz]{1,3}|é[ab]", 1..8)
            .prop_map(|ws| ws.join(" ")),
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn likelihood_matches_the_naive_definition(lines in corpus(), size in 12usize..60, min_frequency in 1u64..3, limit in prop_oneof![Just(None), Just(Some(4usize))]) {
        let cfg = TrainerConfig { vocab_size: size, min_frequency, limit_alphabet: limit, algorithm: Algorithm::Likelihood, ..TrainerConfig::default() };
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let counts = count_words(&texts, &cfg.normalizer);
        prop_assert_eq!(train_from_counts(&cfg, &counts), naive_likelihood(&cfg, &counts));
    }

    #[test]
    fn top_down_matches_the_naive_definition(lines in corpus(), size in 12usize..60, min_frequency in 1u64..3, limit in prop_oneof![Just(None), Just(Some(4usize))], iterations in 1usize..4, max_piece_chars in 2usize..8, keep_ratio in prop_oneof![Just(1.0), Just(2.0)]) {
        let cfg = TrainerConfig { vocab_size: size, min_frequency, limit_alphabet: limit, algorithm: Algorithm::TopDown, iterations, max_piece_chars, keep_ratio, ..TrainerConfig::default() };
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let counts = count_words(&texts, &cfg.normalizer);
        prop_assert_eq!(train_from_counts(&cfg, &counts), naive_top_down(&cfg, &counts));
    }
}

/// The unigram log-likelihood of a multiset of unit counts: sum c ln(c / N).
fn log_likelihood(units: &[u64]) -> f64 {
    let n: u64 = units.iter().sum();
    units
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 * (c as f64 / n as f64).ln())
        .sum()
}

#[test]
fn merge_gain_is_the_log_likelihood_increase() {
    // Units a, b, c with counts 40, 30, 30; the pair (a, b) seen 12 times: after the merge a 28,
    // b 18, ab 12, c 30.
    let before = log_likelihood(&[40, 30, 30]);
    let after = log_likelihood(&[28, 18, 12, 30]);
    assert!((merge_gain(12, 40, 30, 100, false) - (after - before)).abs() < 1e-9);
    // A pair of one unit: (a, a) seen 5 times among a 40, c 60 -> a 30, aa 5, c 60.
    let before = log_likelihood(&[40, 60]);
    let after = log_likelihood(&[30, 5, 60]);
    assert!((merge_gain(5, 40, 40, 100, true) - (after - before)).abs() < 1e-9);
}

#[test]
fn likelihood_merges_frequent_pairs_too() {
    // The gain has a count factor: "the" (1,000 times) merges before the rare, tightly bound
    // "qz" (twice), which count(ab) / (count(a) count(b)) alone would have merged first.
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    counts.insert("the".into(), 1000);
    counts.insert("qz".into(), 2);
    let cfg = TrainerConfig {
        vocab_size: 100,
        min_frequency: 1,
        special_tokens: vec!["[UNK]".into()],
        algorithm: Algorithm::Likelihood,
        ..TrainerConfig::default()
    };
    let vocab = train_from_counts(&cfg, &counts);
    // ("th" or "##he" came first, then "the"; the stepping stone is pruned: never used.)
    let the = vocab.iter().position(|t| t == "the").unwrap();
    let qz = vocab.iter().position(|t| t == "qz").unwrap();
    assert!(the < qz, "{vocab:?}");
}

#[test]
fn likelihood_prefers_pairs_seen_together() {
    // "ab" is the more frequent pair (6), but a and b are common apart; x and y (3) always
    // co-occur: x + ##y has the larger gain.
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    counts.insert("ab".into(), 6);
    counts.insert("a".into(), 20);
    counts.insert("b".into(), 20);
    counts.insert("xy".into(), 3);
    let cfg = TrainerConfig {
        vocab_size: 100,
        min_frequency: 1,
        special_tokens: vec!["[UNK]".into()],
        algorithm: Algorithm::Likelihood,
        ..TrainerConfig::default()
    };
    let vocab = train_from_counts(&cfg, &counts);
    let first_merge = vocab.iter().position(|t| t == "xy").unwrap();
    let second = vocab.iter().position(|t| t == "ab").unwrap();
    assert!(first_merge < second, "{vocab:?}");
}

#[test]
fn top_down_takes_whole_words_when_they_fit_and_shared_suffixes_when_not() {
    let counts = |ws: &[(&str, u64)]| -> FxHashMap<String, u64> {
        ws.iter().map(|&(w, c)| (w.to_string(), c)).collect()
    };
    let learnt = |ws: &[(&str, u64)], room: usize| {
        let counts = counts(ws);
        let base = tokenizer::trainer::Prepared::new(&TrainerConfig::default(), &counts)
            .base
            .len();
        let cfg = TrainerConfig {
            vocab_size: base + room,
            keep_ratio: 1.0,
            ..TrainerConfig::default()
        };
        train_from_counts(&cfg, &counts)[base..].to_vec()
    };
    // Room for every word: each becomes one piece.
    let words = [
        ("newest", 60),
        ("widest", 30),
        ("oldest", 30),
        ("low", 50),
        ("lower", 20),
    ];
    let mut got = learnt(&words, 6);
    got.sort();
    assert_eq!(got, ["low", "lower", "newest", "oldest", "widest"]);
    // Room for one piece among words that share only "est": the suffix, used 40 times where
    // each word is used 10 ("##st" ties with it, as every "est" holds an "st"; ties go by text).
    let words = [
        ("widest", 10),
        ("slowest", 10),
        ("biggest", 10),
        ("finest", 10),
    ];
    assert_eq!(learnt(&words, 1), ["##est"]);
    // With "fastest" (two "st"s) among them, "##st" is used more, and taken instead.
    let words = [
        ("fastest", 10),
        ("slowest", 10),
        ("biggest", 10),
        ("finest", 10),
    ];
    assert_eq!(learnt(&words, 1), ["##st"]);
}

#[test]
fn deterministic_and_covers_its_corpus() {
    let text =
        "the cat sat on the mat\nthe dog sat on the log\ncats and dogs and logs\n".repeat(20);
    let lines: Vec<&str> = text.lines().collect();
    for algorithm in [Algorithm::TopDown, Algorithm::Likelihood] {
        let cfg = TrainerConfig {
            vocab_size: 60,
            algorithm,
            ..TrainerConfig::default()
        };
        let v1 = tokenizer::train(&cfg, &lines);
        let v2 = tokenizer::train(&cfg, &lines);
        assert_eq!(v1.tokens(), v2.tokens());
        assert_eq!(
            &v1.tokens()[..5],
            &["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        );
        assert!(
            v1.len() <= 60 && v1.tokens().iter().any(|t| t == "the"),
            "{algorithm:?}: {:?}",
            v1.tokens()
        );
        // Every word of the corpus encodes without [UNK].
        let tok = BertTokenizer::new(Vocab::from_tokens(v1.tokens()), NormalizerConfig::default())
            .unwrap();
        let e = tok.encode(&text, false);
        assert!(!e.ids.contains(&tok.vocab.id("[UNK]").unwrap()));
    }
}

#[test]
fn pieces_per_word_counts_words_pieces_and_unknowns() {
    let tokens: Vec<String> = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "s", "##at", ".", "##s",
    ]
    .map(String::from)
    .to_vec();
    let tok = BertTokenizer::new(Vocab::from_tokens(&tokens), NormalizerConfig::default()).unwrap();
    // "the cats sat. dog": words the, cats, sat, ., dog = 5; pieces the, cat ##s, s ##at, .,
    // [UNK] = 7; one [UNK].
    let r = pieces_per_word(&tok, &["The cats sat. dog"]);
    assert_eq!((r.pieces, r.words, r.unknown), (7, 5, 1));
    assert!((r.ratio() - 1.4).abs() < 1e-12);
    assert_eq!(r.top.len(), 5);
}

#[test]
fn heldout_split_takes_every_fiftieth_line() {
    let lines: Vec<String> = (0..120).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (train, held) = heldout_split(&refs);
    assert_eq!(held, ["49", "99"]);
    assert_eq!(train.len(), 118);
}
