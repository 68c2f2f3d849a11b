use engine::gemm::*;
use engine::simd::Isa;
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n, threads) = (args[0], args[1], args[2], args.get(3).copied().unwrap_or(1));
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    for isa in Isa::available() {
        let mut best = f64::MAX;
        for _ in 0..10 {
            let t = std::time::Instant::now();
            gemm_with(
                isa,
                threads,
                1.0,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.0,
                MatMut::row_major(&mut c, m, n),
            )
            .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{isa:?} {m}x{k}x{n} t{threads}: {:.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    }
}
