//! Launcher for `cuda/dropout.cu`: the CPU engine's counter-based mask on the GPU.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{DevicePtr, DevicePtrMut};

const BLOCK: u32 = 256;

/// `y[i] = keep(seed, i) ? x[i] / (1 - p) : 0`, x and y `[n]`; the same call on dy is the
/// backward. Masks equal `engine::dropout::dropout_inplace`'s for the same seed.
pub fn dropout<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
    p: f32,
    seed: u64,
) -> Result<(), Error> {
    let k = "dropout";
    check::prob(k, p)?;
    let n = y.len();
    check::len(k, "x", x.len(), n)?;
    let (px, _g1) = addr(gpu, x);
    let (py, _g2) = addr_mut(gpu, y);
    check::aligned(k, "x", px)?;
    check::aligned(k, "y", py)?;
    launch::<T>(gpu, px, py, n, p, seed)
}

/// In place: `y = dropout(y)`.
pub fn dropout_inplace<T: Elem>(
    gpu: &Gpu,
    y: &mut impl DevicePtrMut<T>,
    p: f32,
    seed: u64,
) -> Result<(), Error> {
    let k = "dropout";
    check::prob(k, p)?;
    let n = y.len();
    let (py, _g1) = addr_mut(gpu, y);
    check::aligned(k, "y", py)?;
    launch::<T>(gpu, py, py, n, p, seed)
}

fn launch<T: Elem>(gpu: &Gpu, px: u64, py: u64, n: usize, p: f32, seed: u64) -> Result<(), Error> {
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * T::PACK as u64);
    let args = [
        Arg::Ptr(px),
        Arg::Ptr(py),
        Arg::I64(n as i64),
        Arg::F32(p),
        Arg::U64(seed),
    ];
    gpu.launch(
        Family::Dropout,
        &format!("dropout_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}
