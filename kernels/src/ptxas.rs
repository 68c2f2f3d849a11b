//! The compiler's resource report per kernel (registers, shared memory, stack, spills), from
//! `ptxas -v` on the PTX that NVRTC produced. Used by the CI check (no spills allowed) and by
//! `cargo run -p kernels --bin kernel-report`.

use std::path::PathBuf;
use std::process::Command;

/// One kernel's resources as ptxas reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub kernel: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// Finds ptxas: `$PTXAS`, then `$CUDA_HOME/bin`, `/usr/local/cuda/bin`, the project's
/// `.cache/cuda-tools` wheel (scripts/fetch-cuda-tools), then `PATH`.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PTXAS") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = std::env::var_os(var) {
            candidates.push(PathBuf::from(h).join("bin/ptxas"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/ptxas"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Ok(rd) = std::fs::read_dir(root.join(".cache/cuda-tools/lib")) {
        for py in rd.flatten() {
            candidates.push(py.path().join("site-packages/nvidia/cu13/bin/ptxas"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("ptxas")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Assembles `ptx` for `arch` with `ptxas -v` and parses its report.
pub fn report(ptxas: &std::path::Path, ptx: &str, arch: &str) -> Result<Vec<Resources>, String> {
    let dir = std::env::temp_dir();
    let unique = format!(
        "kernels-{}-{:?}.ptx",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "");
    let path = dir.join(unique);
    std::fs::write(&path, ptx).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&path)
        .arg("-o")
        .arg("/dev/null")
        .output()
        .map_err(|e| format!("running {}: {e}", ptxas.display()));
    let _ = std::fs::remove_file(&path);
    let out = out?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("ptxas failed ({}):\n{text}", out.status));
    }
    Ok(parse(&text))
}

/// Parses `ptxas -v` output (one "Compiling entry function" block per kernel).
pub fn parse(text: &str) -> Vec<Resources> {
    let mut all: Vec<Resources> = Vec::new();
    let num_before = |line: &str, key: &str| -> Option<u32> {
        let at = line.find(key)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            all.push(Resources {
                kernel: name,
                ..Default::default()
            });
            continue;
        }
        let Some(cur) = all.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            cur.stack_bytes = num_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_store_bytes = num_before(line, "bytes spill stores").unwrap_or(0);
            cur.spill_load_bytes = num_before(line, "bytes spill loads").unwrap_or(0);
        }
        if let Some(rest) = line.split("Used ").nth(1) {
            cur.registers = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if let Some(smem) = line.split(", ").find(|p| p.ends_with("bytes smem")) {
                cur.shared_bytes = smem
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_ptxas_report() {
        let text = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'add_f32' for 'sm_90'\n\
ptxas info    : Function properties for add_f32\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 22 registers, used 1 barriers, 128 bytes smem, 380 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'mul_f32' for 'sm_90'\n\
ptxas info    : Function properties for mul_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 16 registers, used 0 barriers, 380 bytes cmem[0]\n";
        let r = super::parse(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (
                r[0].kernel.as_str(),
                r[0].registers,
                r[0].shared_bytes,
                r[0].stack_bytes
            ),
            ("add_f32", 22, 128, 8)
        );
        assert_eq!((r[0].spill_store_bytes, r[0].spill_load_bytes), (4, 12));
        assert_eq!(
            (r[1].kernel.as_str(), r[1].registers, r[1].shared_bytes),
            ("mul_f32", 16, 0)
        );
    }
}
