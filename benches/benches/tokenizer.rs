//! Tokenizer throughput (MB/s of text) on the real bert-base-uncased tokenizer.json and 1 MB of
//! python3.11-doc, 1 and 2 threads, and vocabulary training time. Uses the files
//! `scripts/check-tokenizer` fetches (which also runs the side-by-side comparison with HF);
//! checks the ids of a known sentence before timing.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const TOKENIZER: &str = ".cache/models/all-minilm-l6-v2/tokenizer.json";
const CORPUS: &str = ".cache/pydoc.txt";

fn bench(c: &mut Criterion) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
    let (tp, cp) = (format!("{root}{TOKENIZER}"), format!("{root}{CORPUS}"));
    if !std::path::Path::new(&tp).exists() || !std::path::Path::new(&cp).exists() {
        eprintln!("tokenizer bench: {TOKENIZER} or {CORPUS} missing; run scripts/check-tokenizer once to fetch them");
        return;
    }
    let mut tok = tokenizer::load_tokenizer_json(&tp).unwrap();
    tok.truncation = None;
    tok.padding = None;
    assert_eq!(
        tok.encode("Hello, world!", true).ids,
        vec![101, 7592, 1010, 2088, 999, 102],
        "tokenizer check"
    );
    let text = std::fs::read_to_string(&cp).unwrap();
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= 1_000_000)
        .unwrap_or(text.len());
    let lines: Vec<&str> = text[..cut].lines().collect();
    let mut g = c.benchmark_group("tokenizer");
    g.throughput(Throughput::Bytes(cut as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        g.bench_function(format!("encode_batch_1MB/t{threads}"), |b| {
            b.iter(|| pool.install(|| tok.encode_batch(&lines, true)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("tokenizer_train");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let cfg = tokenizer::TrainerConfig {
        vocab_size: 8000,
        ..Default::default()
    };
    g.bench_function("wordpiece_8k_on_1MB", |b| {
        b.iter(|| tokenizer::train(&cfg, &lines))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
