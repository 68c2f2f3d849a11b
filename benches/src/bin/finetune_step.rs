//! Times fine-tuning steps of one family on a device: the hand-written step with its head
//! (`bert::finetune::FtTrainer`: forward, loss, backward, clipping, AdamW), random weights of the
//! named shape, random full-length sequences (no padding, so packed and padded are the same
//! work). Prints one JSON line: median step seconds over steps 2..N, tokens/s, peak RSS.
//! The other half of `scripts/bench-finetune` (its PyTorch twin: scripts/bench_finetune_torch.py).
//!
//! `cargo run --release -p benches --bin finetune_step -- FAMILY MODEL BATCH SEQ STEPS [LENGTHS]`
//! FAMILY: seq-cls | token-cls | qa; MODEL: minilm (6 x 384, 12 heads) | bert-base (12 x 768).
//! LENGTHS: a file of sequence lengths, one per line (a real data set's, template included),
//! taken in order and capped at SEQ: the batches are packed, so only those tokens are computed;
//! tokens/s then counts them. Threads: RAYON_NUM_THREADS.
//! DEVICE=cpu-bf16 runs it on `engine::device::CpuBf16` (the Linear GEMMs in bf16);
//! PROFILE=1 (CPU devices) adds where the steps after the first spent their time, op by op
//! (`engine::device::profile::Profiled`), on stderr;
//! DEVICE=cuda or cuda-bf16 in the environment (a `--features cuda` build) runs the step on GPU 0
//! (`scripts/device/gpu-check.sh finetune`); each step ends by reading its loss back, so the
//! timing covers the device's work; `peak_rss_mib` is the host's.
use bert::finetune::{FtRunner, FtTrainer};
use bert::step::{FtBatch, FtHead, FtTargets};
use bert::{Bert, BertConfig};
use engine::device::{Cpu, Device};
use engine::optim::AdamWConfig;

fn main() {
    let profile = std::env::var("PROFILE").is_ok_and(|v| v == "1");
    match std::env::var("DEVICE").as_deref() {
        Ok("cpu") | Err(_) if profile => profiled(&Cpu, "cpu"),
        Ok("cpu-bf16") if profile => profiled(&engine::device::CpuBf16, "cpu-bf16"),
        Ok("cpu") | Err(_) => run(&Cpu, "cpu", || {}),
        Ok("cpu-bf16") => run(&engine::device::CpuBf16, "cpu-bf16", || {}),
        #[cfg(feature = "cuda")]
        Ok("cuda") => run(
            &engine::device::cuda::Cuda::new(0).expect("a CUDA GPU"),
            "cuda",
            || {},
        ),
        #[cfg(feature = "cuda")]
        Ok("cuda-bf16") => run(
            &engine::device::cuda::CudaBf16::new(0).expect("a CUDA GPU"),
            "cuda-bf16",
            || {},
        ),
        Ok(d) => {
            eprintln!("finetune_step: DEVICE={d:?} is not cpu, cpu-bf16, cuda or cuda-bf16 (cuda needs --features cuda)");
            std::process::exit(2);
        }
    }
}

/// [`run`] on `dev` wrapped in the op-by-op stopwatch, its table (steps 2..N) on stderr.
fn profiled<D: Device>(dev: &D, device: &str) {
    let p = engine::device::profile::Profiled::new(dev, || {});
    run(&p, device, || p.reset());
    eprintln!("steps 2..N, per op:\n{}", p.table());
}

