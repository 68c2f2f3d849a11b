//! `BertConfig`: HuggingFace's `config.json` for BERT (configuration_bert.py), read field by
//! field so a bad file gets an error naming the field, plus the BERT size presets of
//! Turc et al. 2019 ("Well-Read Students Learn Better": Tiny .. Medium) and the originals.

use crate::{BertError, Result};
use engine::Gelu;
use serde_json::{json, Map, Value};
use std::path::Path;

/// The feed-forward activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu` (erf form) or `gelu_new`/`gelu_pytorch_tanh` (tanh form).
    Gelu(Gelu),
    Relu,
}

impl Activation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gelu" | "gelu_python" => Activation::Gelu(Gelu::Erf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::Gelu(Gelu::Tanh),
            "relu" => Activation::Relu,
            _ => return None,
        })
    }
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Gelu(Gelu::Erf) => "gelu",
            Activation::Gelu(Gelu::Tanh) => "gelu_new",
            Activation::Relu => "relu",
        }
    }
}

/// What HF's `problem_type` says a sequence classifier's loss is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemType {
    Regression,
    SingleLabel,
    MultiLabel,
}

/// A BERT's shape and hyper-parameters, as in HF `BertConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub hidden_dropout_prob: f32,
    pub attention_probs_dropout_prob: f32,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub initializer_range: f32,
    pub layer_norm_eps: f32,
    pub pad_token_id: usize,
    /// Dropout before the classifier of sequence/token classification; None: hidden_dropout_prob.
    pub classifier_dropout: Option<f32>,
    /// Heads: the classifier label count (`num_labels`, from `id2label` when present).
    pub num_labels: usize,
    pub id2label: Vec<String>,
    pub problem_type: Option<ProblemType>,
    /// `architectures[0]` when given, e.g. `BertForPreTraining`.
    pub architecture: Option<String>,
}

impl Default for BertConfig {
    /// bert-base-uncased.
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu(Gelu::Erf),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            classifier_dropout: None,
            num_labels: 2,
            id2label: vec![],
            problem_type: None,
            architecture: None,
        }
    }
}

/// Preset names with (layers, hidden, heads); intermediate is 4 x hidden.
pub const PRESETS: &[(&str, usize, usize, usize)] = &[
    ("bert-tiny", 2, 128, 2),
    ("bert-mini", 4, 256, 4),
    ("bert-small", 4, 512, 8),
    ("bert-medium", 8, 512, 8),
    ("bert-base", 12, 768, 12),
    ("bert-large", 24, 1024, 16),
];

