//! Side-by-side GEMM table, all contenders in one process, timed round-robin (each round calls
//! every library once; each keeps its best time), same inputs, one thread count per process:
//! ours, the `gemm` crate (with `x86-v4`), `matrixmultiply`, and, when their shared libraries
//! are given, MKL (`MKL_LIB`, libmkl_rt: the BLAS behind torch.mm on x86) and OpenBLAS
//! (`OPENBLAS_LIB`, the `scipy-openblas32` build). Every output is checked before timing: ours
//! against an f64 reference on sampled entries, every peer against ours.
//!
//! Run through `scripts/bench-gemm` (installs the wheels, runs 1 and 2 threads), or directly:
//! `gemm_table --threads N [--bt] [--quick] [--shape I | --mkn M,K,N] [--markdown]`
//! `--bt` gives B transposed (stored (N, K)), the layout of `x @ W^T` in a Linear layer.
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

type Cblas = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);
type SetThreads = unsafe extern "C" fn(i32);
/// One library's GEMM on the shared inputs, writing the given C.
type Contender<'a> = Box<dyn FnMut(&mut [f32]) + Send + 'a>;

/// A CBLAS library loaded at run time: (name, library handle kept alive, sgemm).
struct Blas {
    name: &'static str,
    _lib: libloading::Library,
    sgemm: Cblas,
}

fn load_blas(
    name: &'static str,
    env: &str,
    sgemm: &[u8],
    set_threads: &[u8],
    threads: usize,
) -> Option<Blas> {
    let path = std::env::var(env).ok()?;
    // SAFETY: loading a BLAS runs its initialisers, which is what it is built for; the symbols
    // are looked up with their documented C signatures.
    unsafe {
        let lib = libloading::Library::new(&path).unwrap_or_else(|e| panic!("{env}={path}: {e}"));
        let f: Cblas = *lib
            .get::<Cblas>(sgemm)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let t: SetThreads = *lib
            .get::<SetThreads>(set_threads)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        t(threads as i32);
        Some(Blas {
            name,
            _lib: lib,
            sgemm: f,
        })
    }
}

