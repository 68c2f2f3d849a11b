//! The running CPU's measured arithmetic peaks, per core and on every core: f32 FMA (AVX-512,
//! AVX2+FMA), the bf16 dot product `vdpbf16ps` (AVX512-BF16) and the int8 dot product
//! `vpdpbusd` (AVX512-VNNI), where present (the loops are in `benches::peak`).
//!
//! `cargo run --release -p benches --bin peak [-- --threads N] [--json]`
#[cfg(target_arch = "x86_64")]
use benches::peak::loops;
use benches::peak::measure;

/// One measured peak.
struct Peak {
    name: &'static str,
    gops_per_core: f64,
    gops_all: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let json = args.iter().any(|a| a == "--json");
    let mut peaks: Vec<Peak> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let mut run = |name, f: fn() -> f64| {
            let (one, all) = measure(threads, 8, f);
            peaks.push(Peak {
                name,
                gops_per_core: one,
                gops_all: all,
            });
        };
        if is_x86_feature_detected!("avx512f") {
            // SAFETY (each): the feature was detected on this CPU just before.
            // SAFETY: the loop's instruction set was detected on this CPU just before.
            run("f32 FMA (AVX-512)", || unsafe { loops::fma512() });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the loop's instruction set was detected on this CPU just before.
            run("f32 FMA (AVX2)", || unsafe { loops::fma256() });
        }
        if is_x86_feature_detected!("avx512bf16") {
            // SAFETY: the loop's instruction set was detected on this CPU just before.
            run("bf16 dot (vdpbf16ps)", || unsafe { loops::dpbf16() });
        }
        if is_x86_feature_detected!("avx512vnni") {
            // SAFETY: the loop's instruction set was detected on this CPU just before.
            run("int8 dot (vpdpbusd)", || unsafe { loops::dpbusd() });
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    if json {
        let items: Vec<String> = peaks
            .iter()
            .map(|p| {
                format!(
                    "{{\"name\":\"{}\",\"gops_per_core\":{:.1},\"gops_all\":{:.1}}}",
                    p.name, p.gops_per_core, p.gops_all
                )
            })
            .collect();
        println!(
            "{{\"cpu\":\"{cpu}\",\"threads\":{threads},\"peaks\":[{}]}}",
            items.join(",")
        );
        return;
    }
    println!("{cpu}; {threads} thread(s) for the all-core column");
    println!();
    println!("| instruction | Gop/s, one core | Gop/s, {threads} cores |");
    println!("|---|---|---|");
    for p in &peaks {
        println!(
            "| {} | {:.1} | {:.1} |",
            p.name, p.gops_per_core, p.gops_all
        );
    }
    if peaks.is_empty() {
        println!("| (no x86-64 SIMD peak measured on this CPU) | | |");
    }
}
