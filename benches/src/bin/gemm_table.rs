//! Side-by-side GEMM table, all contenders in one process, timed round-robin (each round calls
//! every library once; each keeps its best time), same inputs, one thread count per process:
//! ours, the `gemm` crate (with `x86-v4` unless built without the default `peer-avx512`),
//! `matrixmultiply`, and, when their shared libraries
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

/// Our `C = A B` (A row-major m x k; B k x n with strides (brs, bcs) in `b`).
fn ours(
    isa: Isa,
    threads: usize,
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (brs, bcs): (usize, usize),
    c: &mut [f32],
) {
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
}

/// --mkn M,K,N: one custom shape instead of the table's.
fn custom_shape(args: &[String]) -> Option<Vec<(usize, usize, usize)>> {
    args.iter()
        .position(|a| a == "--mkn")
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            let d: Vec<usize> = v.split(',').map(|x| x.parse().expect("M,K,N")).collect();
            assert!(d.len() == 3, "--mkn wants M,K,N");
            vec![(d[0], d[1], d[2])]
        })
}

/// `--sweep`: times our GEMM under candidate blockings on the running CPU, one coordinate at a
/// time (KC with the model's MC and NC, then MC with the best KC, then NC), the candidates of
/// each coordinate raced round-robin, and prints what the analytical model chose beside the
/// best blocking found. The model is what every GEMM uses unless `set_blocking` overrides it.
fn sweep(
    threads: usize,
    bt: bool,
    quick: bool,
    grid: bool,
    only: Option<usize>,
    custom: Option<Vec<(usize, usize, usize)>>,
) {
    use engine::gemm::{set_blocking, Blocking};
    let isa = Isa::best();
    let model = Blocking::current(isa);
    println!(
        "engine ISA: {isa:?}; {threads} thread(s); {}",
        engine::cpu::Caches::get().describe()
    );
    println!(
        "model blocking: KC {} MC {} NC {}; B {}",
        model.kc,
        model.mc,
        model.nc,
        if bt { "transposed" } else { "row-major" }
    );
    println!();
    println!("| M x K x N | threads | model (KC, MC, NC) | GFLOP/s | best found (KC, MC, NC) | GFLOP/s | model / best |");
    println!("|---|---|---|---|---|---|---|");
    let shapes = custom.as_deref().unwrap_or(SHAPES);
    let p = pool(threads);
    let secs = if quick { 0.3 } else { 1.0 };
    for (si, &(m, k, n)) in shapes.iter().enumerate() {
        if only.is_some_and(|o| o != si) || (quick && m * n * k > 1 << 28) {
            continue;
        }
        let a = rand_vec(m * k, 1);
        let b = rand_vec(k * n, 2);
        let (brs, bcs) = if bt { (1, k) } else { (n, 1) };
        let mut c = vec![0f32; m * n];
        let run = |blk: Blocking, c: &mut [f32]| {
            set_blocking(Some(blk));
            ours(isa, threads, &a, &b, (m, k, n), (brs, bcs), c);
        };
        // Every candidate must give the right answer before it is timed.
        let mut race_of = |cands: &[Blocking]| -> Vec<f64> {
            p.install(|| {
                for &blk in cands {
                    run(blk, &mut c);
                    check_gemm_sampled(&c, &a, &b, (m, k, n), (brs, bcs), 1e-4);
                }
                let mut calls: Vec<_> = cands
                    .iter()
                    .map(|&blk| {
                        let c = &mut c as *mut Vec<f32>;
                        // SAFETY: the race runs one call at a time, so the buffer is never
                        // borrowed twice at once.
                        move || run(blk, unsafe { &mut *c })
                    })
                    .collect();
                // Round-robin; a candidate's figure is the median over rounds of its time
                // relative to candidate 0's in the same round, times candidate 0's best: a
                // slow phase of the machine (they last longer than a round) moves every
                // candidate of a round alike, where best-of-N lets one lucky round decide.
                for f in calls.iter_mut() {
                    f();
                }
                let mut rel: Vec<Vec<f64>> = vec![Vec::new(); calls.len()];
                let mut best0 = f64::MAX;
                let start = std::time::Instant::now();
                let mut rounds = 0;
                while rounds < 3 || start.elapsed().as_secs_f64() < secs * cands.len() as f64 / 4.0
                {
                    let mut t = Vec::with_capacity(calls.len());
                    for f in calls.iter_mut() {
                        let t0 = std::time::Instant::now();
                        f();
                        t.push(t0.elapsed().as_secs_f64());
                    }
                    best0 = best0.min(t[0]);
                    for (r, ti) in rel.iter_mut().zip(&t) {
                        r.push(ti / t[0]);
                    }
                    rounds += 1;
                }
                rel.iter_mut()
                    .map(|r| {
                        r.sort_by(f64::total_cmp);
                        best0 * r[r.len() / 2]
                    })
                    .collect::<Vec<f64>>()
            })
        };
        let gflops = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
        if grid {
            // --grid: every (KC, MC) pair of a small grid in one race (NC the model's), ranked.
            let mut cands = vec![model];
            for kc in [192, 256, 384, 512] {
                for mc in [132, 264, 528, 1056] {
                    cands.push(Blocking { kc, mc, ..model });
                }
            }
            let t = race_of(&cands);
            let mut order: Vec<usize> = (0..cands.len()).collect();
            order.sort_by(|&x, &y| t[x].total_cmp(&t[y]));
            let show = |i: usize| format!("({}, {}) {:.1}", cands[i].kc, cands[i].mc, gflops(t[i]));
            println!(
                "{m}x{k}x{n} t{threads}: model {} | best {}",
                show(0),
                order[..6]
                    .iter()
                    .map(|&i| show(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            set_blocking(None);
            continue;
        }
        let mut cands = vec![model];
        for kc in [128, 192, 256, 320, 384, 512, 768] {
            cands.push(Blocking { kc, ..model });
        }
        let t = race_of(&cands);
        let model_t = t[0];
        let (mut best, mut best_t) = (model, model_t);
        for (blk, &ti) in cands.iter().zip(&t) {
            if ti < best_t {
                (best, best_t) = (*blk, ti);
            }
        }
        let mut cands = vec![best];
        for mc in [48, 96, 144, 192, 264, 384, 528, 768, 1056, 1536, 2064] {
            cands.push(Blocking { mc, ..best });
        }
        let t = race_of(&cands);
        for (blk, &ti) in cands.iter().zip(&t) {
            if ti < best_t {
                (best, best_t) = (*blk, ti);
            }
        }
        let mut cands = vec![best];
        for nc in [512, 1024, 1536, 2048, 3072, 4096] {
            cands.push(Blocking { nc, ..best });
        }
        let t = race_of(&cands);
        for (blk, &ti) in cands.iter().zip(&t) {
            if ti < best_t {
                (best, best_t) = (*blk, ti);
            }
        }
        set_blocking(None);
        println!(
            "| {m}x{k}x{n} | {threads} | {}, {}, {} | {:.1} | {}, {}, {} | {:.1} | {:.2} |",
            model.kc,
            model.mc,
            model.nc,
            gflops(model_t),
            best.kc,
            best.mc,
            best.nc,
            gflops(best_t),
            best_t / model_t
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").unwrap_or(1);
    let only: Option<usize> = arg(&args, "--shape");
    let quick = args.iter().any(|a| a == "--quick");
    let bt = args.iter().any(|a| a == "--bt");
    let markdown = args.iter().any(|a| a == "--markdown");
    // --bf16: only our f32 GEMM and each bf16 kernel that runs here (native vdpbf16ps where the
    // CPU has AVX512-BF16; the f32 tile over rounded operands; the emulated pairs), side by
    // side, the one `bf16_kernel` chooses marked with a '*'.
    let bf16 = args.iter().any(|a| a == "--bf16");
    if args.iter().any(|a| a == "--sweep") {
        let grid = args.iter().any(|a| a == "--grid");
        sweep(threads, bt, quick, grid, only, custom_shape(&args));
        return;
    }
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
    // The f32 FMA peak measured here, for the "% of peak" column (markdown tables).
    let peak = if markdown && !bf16 {
        benches::peak::f32_peak(threads)
    } else {
        f64::NAN
    };
    if !markdown {
        println!(
            "f32 FMA peak here: {:.1} GFLOP/s",
            benches::peak::f32_peak(threads)
        );
    }
    let kernels = engine::gemm::bf16::Bf16Kernel::available(isa);
    let chosen = engine::gemm::bf16::bf16_kernel(isa);
    let star = |kn: &engine::gemm::bf16::Bf16Kernel| if *kn == chosen { "*" } else { "" };
    let mut names: Vec<String> = if bf16 {
        let each = kernels
            .iter()
            .map(|kn| format!("bf16 {}{}", kn.name(), star(kn)));
        std::iter::once("ours".to_string()).chain(each).collect()
    } else {
        ["ours", "gemm crate", "matrixmultiply"]
            .map(String::from)
            .to_vec()
    };
    names.extend(blas.iter().map(|b| b.name.to_string()));
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
    let custom = custom_shape(&args);
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
            Box::new(move |c: &mut [f32]| ours(isa, threads, a, b, (m, k, n), (brs, bcs), c)),
            // SAFETY (this and the next two): pointers and strides describe the live buffers.
            // SAFETY: the pointers and strides describe the live buffers.
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
            // SAFETY: the pointers and strides describe the live buffers.
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
            for &kn in &kernels {
                fns.push(Box::new(move |c: &mut [f32]| {
                    let bv = MatRef {
                        data: b,
                        rows: k,
                        cols: n,
                        rs: brs,
                        cs: bcs,
                    };
                    engine::gemm::bf16::gemm_bf16_kernel(
                        kn,
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
        }
        for lib in &blas {
            let f = lib.sgemm;
            let (tb, ldb) = if bt { (112, k) } else { (111, n) }; // CblasTrans / CblasNoTrans
                                                                  // SAFETY: the pointers and strides describe the live buffers.
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
        for (name, c) in names.iter().zip(&cs).skip(1).filter(|_| bf16) {
            // bf16 operands: compare by relative Frobenius error (the tests bound it at 6e-3).
            let num: f64 = c
                .iter()
                .zip(&cs[0])
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum();
            let den: f64 = cs[0].iter().map(|y| (*y as f64).powi(2)).sum();
            assert!(
                (num / den).sqrt() < 6e-3,
                "{name} GEMM error {} at {m}x{k}x{n}",
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
            // f32, each bf16 kernel, then the chosen kernel over f32.
            let at = 1 + kernels.iter().position(|&kn| kn == chosen).unwrap_or(0);
            let cols: String = g.iter().map(|x| format!(" {x:.1} |")).collect();
            println!("| {m}x{k}x{n} | {threads} |{cols} {:.2} |", g[at] / g[0]);
        } else if markdown {
            let best_peer = g[1..].iter().copied().fold(0.0, f64::max);
            // The target: at least the best of the gemm crate and MKL.
            let target = names
                .iter()
                .zip(&g)
                .filter(|(n, _)| *n == "gemm crate" || *n == "MKL")
                .map(|(_, v)| *v)
                .fold(0.0, f64::max);
            println!(
                "| {m}x{k}x{n} | {threads} | {} | {:.0}% | {:.2} | {:.2} |",
                g.iter()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join(" | "),
                100.0 * g[0] / peak,
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
