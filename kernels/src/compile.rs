//! Run-time compilation with NVRTC, for the GPU the process runs on (or, in the CI checks, for a
//! named architecture such as `sm_90`, which needs no GPU at all: only `libnvrtc`).

use crate::source::Family;
use crate::Error;
use cudarc::nvrtc::{CompileOptions, Ptx};

/// NVRTC's options for every family: precise division, square root and `expf` (the CPU-parity
/// tests compare at 1e-5), fused multiply-add allowed, C++17.
fn options(arch: &'static str) -> CompileOptions {
    CompileOptions {
        arch: Some(arch),
        fmad: Some(true),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        use_fast_math: Some(false),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    }
}

/// Whether `libnvrtc` can be opened by the dynamic loader (cudarc panics on first use otherwise).
pub fn nvrtc_available() -> bool {
    // SAFETY: only dlopen()s the library; no symbol is called.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// Compiles one family to PTX for `arch` (e.g. `"sm_90"`). Errors carry NVRTC's log.
pub fn compile(family: Family, arch: &'static str) -> Result<Ptx, Error> {
    compile_source(family.name(), &family.source(), arch)
}

/// Compiles any source with the families' options; `name` labels errors (`{name}.cu`).
pub fn compile_source(name: &'static str, source: &str, arch: &'static str) -> Result<Ptx, Error> {
    if !nvrtc_available() {
        return Err(Error::NoNvrtc);
    }
    let mut opts = options(arch);
    opts.name = Some(format!("{name}.cu"));
    cudarc::nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::Compile {
            family: name,
            arch,
            log: log.to_string_lossy().into_owned(),
        },
        other => Error::Compile {
            family: name,
            arch,
            log: format!("{other:?}"),
        },
    })
}

/// The `.entry` names (the launchable kernels) of a PTX module.
pub fn entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            Some(rest.split(['(', ' ']).next()?.to_string())
        })
        .collect()
}

/// The architecture string NVRTC wants for a compute capability, e.g. (9, 0) -> "sm_90".
pub fn arch_for(major: i32, minor: i32) -> Result<&'static str, Error> {
    Ok(match (major, minor) {
        (7, 0) => "sm_70",
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        _ => return Err(Error::UnsupportedArch { major, minor }),
    })
}

/// Each entry's parameter sizes in bytes, in order (from the PTX signatures): what
/// [`crate::Gpu::launch`] checks its argument list against before every first launch.
pub fn entry_params(ptx: &str) -> std::collections::HashMap<String, Vec<usize>> {
    let mut out = std::collections::HashMap::new();
    let mut lines = ptx.lines();
    while let Some(l) = lines.next() {
        let l = l.trim_start();
        let Some(rest) = l
            .strip_prefix(".visible .entry ")
            .or_else(|| l.strip_prefix(".entry "))
        else {
            continue;
        };
        let name = rest.split(['(', ' ']).next().unwrap_or("").to_string();
        let mut sizes = Vec::new();
        if !rest.trim_end().ends_with("()") {
            for p in lines.by_ref() {
                let p = p.trim();
                if p.starts_with(')') {
                    break;
                }
                let ty = p.split_whitespace().nth(1).unwrap_or("");
                sizes.push(match ty {
                    ".u64" | ".s64" | ".b64" | ".f64" => 8,
                    ".u32" | ".s32" | ".b32" | ".f32" => 4,
                    ".u16" | ".s16" | ".b16" | ".f16" => 2,
                    ".u8" | ".s8" | ".b8" => 1,
                    _ => 0,
                });
            }
        }
        out.insert(name, sizes);
    }
    out
}
