//! The GEMMs of one training step's Linear layers, timed one by one in the layouts the device step
//! (`engine::device::Cpu`, `CpuBf16`) calls them: the forward `x W^T`, the input gradient `dY W`
//! and the weight gradient `dY^T x` (A transposed), for the encoder's four Linear shapes (fused
//! QKV, attention output, FFN in, FFN out) and the MLM decoder at the masked rows, in f32 and in
//! bf16 (operands rounded to bf16, f32 sums; `vdpbf16ps` where the CPU has it).
//!
//! `cargo run --release -p benches --bin train_gemms [-- THREADS [MODEL [ROWS]]]`: MODEL is a
//! preset (`bert-mini` by default; `bert-small`, `bert-base`, ...), ROWS the batch's tokens (4096,
//! a 32 x 128 batch); the decoder runs at 15% of the rows. Best of 7 per cell, GFLOP/s.
use engine::gemm::bf16::gemm_bf16_with;
use engine::gemm::{gemm_with, MatMut, MatRef};
use engine::simd::Isa;

fn best_ms(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

/// Deterministic values in [-0.5, 0.5).
fn fill(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(7919) + seed * 104_729) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Best of 7 of `C = A B + beta C` (C `rows` x `cols`) in f32 or bf16, milliseconds.
#[allow(clippy::too_many_arguments)]
fn time(
    bf16: bool,
    threads: usize,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    rows: usize,
    cols: usize,
) -> f64 {
    let isa = Isa::best();
    best_ms(|| {
        let c = MatMut::row_major(c, rows, cols);
        if bf16 {
            gemm_bf16_with(isa, threads, 1.0, a, b, beta, c).unwrap()
        } else {
            gemm_with(isa, threads, 1.0, a, b, beta, c).unwrap()
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let model = args.get(1).map(String::as_str).unwrap_or("bert-mini");
    let rows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4096);
    let c = bert::BertConfig::preset(model, 30522).unwrap_or_else(|e| {
        eprintln!("train_gemms: {e}");
        std::process::exit(2)
    });
    let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let masked = (rows * 15).div_ceil(100);
    println!(
        "{model}: the step's GEMMs at {rows} rows (decoder at {masked}), {threads} thread(s), \
         ISA {:?}, bf16 {}; GFLOP/s, best of 7",
        Isa::best(),
        engine::gemm::bf16::bf16_mode(Isa::best())
    );
    println!("| layer | in -> out | rows | precision | x W^T | dY W | dY^T x |\n|---|---|---|---|---|---|---|");
    let shapes = [
        ("QKV", h, 3 * h, rows),
        ("attention out", h, h, rows),
        ("FFN in", h, f, rows),
        ("FFN out", f, h, rows),
        ("MLM decoder", h, v, masked),
    ];
    for (name, inp, out, m) in shapes {
        let x = fill(m * inp, 1);
        let w = fill(out * inp, 2);
        let dy = fill(m * out, 3);
        let (mut y, mut dx, mut dw) =
            (vec![0.0; m * out], vec![0.0; m * inp], vec![0.0; out * inp]);
        let fl = 2.0 * (m * inp * out) as f64;
        for bf16 in [false, true] {
            let (xr, wr, dyr) = (
                MatRef::row_major(&x, m, inp),
                MatRef::row_major(&w, out, inp),
                MatRef::row_major(&dy, m, out),
            );
            let fwd = time(bf16, threads, xr, wr.t(), 0.0, &mut y, m, out);
            let bx = time(bf16, threads, dyr, wr, 0.0, &mut dx, m, inp);
            let bw = time(bf16, threads, dyr.t(), xr, 1.0, &mut dw, out, inp);
            println!(
                "| {name} | {inp} -> {out} | {m} | {} | {:.1} | {:.1} | {:.1} |",
                if bf16 { "bf16" } else { "f32" },
                fl / fwd / 1e6,
                fl / bx / 1e6,
                fl / bw / 1e6
            );
        }
    }
}