impl BertConfig {
    /// A preset by name (`bert-tiny`, `mini`, `BERT-Base`, ...), with the given vocabulary size.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let key = name.to_ascii_lowercase();
        let key = key.strip_prefix("bert-").unwrap_or(&key);
        let &(_, layers, hidden, heads) = PRESETS
            .iter()
            .find(|p| p.0.strip_prefix("bert-") == Some(key))
            .ok_or_else(|| {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                BertError::Config(format!(
                    "unknown model preset '{name}' (known: {})",
                    names.join(", ")
                ))
            })?;
        Ok(BertConfig {
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            ..Default::default()
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(BertError::Config(why));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad(format!(
                "layer_norm_eps must be a positive number, got {}",
                self.layer_norm_eps
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        Ok(())
    }

    /// Parses HF `config.json` text; `source` names the file in errors.
    pub fn from_json_str(text: &str, source: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| BertError::Config(format!("{source}: not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| BertError::Config(format!("{source}: expected a JSON object")))?;
        let field_err = |k: &str, want: &str| {
            BertError::Config(format!("{source}: field '{k}' must be {want}"))
        };
        let usize_or = |k: &str, d: usize| -> Result<usize> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| field_err(k, "a non-negative integer")),
            }
        };
        let f32_or = |k: &str, d: f32| -> Result<f32> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x
                    .as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| field_err(k, "a number")),
            }
        };
        if let Some(t) = obj.get("model_type").and_then(Value::as_str) {
            if t != "bert" {
                return Err(BertError::Config(format!(
                    "{source}: model_type is '{t}'; only 'bert' is supported"
                )));
            }
        }
        if let Some(p) = obj.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(BertError::Config(format!(
                    "{source}: position_embedding_type '{p}' is not supported (only 'absolute')"
                )));
            }
        }
        let d = BertConfig::default();
        let hidden_act = match obj.get("hidden_act") {
            None => d.hidden_act,
            Some(Value::String(s)) => Activation::parse(s).ok_or_else(|| {
                BertError::Config(format!(
                    "{source}: hidden_act '{s}' is not supported (gelu, gelu_new, relu)"
                ))
            })?,
            Some(_) => return Err(field_err("hidden_act", "a string")),
        };
        let mut id2label: Vec<(usize, String)> = Vec::new();
        if let Some(m) = obj.get("id2label") {
            let m = m
                .as_object()
                .ok_or_else(|| field_err("id2label", "an object"))?;
            for (k, v) in m {
                let i = k
                    .parse::<usize>()
                    .map_err(|_| field_err("id2label", "keyed by integers"))?;
                let s = v
                    .as_str()
                    .ok_or_else(|| field_err("id2label", "an object of strings"))?;
                id2label.push((i, s.to_string()));
            }
            id2label.sort();
            if id2label.iter().enumerate().any(|(j, (i, _))| *i != j) {
                return Err(field_err("id2label", "keyed 0..n without gaps"));
            }
        }
        let id2label: Vec<String> = id2label.into_iter().map(|x| x.1).collect();
        let num_labels = match obj.get("num_labels") {
            Some(_) => usize_or("num_labels", 2)?,
            None if !id2label.is_empty() => id2label.len(),
            None => 2,
        };
        let problem_type = match obj.get("problem_type").and_then(Value::as_str) {
            None => None,
            Some("regression") => Some(ProblemType::Regression),
            Some("single_label_classification") => Some(ProblemType::SingleLabel),
            Some("multi_label_classification") => Some(ProblemType::MultiLabel),
            Some(other) => {
                return Err(BertError::Config(format!(
                    "{source}: problem_type '{other}' is not one of regression, \
                     single_label_classification, multi_label_classification"
                )))
            }
        };
        let architecture = obj
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        let c = BertConfig {
            vocab_size: usize_or("vocab_size", d.vocab_size)?,
            hidden_size: usize_or("hidden_size", d.hidden_size)?,
            num_hidden_layers: usize_or("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: usize_or("num_attention_heads", d.num_attention_heads)?,
            intermediate_size: usize_or("intermediate_size", d.intermediate_size)?,
            hidden_act,
            hidden_dropout_prob: f32_or("hidden_dropout_prob", d.hidden_dropout_prob)?,
            attention_probs_dropout_prob: f32_or(
                "attention_probs_dropout_prob",
                d.attention_probs_dropout_prob,
            )?,
            max_position_embeddings: usize_or(
                "max_position_embeddings",
                d.max_position_embeddings,
            )?,
            type_vocab_size: usize_or("type_vocab_size", d.type_vocab_size)?,
            initializer_range: f32_or("initializer_range", d.initializer_range)?,
            layer_norm_eps: f32_or("layer_norm_eps", d.layer_norm_eps)?,
            pad_token_id: usize_or("pad_token_id", d.pad_token_id)?,
            classifier_dropout: match obj.get("classifier_dropout") {
                None | Some(Value::Null) => None,
                Some(_) => Some(f32_or("classifier_dropout", 0.0)?),
            },
            num_labels,
            id2label,
            problem_type,
            architecture,
        };
        c.validate()
            .map_err(|e| BertError::Config(format!("{source}: {e}")))?;
        Ok(c)
    }

    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// HF `config.json` contents (loadable by `transformers.BertConfig`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(a) = &self.architecture {
            m.insert("architectures".into(), json!([a]));
        }
        m.insert("model_type".into(), json!("bert"));
        m.insert("vocab_size".into(), json!(self.vocab_size));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("hidden_act".into(), json!(self.hidden_act.hf_name()));
        m.insert(
            "hidden_dropout_prob".into(),
            json!(short(self.hidden_dropout_prob)),
        );
        m.insert(
            "attention_probs_dropout_prob".into(),
            json!(short(self.attention_probs_dropout_prob)),
        );
        m.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        m.insert("type_vocab_size".into(), json!(self.type_vocab_size));
        m.insert(
            "initializer_range".into(),
            json!(short(self.initializer_range)),
        );
        m.insert("layer_norm_eps".into(), json!(short(self.layer_norm_eps)));
        m.insert("pad_token_id".into(), json!(self.pad_token_id));
        m.insert("position_embedding_type".into(), json!("absolute"));
        if let Some(p) = self.classifier_dropout {
            m.insert("classifier_dropout".into(), json!(short(p)));
        }
        if !self.id2label.is_empty() {
            let id2: Map<String, Value> = self
                .id2label
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect();
            let l2id: Map<String, Value> = self
                .id2label
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect();
            m.insert("id2label".into(), Value::Object(id2));
            m.insert("label2id".into(), Value::Object(l2id));
        } else {
            m.insert("num_labels".into(), json!(self.num_labels));
        }
        if let Some(p) = self.problem_type {
            let s = match p {
                ProblemType::Regression => "regression",
                ProblemType::SingleLabel => "single_label_classification",
                ProblemType::MultiLabel => "multi_label_classification",
            };
            m.insert("problem_type".into(), json!(s));
        }
        Value::Object(m)
    }

    /// Parameters of the encoder (embeddings, layers, pooler).
    pub fn encoder_param_count(&self) -> usize {
        let (h, i, l) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
        );
        let emb =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h + 2 * h;
        let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
        emb + l * layer + h * h + h
    }
}

