//! BERT on the engine: the config, the model (embeddings, encoder, pooler) and its heads, with
//! HuggingFace's parameter names and losses; safetensors checkpoints; sentence embeddings.
//! Each file mirrors a part of HF `modeling_bert.py` and says which.

pub mod batching;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod embed;
pub mod fill_mask;
pub mod finetune;
pub mod heads;
pub mod io;
pub mod layer;
pub mod model;
pub mod predict;
pub mod report;
pub mod safetensors;
pub mod step;
pub mod tokenize;
pub mod train;
pub mod vocab;

pub use checkpoint::{LoadOptions, LoadReport, ModelDir};
pub use config::{Activation, BertConfig, ProblemType};
pub use heads::{Bert, SeqLabels, Task};
pub use model::{BertInput, BertModel, BertOutput, Forward};

/// Everything that can go wrong in this crate, each naming what was wrong.
#[derive(Debug)]
pub enum BertError {
    /// A bad `config.json` or model configuration.
    Config(String),
    /// A file could not be read or written (the message names it).
    Io(String),
    /// A checkpoint is corrupt, or its tensors do not fit the model (names the tensor).
    Checkpoint(String),
    /// Bad inputs to the model (ids out of range, lengths over the position table, ...).
    Input(String),
    Engine(engine::Error),
}

impl std::fmt::Display for BertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BertError::Config(s) => write!(f, "config: {s}"),
            BertError::Io(s) => write!(f, "{s}"),
            BertError::Checkpoint(s) => write!(f, "checkpoint: {s}"),
            BertError::Input(s) => write!(f, "input: {s}"),
            BertError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BertError {}

impl From<engine::Error> for BertError {
    fn from(e: engine::Error) -> Self {
        BertError::Engine(e)
    }
}

pub type Result<T> = std::result::Result<T, BertError>;
