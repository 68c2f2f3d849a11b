use engine::gemm::{gemm_with, MatMut, MatRef};
use engine::simd::Isa;
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n, threads, bt) = (args[0], args[1], args[2], args[3], args[4]);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = std::time::Instant::now();
        let bref = if bt == 1 {
            MatRef::row_major(&b, n, k).t()
        } else {
            MatRef::row_major(&b, k, n)
        };
        gemm_with(
            Isa::best(),
            threads,
            1.0,
            MatRef::row_major(&a, m, k),
            bref,
            0.0,
            MatMut::row_major(&mut c, m, n),
        )
        .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{m}x{k}x{n} t{threads} bt{bt}: {:.2} ms {:.1} GFLOP/s",
        best * 1e3,
        2.0 * (m * k * n) as f64 / best / 1e9
    );
}
