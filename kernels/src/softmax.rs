//! Launchers for `cuda/softmax.cu`: row softmax with an optional additive key mask, and its
//! backward.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};

const ROWS_PER_BLOCK: u32 = 8;

/// `y[r] = softmax(scale * x[r] + mask[r / rows_per_mask])`; x, y `[rows, cols]`; mask
/// `[rows / rows_per_mask, cols]` f32 (attention: `[batch, keys]` with rows_per_mask =
/// heads * queries). A row masked everywhere gives zeros.
pub fn softmax_fwd<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    mask: Option<(&CudaView<'_, f32>, usize)>,
    y: &mut impl DevicePtrMut<T>,
    cols: usize,
    scale: f32,
) -> Result<(), Error> {
    let k = "softmax_fwd";
    let n = y.len();
    let rows = check::rows(k, "y", n, cols)?;
    check::len(k, "x", x.len(), n)?;
    let (pm, rpm, _gm) = match mask {
        Some((m, rpm)) => {
            if rpm == 0 || rows % rpm != 0 {
                return check::fail(
                    k,
                    format!("rows_per_mask = {rpm} does not divide rows = {rows}"),
                );
            }
            check::len(k, "mask", m.len(), rows / rpm * cols)?;
            let (p, g) = addr(gpu, m);
            (p, rpm, Some(g))
        }
        None => (0, 1, None),
    };
    let (px, _g1) = addr(gpu, x);
    let (py, _g2) = addr_mut(gpu, y);
    let args = [
        Arg::Ptr(px),
        Arg::Ptr(pm),
        Arg::Ptr(py),
        Arg::I32(check::i32_of(k, "rows", rows)?),
        Arg::I32(check::i32_of(k, "cols", cols)?),
        Arg::F32(scale),
        Arg::I32(check::i32_of(k, "rows_per_mask", rpm)?),
    ];
    let grid = (rows as u32).div_ceil(ROWS_PER_BLOCK);
    gpu.launch(
        Family::Softmax,
        &format!("{k}_{}", T::SUFFIX),
        (grid, 1, 1),
        32 * ROWS_PER_BLOCK,
        &args,
    )
}

/// `dx = y * (dy - sum(dy * y))` per row, all `[rows, cols]`.
pub fn softmax_bwd<T: Elem>(
    gpu: &Gpu,
    y: &impl DevicePtr<T>,
    dy: &impl DevicePtr<T>,
    dx: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    let k = "softmax_bwd";
    let n = dx.len();
    let rows = check::rows(k, "dx", n, cols)?;
    check::len(k, "y", y.len(), n)?;
    check::len(k, "dy", dy.len(), n)?;
    let (p0, _g1) = addr(gpu, y);
    let (p1, _g2) = addr(gpu, dy);
    let (p2, _g3) = addr_mut(gpu, dx);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::I32(check::i32_of(k, "rows", rows)?),
        Arg::I32(check::i32_of(k, "cols", cols)?),
    ];
    let grid = (rows as u32).div_ceil(ROWS_PER_BLOCK);
    gpu.launch(
        Family::Softmax,
        &format!("{k}_{}", T::SUFFIX),
        (grid, 1, 1),
        32 * ROWS_PER_BLOCK,
        &args,
    )
}
