//! Launchers for `cuda/elementwise.cu`. Buffers are flat; all must be 16-byte aligned.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use half::bf16;

const BLOCK: u32 = 256;

fn binary<T: Elem>(
    gpu: &Gpu,
    kernel: &'static str,
    a: &impl DevicePtr<T>,
    b: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
    extra: &[Arg],
) -> Result<(), Error> {
    let n = y.len();
    check::len(kernel, "a", a.len(), n)?;
    check::len(kernel, "b", b.len(), n)?;
    let (pa, _ga) = addr(gpu, a);
    let (pb, _gb) = addr(gpu, b);
    let (py, _gy) = addr_mut(gpu, y);
    for (w, p) in [("a", pa), ("b", pb), ("y", py)] {
        check::aligned(kernel, w, p)?;
    }
    let mut args = vec![Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(py), Arg::I64(n as i64)];
    args.extend_from_slice(extra);
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * T::PACK as u64);
    gpu.launch(
        Family::Elementwise,
        &format!("{kernel}_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

/// `y = a + b` (all `[n]`).
pub fn add<T: Elem>(
    gpu: &Gpu,
    a: &impl DevicePtr<T>,
    b: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
) -> Result<(), Error> {
    binary(gpu, "add", a, b, y, &[])
}

/// `y = a * b` (all `[n]`).
pub fn mul<T: Elem>(
    gpu: &Gpu,
    a: &impl DevicePtr<T>,
    b: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
) -> Result<(), Error> {
    binary(gpu, "mul", a, b, y, &[])
}

/// `y = alpha a + beta b` (all `[n]`).
pub fn axpby<T: Elem>(
    gpu: &Gpu,
    a: &impl DevicePtr<T>,
    b: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
    alpha: f32,
    beta: f32,
) -> Result<(), Error> {
    binary(gpu, "axpby", a, b, y, &[Arg::F32(alpha), Arg::F32(beta)])
}

/// In place: `y = alpha y + beta b` (gradient accumulation: alpha = beta = 1).
pub fn axpby_inplace<T: Elem>(
    gpu: &Gpu,
    y: &mut impl DevicePtrMut<T>,
    b: &impl DevicePtr<T>,
    alpha: f32,
    beta: f32,
) -> Result<(), Error> {
    let kernel = "axpby";
    let n = y.len();
    check::len(kernel, "b", b.len(), n)?;
    let (pb, _gb) = addr(gpu, b);
    let (py, _gy) = addr_mut(gpu, y);
    check::aligned(kernel, "b", pb)?;
    check::aligned(kernel, "y", py)?;
    let args = [
        Arg::Ptr(py),
        Arg::Ptr(pb),
        Arg::Ptr(py),
        Arg::I64(n as i64),
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * T::PACK as u64);
    gpu.launch(
        Family::Elementwise,
        &format!("axpby_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

/// `y[r, :] = x[r, :] + bias` for x, y `[rows, cols]`, bias `[cols]`; cols a multiple of the
/// pack (4 in f32, 8 in bf16).
pub fn bias_add<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    bias: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    let kernel = "bias_add";
    let n = y.len();
    check::len(kernel, "x", x.len(), n)?;
    check::len(kernel, "bias", bias.len(), cols)?;
    let rows = check::rows(kernel, "y", n, cols)?;
    if !cols.is_multiple_of(T::PACK) {
        return check::fail(
            kernel,
            format!("cols = {cols} must be a multiple of {}", T::PACK),
        );
    }
    let (px, _gx) = addr(gpu, x);
    let (pb, _gb) = addr(gpu, bias);
    let (py, _gy) = addr_mut(gpu, y);
    for (w, p) in [("x", px), ("bias", pb), ("y", py)] {
        check::aligned(kernel, w, p)?;
    }
    let args = [
        Arg::Ptr(px),
        Arg::Ptr(pb),
        Arg::Ptr(py),
        Arg::I64(rows as i64),
        Arg::I32(check::i32_of(kernel, "cols", cols)?),
    ];
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * T::PACK as u64);
    gpu.launch(
        Family::Elementwise,
        &format!("bias_add_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

fn cast<A: Elem, B: Elem>(
    gpu: &Gpu,
    name: &'static str,
    x: &impl DevicePtr<A>,
    y: &mut impl DevicePtrMut<B>,
) -> Result<(), Error> {
    let n = y.len();
    check::len(name, "x", x.len(), n)?;
    let (px, _gx) = addr(gpu, x);
    let (py, _gy) = addr_mut(gpu, y);
    check::aligned(name, "x", px)?;
    check::aligned(name, "y", py)?;
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * 8);
    gpu.launch(
        Family::Elementwise,
        name,
        (grid, 1, 1),
        BLOCK,
        &[Arg::Ptr(px), Arg::Ptr(py), Arg::I64(n as i64)],
    )
}

/// f32 -> bf16, round to nearest even (as `half::bf16::from_f32`).
pub fn cast_f32_bf16(
    gpu: &Gpu,
    x: &impl DevicePtr<f32>,
    y: &mut impl DevicePtrMut<bf16>,
) -> Result<(), Error> {
    cast(gpu, "cast_f32_bf16", x, y)
}

/// bf16 -> f32 (exact).
pub fn cast_bf16_f32(
    gpu: &Gpu,
    x: &impl DevicePtr<bf16>,
    y: &mut impl DevicePtrMut<f32>,
) -> Result<(), Error> {
    cast(gpu, "cast_bf16_f32", x, y)
}

/// `y[:] = v`.
pub fn fill_f32(gpu: &Gpu, y: &mut impl DevicePtrMut<f32>, v: f32) -> Result<(), Error> {
    let n = y.len();
    let (py, _gy) = addr_mut(gpu, y);
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * 4);
    gpu.launch(
        Family::Elementwise,
        "fill_f32",
        (grid, 1, 1),
        BLOCK,
        &[Arg::Ptr(py), Arg::I64(n as i64), Arg::F32(v)],
    )
}

/// `y = tanh(x)` (f32, `[n]`).
pub fn tanh_fwd(
    gpu: &Gpu,
    x: &impl DevicePtr<f32>,
    y: &mut impl DevicePtrMut<f32>,
) -> Result<(), Error> {
    let k = "tanh_f32";
    let n = y.len();
    check::len(k, "x", x.len(), n)?;
    let (px, _gx) = addr(gpu, x);
    let (py, _gy) = addr_mut(gpu, y);
    let grid = gpu.grid_for(n as u64, BLOCK as u64);
    gpu.launch(
        Family::Elementwise,
        k,
        (grid, 1, 1),
        BLOCK,
        &[Arg::Ptr(px), Arg::Ptr(py), Arg::I64(n as i64)],
    )
}

/// `dx = dy * (1 - y^2)` from the forward's output y (f32, all `[n]`).
pub fn tanh_bwd(
    gpu: &Gpu,
    y: &impl DevicePtr<f32>,
    dy: &impl DevicePtr<f32>,
    dx: &mut impl DevicePtrMut<f32>,
) -> Result<(), Error> {
    let k = "tanh_bwd_f32";
    let n = dx.len();
    check::len(k, "y", y.len(), n)?;
    check::len(k, "dy", dy.len(), n)?;
    let (py, _gy) = addr(gpu, y);
    let (pd, _gd) = addr(gpu, dy);
    let (px, _gx) = addr_mut(gpu, dx);
    let grid = gpu.grid_for(n as u64, BLOCK as u64);
    gpu.launch(
        Family::Elementwise,
        k,
        (grid, 1, 1),
        BLOCK,
        &[Arg::Ptr(py), Arg::Ptr(pd), Arg::Ptr(px), Arg::I64(n as i64)],
    )
}
