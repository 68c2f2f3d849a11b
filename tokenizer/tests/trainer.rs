//! The WordPiece trainer against a naive reference that recomputes every pair's count and
//! score from scratch each round (same score, same tie order): identical vocabularies on random
//! corpora. Plus determinism, the score rule on a hand-checked example, and coverage.

use proptest::prelude::*;
use rustc_hash::FxHashMap;
use tokenizer::trainer::{count_words, train_from_counts};
use tokenizer::{BertTokenizer, NormalizerConfig, TrainerConfig, Vocab};

/// The definition, slowly: each round, count every pair over all words, score
/// count(ab) / (count(a) count(b)), take the best (ties: higher count, then smaller ids).
fn naive(cfg: &TrainerConfig, counts: &FxHashMap<String, u64>) -> Vec<String> {
    let p = &cfg.continuing_subword_prefix;
    let mut cc: FxHashMap<char, u64> = FxHashMap::default();
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
    let mut wl: Vec<(&str, u64)> = counts
        .iter()
        .filter(|(w, _)| w.chars().all(|c| allowed.contains(&c)))
        .map(|(w, &c)| (w.as_str(), c))
        .collect();
    wl.sort_unstable();
    let mut tokens: Vec<String> = cfg.special_tokens.clone();
    let mut chars = allowed.clone();
    chars.sort_unstable();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    let mut conts: Vec<String> = wl
        .iter()
        .flat_map(|(w, _)| w.chars().skip(1).map(|c| format!("{p}{c}")))
        .collect();
    conts.sort_unstable();
    conts.dedup();
    tokens.extend(conts);
    let id = |t: &str, tokens: &[String]| tokens.iter().position(|x| x == t).unwrap() as u32;
    let mut words: Vec<(Vec<u32>, u64)> = wl
        .iter()
        .map(|(w, c)| {
            (
                w.chars()
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
                    .collect(),
                *c,
            )
        })
        .collect();
    while tokens.len() < cfg.vocab_size {
        let mut unit = vec![0u64; tokens.len()];
        let mut pairs: FxHashMap<(u32, u32), u64> = FxHashMap::default();
        for (s, c) in &words {
            for &x in s {
                unit[x as usize] += c;
            }
            for w in s.windows(2) {
                *pairs.entry((w[0], w[1])).or_insert(0) += c;
            }
        }
        let best = pairs
            .iter()
            .filter(|(_, &c)| c >= cfg.min_frequency)
            .map(|(&pr, &c)| {
                (
                    c as f64 / (unit[pr.0 as usize] as f64 * unit[pr.1 as usize] as f64),
                    c,
                    pr,
                )
            })
            .max_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(y.2.cmp(&x.2)));
        let Some((_, _, (a, b))) = best else { break };
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
    tokens
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
    fn matches_the_naive_definition(lines in corpus(), size in 12usize..60, min_frequency in 1u64..3, limit in prop_oneof![Just(None), Just(Some(4usize))]) {
        let cfg = TrainerConfig { vocab_size: size, min_frequency, limit_alphabet: limit, ..TrainerConfig::default() };
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let counts = count_words(&texts, &cfg.normalizer);
        prop_assert_eq!(train_from_counts(&cfg, &counts), naive(&cfg, &counts));
    }
}

#[test]
fn scores_by_likelihood_not_frequency() {
    // "ab" is the most frequent pair (6), but a and b are common apart; "x y" (3) always
    // co-occur: WordPiece merges x + ##y first, BPE would merge a + ##b.
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    counts.insert("ab".into(), 6);
    counts.insert("a".into(), 20);
    counts.insert("b".into(), 20);
    counts.insert("xy".into(), 3);
    let cfg = TrainerConfig {
        vocab_size: 100,
        min_frequency: 1,
        special_tokens: vec!["[UNK]".into()],
        ..TrainerConfig::default()
    };
    let vocab = train_from_counts(&cfg, &counts);
    let first_merge = vocab.iter().position(|t| t == "xy").unwrap();
    let second = vocab.iter().position(|t| t == "ab").unwrap();
    assert!(first_merge < second, "{vocab:?}");
}

#[test]
fn deterministic_and_covers_its_corpus() {
    let text =
        "the cat sat on the mat\nthe dog sat on the log\ncats and dogs and logs\n".repeat(20);
    let lines: Vec<&str> = text.lines().collect();
    let cfg = TrainerConfig {
        vocab_size: 60,
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
        "{:?}",
        v1.tokens()
    );
    // Every word of the corpus encodes without [UNK].
    let tok =
        BertTokenizer::new(Vocab::from_tokens(v1.tokens()), NormalizerConfig::default()).unwrap();
    let e = tok.encode(&text, false);
    assert!(!e.ids.contains(&tok.vocab.id("[UNK]").unwrap()));
}