/// An f32 as the f64 its shortest decimal form names (0.02, not 0.019999999552965164), so
/// that the config.json we write reads as the one HF writes.
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// config.json's floats read as HF writes them: 0.02 and 1e-12, not the f32's f64 digits.
    #[test]
    fn config_json_floats_are_short() {
        let c = BertConfig::preset("bert-tiny", 100).unwrap();
        let j = c.to_json();
        assert_eq!(j["initializer_range"].as_f64(), Some(0.02));
        assert_eq!(j["layer_norm_eps"].as_f64(), Some(1e-12));
        assert_eq!(j["hidden_dropout_prob"].as_f64(), Some(0.1));
        let back = BertConfig::from_json_str(&j.to_string(), "test").unwrap();
        assert_eq!(back.initializer_range, c.initializer_range);
        assert_eq!(back.layer_norm_eps, c.layer_norm_eps);
    }

    #[test]
    fn reads_hf_fields_and_round_trips() {
        let text = r#"{"architectures":["BertForSequenceClassification"],"model_type":"bert",
            "hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":96,
            "hidden_act":"gelu_new","vocab_size":100,"id2label":{"1":"pos","0":"neg"},
            "layer_norm_eps":1e-5,"problem_type":"single_label_classification"}"#;
        let c = BertConfig::from_json_str(text, "config.json").unwrap();
        assert_eq!(c.hidden_size, 64);
        assert_eq!(c.hidden_act, Activation::Gelu(Gelu::Tanh));
        assert_eq!(c.id2label, vec!["neg", "pos"]);
        assert_eq!(c.num_labels, 2);
        assert_eq!(c.max_position_embeddings, 512);
        let back = BertConfig::from_json_str(&c.to_json().to_string(), "round-trip").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = BertConfig::from_json_str(r#"{"hidden_size":"big"}"#, "x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x/config.json") && e.contains("hidden_size"),
            "{e}"
        );
        let e =
            BertConfig::from_json_str(r#"{"hidden_size":100,"num_attention_heads":3}"#, "c.json")
                .unwrap_err()
                .to_string();
        assert!(e.contains("not a multiple"), "{e}");
        let e = BertConfig::from_json_str(r#"{"hidden_act":"swish"}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("swish"), "{e}");
        assert!(BertConfig::from_json_str("[1]", "c.json").is_err());
        assert!(BertConfig::from_json_str("{", "c.json").is_err());
    }

    #[test]
    fn presets() {
        let m = BertConfig::preset("BERT-Mini", 30522).unwrap();
        assert_eq!(
            (m.num_hidden_layers, m.hidden_size, m.num_attention_heads),
            (4, 256, 4)
        );
        assert_eq!(m.intermediate_size, 1024);
        assert!(BertConfig::preset("tiny", 10).is_ok());
        let e = BertConfig::preset("huge", 10).unwrap_err().to_string();
        assert!(e.contains("bert-tiny"), "{e}");
        // bert-base-uncased has 109,482,240 parameters with its pooler.
        assert_eq!(BertConfig::default().encoder_param_count(), 109_482_240);
    }
}
