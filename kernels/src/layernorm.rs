//! Launchers for `cuda/layernorm.cu`: `y = LayerNorm(dropout(x) + residual)` and its backward.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, reduce, Error, Family};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

/// Rows per block (one warp each).
const ROWS_PER_BLOCK: u32 = 8;

/// Forward. x, y, and the optional residual and h: `[rows, cols]`; gamma, beta: `[cols]` f32;
/// mean, rstd: `[rows]` f32 (written, for the backward). `h = dropout(x) + residual` is written
/// when given (training needs it for the backward). `dropout`: (p, seed), the CPU engine's mask.
pub fn layernorm_fwd<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    residual: Option<&CudaView<'_, T>>,
    gamma: &impl DevicePtr<f32>,
    beta: &impl DevicePtr<f32>,
    h: Option<&mut CudaViewMut<'_, T>>,
    y: &mut impl DevicePtrMut<T>,
    mean: &mut impl DevicePtrMut<f32>,
    rstd: &mut impl DevicePtrMut<f32>,
    cols: usize,
    eps: f32,
    dropout: Option<(f32, u64)>,
) -> Result<(), Error> {
    let k = "layernorm_fwd";
    let n = y.len();
    let rows = check::rows(k, "y", n, cols)?;
    check::len(k, "x", x.len(), n)?;
    check::len(k, "gamma", gamma.len(), cols)?;
    check::len(k, "beta", beta.len(), cols)?;
    check::len(k, "mean", mean.len(), rows)?;
    check::len(k, "rstd", rstd.len(), rows)?;
    let (p, seed) = dropout.unwrap_or((0.0, 0));
    check::prob(k, p)?;
    let (px, _g1) = addr(gpu, x);
    let (pr, _g2) = match residual {
        Some(r) => {
            check::len(k, "residual", r.len(), n)?;
            let (p, g) = addr(gpu, r);
            (p, Some(g))
        }
        None => (0, None),
    };
    let (pg, _g3) = addr(gpu, gamma);
    let (pb, _g4) = addr(gpu, beta);
    let (ph, _g5) = match h {
        Some(h) => {
            check::len(k, "h", h.len(), n)?;
            let (p, g) = addr_mut(gpu, h);
            (p, Some(g))
        }
        None => (0, None),
    };
    let (py, _g6) = addr_mut(gpu, y);
    let (pm, _g7) = addr_mut(gpu, mean);
    let (ps, _g8) = addr_mut(gpu, rstd);
    let args = [
        Arg::Ptr(px),
        Arg::Ptr(pr),
        Arg::Ptr(pg),
        Arg::Ptr(pb),
        Arg::Ptr(ph),
        Arg::Ptr(py),
        Arg::Ptr(pm),
        Arg::Ptr(ps),
        Arg::I32(check::i32_of(k, "rows", rows)?),
        Arg::I32(check::i32_of(k, "cols", cols)?),
        Arg::F32(eps),
        Arg::F32(p),
        Arg::U64(seed),
    ];
    let grid = (rows as u32).div_ceil(ROWS_PER_BLOCK);
    gpu.launch(
        Family::Layernorm,
        &format!("{k}_{}", T::SUFFIX),
        (grid, 1, 1),
        32 * ROWS_PER_BLOCK,
        &args,
    )
}

