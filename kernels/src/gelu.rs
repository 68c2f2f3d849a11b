//! Launchers for `cuda/gelu.cu`: GELU (erf or tanh form) and bias + GELU, forward and backward.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{DevicePtr, DevicePtrMut};

const BLOCK: u32 = 256;

/// Which GELU: BERT's `gelu` (erf) or `gelu_new` (tanh approximation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    Erf,
    Tanh,
}

impl GeluKind {
    fn stem(self) -> &'static str {
        match self {
            GeluKind::Erf => "gelu_erf",
            GeluKind::Tanh => "gelu_tanh",
        }
    }
}

fn run<T: Elem>(
    gpu: &Gpu,
    kind: GeluKind,
    x: &impl DevicePtr<T>,
    bias: Option<&cudarc::driver::CudaView<'_, T>>,
    dy: Option<&cudarc::driver::CudaView<'_, T>>,
    out: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    let kernel: &'static str = match (bias.is_some(), dy.is_some()) {
        (false, false) => "gelu_fwd",
        (false, true) => "gelu_bwd",
        (true, false) => "bias_gelu_fwd",
        (true, true) => "bias_gelu_bwd",
    };
    let n = out.len();
    check::len(kernel, "x", x.len(), n)?;
    let (px, _gx) = addr(gpu, x);
    let (po, _go) = addr_mut(gpu, out);
    check::aligned(kernel, "x", px)?;
    check::aligned(kernel, "out", po)?;
    let mut args = vec![Arg::Ptr(px)];
    let mut guards = Vec::new();
    if let Some(b) = bias {
        check::len(kernel, "bias", b.len(), cols)?;
        check::rows(kernel, "x", n, cols)?;
        if !cols.is_multiple_of(T::PACK) {
            return check::fail(
                kernel,
                format!("cols = {cols} must be a multiple of {}", T::PACK),
            );
        }
        let (pb, gb) = addr(gpu, b);
        check::aligned(kernel, "bias", pb)?;
        args.push(Arg::Ptr(pb));
        guards.push(gb);
    }
    if let Some(d) = dy {
        check::len(kernel, "dy", d.len(), n)?;
        let (pd, gd) = addr(gpu, d);
        check::aligned(kernel, "dy", pd)?;
        args.push(Arg::Ptr(pd));
        guards.push(gd);
    }
    args.push(Arg::Ptr(po));
    args.push(Arg::I64(n as i64));
    if bias.is_some() {
        args.push(Arg::I32(check::i32_of(kernel, "cols", cols)?));
    }
    let prefix = if bias.is_some() { "bias_" } else { "" };
    let dir = if dy.is_some() { "bwd" } else { "fwd" };
    let name = format!("{prefix}{}_{dir}_{}", kind.stem(), T::SUFFIX);
    let grid = gpu.grid_for(n as u64, BLOCK as u64 * T::PACK as u64);
    gpu.launch(Family::Gelu, &name, (grid, 1, 1), BLOCK, &args)
}

/// `y = gelu(x)`, x and y `[n]`.
pub fn gelu_fwd<T: Elem>(
    gpu: &Gpu,
    kind: GeluKind,
    x: &impl DevicePtr<T>,
    y: &mut impl DevicePtrMut<T>,
) -> Result<(), Error> {
    run(gpu, kind, x, None, None, y, 0)
}

/// `dx = dy * gelu'(x)`, all `[n]`.
pub fn gelu_bwd<T: Elem>(
    gpu: &Gpu,
    kind: GeluKind,
    x: &impl DevicePtr<T>,
    dy: &cudarc::driver::CudaView<'_, T>,
    dx: &mut impl DevicePtrMut<T>,
) -> Result<(), Error> {
    run(gpu, kind, x, None, Some(dy), dx, 0)
}

/// `y = gelu(x + bias)`, x and y `[rows, cols]`, bias `[cols]`, cols a multiple of the pack.
pub fn bias_gelu_fwd<T: Elem>(
    gpu: &Gpu,
    kind: GeluKind,
    x: &impl DevicePtr<T>,
    bias: &cudarc::driver::CudaView<'_, T>,
    y: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    run(gpu, kind, x, Some(bias), None, y, cols)
}

/// `dx = dy * gelu'(x + bias)` (x + bias recomputed, not stored); dbias is
/// [`crate::reduce::column_sum`] of dx.
pub fn bias_gelu_bwd<T: Elem>(
    gpu: &Gpu,
    kind: GeluKind,
    x: &impl DevicePtr<T>,
    bias: &cudarc::driver::CudaView<'_, T>,
    dy: &cudarc::driver::CudaView<'_, T>,
    dx: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    run(gpu, kind, x, Some(bias), Some(dy), dx, cols)
}
