//! Launchers for `cuda/cross_entropy.cu`: softmax cross-entropy over a vocabulary, one block
//! per row.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{DevicePtr, DevicePtrMut};

const BLOCK: u32 = 512;

fn shape(
    k: &'static str,
    logits: usize,
    targets: usize,
    classes: usize,
) -> Result<(i32, i32), Error> {
    let rows = check::rows(k, "logits", logits, classes)?;
    check::len(k, "targets", targets, rows)?;
    Ok((
        check::i32_of(k, "rows", rows)?,
        check::i32_of(k, "classes", classes)?,
    ))
}

/// Per row of logits `[rows, classes]`: `lse = logsumexp`, `loss = lse - logits[target]`
/// (0 where target == ignore; NaN for a target out of range); loss, lse `[rows]` f32,
/// targets `[rows]` i32. The mean loss is [`crate::reduce::sum`] with scale 1 / counted rows.
pub fn cross_entropy_fwd<T: Elem>(
    gpu: &Gpu,
    logits: &impl DevicePtr<T>,
    targets: &impl DevicePtr<i32>,
    loss: &mut impl DevicePtrMut<f32>,
    lse: &mut impl DevicePtrMut<f32>,
    classes: usize,
    ignore: i32,
) -> Result<(), Error> {
    let k = "cross_entropy_fwd";
    let (rows, cls) = shape(k, logits.len(), targets.len(), classes)?;
    check::len(k, "loss", loss.len(), rows as usize)?;
    check::len(k, "lse", lse.len(), rows as usize)?;
    let (p0, _g1) = addr(gpu, logits);
    let (p1, _g2) = addr(gpu, targets);
    let (p2, _g3) = addr_mut(gpu, loss);
    let (p3, _g4) = addr_mut(gpu, lse);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::Ptr(p3),
        Arg::I32(rows),
        Arg::I32(cls),
        Arg::I32(ignore),
    ];
    gpu.launch(
        Family::CrossEntropy,
        &format!("{k}_{}", T::SUFFIX),
        (rows as u32, 1, 1),
        BLOCK,
        &args,
    )
}

/// `dlogits = scale * (softmax(logits) - onehot(target))`, zero rows where target == ignore;
/// scale is dloss / (counted rows) for a mean loss.
pub fn cross_entropy_bwd<T: Elem>(
    gpu: &Gpu,
    logits: &impl DevicePtr<T>,
    lse: &impl DevicePtr<f32>,
    targets: &impl DevicePtr<i32>,
    dlogits: &mut impl DevicePtrMut<T>,
    classes: usize,
    ignore: i32,
    scale: f32,
) -> Result<(), Error> {
    let k = "cross_entropy_bwd";
    let (rows, cls) = shape(k, logits.len(), targets.len(), classes)?;
    check::len(k, "lse", lse.len(), rows as usize)?;
    check::len(k, "dlogits", dlogits.len(), logits.len())?;
    let (p0, _g1) = addr(gpu, logits);
    let (p1, _g2) = addr(gpu, lse);
    let (p2, _g3) = addr(gpu, targets);
    let (p3, _g4) = addr_mut(gpu, dlogits);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::Ptr(p3),
        Arg::I32(rows),
        Arg::I32(cls),
        Arg::I32(ignore),
        Arg::F32(scale),
    ];
    gpu.launch(
        Family::CrossEntropy,
        &format!("{k}_{}", T::SUFFIX),
        (rows as u32, 1, 1),
        BLOCK,
        &args,
    )
}

/// Forward and backward in one pass, the gradient written over the logits (the MLM head's
/// `[masked rows, vocab]` buffer is not needed after the loss).
pub fn cross_entropy_fused_inplace<T: Elem>(
    gpu: &Gpu,
    logits: &mut impl DevicePtrMut<T>,
    targets: &impl DevicePtr<i32>,
    loss: &mut impl DevicePtrMut<f32>,
    lse: &mut impl DevicePtrMut<f32>,
    classes: usize,
    ignore: i32,
    scale: f32,
) -> Result<(), Error> {
    let k = "cross_entropy_fused";
    let (rows, cls) = shape(k, logits.len(), targets.len(), classes)?;
    check::len(k, "loss", loss.len(), rows as usize)?;
    check::len(k, "lse", lse.len(), rows as usize)?;
    let (p0, _g1) = addr_mut(gpu, logits);
    let (p1, _g2) = addr(gpu, targets);
    let (p2, _g3) = addr_mut(gpu, loss);
    let (p3, _g4) = addr_mut(gpu, lse);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::Ptr(p3),
        Arg::Ptr(p0),
        Arg::I32(rows),
        Arg::I32(cls),
        Arg::I32(ignore),
        Arg::F32(scale),
    ];
    gpu.launch(
        Family::CrossEntropy,
        &format!("{k}_{}", T::SUFFIX),
        (rows as u32, 1, 1),
        BLOCK,
        &args,
    )
}
