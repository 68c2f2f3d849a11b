//! Launchers for `cuda/attention.cu`: fused attention over a batch of sequences, padded or
//! packed, reading Q, K and V in place from a fused QKV projection's output.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

const THREADS: u32 = 128;

/// The sequences of one batch, validated on the host and uploaded once per batch:
/// sequence b's rows are tokens `start .. start + rows`, the first `keys` of them valid keys.
pub struct AttnBatch {
    starts: CudaSlice<i32>,
    rows: CudaSlice<i32>,
    keys: CudaSlice<i32>,
    /// Tokens in the buffers (rows of the QKV and output matrices).
    pub tokens: usize,
    /// The longest sequence (grid size) and the dropout index stride.
    pub max_rows: usize,
    pub drop_stride: usize,
    pub count: usize,
}

impl AttnBatch {
    fn upload(
        gpu: &Gpu,
        starts: Vec<i32>,
        rows: Vec<i32>,
        keys: Vec<i32>,
        tokens: usize,
        drop_stride: usize,
    ) -> Result<AttnBatch, Error> {
        let s = gpu.stream();
        Ok(AttnBatch {
            max_rows: rows.iter().copied().max().unwrap_or(0) as usize,
            count: rows.len(),
            starts: s.clone_htod(&starts)?,
            rows: s.clone_htod(&rows)?,
            keys: s.clone_htod(&keys)?,
            tokens,
            drop_stride,
        })
    }

    /// `lens.len()` sequences padded to `seq_len` tokens each (tokens = count x seq_len): every
    /// row gets an output, attending to the first `lens[b]` keys (BERT's key padding mask).
    pub fn padded(gpu: &Gpu, seq_len: usize, lens: &[usize]) -> Result<AttnBatch, Error> {
        let k = "attention";
        let s = check::i32_of(k, "seq_len", seq_len)?;
        if let Some((b, &l)) = lens.iter().enumerate().find(|(_, &l)| l > seq_len) {
            return check::fail(
                k,
                format!("sequence {b} has {l} valid keys, more than its {seq_len} rows"),
            );
        }
        let tokens = lens.len() * seq_len;
        check::i32_of(k, "tokens", tokens)?;
        let starts = (0..lens.len()).map(|b| b as i32 * s).collect();
        let keys = lens.iter().map(|&l| l as i32).collect();
        Self::upload(gpu, starts, vec![s; lens.len()], keys, tokens, seq_len)
    }

    /// Sequences of `lens` tokens packed back to back, no padding at all (tokens = sum of lens).
    /// The dropout index uses the longest length as its stride.
    pub fn packed(gpu: &Gpu, lens: &[usize]) -> Result<AttnBatch, Error> {
        let k = "attention";
        let tokens: usize = lens.iter().sum();
        check::i32_of(k, "tokens", tokens)?;
        let mut starts = Vec::with_capacity(lens.len());
        let mut at = 0i32;
        for &l in lens {
            starts.push(at);
            at += l as i32;
        }
        let l32: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        Self::upload(gpu, starts, l32.clone(), l32, tokens, longest)
    }
}

/// Heads, head dimension (32, 64 or 128) and the softmax scale (1 / sqrt(D) for BERT).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

impl AttnShape {
    fn hd(&self) -> usize {
        self.heads * self.head_dim
    }
    fn tile(&self) -> Result<u32, Error> {
        match self.head_dim {
            32 | 64 => Ok(32),
            128 => Ok(16),
            d => check::fail(
                "attention",
                format!("head_dim must be 32, 64 or 128, got {d}"),
            ),
        }
    }
}

/// The arguments every attention kernel ends with (sequence tables, sizes, scale, dropout).
fn common_args(
    gpu: &Gpu,
    b: &AttnBatch,
    s: &AttnShape,
    dropout: Option<(f32, u64)>,
) -> Result<Vec<Arg>, Error> {
    let (p, seed) = dropout.unwrap_or((0.0, 0));
    check::prob("attention", p)?;
    // The sequence tables are read-only after upload: their addresses stay valid while `b` lives.
    let a = |x: &CudaSlice<i32>| addr(gpu, x).0;
    Ok(vec![
        Arg::Ptr(a(&b.starts)),
        Arg::Ptr(a(&b.rows)),
        Arg::Ptr(a(&b.keys)),
        Arg::I32(s.heads as i32),
        Arg::I32(3 * s.hd() as i32),
        Arg::I32(s.hd() as i32),
        Arg::F32(s.scale),
        Arg::F32(p),
        Arg::U64(seed),
        Arg::I32(b.drop_stride as i32),
    ])
}

/// Which forward kernel: the reference-grade one (CUDA cores, f32 math, any storage), or the
/// tensor-core one (bf16 only, `mma.sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    Reference,
    TensorCores,
}

