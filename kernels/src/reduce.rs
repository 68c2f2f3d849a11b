//! Launchers for `cuda/reduce.cu`: deterministic column sums and sums (two stages, no atomics).

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{DevicePtr, DevicePtrMut};

/// Threads per block along the columns in the column-sum kernels.
pub(crate) const COL_BLOCK: u32 = 256;
const BLOCK: u32 = 512;

/// How a `[rows, cols]` column reduction is split: `col_blocks` x `chunks` blocks, each summing
/// `rows_per_chunk` rows of 256 columns; enough blocks to fill the GPU several times.
pub(crate) struct ChunkPlan {
    pub col_blocks: u32,
    pub chunks: usize,
    pub rows_per_chunk: usize,
}

impl ChunkPlan {
    pub fn new(gpu: &Gpu, rows: usize, cols: usize) -> ChunkPlan {
        let col_blocks = (cols as u32).div_ceil(COL_BLOCK).max(1);
        let want = ((gpu.sms() * 8) / col_blocks).max(1) as usize;
        let rows_per_chunk = rows.div_ceil(want.min(rows.max(1))).max(1);
        let chunks = rows.div_ceil(rows_per_chunk).max(1);
        ChunkPlan {
            col_blocks,
            chunks,
            rows_per_chunk,
        }
    }
}

/// `out[c] = beta * out[c] + sum over chunks of part[k, c]` (part `[chunks, cols]`).
pub(crate) fn column_sum_final(
    gpu: &Gpu,
    part: &impl DevicePtr<f32>,
    out: &mut impl DevicePtrMut<f32>,
    chunks: usize,
    cols: usize,
    beta: f32,
) -> Result<(), Error> {
    let (pp, _g1) = addr(gpu, part);
    let (po, _g2) = addr_mut(gpu, out);
    let args = [
        Arg::Ptr(pp),
        Arg::Ptr(po),
        Arg::I32(chunks as i32),
        Arg::I32(cols as i32),
        Arg::F32(beta),
    ];
    gpu.launch(
        Family::Reduce,
        "column_sum_final_f32",
        ((cols as u32).div_ceil(COL_BLOCK), 1, 1),
        COL_BLOCK,
        &args,
    )
}

/// Column sums of x `[rows, cols]`: `out = beta * out + sum_r x[r, :]` (out `[cols]` f32).
/// Bias gradients: `dbias = column_sum(dy)`; beta = 1 accumulates.
pub fn column_sum<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    out: &mut impl DevicePtrMut<f32>,
    cols: usize,
    beta: f32,
) -> Result<(), Error> {
    let k = "column_sum";
    let rows = check::rows(k, "x", x.len(), cols)?;
    check::len(k, "out", out.len(), cols)?;
    let plan = ChunkPlan::new(gpu, rows, cols);
    // SAFETY: the first stage writes every partial before the second reads it.
    let mut part = unsafe { gpu.stream().alloc::<f32>(plan.chunks * cols)? };
    {
        let (px, _g1) = addr(gpu, x);
        let (pp, _g2) = addr_mut(gpu, &mut part);
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(pp),
            Arg::I32(check::i32_of(k, "rows", rows)?),
            Arg::I32(check::i32_of(k, "cols", cols)?),
            Arg::I32(plan.rows_per_chunk as i32),
        ];
        gpu.launch(
            Family::Reduce,
            &format!("column_sum_partial_{}", T::SUFFIX),
            (plan.col_blocks, plan.chunks as u32, 1),
            COL_BLOCK,
            &args,
        )?;
    }
    column_sum_final(gpu, &part, out, plan.chunks, cols, beta)
}

/// `out[0] = scale * sum(x)` (or of x^2 when `square`), out `[1]` f32.
pub fn sum<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    out: &mut impl DevicePtrMut<f32>,
    scale: f32,
    square: bool,
) -> Result<(), Error> {
    let k = "sum";
    check::len(k, "out", out.len(), 1)?;
    let n = x.len();
    let blocks = gpu.grid_for(n as u64, BLOCK as u64 * 8).min(1024);
    // SAFETY: every block writes its partial.
    let mut part = unsafe { gpu.stream().alloc::<f32>(blocks as usize)? };
    {
        let (px, _g1) = addr(gpu, x);
        let (pp, _g2) = addr_mut(gpu, &mut part);
        let args = [
            Arg::Ptr(px),
            Arg::Ptr(pp),
            Arg::I64(n as i64),
            Arg::I32(square as i32),
        ];
        gpu.launch(
            Family::Reduce,
            &format!("sum_partial_{}", T::SUFFIX),
            (blocks, 1, 1),
            BLOCK,
            &args,
        )?;
    }
    let (pp, _g1) = addr(gpu, &part);
    let (po, _g2) = addr_mut(gpu, out);
    gpu.launch(
        Family::Reduce,
        "sum_final_f32",
        (1, 1, 1),
        1024,
        &[
            Arg::Ptr(pp),
            Arg::Ptr(po),
            Arg::I32(blocks as i32),
            Arg::F32(scale),
        ],
    )
}

/// `out[r]` = the first column holding the largest value of row r of x `[rows, cols]` (NaNs
/// never win; a row with nothing above -inf gives 0): predictions of a classifier's logits, so
/// that an evaluation downloads indices, not the logits. One block per row.
pub fn argmax_rows<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    out: &mut impl DevicePtrMut<i32>,
    cols: usize,
) -> Result<(), Error> {
    let k = "argmax_rows";
    let rows = check::rows(k, "x", x.len(), cols)?;
    check::len(k, "out", out.len(), rows)?;
    if rows == 0 {
        return Ok(());
    }
    let (px, _g1) = addr(gpu, x);
    let (po, _g2) = addr_mut(gpu, out);
    gpu.launch(
        Family::Reduce,
        &format!("argmax_rows_{}", T::SUFFIX),
        (check::i32_of(k, "rows", rows)? as u32, 1, 1),
        256,
        &[
            Arg::Ptr(px),
            Arg::Ptr(po),
            Arg::I32(check::i32_of(k, "cols", cols)?),
        ],
    )
}
