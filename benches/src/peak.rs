//! The running CPU's arithmetic peaks, measured: register-only loops of independent
//! instructions (one accumulator register each, enough to cover the latency on every port),
//! so they measure issue rate, not memory. `bin/peak` prints them; the GEMM and inference
//! tables divide by them for their "% of peak" columns.

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
///
/// # Safety (every function here)
/// Each needs the CPU features its `target_feature` names; the caller checks them
/// (`is_x86_feature_detected!`) before the call.
#[expect(clippy::missing_safety_doc)]
pub mod loops {
    use std::arch::asm;
    use std::arch::x86_64::*;
    /// Iterations of the loop; each has 24 (12 on ymm) independent instructions, one per
    /// accumulator register, so that no instruction waits on the one before it.
    pub const ITERS: usize = 4_000_000;

    /// `OP reg, SRCS` for every register given, one line each.
    macro_rules! body {
        ($op:literal, $srcs:literal, $($r:literal)*) => { concat!($( $op, " ", $r, ", ", $srcs, "\n", )*) };
    }
    /// `OP reg, reg, reg` (zeroing) for every register given.
    macro_rules! zero {
        ($op:literal, $($r:literal)*) => { concat!($( $op, " ", $r, ", ", $r, ", ", $r, "\n", )*) };
    }

    /// `fn $name() -> f64`: ITERS rounds of `$op zmmI, zmm24, zmm25` on the 24 accumulators
    /// zmm0..zmm23 (zeroed first), returning the operations done ($ops per lane).
    macro_rules! zmm_loop {
        ($(#[$doc:meta])* $name:ident, $feature:literal, $op:literal, $ops:literal) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            pub unsafe fn $name() -> f64 {
// SAFETY: the caller upholds this function's safety contract, which covers every
// operation of the body.
unsafe {
                let n = ITERS;
                asm!(
                    concat!(
                        zero!("vpxord", "zmm0" "zmm1" "zmm2" "zmm3" "zmm4" "zmm5" "zmm6" "zmm7" "zmm8" "zmm9" "zmm10" "zmm11" "zmm12" "zmm13" "zmm14" "zmm15" "zmm16" "zmm17" "zmm18" "zmm19" "zmm20" "zmm21" "zmm22" "zmm23"),
                        "2:\n",
                        body!($op, "zmm24, zmm25", "zmm0" "zmm1" "zmm2" "zmm3" "zmm4" "zmm5" "zmm6" "zmm7" "zmm8" "zmm9" "zmm10" "zmm11" "zmm12" "zmm13" "zmm14" "zmm15" "zmm16" "zmm17" "zmm18" "zmm19" "zmm20" "zmm21" "zmm22" "zmm23"),
                        "dec {n}\n",
                        "jnz 2b\n",
                    ),
                    n = inout(reg) n => _,
                    in("zmm24") _mm512_set1_ps(0.999_999),
                    in("zmm25") _mm512_set1_ps(1e-7),
                    out("zmm0") _,
                    out("zmm1") _,
                    out("zmm2") _,
                    out("zmm3") _,
                    out("zmm4") _,
                    out("zmm5") _,
                    out("zmm6") _,
                    out("zmm7") _,
                    out("zmm8") _,
                    out("zmm9") _,
                    out("zmm10") _,
                    out("zmm11") _,
                    out("zmm12") _,
                    out("zmm13") _,
                    out("zmm14") _,
                    out("zmm15") _,
                    out("zmm16") _,
                    out("zmm17") _,
                    out("zmm18") _,
                    out("zmm19") _,
                    out("zmm20") _,
                    out("zmm21") _,
                    out("zmm22") _,
                    out("zmm23") _,
                    options(nostack, nomem),
                );
                (ITERS * 24 * 16 * $ops) as f64
            }
}
        };
    }