fn arg<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").unwrap_or(1);
    let only: Option<usize> = arg(&args, "--shape");
    let quick = args.iter().any(|a| a == "--quick");
    let bt = args.iter().any(|a| a == "--bt");
    let markdown = args.iter().any(|a| a == "--markdown");
    // --bf16: only our f32 and bf16 GEMMs, side by side (bf16 is native vdpbf16ps where the CPU
    // has AVX512-BF16, emulated otherwise).
    let bf16 = args.iter().any(|a| a == "--bf16");
    // matrixmultiply sizes its pool once per process from this variable: hence one thread
    // count per process.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    let blas: Vec<Blas> = [
        load_blas(
            "MKL",
            "MKL_LIB",
            b"cblas_sgemm",
            b"MKL_Set_Num_Threads",
            threads,
        ),
        load_blas(
            "OpenBLAS",
            "OPENBLAS_LIB",
            b"scipy_cblas_sgemm",
            b"scipy_openblas_set_num_threads",
            threads,
        ),
    ]
    .into_iter()
    .flatten()
    .filter(|_| !bf16)
    .collect();
    let isa = Isa::best();
    let mut names = if bf16 {
        vec!["ours", "ours bf16"]
    } else {
        vec!["ours", "gemm crate", "matrixmultiply"]
    };
    names.extend(blas.iter().map(|b| b.name));
    if !markdown {
        println!(
            "engine ISA: {isa:?}; {threads} thread(s); GFLOP/s; B {}",
            if bt { "transposed" } else { "row-major" }
        );
        println!(
            "{:>16} {}",
            "M x K x N",
            names.iter().map(|n| format!("{n:>15}")).collect::<String>()
        );
    }
    // --mkn M,K,N: one custom shape instead of the table's.
    let custom: Option<Vec<(usize, usize, usize)>> = args
        .iter()
        .position(|a| a == "--mkn")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            let d: Vec<usize> = v.split(',').map(|x| x.parse().expect("M,K,N")).collect();
            vec![(d[0], d[1], d[2])]
        });
    let shapes = custom.as_deref().unwrap_or(SHAPES);
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        if only.is_some_and(|o| o != si) || (quick && m * n * k > 1 << 28) {
            continue;
        }
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        // Strides of B (K, N) in `b`: row-major, or transposed (b holds B^T, (N, K) row-major).
        let (brs, bcs) = if bt { (1, k) } else { (n, 1) };
        let p = pool(threads);
        let mut cs: Vec<Vec<f32>> = (0..names.len()).map(|_| vec![0f32; m * n]).collect();
        let par = if threads == 1 {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        let (a, b) = (&a, &b);
        let mut fns: Vec<Contender> = vec![
            Box::new(move |c: &mut [f32]| {
                let bv = MatRef {
                    data: b,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                gemm_with(
                    isa,
                    threads,
                    1.0,
                    MatRef::row_major(a, m, k),
                    bv,
                    0.0,
                    MatMut::row_major(c, m, n),
                )
                .unwrap()
            }),
            // SAFETY (this and the next two): pointers and strides describe the live buffers.
            Box::new(move |c: &mut [f32]| unsafe {
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
            }),
            Box::new(move |c: &mut [f32]| unsafe {
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
            }),
        ];
        if bf16 {
            fns.truncate(1);
            fns.push(Box::new(move |c: &mut [f32]| {
                let bv = MatRef {
                    data: b,
                    rows: k,
                    cols: n,
                    rs: brs,
                    cs: bcs,
                };
                engine::gemm_bf16::gemm_bf16_with(
                    isa,
                    threads,
                    1.0,
                    MatRef::row_major(a, m, k),
                    bv,
                    0.0,
                    MatMut::row_major(c, m, n),
                )
                .unwrap()
            }));
        }
        for lib in &blas {
            let f = lib.sgemm;
            let (tb, ldb) = if bt { (112, k) } else { (111, n) }; // CblasTrans / CblasNoTrans
            fns.push(Box::new(move |c: &mut [f32]| unsafe {
                f(
                    101,
                    111,
                    tb,
                    m as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    a.as_ptr(),
                    k as i32,
                    b.as_ptr(),
                    ldb as i32,
                    0.0,
                    c.as_mut_ptr(),
                    n as i32,
                )
            }));
        }
        p.install(|| {
            for (f, c) in fns.iter_mut().zip(cs.iter_mut()) {
                f(c);
            }
        });
        check_gemm_sampled(&cs[0], a, b, (m, k, n), (brs, bcs), 1e-4);
        if bf16 {
            // bf16 operands: compare by relative Frobenius error (the tests bound it at 6e-3).
            let num: f64 = cs[1]
                .iter()
                .zip(&cs[0])
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum();
            let den: f64 = cs[0].iter().map(|y| (*y as f64).powi(2)).sum();
            assert!(
                (num / den).sqrt() < 6e-3,
                "bf16 GEMM error {} at {m}x{k}x{n}",
                (num / den).sqrt()
            );
        }
        for (name, c) in names.iter().zip(&cs).skip(1).filter(|_| !bf16) {
            assert!(
                max_rel_err(c, &cs[0]) < 1e-3,
                "{name} disagrees with ours at {m}x{k}x{n}"
            );
        }
        let secs = if quick {
            1.0
        } else if m * n * k > 1 << 30 {
            6.0
        } else {
            3.0
        };
        let times = p.install(|| {
            let mut calls: Vec<_> = fns
                .iter_mut()
                .zip(cs.iter_mut())
                .map(|(f, c)| move || f(c))
                .collect();
            let mut dyns: Vec<&mut dyn FnMut()> =
                calls.iter_mut().map(|f| f as &mut dyn FnMut()).collect();
            race(secs, 5, &mut dyns)
        });
        let g: Vec<f64> = times
            .iter()
            .map(|t| 2.0 * (m * n * k) as f64 / t / 1e9)
            .collect();
        if markdown && bf16 {
            println!(
                "| {m}x{k}x{n} | {threads} | {:.1} | {:.1} | {:.2} |",
                g[0],
                g[1],
                g[1] / g[0]
            );
        } else if markdown {
            let best_peer = g[1..].iter().copied().fold(0.0, f64::max);
            // The target: at least the best of the gemm crate and MKL.
            let target = names
                .iter()
                .zip(&g)
                .filter(|(n, _)| **n == "gemm crate" || **n == "MKL")
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            println!(
                "| {m}x{k}x{n} | {threads} | {} | {:.2} | {:.2} |",
                g.iter()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join(" | "),
                g[0] / target,
                g[0] / best_peer
            );
        } else {
            println!(
                "{:>16} {}",
                format!("{m}x{k}x{n}"),
                g.iter().map(|v| format!("{v:>15.1}")).collect::<String>()
            );
        }
    }
}
