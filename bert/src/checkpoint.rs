//! Checkpoints: a task model from safetensors, and model directories in HF layout
//! (`config.json`, `model.safetensors`, `tokenizer.json` and/or `vocab.txt`).
//!
//! Names are mapped as HF's loader does: a checkpoint of a bare `BertModel` (no `bert.`
//! prefix) loads into a task model and the reverse; the old TF names `LayerNorm.gamma/beta`
//! read as `weight/bias`; the tied MLM decoder weight is not stored separately (it is the
//! word-embedding table) and `cls.predictions.decoder.bias` is an alias of
//! `cls.predictions.bias`. Head tensors the requested task does not use are dropped (HF warns),
//! a head the checkpoint lacks is freshly initialised when asked (fine-tuning from a
//! pretrained encoder), and anything else missing, unexpected or misshapen is an error naming
//! the tensor and both shapes.

use crate::config::BertConfig;
use crate::heads::{param_shapes, Bert, Task};
use crate::model::init_param;
use crate::safetensors::SafeTensors;
use crate::{BertError, Result};
use engine::{ParamStore, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The head to build; None: the config's `architectures[0]` (else `BertModel`).
    pub task: Option<Task>,
    /// Some(seed): initialise a head (and pooler) the checkpoint lacks instead of failing.
    pub init_missing_head: Option<u64>,
}

/// What loading did besides the straightforward.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Checkpoint tensors of another head, not used by this task.
    pub dropped: Vec<String>,
    /// Parameters the checkpoint lacked, freshly initialised.
    pub initialised: Vec<String>,
}

/// A checkpoint name in our (HF task-model) naming; None for tensors that are not parameters
/// (the `position_ids` buffer) or are tied to another (the MLM decoder weight).
pub fn canonical_name(name: &str) -> Option<String> {
    if name.ends_with("embeddings.position_ids") || name == "cls.predictions.decoder.weight" {
        return None;
    }
    let mut n = name.to_string();
    if n.contains("LayerNorm.") {
        if let Some(s) = n.strip_suffix(".gamma") {
            n = format!("{s}.weight");
        } else if let Some(s) = n.strip_suffix(".beta") {
            n = format!("{s}.bias");
        }
    }
    if ["embeddings.", "encoder.", "pooler."]
        .iter()
        .any(|p| n.starts_with(p))
    {
        n = format!("bert.{n}");
    }
    if n == "cls.predictions.decoder.bias" {
        n = "cls.predictions.bias".into();
    }
    Some(n)
}

fn is_head_or_pooler(name: &str) -> bool {
    ["cls.", "classifier.", "qa_outputs.", "bert.pooler."]
        .iter()
        .any(|p| name.starts_with(p))
}

impl Bert {
    /// Loads the task model from an open safetensors file.
    pub fn from_safetensors(
        st: &SafeTensors,
        config: &BertConfig,
        task: Task,
        init_missing_head: Option<u64>,
    ) -> Result<(Bert, LoadReport)> {
        let expected: BTreeMap<String, Vec<usize>> =
            param_shapes(config, task).into_iter().collect();
        let mut report = LoadReport::default();
        let mut params = ParamStore::new();
        let ctx = |e: BertError| match e {
            BertError::Checkpoint(s) => BertError::Checkpoint(format!("{}: {s}", st.source())),
            e => e,
        };
        for raw in st.names() {
            let Some(name) = canonical_name(raw) else {
                continue;
            };
            let Some(shape) = expected.get(&name) else {
                if is_head_or_pooler(&name) {
                    report.dropped.push(raw.to_string());
                    continue;
                }
                return Err(ctx(BertError::Checkpoint(format!(
                    "unexpected tensor '{raw}' (shape {:?}) for {}",
                    st.info(raw).unwrap().shape,
                    task.architecture()
                ))));
            };
            if params.get(&name).is_some() {
                // `cls.predictions.bias` and its alias `decoder.bias`: keep the first.
                continue;
            }
            let info = st.info(raw).unwrap();
            if &info.shape != shape {
                return Err(ctx(BertError::Checkpoint(format!(
                    "tensor '{raw}' has shape {:?}, the model ({}, hidden {}, vocab {}) expects {shape:?}",
                    info.shape,
                    task.architecture(),
                    config.hidden_size,
                    config.vocab_size
                ))));
            }
            params.insert(&name, st.tensor(raw)?)?;
        }
        for (name, shape) in &expected {
            if params.get(name).is_some() {
                continue;
            }
            match init_missing_head {
                Some(seed) if is_head_or_pooler(name) => {
                    params.insert(name, init_param(config, name, shape, seed))?;
                    report.initialised.push(name.clone());
                }
                _ => {
                    return Err(ctx(BertError::Checkpoint(format!(
                        "missing tensor '{name}' (shape {shape:?}) for {}",
                        task.architecture()
                    ))))
                }
            }
        }
        Ok((Bert::from_params(config, task, params)?, report))
    }

