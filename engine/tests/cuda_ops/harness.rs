//! The one harness every GPU kernel test uses: the GPU (every launch synchronised and checked),
//! seeded random inputs (a fresh seed per run, printed; GPU_CHECK_SEED replays it), upload and
//! download, NaN-poisoned outputs, bf16 rounding, and the relative-error comparator.

pub use engine::cuda::cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
pub use engine::cuda::{self as k, blas, gelu::GeluKind, Gpu};
pub use engine::rng::SplitMix64;
pub use engine::simd::Isa;
pub use half::bf16;

pub fn gpu() -> Gpu {
    let g = Gpu::new(0).unwrap_or_else(|e| panic!("the GPU check needs a CUDA GPU: {e}"));
    g.set_checked(true);
    g
}

/// A fresh seed per run (printed, so a failure can be replayed with GPU_CHECK_SEED).
pub fn rng(tag: u64) -> SplitMix64 {
    let seed = std::env::var("GPU_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (tag {tag})");
    SplitMix64::new(seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub fn randn(r: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.next_normal() * scale).collect()
}

pub fn up<T: DeviceRepr>(g: &Gpu, v: &[T]) -> CudaSlice<T> {
    g.stream().clone_htod(v).unwrap()
}

pub fn down<T: DeviceRepr + Default + Clone>(g: &Gpu, b: &CudaSlice<T>) -> Vec<T> {
    g.stream().clone_dtoh(b).unwrap()
}

pub fn poison(g: &Gpu, n: usize) -> CudaSlice<f32> {
    up(g, &vec![f32::NAN; n])
}

pub fn poison_bf16(g: &Gpu, n: usize) -> CudaSlice<bf16> {
    up(g, &vec![bf16::NAN; n])
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

pub fn from_bf16(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Rounds through bf16 (the inputs a bf16 kernel actually sees).
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    from_bf16(&to_bf16(v))
}

#[track_caller]
pub fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().position(|v| v.is_nan()) {
        if !want[i].is_nan() {
            panic!(
                "{what}: element {i} is NaN (unwritten?), expected {}",
                want[i]
            );
        }
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        if b.is_nan() {
            continue;
        }
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    let rel = if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    };
    println!("{what:<48} rel {rel:.2e}");
    assert!(rel <= tol, "{what}: relative error {rel:.3e} > {tol:.0e}");
}

pub const F32_TOL: f64 = 1e-5;
pub const BF16_TOL: f64 = 1e-2;

pub const FLAT_SIZES: [usize; 5] = [1, 13, 4099, 65_536, 3_000_017];
