//! Times BERT inference (the encoder forward pass, no gradients) and prints one JSON line per
//! configuration: `{"impl", "model", "batch", "seq", "threads", "best_ms", "median_ms"}`. Each
//! output is checked to be finite before timing. scripts/bench-inference runs it beside PyTorch.
//!
//! `infer --minilm DIR [--threads T] [--reps N] [--runs minilm:1x128,minilm:8x128,base:1x128] [--bf16]`
//! `minilm` is the model directory given; `base` is a randomly initialised BERT-base.
use bert::{Bert, BertConfig, BertInput, Forward, LoadOptions, ModelDir, Task};

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = arg(&args, "--reps").map_or(5, |v| v.parse().expect("--reps N"));
    let threads: usize = arg(&args, "--threads").map_or(0, |v| v.parse().expect("--threads T"));
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .unwrap();
    }
    let runs = arg(&args, "--runs").unwrap_or("minilm:1x128,minilm:8x128");
    // --bf16: every Linear's GEMM with bf16 operands (f32 sums).
    let bf16 = args.iter().any(|a| a == "--bf16");
    let tag = if bf16 { "ours bf16" } else { "ours" };
    let mut minilm: Option<Bert> = None;
    let mut base: Option<Bert> = None;
    for run in runs.split(',') {
        let (name, shape) = run.split_once(':').expect("NAME:BxS");
        let (b, s) = shape.split_once('x').expect("BxS");
        let (batch, seq): (usize, usize) = (b.parse().unwrap(), s.parse().unwrap());
        let model = match name {
            "minilm" => minilm.get_or_insert_with(|| {
                let dir = arg(&args, "--minilm").expect("--minilm DIR");
                let opts = LoadOptions {
                    task: Some(Task::Base),
                    init_missing_head: None,
                };
                ModelDir::load(std::path::Path::new(dir), &opts)
                    .expect("model directory")
                    .model
            }),
            "base" => base.get_or_insert_with(|| {
                let c = BertConfig::preset("base", 30522).unwrap();
                Bert::init(&c, Task::Base, 1).unwrap()
            }),
            other => panic!("unknown model {other}"),
        };
        if bf16 {
            model
                .encoder
                .set_inference_precision(engine::Precision::Bf16);
        }
        let ids: Vec<i64> = (0..batch * seq)
            .map(|i| 1000 + (i as i64 * 7919) % 19000)
            .collect();
        let x = BertInput::new(ids, batch, seq).unwrap();
        let _g = engine::no_grad();
        let go = || {
            model
                .forward(&x, Forward::default())
                .unwrap()
                .last_hidden
                .value()
        };
        assert!(
            go().to_vec().iter().all(|v| v.is_finite()),
            "non-finite output"
        );
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = std::time::Instant::now();
            std::hint::black_box(go());
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{{\"impl\": \"{tag}\", \"model\": \"{name}\", \"batch\": {batch}, \"seq\": {seq}, \"threads\": {}, \"best_ms\": {:.2}, \"median_ms\": {:.2}}}",
            rayon::current_num_threads(),
            times[0],
            times[times.len() / 2]
        );
    }
}
