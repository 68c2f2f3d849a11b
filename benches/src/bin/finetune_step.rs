//! Times fine-tuning steps of one family on the CPU: the hand-written step with its head
//! (`bert::finetune::FtTrainer`: forward, loss, backward, clipping, AdamW), random weights of the
//! named shape, random full-length sequences (no padding, so packed and padded are the same
//! work). Prints one JSON line: median step seconds over steps 2..N, tokens/s, peak RSS.
//! The other half of `scripts/bench-finetune` (its PyTorch twin: scripts/bench_finetune_torch.py).
//!
//! `cargo run --release -p benches --bin finetune_step -- FAMILY MODEL BATCH SEQ STEPS`
//! FAMILY: seq-cls | token-cls | qa; MODEL: minilm (6 x 384, 12 heads) | bert-base (12 x 768).
//! Threads: RAYON_NUM_THREADS.
use bert::finetune::{FtRunner, FtTrainer};
use bert::step::{FtBatch, FtHead, FtTargets};
use bert::{Bert, BertConfig};
use engine::device::Cpu;
use engine::optim::AdamWConfig;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: finetune_step FAMILY MODEL BATCH SEQ STEPS");
        std::process::exit(2);
    }
    let (family, model) = (a[1].as_str(), a[2].as_str());
    let (b, s, steps): (usize, usize, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
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
    let mut tr = FtTrainer::new(&Cpu, &m, head, AdamWConfig::default()).unwrap();
    drop(m);
    let mut r = engine::rng::SplitMix64::new(9);
    let mut times = Vec::new();
    for step in 0..steps {
        let ids: Vec<u32> = (0..b * s)
            .map(|i| {
                if i % s == 0 {
                    101
                } else {
                    1000 + (r.next_u64() % 29000) as u32
                }
            })
            .collect();
        let types: Vec<u32> = (0..b * s).map(|i| (i % s >= s / 2) as u32).collect();
        let seqs: Vec<(&[u32], &[u32])> = (0..b)
            .map(|i| (&ids[i * s..(i + 1) * s], &types[i * s..(i + 1) * s]))
            .collect();
        let targets = match head {
            FtHead::Classify(n) => {
                FtTargets::Classes((0..b).map(|_| (r.next_u64() % n as u64) as i64).collect())
            }
            FtHead::Tag(n) => FtTargets::Tags(
                (0..b * s)
                    .map(|i| {
                        if i % s == 0 {
                            -100
                        } else {
                            (r.next_u64() % n as u64) as i64
                        }
                    })
                    .collect(),
            ),
            _ => {
                let start: Vec<i64> = (0..b)
                    .map(|_| 1 + (r.next_u64() % (s as u64 - 10)) as i64)
                    .collect();
                let end = start
                    .iter()
                    .map(|&x| x + (r.next_u64() % 8) as i64)
                    .collect();
                FtTargets::Spans { start, end }
            }
        };
        let x = FtBatch::new(&seqs, 0, true, targets);
        let t = std::time::Instant::now();
        let (loss, _) = tr.step(&x, Some(step as u64), 1e-5, 1.0).unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert!(loss.is_finite());
    }
    let rest = &mut times[1.min(steps - 1)..];
    rest.sort_by(|x, y| x.total_cmp(y));
    let med = rest[rest.len() / 2];
    println!(
        "{{\"impl\": \"ours\", \"family\": \"{family}\", \"model\": \"{model}\", \"threads\": {}, \"batch\": {b}, \"seq\": {s}, \"step_s\": {:.3}, \"tokens_per_s\": {:.0}, \"peak_rss_mib\": {:.0}}}",
        rayon::current_num_threads(),
        med,
        (b * s) as f64 / med,
        benches::peak_rss_mib().unwrap_or(f64::NAN)
    );
}
