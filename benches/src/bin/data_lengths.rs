//! Prints the token count of every training feature of a built-in fine-tuning data set, one per
//! line (the template's tokens included), as `bert finetune` would build them with the given
//! tokenizer: the real lengths `scripts/bench-finetune` feeds both sides.
//! `cargo run --release -p benches --bin data_lengths -- DATASET MODEL_DIR MAX_LEN`
//! DATASET: wordnet-supersense | brown-pos | wordnet-qa (read from .cache/, see scripts/fetch-*).
use bert::finetune::{load_dataset, Builtin, DataDirs, FinetuneConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: data_lengths DATASET MODEL_DIR MAX_LEN");
        std::process::exit(2);
    }
    let b = Builtin::parse(&a[1]).ok_or_else(|| {
        format!(
            "{:?} is not a built-in data set (wordnet-supersense, brown-pos, wordnet-qa)",
            a[1]
        )
    })?;
    let max_len: usize = a[3]
        .parse()
        .map_err(|_| format!("MAX_LEN {:?} is not a positive integer", a[3]))?;
    let data = load_dataset(
        b.family(),
        Some(b),
        (None, None, None),
        &DataDirs::default(),
        None,
    )?;
    let tok = bert::finetune::load_tokenizer(std::path::Path::new(&a[2]))?;
    let cfg = FinetuneConfig::default();
    let tok = data.tokenizer_for(&tok, max_len, &cfg);
    let out: Vec<String> = data
        .train_features(&tok, max_len)?
        .iter()
        .map(|f| f.ids.len().to_string())
        .collect();
    println!("{}", out.join("\n"));
    Ok(())
}
