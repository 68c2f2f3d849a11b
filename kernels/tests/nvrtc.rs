//! The CPU-side check of every CUDA kernel (runs in CI, no GPU needed): each family compiles
//! through NVRTC for sm_90 (the H200), the same path as at run time, and ptxas reports no
//! register spills and no stack frame in any kernel. Needs libnvrtc on the loader path and ptxas:
//! `scripts/test` installs both (scripts/fetch-cuda-tools) and sets the environment.

use kernels::{compile, ptxas, Family};

#[test]
fn every_family_compiles_for_sm_90_without_spills() {
    assert!(
        compile::nvrtc_available(),
        "{} (scripts/test does this)",
        kernels::Error::NoNvrtc
    );
    let ptxas_bin = ptxas::find_ptxas()
        .expect("ptxas not found: run scripts/fetch-cuda-tools, or set PTXAS or CUDA_HOME");
    let mut total = 0;
    let mut bad = Vec::new();
    println!(
        "{:<34} {:>5} {:>6} {:>6} {:>6}",
        "kernel", "regs", "smem", "stack", "spill"
    );
    for fam in Family::ALL {
        let ptx = compile::compile(fam, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        let src = ptx.to_src();
        let entries = compile::entries(&src);
        let params = compile::entry_params(&src);
        assert_eq!(
            params.len(),
            entries.len(),
            "{}.cu: signatures parsed",
            fam.name()
        );
        assert!(
            params.values().all(|p| !p.is_empty() && !p.contains(&0)),
            "{}.cu: unparsed parameter types: {params:?}",
            fam.name()
        );
        assert!(
            !entries.is_empty(),
            "{}.cu: no kernels in the PTX",
            fam.name()
        );
        let report = ptxas::report(&ptxas_bin, &src, "sm_90").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            report.len(),
            entries.len(),
            "{}.cu: ptxas reported {} kernels, the PTX has {}",
            fam.name(),
            report.len(),
            entries.len()
        );
        for r in &report {
            println!(
                "{:<34} {:>5} {:>6} {:>6} {:>6}",
                r.kernel,
                r.registers,
                r.shared_bytes,
                r.stack_bytes,
                r.spill_store_bytes + r.spill_load_bytes
            );
            if r.spill_store_bytes + r.spill_load_bytes > 0 || r.stack_bytes > 0 {
                bad.push(r.kernel.clone());
            }
        }
        total += report.len();
    }
    assert!(total >= 40, "only {total} kernels compiled");
    assert!(
        bad.is_empty(),
        "kernels with spills or a stack frame: {bad:?}"
    );
}

#[test]
fn compile_errors_name_the_file_and_carry_nvrtc_log() {
    let src = format!(
        "{}\n#line 1 \"broken.cu\"\nextern \"C\" __global__ void broken() {{ undefined_name = 1; }}",
        kernels::source::COMMON
    );
    let err = compile::compile_source("broken", &src, "sm_90").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("broken.cu") && msg.contains("undefined_name"),
        "{msg}"
    );
}

#[test]
fn kernel_signatures_are_read_from_the_ptx() {
    let ptx = compile::compile(Family::Layernorm, "sm_90").unwrap_or_else(|e| panic!("{e}"));
    let p = compile::entry_params(&ptx.to_src());
    // layernorm_fwd_f32(x, res, gamma, beta, h, y, mean, rstd: pointers; rows, cols: int;
    // eps, p: float; seed: u64)
    assert_eq!(
        p["layernorm_fwd_f32"],
        [8, 8, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 8]
    );
    let ptx = compile::compile(Family::Adamw, "sm_90").unwrap_or_else(|e| panic!("{e}"));
    let p = compile::entry_params(&ptx.to_src());
    assert_eq!(p["adamw_multi"].len(), 17);
}
