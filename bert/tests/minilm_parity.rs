//! The reference model, all-MiniLM-L6-v2, against transformers (PyTorch, CPU): last hidden
//! states of a padded batch of five sentences within 1e-4, mean-pooled sentence embeddings
//! with cosine similarity at least 0.99999, and our tokenizer's ids equal to HF's for those
//! sentences. Fixture: scripts/fixtures/make_bert_fixtures.py. The weights are not in the repo:
//! `scripts/fetch-model` downloads them into .cache/ (`scripts/test` runs it first).

use bert::embed::{cosine, embed_batch, Pooling};
use bert::safetensors::SafeTensors;
use bert::{BertInput, Forward, LoadOptions, ModelDir};
use std::path::Path;

fn model_dir() -> ModelDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join(".cache/models/all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-model (scripts/test does)",
        dir.display()
    );
    ModelDir::load(&dir, &LoadOptions::default()).unwrap()
}

#[test]
fn minilm_matches_transformers() {
    let md = model_dir();
    assert!(md.report.dropped.is_empty());
    let io = SafeTensors::open(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_io.safetensors"),
    )
    .unwrap();
    let sentences: Vec<String> = serde_json::from_str(&io.metadata["sentences"]).unwrap();
    let ids = io.tensor("input_ids").unwrap();
    let (b, s) = (ids.shape()[0], ids.shape()[1]);
    let ids: Vec<i64> = ids.to_vec().iter().map(|&x| x as i64).collect();
    let mask = io.tensor("attention_mask").unwrap().to_vec();

    // Our tokenizer gives HF's ids.
    // The model's tokenizer.json pads to 128; pad the batch to its longest instead.
    let mut tok = md.tokenizer.clone().unwrap();
    tok.padding = None;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let encs = tok.encode_batch(&refs, true);
    let ours = BertInput::from_encodings(&encs, 0).unwrap();
    assert_eq!((ours.batch, ours.seq), (b, s));
    assert_eq!(ours.input_ids, ids);
    assert_eq!(ours.attention_mask, mask);

    let _g = engine::no_grad();
    let out = md.model.forward(&ours, Forward::default()).unwrap();
    let h = out.last_hidden.value().to_vec();
    let want = io.tensor("last_hidden").unwrap().to_vec();
    let diff = h
        .iter()
        .zip(&want)
        .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("last hidden states: max |diff| {diff:.2e}");
    assert!(diff <= 1e-4, "last hidden states differ by {diff}");
    let pooled = out.pooled.unwrap().value().to_vec();
    let want_pooled = io.tensor("pooled").unwrap().to_vec();
    let dp = pooled
        .iter()
        .zip(&want_pooled)
        .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(dp <= 1e-4, "pooler output differs by {dp}");

    let emb = embed_batch(&md.model, &ours, Pooling::Mean, false).unwrap();
    let want = io.tensor("mean_pooled").unwrap().to_vec();
    let hd = md.model.config.hidden_size;
    for i in 0..b {
        let c = cosine(&emb[i * hd..(i + 1) * hd], &want[i * hd..(i + 1) * hd]);
        eprintln!("sentence {i}: cosine {c:.9}");
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }
}

#[test]
fn minilm_bf16_embeddings_stay_within_cosine_0_999_of_f32() {
    let md = model_dir();
    let mut tok = md.tokenizer.clone().unwrap();
    tok.padding = None;
    let texts = [
        "The cat sat on the mat.",
        "A man is playing a guitar on the stage while the crowd sings along loudly.",
        "Rust gives memory safety without garbage collection.",
    ];
    let x = BertInput::from_encodings(&tok.encode_batch(&texts, true), 0).unwrap();
    let f32_emb = embed_batch(&md.model, &x, Pooling::Mean, true).unwrap();
    md.model
        .encoder
        .set_inference_precision(engine::Precision::Bf16);
    let bf_emb = embed_batch(&md.model, &x, Pooling::Mean, true).unwrap();
    md.model
        .encoder
        .set_inference_precision(engine::Precision::F32);
    let h = md.model.config.hidden_size;
    for i in 0..texts.len() {
        let c = cosine(&f32_emb[i * h..(i + 1) * h], &bf_emb[i * h..(i + 1) * h]);
        eprintln!("text {i}: bf16 vs f32 cosine {c:.6}");
        assert!(c >= 0.999, "text {i}: cosine {c}");
        assert!(c < 1.0 - 1e-9, "bf16 must actually change the numbers");
    }
}
