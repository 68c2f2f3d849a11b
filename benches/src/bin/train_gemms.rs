//! The GEMMs of one BERT-Mini training step's encoder Linear layers (32 x 128 tokens, hidden 256,
//! FFN 1024), timed one by one through the engine's Tensor API as training calls them: the
//! forward `x W^T`, the input gradient `dY W` and the weight gradient `dY^T x` (A transposed).
//! `cargo run --release -p benches --bin train_gemms [-- THREADS]`.
use engine::Tensor;

fn best_ms(f: impl Fn() -> Tensor) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = std::time::Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let rows = 4096;
    println!("| op | M x K x N | ms | GFLOP/s |\n|---|---|---|---|");
    for (inp, out) in [(256, 256), (256, 1024), (1024, 256)] {
        let x = Tensor::randn(&[rows, inp], 0.0, 1.0, 1);
        let w = Tensor::randn(&[out, inp], 0.0, 0.05, 2);
        let dy = Tensor::randn(&[rows, out], 0.0, 1.0, 3);
        let fl = 2.0 * (rows * inp * out) as f64;
        let row = |name: &str, shape: String, ms: f64| {
            println!("| {name} | {shape} | {ms:.2} | {:.1} |", fl / ms / 1e6)
        };
        row(
            "forward x W^T",
            format!("{rows}x{inp}x{out}"),
            best_ms(|| x.linear(&w, None).unwrap()),
        );
        row(
            "dX = dY W",
            format!("{rows}x{out}x{inp}"),
            best_ms(|| dy.matmul(&w).unwrap()),
        );
        row(
            "dW = dY^T x",
            format!("{out}x{rows}x{inp}"),
            best_ms(|| dy.t().unwrap().matmul(&x).unwrap()),
        );
    }
    // The MLM decoder (tied to the word embeddings) at the ~614 masked rows of a batch.
    let (m, h, v) = (614, 256, 30522);
    let x = Tensor::randn(&[m, h], 0.0, 1.0, 4);
    let w = Tensor::randn(&[v, h], 0.0, 0.05, 5);
    let dl = Tensor::randn(&[m, v], 0.0, 1.0, 6);
    let fl = 2.0 * (m * h * v) as f64;
    let row = |name: &str, shape: String, ms: f64| {
        println!("| {name} | {shape} | {ms:.2} | {:.1} |", fl / ms / 1e6)
    };
    row(
        "MLM logits x E^T",
        format!("{m}x{h}x{v}"),
        best_ms(|| x.linear(&w, None).unwrap()),
    );
    row(
        "MLM dX = dL E",
        format!("{m}x{v}x{h}"),
        best_ms(|| dl.matmul(&w).unwrap()),
    );
    row(
        "MLM dE = dL^T x",
        format!("{v}x{m}x{h}"),
        best_ms(|| dl.t().unwrap().matmul(&x).unwrap()),
    );
}