/// Backward to the input: `dx` `[rows, cols]` from h (the forward's normalised input), dy,
/// gamma and the forward's mean and rstd.
pub fn layernorm_bwd<T: Elem>(
    gpu: &Gpu,
    h: &impl DevicePtr<T>,
    dy: &impl DevicePtr<T>,
    gamma: &impl DevicePtr<f32>,
    mean: &impl DevicePtr<f32>,
    rstd: &impl DevicePtr<f32>,
    dx: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    let k = "layernorm_bwd";
    let n = dx.len();
    let rows = check::rows(k, "dx", n, cols)?;
    check::len(k, "h", h.len(), n)?;
    check::len(k, "dy", dy.len(), n)?;
    check::len(k, "gamma", gamma.len(), cols)?;
    check::len(k, "mean", mean.len(), rows)?;
    check::len(k, "rstd", rstd.len(), rows)?;
    let (ph, _g1) = addr(gpu, h);
    let (pd, _g2) = addr(gpu, dy);
    let (pg, _g3) = addr(gpu, gamma);
    let (pm, _g4) = addr(gpu, mean);
    let (ps, _g5) = addr(gpu, rstd);
    let (px, _g6) = addr_mut(gpu, dx);
    let args = [
        Arg::Ptr(ph),
        Arg::Ptr(pd),
        Arg::Ptr(pg),
        Arg::Ptr(pm),
        Arg::Ptr(ps),
        Arg::Ptr(px),
        Arg::I32(check::i32_of(k, "rows", rows)?),
        Arg::I32(check::i32_of(k, "cols", cols)?),
    ];
    let grid = (rows as u32).div_ceil(ROWS_PER_BLOCK);
    gpu.launch(
        Family::Layernorm,
        &format!("{k}_{}", T::SUFFIX),
        (grid, 1, 1),
        32 * ROWS_PER_BLOCK,
        &args,
    )
}

/// Backward to the parameters: `dgamma = beta_acc * dgamma + sum_r dy * xhat`,
/// `dbeta = beta_acc * dbeta + sum_r dy` (`[cols]` f32 each), in two deterministic stages.
pub fn layernorm_params_bwd<T: Elem>(
    gpu: &Gpu,
    h: &impl DevicePtr<T>,
    dy: &impl DevicePtr<T>,
    mean: &impl DevicePtr<f32>,
    rstd: &impl DevicePtr<f32>,
    dgamma: &mut impl DevicePtrMut<f32>,
    dbeta: &mut impl DevicePtrMut<f32>,
    cols: usize,
    beta_acc: f32,
) -> Result<(), Error> {
    let k = "layernorm_params_bwd";
    let n = h.len();
    let rows = check::rows(k, "h", n, cols)?;
    check::len(k, "dy", dy.len(), n)?;
    check::len(k, "mean", mean.len(), rows)?;
    check::len(k, "rstd", rstd.len(), rows)?;
    check::len(k, "dgamma", dgamma.len(), cols)?;
    check::len(k, "dbeta", dbeta.len(), cols)?;
    let plan = reduce::ChunkPlan::new(gpu, rows, cols);
    // SAFETY: every element of the partials is written by the first stage before it is read.
    let mut pg = unsafe { gpu.stream().alloc::<f32>(plan.chunks * cols)? };
    // SAFETY: as for `pg`: written by the first stage before it is read.
    let mut pb = unsafe { gpu.stream().alloc::<f32>(plan.chunks * cols)? };
    {
        let (a0, _g1) = addr(gpu, h);
        let (a1, _g2) = addr(gpu, dy);
        let (a2, _g3) = addr(gpu, mean);
        let (a3, _g4) = addr(gpu, rstd);
        let (a4, _g5) = addr_mut(gpu, &mut pg);
        let (a5, _g6) = addr_mut(gpu, &mut pb);
        let args = [
            Arg::Ptr(a0),
            Arg::Ptr(a1),
            Arg::Ptr(a2),
            Arg::Ptr(a3),
            Arg::Ptr(a4),
            Arg::Ptr(a5),
            Arg::I32(check::i32_of(k, "rows", rows)?),
            Arg::I32(check::i32_of(k, "cols", cols)?),
            Arg::I32(plan.rows_per_chunk as i32),
        ];
        gpu.launch(
            Family::Layernorm,
            &format!("{k}_{}", T::SUFFIX),
            (plan.col_blocks, plan.chunks as u32, 1),
            reduce::COL_BLOCK,
            &args,
        )?;
    }
    reduce::column_sum_final(gpu, &pg, dgamma, plan.chunks, cols, beta_acc)?;
    reduce::column_sum_final(gpu, &pb, dbeta, plan.chunks, cols, beta_acc)
}
