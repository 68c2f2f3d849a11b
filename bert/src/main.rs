//! The `bert` command line. Subcommands arrive with their issues (tokenize, vocab, data,
//! pretrain, finetune, fill-mask, embed, demo); until the end-to-end demo exists, `bert demo`
//! says so and shows what the engine can already do on this machine.

use engine::simd::Isa;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("demo") => demo(),
        Some("--help") | Some("-h") | Some("help") => usage(),
        Some(other) => {
            eprintln!("bert: unknown subcommand '{other}'");
            usage();
            std::process::exit(2);
        }
    }
}

fn usage() {
    println!("usage: bert demo      end-to-end demo (not yet: needs the tokenizer, model and training issues)");
}

fn demo() {
    println!("bert demo: not yet. The end-to-end demo (corpus -> vocabulary -> pretraining -> fine-tuning -> report)");
    println!("arrives with the tokenizer, model and training work. What exists today is the tensor engine:");
    println!(
        "  CPU kernels: {:?} (widest available: {:?})",
        Isa::available(),
        Isa::best()
    );
    println!("  bf16 GEMM: {}", engine::gemm_bf16::bf16_mode(Isa::best()));
    let (m, k, n) = (128, 768, 768);
    let a = engine::Tensor::randn(&[m, k], 0.0, 1.0, 1);
    let b = engine::Tensor::randn(&[k, n], 0.0, 1.0, 2);
    let t = std::time::Instant::now();
    let mut reps = 0;
    while t.elapsed().as_secs_f64() < 0.5 {
        let _ = a.matmul(&b).expect("shapes agree");
        reps += 1;
    }
    let gflops = 2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!(
        "  a BERT-shaped matmul ({m}x{k} @ {k}x{n}) runs at {gflops:.0} GFLOP/s here on {} threads",
        rayon_threads()
    );
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
