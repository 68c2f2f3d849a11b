//! Times full training steps (forward with dropout, backward, clipping, AdamW) of one BERT
//! encoder layer and reports ms/step, tokens/s and the process's peak memory.
//! `cargo run --release -p benches --bin train_step [-- --hidden 256 --heads 4 --batch 32 --seq 128 --steps 10]`
//! Threads: RAYON_NUM_THREADS (default: all cores).
use benches::{peak_rss_mib, LayerStep};

fn arg(args: &[String], flag: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (hidden, heads, batch, seq, steps) = (
        arg(&args, "--hidden", 256),
        arg(&args, "--heads", 4),
        arg(&args, "--batch", 32),
        arg(&args, "--seq", 128),
        arg(&args, "--steps", 10),
    );
    let rss0 = peak_rss_mib().unwrap_or(f64::NAN);
    let mut s = LayerStep::new(hidden, heads, batch, seq);
    let first = s.run();
    let mut times = Vec::new();
    let mut last = first;
    for _ in 0..steps {
        let t = std::time::Instant::now();
        last = s.run();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let tokens = (batch * seq) as f64;
    println!(
        "BERT layer h{hidden} nh{heads} i{} b{batch}x{seq}, {} threads: median {:.1} ms/step ({:.0} tokens/s), best {:.1} ms; peak RSS {:.0} MiB (at start {:.0} MiB); loss {first:.5} -> {last:.5}",
        4 * hidden,
        rayon::current_num_threads(),
        median * 1e3,
        tokens / median,
        times[0] * 1e3,
        peak_rss_mib().unwrap_or(f64::NAN),
        rss0
    );
}
