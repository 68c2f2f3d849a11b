//! Loading and saving HF `tokenizer.json` (BERT family: BertNormalizer, BertPreTokenizer,
//! WordPiece, TemplateProcessing or BertProcessing, added special tokens, truncation, padding).
//! Errors name the file and the field.

use crate::encoding::{BertTokenizer, Padding, PaddingStrategy, Truncation, TruncationStrategy};
use crate::normalizer::NormalizerConfig;
use crate::vocab::{Vocab, VocabError};
use serde_json::{json, Map, Value};

fn invalid(path: &str, field: &str, why: impl std::fmt::Display) -> VocabError {
    VocabError::Invalid {
        path: path.to_string(),
        line: 0,
        why: format!("field `{field}`: {why}"),
    }
}

fn get<'a>(v: &'a Value, path: &str, field: &str) -> Result<&'a Value, VocabError> {
    let mut cur = v;
    for part in field.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| invalid(path, field, "missing"))?;
    }
    Ok(cur)
}

fn as_bool(v: &Value, path: &str, field: &str) -> Result<bool, VocabError> {
    v.as_bool()
        .ok_or_else(|| invalid(path, field, format!("expected true or false, got {v}")))
}

fn as_usize(v: &Value, path: &str, field: &str) -> Result<usize, VocabError> {
    v.as_u64().map(|x| x as usize).ok_or_else(|| {
        invalid(
            path,
            field,
            format!("expected a non-negative integer, got {v}"),
        )
    })
}

fn as_str<'a>(v: &'a Value, path: &str, field: &str) -> Result<&'a str, VocabError> {
    v.as_str()
        .ok_or_else(|| invalid(path, field, format!("expected a string, got {v}")))
}

