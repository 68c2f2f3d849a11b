//! Side-by-side GEMM table: ours against the `gemm` crate (with `x86-v4`) and `matrixmultiply`,
//! same shapes, same inputs, same process, 1 and 2 threads. Each library's output is checked
//! against ours (and ours against an f64 reference on a sample of entries) before timing.
//!
//! Run: `cargo run --release -p benches --bin gemm_table [-- --json FILE]`
//! (scripts/bench_gemm_peers.py adds MKL and OpenBLAS columns from Python in the same run.)
use benches::*;
use engine::gemm::{gemm_with, MatMut, MatRef};
use engine::simd::Isa;

const SHAPES: &[(usize, usize, usize)] = &[
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (128, 768, 768),
    (128, 768, 3072),
    (128, 3072, 768),
    (4096, 768, 768),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_out = args
        .iter()
        .position(|a| a == "--json")
        .map(|i| args[i + 1].clone());
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--shape")
        .map(|i| args[i + 1].parse().unwrap());
    let quick = args.iter().any(|a| a == "--quick");
    // --bt: B given transposed (stored (N, K) row-major, used as its transpose), the layout of
    // a Linear layer's weight in `x @ W^T`.
    let bt = args.iter().any(|a| a == "--bt");
    // matrixmultiply sizes its pool once per process from MATMUL_NUM_THREADS, so a process
    // measures one thread count: `--threads N` (default 1); the script runs both.
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .map_or(1, |i| args[i + 1].parse().unwrap());
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let isa = Isa::best();
    println!(
        "engine ISA: {isa:?}; GFLOP/s, best of interleaved runs; M x K x N, A (M,K) row-major, B (K,N) {}",
        if bt { "transposed (stored (N,K))" } else { "row-major" }
    );
    println!(
        "{:>18} {:>3} {:>9} {:>9} {:>9}",
        "shape", "thr", "ours", "gemm", "mmul"
    );
    let mut rows = Vec::new();
    for (si, &(m, k, n)) in SHAPES.iter().enumerate() {
        if only.is_some_and(|o| o != si) || (quick && m * n * k > 1 << 28) {
            continue;
        }
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        // (brs, bcs): strides of B (K, N) in b.
        let (brs, bcs) = if bt { (1, k) } else { (n, 1) };
        let bview = MatRef {
            data: &b,
            rows: k,
            cols: n,
            rs: brs,
            cs: bcs,
        };
        let flops = 2.0 * (m * n * k) as f64;
        let secs = if quick {
            1.0
        } else if m * n * k > 1 << 30 {
            6.0
        } else {
            3.0
        };
        {
            let p = pool(threads);
            let mut c_ours = vec![0f32; m * n];
            let mut c_gemm = vec![0f32; m * n];
            let mut c_mm = vec![0f32; m * n];
            let run_ours = |c: &mut [f32]| {
                gemm_with(
                    isa,
                    threads,
                    1.0,
                    MatRef::row_major(&a, m, k),
                    bview,
                    0.0,
                    MatMut::row_major(c, m, n),
                )
                .unwrap()
            };
            let par = if threads == 1 {
                gemm::Parallelism::None
            } else {
                gemm::Parallelism::Rayon(threads)
            };
            let run_gemm = |c: &mut [f32]| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    bcs as isize,
                    brs as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    par,
                )
            };
            let run_mm = |c: &mut [f32]| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    brs as isize,
                    bcs as isize,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            };
            p.install(|| {
                run_ours(&mut c_ours);
                run_gemm(&mut c_gemm);
                run_mm(&mut c_mm);
            });
            // Check: ours against f64 on sampled entries, the peers against ours.
            for t in 0..64 {
                let (i, j) = ((t * 7919) % m, (t * 104_729) % n);
                let want: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * brs + j * bcs] as f64)
                    .sum();
                let got = c_ours[i * n + j] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (k as f64).sqrt() * (1.0 + want.abs()),
                    "ours wrong at ({i},{j}): {got} vs {want}"
                );
            }
            assert!(max_rel_err(&c_gemm, &c_ours) < 1e-3, "gemm crate disagrees");
            assert!(
                max_rel_err(&c_mm, &c_ours) < 1e-3,
                "matrixmultiply disagrees"
            );
            let times = p.install(|| {
                race(
                    secs,
                    5,
                    &mut [
                        &mut || run_ours(&mut c_ours),
                        &mut || run_gemm(&mut c_gemm),
                        &mut || run_mm(&mut c_mm),
                    ],
                )
            });
            let (t_ours, t_gemm, t_mm) = (times[0], times[1], times[2]);
            let g = |t: f64| flops / t / 1e9;
            println!(
                "{:>18} {:>3} {:>9.1} {:>9.1} {:>9.1}",
                format!("{m}x{k}x{n}"),
                threads,
                g(t_ours),
                g(t_gemm),
                g(t_mm)
            );
            rows.push(format!(
                "{{\"m\":{m},\"k\":{k},\"n\":{n},\"threads\":{threads},\"ours\":{:.2},\"gemm\":{:.2},\"matrixmultiply\":{:.2}}}",
                g(t_ours),
                g(t_gemm),
                g(t_mm)
            ));
        }
    }
    if let Some(path) = json_out {
        std::fs::write(&path, format!("[{}]\n", rows.join(",\n"))).expect("write json");
    }
}
