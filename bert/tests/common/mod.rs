//! Helpers shared by bert's integration tests: a tiny `bert data` folder, a tiny model config,
//! fresh temporary folders and checkpoint readers.
#![expect(dead_code)]

use bert::data::{create_instances, write_shard, DataConfig, Specials};
use std::path::{Path, PathBuf};

/// The tiny tests' 60-token vocabulary (the special tokens, then `w0` .. `w54`), written into
/// `dir` (created) as vocab.txt and tokenizer.json.
pub fn tiny_tokenizer(dir: &Path) -> tokenizer::BertTokenizer {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((0..55).map(|i| format!("w{i}")));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let tok = tokenizer::BertTokenizer::from_vocab_file(
        &dir.join("vocab.txt").display().to_string(),
        false,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer::tokenizer_json(&tok)).unwrap();
    tok
}

/// A corpus of 40 documents over a 60-token vocabulary with strong regularities (each document
/// repeats one pattern), written as a `bert data` folder.
pub fn tiny_data(dir: &Path) {
    let tok = tiny_tokenizer(dir);
    let docs: Vec<Vec<Vec<u32>>> = (0..40u32)
        .map(|d| {
            (0..8u32)
                .map(|s| (0..6u32).map(|j| 5 + (d % 5) * 11 + (j + s) % 6).collect())
                .collect()
        })
        .collect();
    let cfg = DataConfig {
        max_seq_len: 32,
        max_predictions: 5,
        ..Default::default()
    };
    let sp = Specials::from_tokenizer(&tok).unwrap();
    let inst = create_instances(&docs, &cfg, &sp);
    write_shard(&dir.join("train.bin"), &inst, 32, 5).unwrap();
    write_shard(&dir.join("heldout.bin"), &inst[..16], 32, 5).unwrap();
    let meta = serde_json::json!({"max_seq_len": 32, "max_predictions": 5, "masked_lm_prob": 0.15, "whole_word_mask": false});
    std::fs::write(dir.join("data.json"), meta.to_string()).unwrap();
}

/// A fresh (removed if present) temporary path named after this process and `name`.
pub fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("bert-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A 2-layer, hidden-32 config for [`tiny_data`] with `positions` position embeddings.
pub fn tiny_config_with(dir: &Path, positions: usize) -> String {
    let c = serde_json::json!({"vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": positions});
    let p = dir.join("config.json");
    std::fs::write(&p, c.to_string()).unwrap();
    p.display().to_string()
}

pub fn tiny_config(dir: &Path) -> String {
    tiny_config_with(dir, 32)
}

/// Every tensor of a safetensors file, by name, as f32 values.
pub fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let st = bert::safetensors::SafeTensors::open(path).unwrap();
    st.names()
        .map(|n| (n.to_string(), st.tensor(n).unwrap().to_vec()))
        .collect()
}

/// The checkpoint's weights of the run in `dir`.
pub fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    tensors(&dir.join("checkpoint/model.safetensors"))
}

/// Runs the `bert` binary; (exit code or -1 for a signal, stdout, stderr).
pub fn bert(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_bert"));
    c.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
