//! The loaders on hostile input: arbitrary bytes, arbitrary text, and structural mutations of a
//! valid tokenizer.json. Every outcome must be Ok or an Err with a message; never a panic.
//! A loaded tokenizer must also encode arbitrary text without panicking.

use proptest::prelude::*;
use serde_json::{json, Value};
use tokenizer::{parse_tokenizer_json, Vocab};

fn valid() -> Value {
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "[PAD]", "special": true}, {"id": 1, "content": "[UNK]", "special": true},
                          {"id": 2, "content": "[CLS]", "special": true}, {"id": 3, "content": "[SEP]", "special": true}],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing", "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2]}, "[SEP]": {"id": "[SEP]", "ids": [3]}}},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                  "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "##b": 5}}
    })
}

/// Replaces the value at a random path of `v` with `with`, or deletes it.
fn mutate(v: &mut Value, path: &[usize], with: Option<Value>) {
    let Some((&first, rest)) = path.split_first() else {
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let key = m.keys().nth(first % m.len()).unwrap().clone();
            if rest.is_empty() {
                match with {
                    Some(w) => {
                        m.insert(key, w);
                    }
                    None => {
                        m.remove(&key);
                    }
                }
            } else {
                mutate(m.get_mut(&key).unwrap(), rest, with);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = first % a.len();
            if rest.is_empty() {
                match with {
                    Some(w) => a[i] = w,
                    None => {
                        a.remove(i);
                    }
                }
            } else {
                mutate(&mut a[i], rest, with);
            }
        }
        _ => *v = with.unwrap_or(Value::Null),
    }
}

fn any_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        any::<bool>().prop_map(|b| Some(json!(b))),
        any::<i64>().prop_map(|i| Some(json!(i))),
        (0u64..10).prop_map(|i| Some(json!(i))),
        ".{0,12}".prop_map(|s| Some(json!(s))),
        Just(Some(json!([]))),
        Just(Some(json!({}))),
        Just(Some(json!({"Fixed": 4}))),
    ]
}

proptest! {
    // 400 cases by default; PROPTEST_CASES=N fuzzes longer.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400), ..ProptestConfig::default() })]

    #[test]
    fn mutated_tokenizer_json_never_panics(path in proptest::collection::vec(0usize..12, 1..5), with in any_value(), text in "\\PC{0,40}") {
        let mut v = valid();
        mutate(&mut v, &path, with);
        if let Ok(tok) = parse_tokenizer_json(&v.to_string(), "fuzz.json") {
            let _ = tok.encode(&text, true);
            let _ = tok.encode_pair(&text, "a b", true);
            let ids = tok.encode(&text, true).ids;
            let _ = tok.decode(&ids, true);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_tokenizer_json(&text, "fuzz.json");
        let _ = Vocab::parse(&text, "fuzz.txt");
    }
}

#[test]
fn the_valid_file_loads() {
    let tok = parse_tokenizer_json(&valid().to_string(), "valid.json").unwrap();
    assert_eq!(tok.encode("ab a", true).ids, vec![2, 4, 5, 4, 3]);
    let mut huge = valid();
    huge["padding"] = json!({"strategy": {"Fixed": 1u64 << 60}});
    let e = parse_tokenizer_json(&huge.to_string(), "huge.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("padding.strategy.Fixed"), "{e}");
    let mut no_unk = valid();
    no_unk["model"]["unk_token"] = json!("<unk>");
    let e = parse_tokenizer_json(&no_unk.to_string(), "unk.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.unk_token") && e.contains("<unk>"), "{e}");
}
