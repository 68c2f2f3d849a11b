//! Prints the PTX of one kernel family for sm_90 (for reading the generated code):
//! `cargo run -p kernels --example ptx -- layernorm` (needs libnvrtc on the loader path).
fn main() {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "elementwise".into());
    let fam = kernels::Family::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let ptx = kernels::compile::compile(fam, "sm_90").unwrap_or_else(|e| panic!("{e}"));
    print!("{}", ptx.to_src());
}