    /// The parameters under the names HF's `save_pretrained` writes for this class (a bare
    /// `BertModel` without the `bert.` prefix), in sorted order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(n, v)| {
                let name = match (self.task, n.strip_prefix("bert.")) {
                    (Task::Base, Some(s)) => s.to_string(),
                    _ => n.clone(),
                };
                (name, v.value())
            })
            .collect()
    }

    /// Writes `model.safetensors` (atomically).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        crate::safetensors::write(path, &self.named_tensors(), &meta)
    }

    /// Writes a model directory in HF layout: `config.json` (with this task's architecture)
    /// and `model.safetensors`, each atomically. Tokenizer files are the caller's to add.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BertError::Io(format!("{}: {e}", dir.display())))?;
        let mut c = self.config.clone();
        c.architecture = Some(self.task.architecture().to_string());
        let json = serde_json::to_string_pretty(&c.to_json()).expect("json");
        crate::io::write_atomic(&dir.join("config.json"), json.as_bytes())?;
        self.save_safetensors(&dir.join("model.safetensors"))
    }
}

/// A model directory, loaded.
pub struct ModelDir {
    pub path: PathBuf,
    pub model: Bert,
    pub report: LoadReport,
    /// From `tokenizer.json`, else `vocab.txt`; None when the folder has neither.
    pub tokenizer: Option<tokenizer::BertTokenizer>,
    pub weights_file: PathBuf,
}

impl ModelDir {
    /// What `bert info` prints: class, shape, tables, parameter count, dtypes, file and
    /// tokenizer of the model directory `dir`.
    pub fn describe(dir: &Path) -> Result<String> {
        use std::fmt::Write;
        let md = ModelDir::load(dir, &LoadOptions::default())?;
        let c = &md.model.config;
        let st = crate::safetensors::SafeTensors::open(&md.weights_file)?;
        let mut dtypes = std::collections::BTreeMap::<String, (usize, usize)>::new();
        for n in st.names() {
            if let Some(i) = st.info(n) {
                let e = dtypes.entry(i.dtype.clone()).or_default();
                e.0 += 1;
                e.1 += i.shape.iter().product::<usize>();
            }
        }
        let size = std::fs::metadata(&md.weights_file)
            .map_err(|e| BertError::Io(format!("{}: {e}", md.weights_file.display())))?
            .len();
        let n = md.model.params.numel();
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            writeln!(s, "model:        {}", dir.display())?;
            writeln!(s, "class:        {}", md.model.task.architecture())?;
            writeln!(
                s,
                "shape:        {} layers, hidden {}, {} heads, intermediate {}, {}",
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.intermediate_size,
                c.hidden_act.hf_name()
            )?;
            writeln!(
                s,
                "tables:       vocab {}, positions {}, token types {}",
                c.vocab_size, c.max_position_embeddings, c.type_vocab_size
            )?;
            writeln!(s, "parameters:   {n} ({:.1} M)", n as f64 / 1e6)?;
            for (d, (count, n)) in &dtypes {
                writeln!(s, "dtype:        {d}: {count} tensors, {n} values")?;
            }
            writeln!(
                s,
                "file:         {} ({:.1} MB)",
                md.weights_file.display(),
                size as f64 / 1e6
            )?;
            match &md.tokenizer {
                Some(t) => writeln!(s, "tokenizer:    {} tokens", t.vocab.len()),
                None => writeln!(s, "tokenizer:    none (no tokenizer.json or vocab.txt)"),
            }
        })();
        Ok(s)
    }

    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(BertError::Io(format!(
                "{}: not a model directory (expected config.json and model.safetensors in it)",
                dir.display()
            )));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let task = match opts.task {
            Some(t) => t,
            None => match &config.architecture {
                Some(a) => Task::from_architecture(a).ok_or_else(|| {
                    BertError::Config(format!(
                        "{}: architecture '{a}' is not a known BERT class",
                        dir.join("config.json").display()
                    ))
                })?,
                None => Task::Base,
            },
        };
        let weights_file = dir.join("model.safetensors");
        if !weights_file.exists() {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (this folder has pytorch_model.bin: convert it to safetensors)"
            } else {
                ""
            };
            return Err(BertError::Io(format!(
                "{}: missing{hint}",
                weights_file.display()
            )));
        }
        let st = SafeTensors::open(&weights_file)?;
        let (model, report) = Bert::from_safetensors(&st, &config, task, opts.init_missing_head)?;
        let tj = dir.join("tokenizer.json");
        let vt = dir.join("vocab.txt");
        let tokenizer = if tj.exists() {
            Some(
                tokenizer::load_tokenizer_json(&tj.display().to_string())
                    .map_err(|e| BertError::Io(e.to_string()))?,
            )
        } else if vt.exists() {
            let cased = std::fs::read_to_string(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
                .map(|lower| !lower)
                .unwrap_or(false);
            Some(
                tokenizer::BertTokenizer::from_vocab_file(&vt.display().to_string(), cased)
                    .map_err(|e| BertError::Io(e.to_string()))?,
            )
        } else {
            None
        };
        // A tokenizer with more ids than the embedding table has rows would index past it.
        if let Some(t) = &tokenizer {
            if t.vocab.len() > model.config.vocab_size {
                let f = if tj.exists() { &tj } else { &vt };
                return Err(BertError::Config(format!(
                    "{}: {} tokens, more than the model's vocab_size {} ({})",
                    f.display(),
                    t.vocab.len(),
                    model.config.vocab_size,
                    dir.join("config.json").display()
                )));
            }
        }
        // Non-finite weights load (a diverged run is worth inspecting) but are named.
        if let Some((name, i)) = crate::train::first_non_finite(&model) {
            eprintln!(
                "bert: warning: {}: tensor {name} holds a non-finite value (at index {i}); outputs will be NaN",
                weights_file.display()
            );
        }
        Ok(ModelDir {
            path: dir.to_path_buf(),
            model,
            report,
            tokenizer,
            weights_file,
        })
    }
}