    zmm_loop!(
        /// f32 FMAs on zmm (2 flops per lane): the f32 GEMM's limit on AVX-512.
        fma512, "avx512f", "vfmadd231ps", 2
    );
    zmm_loop!(
        /// bf16 pair dot products `vdpbf16ps` (2 multiplies + 2 adds per f32 lane).
        dpbf16, "avx512f,avx512bf16", "vdpbf16ps", 4
    );
    zmm_loop!(
        /// int8 quad dot products `vpdpbusd` (4 multiplies + 4 adds per i32 lane).
        dpbusd, "avx512f,avx512vnni", "vpdpbusd", 8
    );

    /// f32 FMAs on ymm (2 flops per lane): the f32 GEMM's limit on AVX2 (12 chains: 16 ymm).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f64 {
        // SAFETY: the caller upholds this function's safety contract, which covers every
        // operation of the body.
        unsafe {
            let n = ITERS;
            asm!(
                concat!(
                    zero!("vxorps", "ymm0" "ymm1" "ymm2" "ymm3" "ymm4" "ymm5" "ymm6" "ymm7" "ymm8" "ymm9" "ymm10" "ymm11"),
                    "2:\n",
                    body!("vfmadd231ps", "ymm14, ymm15", "ymm0" "ymm1" "ymm2" "ymm3" "ymm4" "ymm5" "ymm6" "ymm7" "ymm8" "ymm9" "ymm10" "ymm11"),
                    "dec {n}\n",
                    "jnz 2b\n",
                ),
                n = inout(reg) n => _,
                in("ymm14") _mm256_set1_ps(0.999_999),
                in("ymm15") _mm256_set1_ps(1e-7),
                out("ymm0") _,
                out("ymm1") _,
                out("ymm2") _,
                out("ymm3") _,
                out("ymm4") _,
                out("ymm5") _,
                out("ymm6") _,
                out("ymm7") _,
                out("ymm8") _,
                out("ymm9") _,
                out("ymm10") _,
                out("ymm11") _,
                options(nostack, nomem),
            );
            (ITERS * 12 * 8 * 2) as f64
        }
    }
}

/// Best of `reps` timings of `f`, on one thread, then on `threads` threads started together
/// (each thread's own best over the same span): (per-core Gop/s, all-core Gop/s).
pub fn measure(threads: usize, reps: usize, f: fn() -> f64) -> (f64, f64) {
    let mut best_one = 0.0f64;
    for _ in 0..reps {
        let t = Instant::now();
        let ops = f();
        best_one = best_one.max(ops / t.elapsed().as_secs_f64() / 1e9);
    }
    let per_thread: Vec<f64> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(move || {
                    let mut best = 0.0f64;
                    for _ in 0..reps {
                        let t = Instant::now();
                        let ops = f();
                        best = best.max(ops / t.elapsed().as_secs_f64() / 1e9);
                    }
                    best
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (best_one, per_thread.iter().sum())
}

/// f32 FMA peak in GFLOP/s of the engine's ISA here for `threads` threads: the one-core peak
/// measured now (AVX-512 zmm or AVX2 ymm FMAs) times `threads` (0 where neither runs, e.g.
/// off x86-64). The one-core figure times the thread count, not an all-core run: on a shared
/// VM an all-core run reads low whenever a neighbour holds a core, which made GEMMs read as
/// over 100% of it.
pub fn f32_peak(threads: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = engine::simd::Isa::best();
        // SAFETY (each): the loop's features are those of the ISA the engine chose here.
        let f: fn() -> f64 = match isa {
            engine::simd::Isa::Avx512 if is_x86_feature_detected!("avx512f") => {
                // SAFETY: the loop's instruction set was detected on this CPU just before.
                || unsafe { loops::fma512() }
            }
            engine::simd::Isa::Avx2 | engine::simd::Isa::Avx512
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") =>
            {
                // SAFETY: the loop's instruction set was detected on this CPU just before.
                || unsafe { loops::fma256() }
            }
            _ => return 0.0,
        };
        let (one, _) = measure(1, 5, f);
        one * threads.max(1) as f64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        0.0
    }
}
