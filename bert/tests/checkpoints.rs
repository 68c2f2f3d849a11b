//! Checkpoint loading: HF naming variants (no `bert.` prefix, TF-era `gamma`/`beta`, a stored
//! tied decoder), errors that name the tensor and shapes, and a fuzzer showing that truncated
//! or mutated safetensors files get an error, never a panic or an out-of-bounds read.

use bert::safetensors::{self, SafeTensors};
use bert::{Bert, BertConfig, BertInput, Forward, Task};
use engine::Tensor;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Named = Vec<(String, Tensor)>;

fn tiny(class: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(class)
}

fn tensors(class: &str) -> Vec<(String, Tensor)> {
    let st = SafeTensors::open(&tiny(class).join("model.safetensors")).unwrap();
    st.names()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect()
}

fn config(class: &str) -> BertConfig {
    BertConfig::from_file(&tiny(class).join("config.json")).unwrap()
}

fn write_tmp(name: &str, t: &[(String, Tensor)]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ckpt-{}-{name}.safetensors", std::process::id()));
    safetensors::write(&p, t, &BTreeMap::new()).unwrap();
    p
}

fn load(p: &Path, class: &str, task: Task) -> bert::Result<Bert> {
    let st = SafeTensors::open(p)?;
    Ok(Bert::from_safetensors(&st, &config(class), task, None)?.0)
}

fn logits(m: &Bert) -> Vec<f32> {
    let _g = engine::no_grad();
    let x = BertInput::new((0..12).map(|i| 3 + i * 7).collect(), 2, 6).unwrap();
    let out = m.forward(&x, Forward::default()).unwrap();
    m.mlm_logits(&out, None).unwrap().value().to_vec()
}

#[test]
fn old_names_unprefixed_names_and_a_stored_decoder_load_the_same() {
    let class = "BertForMaskedLM";
    let orig = load(
        &tiny(class).join("model.safetensors"),
        class,
        Task::MaskedLm,
    )
    .unwrap();
    let mut renamed = Vec::new();
    for (n, t) in tensors(class) {
        let mut n = n.strip_prefix("bert.").map(str::to_string).unwrap_or(n);
        if n.contains("LayerNorm.weight") {
            n = n.replace("LayerNorm.weight", "LayerNorm.gamma");
        } else if n.contains("LayerNorm.bias") {
            n = n.replace("LayerNorm.bias", "LayerNorm.beta");
        }
        if n == "embeddings.word_embeddings.weight" {
            renamed.push(("cls.predictions.decoder.weight".to_string(), t.clone()));
        }
        renamed.push((n, t));
    }
    let p = write_tmp("renamed", &renamed);
    let m = load(&p, class, Task::MaskedLm).unwrap();
    assert_eq!(logits(&m), logits(&orig));
    std::fs::remove_file(p).unwrap();
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let class = "BertForMaskedLM";
    let all = tensors(class);
    let cases: Vec<(&str, Named, &str)> = vec![
        (
            "missing",
            all.iter()
                .filter(|(n, _)| n != "bert.encoder.layer.1.output.dense.weight")
                .cloned()
                .collect(),
            "missing tensor 'bert.encoder.layer.1.output.dense.weight' (shape [32, 37])",
        ),
        (
            "unexpected",
            all.iter()
                .cloned()
                .chain([(
                    "bert.encoder.layer.2.output.dense.weight".to_string(),
                    Tensor::zeros(&[32, 37]),
                )])
                .collect(),
            "unexpected tensor 'bert.encoder.layer.2.output.dense.weight'",
        ),
        (
            "misshapen",
            all.iter()
                .map(|(n, t)| {
                    if n == "bert.embeddings.word_embeddings.weight" {
                        (n.clone(), Tensor::zeros(&[98, 32]))
                    } else {
                        (n.clone(), t.clone())
                    }
                })
                .collect(),
            "tensor 'bert.embeddings.word_embeddings.weight' has shape [98, 32], the model",
        ),
    ];
    for (name, t, want) in cases {
        let p = write_tmp(name, &t);
        let e = load(&p, class, Task::MaskedLm).err().unwrap().to_string();
        assert!(e.contains(want), "{name}: {e}");
        assert!(
            e.contains(&p.display().to_string()),
            "{name}: the file is named: {e}"
        );
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn f16_and_bf16_checkpoints_convert_to_f32() {
    let class = "BertForMaskedLM";
    for dt in [engine::DType::F16, engine::DType::BF16] {
        let t: Vec<(String, Tensor)> = tensors(class)
            .into_iter()
            .map(|(n, t)| (n, t.to_dtype(dt)))
            .collect();
        let p = write_tmp(&format!("{dt:?}"), &t);
        let m = load(&p, class, Task::MaskedLm).unwrap();
        let w = m
            .params
            .get("bert.encoder.layer.0.attention.self.query.weight")
            .unwrap();
        let orig = &t
            .iter()
            .find(|x| x.0 == "bert.encoder.layer.0.attention.self.query.weight")
            .unwrap()
            .1;
        assert_eq!(w.value().dtype(), engine::DType::F32);
        assert_eq!(w.value().to_vec(), orig.to_vec());
        std::fs::remove_file(p).unwrap();
    }
}

fn valid_bytes() -> &'static [u8] {
    use std::sync::OnceLock;
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        std::fs::read(tiny("BertForQuestionAnswering").join("model.safetensors")).unwrap()
    })
}

/// Opening, then reading every tensor: must return (Ok or Err), never panic.
fn exercise(bytes: Vec<u8>) {
    if let Ok(st) = SafeTensors::from_bytes(bytes, "fuzz") {
        let names: Vec<String> = st.names().map(str::to_string).collect();
        for n in names {
            if let Ok(t) = st.tensor(&n) {
                let _ = t.to_vec().iter().sum::<f32>();
            }
        }
    }
}

proptest! {
    #[test]
    fn truncated_files_are_refused(cut in 0usize..100_000) {
        let b = valid_bytes();
        let cut = cut % b.len();
        prop_assert!(SafeTensors::from_bytes(b[..cut].to_vec(), "cut").is_err());
    }

    #[test]
    fn mutated_files_never_panic(edits in proptest::collection::vec((0usize..20_000, any::<u8>()), 1..8),
                                 len_edit in proptest::option::of(any::<u64>())) {
        let mut b = valid_bytes().to_vec();
        let header = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize + 8;
        for (at, v) in edits {
            // Mostly inside the header, where the structure is.
            let i = at % header.min(b.len());
            b[i] = v;
        }
        if let Some(n) = len_edit {
            b[..8].copy_from_slice(&(n % (header as u64 * 2)).to_le_bytes());
        }
        exercise(b);
    }

    /// Digits of the header rewritten: the JSON stays valid, the shapes and offsets go wrong.
    #[test]
    fn rewritten_shapes_and_offsets_are_refused_or_consistent(
        edits in proptest::collection::vec((any::<usize>(), 0u8..10), 1..4)) {
        let mut b = valid_bytes().to_vec();
        let header = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize + 8;
        let digits: Vec<usize> = (8..header).filter(|&i| b[i].is_ascii_digit()).collect();
        for (at, d) in edits {
            b[digits[at % digits.len()]] = b'0' + d;
        }
        exercise(b);
    }

    #[test]
    fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(b.clone());
        let mut with_len = (b.len() as u64).to_le_bytes().to_vec();
        with_len.extend(b);
        exercise(with_len);
    }
}