/// `qkv` [tokens, 3, H, D] (a fused QKV projection's output) -> `o` [tokens, H, D] and
/// `lse` [tokens, H] (f32, for the backward). `dropout`: (p, seed) on the probabilities.
/// bf16 runs on tensor cores, f32 on the reference kernel.
pub fn attention_fwd<T: Elem>(
    gpu: &Gpu,
    batch: &AttnBatch,
    shape: AttnShape,
    qkv: &CudaView<'_, T>,
    o: &mut CudaViewMut<'_, T>,
    lse: &mut impl DevicePtrMut<f32>,
    dropout: Option<(f32, u64)>,
) -> Result<(), Error> {
    let which = if T::SUFFIX == "bf16" {
        AttnKernel::TensorCores
    } else {
        AttnKernel::Reference
    };
    attention_fwd_with(gpu, which, batch, shape, qkv, o, lse, dropout)
}

/// [`attention_fwd`] with the kernel chosen (the tests run both and compare).
pub fn attention_fwd_with<T: Elem>(
    gpu: &Gpu,
    which: AttnKernel,
    batch: &AttnBatch,
    shape: AttnShape,
    qkv: &CudaView<'_, T>,
    o: &mut CudaViewMut<'_, T>,
    lse: &mut impl DevicePtrMut<f32>,
    dropout: Option<(f32, u64)>,
) -> Result<(), Error> {
    let k = "attention_fwd";
    let mut tile = shape.tile()?;
    let mut name = format!("attn_fwd_{}_d{}", T::SUFFIX, shape.head_dim);
    if which == AttnKernel::TensorCores {
        if T::SUFFIX != "bf16" {
            return check::fail(k, "the tensor-core kernel takes bf16 inputs".into());
        }
        tile = 64;
        name = format!("attn_fwd_mma_bf16_d{}", shape.head_dim);
    }
    let hd = shape.hd();
    check::len(k, "qkv", qkv.len(), batch.tokens * 3 * hd)?;
    check::len(k, "o", o.len(), batch.tokens * hd)?;
    check::len(k, "lse", lse.len(), batch.tokens * shape.heads)?;
    let common = common_args(gpu, batch, &shape, dropout)?;
    let (pq, _g1) = addr(gpu, qkv);
    let (po, _g2) = addr_mut(gpu, o);
    let (pl, _g3) = addr_mut(gpu, lse);
    if which == AttnKernel::TensorCores {
        // 16-byte loads of each head's rows; 4-byte stores of output pairs.
        check::aligned(k, "qkv", pq)?;
        if po % 4 != 0 {
            return check::fail(k, format!("o at {po:#x} is not 4-byte aligned"));
        }
    }
    let esz = std::mem::size_of::<T>() as u64;
    let mut args = vec![
        Arg::Ptr(pq),
        Arg::Ptr(pq + hd as u64 * esz),
        Arg::Ptr(pq + 2 * hd as u64 * esz),
        Arg::Ptr(po),
        Arg::Ptr(pl),
    ];
    args.extend(common);
    let grid = (
        (batch.max_rows as u32).div_ceil(tile).max(1),
        shape.heads as u32,
        batch.count as u32,
    );
    if batch.count == 0 || batch.max_rows == 0 {
        return Ok(());
    }
    gpu.launch(Family::Attention, &name, grid, THREADS, &args)
}

/// Backward: from `dout` [tokens, H, D], the forward's `qkv`, `o` and `lse`, writes
/// `dqkv` [tokens, 3, H, D] (every element, zeros for padded keys). Deterministic. bf16 with
/// head dim 32 or 64 runs on tensor cores, the rest on the reference kernels.
pub fn attention_bwd<T: Elem>(
    gpu: &Gpu,
    batch: &AttnBatch,
    shape: AttnShape,
    qkv: &CudaView<'_, T>,
    o: &CudaView<'_, T>,
    lse: &impl DevicePtr<f32>,
    dout: &CudaView<'_, T>,
    dqkv: &mut CudaViewMut<'_, T>,
    dropout: Option<(f32, u64)>,
) -> Result<(), Error> {
    let which = if T::SUFFIX == "bf16" && shape.head_dim <= 64 {
        AttnKernel::TensorCores
    } else {
        AttnKernel::Reference
    };
    attention_bwd_with(gpu, which, batch, shape, qkv, o, lse, dout, dqkv, dropout)
}