/// Parses tokenizer.json text; `path` only names the source in errors.
pub fn parse_tokenizer_json(text: &str, path: &str) -> Result<BertTokenizer, VocabError> {
    let root: Value = serde_json::from_str(text).map_err(|e| VocabError::Invalid {
        path: path.into(),
        line: e.line(),
        why: format!("not valid JSON: {e}"),
    })?;
    // Model: WordPiece with its vocabulary (token -> id).
    let model = get(&root, path, "model")?;
    let kind = model
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("WordPiece");
    if kind != "WordPiece" {
        return Err(invalid(
            path,
            "model.type",
            format!("only WordPiece is supported, got {kind}"),
        ));
    }
    let vocab_obj = get(model, path, "vocab")
        .map_err(|_| invalid(path, "model.vocab", "missing"))?
        .as_object()
        .ok_or_else(|| invalid(path, "model.vocab", "expected an object of token: id"))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_obj.len()];
    for (tok, id) in vocab_obj {
        let id = id
            .as_u64()
            .filter(|&i| (i as usize) < tokens.len())
            .ok_or_else(|| {
                invalid(
                    path,
                    "model.vocab",
                    format!("id of {tok:?} is {id}, not in 0..{}", vocab_obj.len()),
                )
            })?;
        if tokens[id as usize].replace(tok.clone()).is_some() {
            return Err(invalid(
                path,
                "model.vocab",
                format!("id {id} is used twice"),
            ));
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .map(|t| t.expect("every id in 0..len appears once"))
        .collect();
    // Normalizer.
    let normalizer = match root.get("normalizer") {
        None | Some(Value::Null) => NormalizerConfig {
            clean_text: false,
            handle_chinese_chars: false,
            strip_accents: Some(false),
            lowercase: false,
        },
        Some(n) => {
            let t = n.get("type").and_then(Value::as_str).unwrap_or("");
            if t != "BertNormalizer" {
                return Err(invalid(
                    path,
                    "normalizer.type",
                    format!("only BertNormalizer is supported, got {t:?}"),
                ));
            }
            let flag = |name: &str, default: bool| -> Result<bool, VocabError> {
                n.get(name).map_or(Ok(default), |v| {
                    as_bool(v, path, &format!("normalizer.{name}"))
                })
            };
            let strip = match n.get("strip_accents") {
                None | Some(Value::Null) => None,
                Some(v) => Some(as_bool(v, path, "normalizer.strip_accents")?),
            };
            NormalizerConfig {
                clean_text: flag("clean_text", true)?,
                handle_chinese_chars: flag("handle_chinese_chars", true)?,
                strip_accents: strip,
                lowercase: flag("lowercase", true)?,
            }
        }
    };
    if let Some(p) = root.get("pre_tokenizer").filter(|p| !p.is_null()) {
        let t = p.get("type").and_then(Value::as_str).unwrap_or("");
        if t != "BertPreTokenizer" {
            return Err(invalid(
                path,
                "pre_tokenizer.type",
                format!("only BertPreTokenizer is supported, got {t:?}"),
            ));
        }
    }
    let mut tok =
        BertTokenizer::new(Vocab::from_tokens(&tokens), normalizer).map_err(|e| match e {
            VocabError::Invalid { why, .. } => invalid(path, "model.vocab", why),
            e => e,
        })?;
    let default_unk = json!("[UNK]");
    let unk = as_str(
        model.get("unk_token").unwrap_or(&default_unk),
        path,
        "model.unk_token",
    )?;
    tok.set_unk_token(unk).map_err(|e| match e {
        VocabError::Invalid { why, .. } => invalid(path, "model.unk_token", why),
        e => e,
    })?;
    if let Some(p) = model.get("continuing_subword_prefix") {
        tok.set_continuing_subword_prefix(as_str(p, path, "model.continuing_subword_prefix")?);
    }
    if let Some(m) = model.get("max_input_chars_per_word") {
        tok.wordpiece.max_input_chars_per_word =
            as_usize(m, path, "model.max_input_chars_per_word")?;
    }
    // Added tokens: the special ones are matched whole in raw text.
    if let Some(added) = root.get("added_tokens").filter(|a| !a.is_null()) {
        let arr = added
            .as_array()
            .ok_or_else(|| invalid(path, "added_tokens", "expected an array"))?;
        let mut specials = Vec::new();
        for (i, a) in arr.iter().enumerate() {
            let field = format!("added_tokens[{i}]");
            let content = as_str(
                get(a, path, "content").map_err(|_| invalid(path, &field, "missing content"))?,
                path,
                &field,
            )?;
            let id = as_usize(
                get(a, path, "id").map_err(|_| invalid(path, &field, "missing id"))?,
                path,
                &field,
            )? as u32;
            specials.push((content.to_string(), id));
        }
        tok.set_special_tokens(specials);
    }
    // Post-processor: [CLS] / [SEP] ids from the template's special tokens.
    if let Some(pp) = root.get("post_processor").filter(|p| !p.is_null()) {
        match pp.get("type").and_then(Value::as_str) {
            Some("TemplateProcessing") => {
                let sp = get(pp, path, "special_tokens")?
                    .as_object()
                    .ok_or_else(|| {
                        invalid(path, "post_processor.special_tokens", "expected an object")
                    })?;
                for (name, slot) in [("[CLS]", 0), ("[SEP]", 1)] {
                    if let Some(e) = sp.get(name) {
                        let id = e
                            .get("ids")
                            .and_then(|v| v.get(0))
                            .and_then(Value::as_u64)
                            .ok_or_else(|| {
                                invalid(
                                    path,
                                    &format!("post_processor.special_tokens.{name}.ids"),
                                    "expected [id]",
                                )
                            })?;
                        tok.set_template_token(slot, name, id as u32);
                    }
                }
            }
            Some("BertProcessing") => {
                for (field, slot) in [("cls", 0), ("sep", 1)] {
                    let pair = get(pp, path, field)?
                        .as_array()
                        .filter(|a| a.len() == 2)
                        .ok_or_else(|| {
                            invalid(
                                path,
                                &format!("post_processor.{field}"),
                                "expected [token, id]",
                            )
                        })?;
                    let name = as_str(&pair[0], path, &format!("post_processor.{field}"))?;
                    tok.set_template_token(
                        slot,
                        name,
                        as_usize(&pair[1], path, &format!("post_processor.{field}"))? as u32,
                    );
                }
            }
            other => {
                return Err(invalid(
                    path,
                    "post_processor.type",
                    format!("expected TemplateProcessing or BertProcessing, got {other:?}"),
                ))
            }
        }
    }
    // Truncation and padding, as HF applies them on every encode.
    if let Some(t) = root.get("truncation").filter(|t| !t.is_null()) {
        let strategy = match t
            .get("strategy")
            .and_then(Value::as_str)
            .unwrap_or("LongestFirst")
        {
            "LongestFirst" => TruncationStrategy::LongestFirst,
            "OnlyFirst" => TruncationStrategy::OnlyFirst,
            "OnlySecond" => TruncationStrategy::OnlySecond,
            s => {
                return Err(invalid(
                    path,
                    "truncation.strategy",
                    format!("unknown strategy {s:?}"),
                ))
            }
        };
        let left = t.get("direction").and_then(Value::as_str) == Some("Left");
        tok.truncation = Some(Truncation {
            max_length: as_usize(get(t, path, "max_length")?, path, "truncation.max_length")?,
            strategy,
            stride: t
                .get("stride")
                .map_or(Ok(0), |v| as_usize(v, path, "truncation.stride"))?,
            left,
        });
    }
    if let Some(p) = root.get("padding").filter(|p| !p.is_null()) {
        let strategy = match p.get("strategy") {
            Some(Value::String(s)) if s == "BatchLongest" => PaddingStrategy::BatchLongest,
            Some(Value::Object(o)) if o.contains_key("Fixed") => {
                PaddingStrategy::Fixed(fixed_length(&o["Fixed"], path)?)
            }
            other => {
                return Err(invalid(
                    path,
                    "padding.strategy",
                    format!("expected \"BatchLongest\" or {{\"Fixed\": n}}, got {other:?}"),
                ))
            }
        };
        tok.padding = Some(Padding {
            strategy,
            left: p.get("direction").and_then(Value::as_str) == Some("Left"),
            pad_to_multiple_of: p
                .get("pad_to_multiple_of")
                .and_then(Value::as_u64)
                .map(|x| x as usize),
            pad_id: p
                .get("pad_id")
                .map_or(Ok(0), |v| as_usize(v, path, "padding.pad_id"))? as u32,
            pad_type_id: p
                .get("pad_type_id")
                .map_or(Ok(0), |v| as_usize(v, path, "padding.pad_type_id"))?
                as u32,
            pad_token: p
                .get("pad_token")
                .and_then(Value::as_str)
                .unwrap_or("[PAD]")
                .to_string(),
        });
    }
    Ok(tok)
}

/// A fixed padding length, refused when absurd (a hostile file must not make every encode
/// allocate gigabytes).
fn fixed_length(v: &Value, path: &str) -> Result<usize, VocabError> {
    let n = as_usize(v, path, "padding.strategy.Fixed")?;
    if n > 1 << 20 {
        return Err(invalid(
            path,
            "padding.strategy.Fixed",
            format!("{n} tokens is not a plausible sequence length"),
        ));
    }
    Ok(n)
}

/// Reads tokenizer.json.
pub fn load_tokenizer_json(path: &str) -> Result<BertTokenizer, VocabError> {
    let text = std::fs::read_to_string(path).map_err(|error| VocabError::Io {
        path: path.into(),
        error,
    })?;
    parse_tokenizer_json(&text, path)
}

/// tokenizer.json text for `tok`, in HF's layout (loadable by `tokenizers.Tokenizer.from_file`).
pub fn tokenizer_json(tok: &BertTokenizer) -> String {
    let vocab: Map<String, Value> = tok
        .vocab
        .tokens()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = tok.special_tokens().iter().map(|(t, id)| json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})).collect();
    let (cls, sep) = tok.template_tokens();
    let n = &tok.normalizer;
    let root = json!({
        "version": "1.0",
        "truncation": tok.truncation.as_ref().map(|t| json!({"direction": if t.left {"Left"} else {"Right"}, "max_length": t.max_length, "strategy": format!("{:?}", t.strategy), "stride": t.stride})),
        "padding": tok.padding.as_ref().map(|p| json!({"strategy": match p.strategy { PaddingStrategy::BatchLongest => json!("BatchLongest"), PaddingStrategy::Fixed(n) => json!({"Fixed": n}) }, "direction": if p.left {"Left"} else {"Right"}, "pad_to_multiple_of": p.pad_to_multiple_of, "pad_id": p.pad_id, "pad_type_id": p.pad_type_id, "pad_token": p.pad_token})),
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": n.clean_text, "handle_chinese_chars": n.handle_chinese_chars, "strip_accents": n.strip_accents, "lowercase": n.lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": cls.0, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": sep.0, "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": cls.0, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": sep.0, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": sep.0, "type_id": 1}}],
            "special_tokens": {cls.0.clone(): {"id": cls.0, "ids": [cls.1], "tokens": [cls.0]}, sep.0.clone(): {"id": sep.0, "ids": [sep.1], "tokens": [sep.0]}}
        },
        "decoder": {"type": "WordPiece", "prefix": tok.wordpiece.continuing_subword_prefix, "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": tok.wordpiece.unk_token, "continuing_subword_prefix": tok.wordpiece.continuing_subword_prefix, "max_input_chars_per_word": tok.wordpiece.max_input_chars_per_word, "vocab": vocab}
    });
    serde_json::to_string_pretty(&root).expect("a Value always serialises")
}
