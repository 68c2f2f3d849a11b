//! Differential test against HuggingFace `tokenizers` (0.23): ids, type ids, char offsets and
//! word ids for hand-picked tricky strings and seeded random Unicode, single and paired, uncased
//! and cased, over a synthetic vocabulary (fixture by scripts/fixtures/make_tokenizer_fixture.py).

use serde_json::Value;
use tokenizer::{BertTokenizer, Encoding, NormalizerConfig, Vocab};

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn compare(what: &str, ours: &Encoding, want: &Value) -> Result<(), String> {
    let ids: Vec<i64> = ours.ids.iter().map(|&i| i as i64).collect();
    let types: Vec<i64> = ours.type_ids.iter().map(|&i| i as i64).collect();
    let words: Vec<i64> = ours
        .word_ids
        .iter()
        .map(|w| w.map_or(-1, |w| w as i64))
        .collect();
    let offsets: Vec<i64> = ours
        .char_offsets
        .iter()
        .flat_map(|&(a, b)| [a as i64, b as i64])
        .collect();
    let want_offsets: Vec<i64> = want["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(ints)
        .collect();
    for (name, a, b) in [
        ("ids", &ids, &ints(&want["ids"])),
        ("type_ids", &types, &ints(&want["type_ids"])),
        ("offsets", &offsets, &want_offsets),
        ("word_ids", &words, &ints(&want["word_ids"])),
    ] {
        if a != b {
            return Err(format!(
                "{what}: {name} differ\n  ours: {a:?}\n  HF:   {b:?}\n  tokens: {:?}",
                ours.tokens
            ));
        }
    }
    Ok(())
}

#[test]
fn identical_to_hf_tokenizers() {
    let f: Value = serde_json::from_str(include_str!("fixtures/hf_wordpiece.json")).unwrap();
    let tokens: Vec<String> = f["vocab"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let uncased =
        BertTokenizer::new(Vocab::from_tokens(&tokens), NormalizerConfig::default()).unwrap();
    let cased = BertTokenizer::new(Vocab::from_tokens(&tokens), NormalizerConfig::cased()).unwrap();
    let mut failures = Vec::new();
    let cases = f["cases"].as_array().unwrap();
    for c in cases {
        let tok = if c["cased"].as_bool().unwrap() {
            &cased
        } else {
            &uncased
        };
        let a = c["a"].as_str().unwrap();
        let r = if let Some(b) = c.get("b") {
            compare(
                &format!(
                    "pair {a:?} / {:?} (cased {})",
                    b.as_str().unwrap(),
                    c["cased"]
                ),
                &tok.encode_pair(a, b.as_str().unwrap(), true),
                &c["pair"],
            )
        } else {
            compare(
                &format!("{a:?} (cased {})", c["cased"]),
                &tok.encode(a, true),
                &c["single"],
            )
        };
        if let Err(e) = r {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ; first ones:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