/// Times the steps on `dev`; `after_first` runs once the first (warm-up) step is done.
fn run<D: Device>(dev: &D, device: &str, after_first: impl Fn()) {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: finetune_step FAMILY MODEL BATCH SEQ STEPS [LENGTHS]");
        std::process::exit(2);
    }
    let (family, model) = (a[1].as_str(), a[2].as_str());
    let (b, s, steps): (usize, usize, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    let lengths: Vec<usize> = match a.get(6) {
        Some(p) => std::fs::read_to_string(p)
            .unwrap_or_else(|e| {
                eprintln!("finetune_step: {p}: {e}");
                std::process::exit(2)
            })
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(|l: usize| l.clamp(2, s))
            .collect(),
        None => vec![s],
    };
    let mut next_len = 0usize;
    let mut c = BertConfig::preset("bert-base", 30522).unwrap();
    if model == "minilm" {
        c.num_hidden_layers = 6;
        c.hidden_size = 384;
        c.num_attention_heads = 12;
        c.intermediate_size = 1536;
    }
    c.max_position_embeddings = 512;
    let head = match family {
        "seq-cls" => FtHead::Classify(3),
        "token-cls" => FtHead::Tag(9),
        "qa" => FtHead::Span,
        f => panic!("unknown family {f}"),
    };
    c.num_labels = head.outputs();
    let m = Bert::init(&c, head.task(), 1).unwrap();
    let mut tr = FtTrainer::new(dev, &m, head, AdamWConfig::default()).unwrap();
    drop(m);
    let mut r = engine::rng::SplitMix64::new(9);
    let (mut times, mut tokens) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let lens: Vec<usize> = (0..b)
            .map(|_| {
                next_len += 1;
                lengths[(next_len - 1) % lengths.len()]
            })
            .collect();
        let ids: Vec<Vec<u32>> = lens
            .iter()
            .map(|&l| {
                (0..l)
                    .map(|i| {
                        if i == 0 {
                            101
                        } else {
                            1000 + (r.next_u64() % 29000) as u32
                        }
                    })
                    .collect()
            })
            .collect();
        let types: Vec<Vec<u32>> = lens
            .iter()
            .map(|&l| (0..l).map(|i| (i >= l / 2) as u32).collect())
            .collect();
        let seqs: Vec<(&[u32], &[u32])> = ids
            .iter()
            .zip(&types)
            .map(|(i, t)| (i.as_slice(), t.as_slice()))
            .collect();
        let targets = match head {
            FtHead::Classify(n) => {
                FtTargets::Classes((0..b).map(|_| (r.next_u64() % n as u64) as i64).collect())
            }
            FtHead::Tag(n) => FtTargets::Tags(
                lens.iter()
                    .flat_map(|&l| 0..l)
                    .map(|i| {
                        if i == 0 {
                            -100
                        } else {
                            (r.next_u64() % n as u64) as i64
                        }
                    })
                    .collect(),
            ),
            _ => {
                let start: Vec<i64> = lens
                    .iter()
                    .map(|&l| (r.next_u64() % l as u64) as i64)
                    .collect();
                let end = start
                    .iter()
                    .zip(&lens)
                    .map(|(&x, &l)| (x + (r.next_u64() % 8) as i64).min(l as i64 - 1))
                    .collect();
                FtTargets::Spans { start, end }
            }
        };
        let x = FtBatch::new(&seqs, 0, true, targets);
        let t = std::time::Instant::now();
        let (loss, _) = tr.step(&x, Some(step as u64), 1e-5, 1.0).unwrap();
        times.push(t.elapsed().as_secs_f64());
        tokens.push(lens.iter().sum::<usize>());
        if step == 0 {
            after_first();
        }
        assert!(loss.is_finite());
    }
    // Steps 2..N: the median step, and the real tokens per second over them.
    let first = 1.min(steps - 1);
    let (secs, toks): (f64, usize) = (times[first..].iter().sum(), tokens[first..].iter().sum());
    let rest = &mut times[first..];
    rest.sort_by(|x, y| x.total_cmp(y));
    let med = rest[rest.len() / 2];
    println!(
        "{{\"impl\": \"ours\", \"device\": \"{device}\", \"family\": \"{family}\", \"model\": \"{model}\", \"threads\": {}, \"batch\": {b}, \"seq\": {s}, \"step_s\": {:.4}, \"tokens_per_s\": {:.0}, \"peak_rss_mib\": {:.0}}}",
        rayon::current_num_threads(),
        med,
        toks as f64 / secs,
        benches::peak_rss_mib().unwrap_or(f64::NAN)
    );
}