/// [`attention_bwd`] with the kernels chosen (tensor cores: bf16, head dim 32 or 64).
pub fn attention_bwd_with<T: Elem>(
    gpu: &Gpu,
    which: AttnKernel,
    batch: &AttnBatch,
    shape: AttnShape,
    qkv: &CudaView<'_, T>,
    o: &CudaView<'_, T>,
    lse: &impl DevicePtr<f32>,
    dout: &CudaView<'_, T>,
    dqkv: &mut CudaViewMut<'_, T>,
    dropout: Option<(f32, u64)>,
) -> Result<(), Error> {
    let k = "attention_bwd";
    let mut tile = shape.tile()?;
    let mut names = (
        format!("attn_bwd_dkdv_{}_d{}", T::SUFFIX, shape.head_dim),
        format!("attn_bwd_dq_{}_d{}", T::SUFFIX, shape.head_dim),
    );
    if which == AttnKernel::TensorCores {
        if T::SUFFIX != "bf16" || shape.head_dim > 64 {
            return check::fail(
                k,
                format!(
                    "the tensor-core backward takes bf16 with head dim 32 or 64, got {} with {}",
                    T::SUFFIX,
                    shape.head_dim
                ),
            );
        }
        tile = 64;
        names = (
            format!("attn_bwd_dkdv_mma_bf16_d{}", shape.head_dim),
            format!("attn_bwd_dq_mma_bf16_d{}", shape.head_dim),
        );
    }
    let hd = shape.hd();
    let tokens = batch.tokens;
    check::len(k, "qkv", qkv.len(), tokens * 3 * hd)?;
    check::len(k, "o", o.len(), tokens * hd)?;
    check::len(k, "dout", dout.len(), tokens * hd)?;
    check::len(k, "lse", lse.len(), tokens * shape.heads)?;
    check::len(k, "dqkv", dqkv.len(), tokens * 3 * hd)?;
    if batch.count == 0 || batch.max_rows == 0 {
        return Ok(());
    }
    // SAFETY: the pre-pass writes every element before the gradient kernels read it.
    let mut dsum = unsafe { gpu.stream().alloc::<f32>(tokens * shape.heads)? };
    {
        let (po, _g1) = addr(gpu, o);
        let (pd, _g2) = addr(gpu, dout);
        let (ps, _g3) = addr_mut(gpu, &mut dsum);
        let warps = (tokens * shape.heads) as u32;
        let args = [
            Arg::Ptr(po),
            Arg::Ptr(pd),
            Arg::Ptr(ps),
            Arg::I32(check::i32_of(k, "tokens", tokens)?),
            Arg::I32(shape.heads as i32),
            Arg::I32(shape.head_dim as i32),
            Arg::I32(hd as i32),
        ];
        gpu.launch(
            Family::Attention,
            &format!("attn_bwd_pre_{}", T::SUFFIX),
            (warps.div_ceil(8), 1, 1),
            256,
            &args,
        )?;
    }
    let common = common_args(gpu, batch, &shape, dropout)?;
    let esz = std::mem::size_of::<T>() as u64;
    let (pq, _g1) = addr(gpu, qkv);
    let (pd, _g2) = addr(gpu, dout);
    let (pl, _g3) = addr(gpu, lse);
    let (ps, _g4) = addr(gpu, &dsum);
    let (pg, _g5) = addr_mut(gpu, dqkv);
    if which == AttnKernel::TensorCores {
        // 16-byte row loads of Q, K, V and dO; 4-byte stores of gradient pairs.
        check::aligned(k, "qkv", pq)?;
        check::aligned(k, "dout", pd)?;
        if pg % 4 != 0 {
            return check::fail(k, format!("dqkv at {pg:#x} is not 4-byte aligned"));
        }
    }
    let (q, kk, v) = (pq, pq + hd as u64 * esz, pq + 2 * hd as u64 * esz);
    let (dq, dk, dv) = (pg, pg + hd as u64 * esz, pg + 2 * hd as u64 * esz);
    let grid = (
        (batch.max_rows as u32).div_ceil(tile),
        shape.heads as u32,
        batch.count as u32,
    );
    let mut args = vec![
        Arg::Ptr(q),
        Arg::Ptr(kk),
        Arg::Ptr(v),
        Arg::Ptr(pd),
        Arg::Ptr(pl),
        Arg::Ptr(ps),
        Arg::Ptr(dk),
        Arg::Ptr(dv),
    ];
    args.extend(common.iter().copied());
    gpu.launch(Family::Attention, &names.0, grid, THREADS, &args)?;
    let mut args = vec![
        Arg::Ptr(q),
        Arg::Ptr(kk),
        Arg::Ptr(v),
        Arg::Ptr(pd),
        Arg::Ptr(pl),
        Arg::Ptr(ps),
        Arg::Ptr(dq),
    ];
    args.extend(common);
    gpu.launch(Family::Attention, &names.1, grid, THREADS, &args)
}
