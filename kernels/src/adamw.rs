//! Multi-tensor AdamW (`cuda/adamw.cu`): every parameter of a model updated in one launch, with
//! gradient clipping computed and applied on the device (no host synchronisation in a step).

use crate::gpu::{addr, addr_mut, Arg, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{CudaSlice, DevicePtr};
use half::bf16;

const BLOCK: u32 = 256;
/// Elements per block: 16 per thread.
const CHUNK: usize = 4096;

/// One parameter tensor: its f32 master weights and gradient, an optional bf16 copy refreshed
/// by every step (what bf16 mixed precision computes with), and its weight decay (0 for biases
/// and LayerNorm, as BERT does).
pub struct AdamTensor {
    pub param: CudaSlice<f32>,
    pub grad: CudaSlice<f32>,
    pub copy: Option<CudaSlice<bf16>>,
    pub decay: f32,
}

/// Hyper-parameters of one step; `bc1`, `bc2` are the bias corrections (1 - beta^t), or 1 for
/// BERT's variant without them.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bc1: f32,
    pub bc2: f32,
}

/// The optimizer's device state: the tensors, their moments, and the launch tables.
pub struct MultiAdamW {
    pub tensors: Vec<AdamTensor>,
    m: Vec<CudaSlice<f32>>,
    v: Vec<CudaSlice<f32>>,
    // Device tables: per tensor pointers / length / decay; per block its tensor and start.
    t_params: CudaSlice<u64>,
    t_grads: CudaSlice<u64>,
    t_m: CudaSlice<u64>,
    t_v: CudaSlice<u64>,
    t_copies: CudaSlice<u64>,
    t_lens: CudaSlice<i64>,
    t_decay: CudaSlice<f32>,
    b_tensor: CudaSlice<i32>,
    b_start: CudaSlice<i64>,
    blocks: u32,
    /// Partial sums of squares per block, then {norm, clip scale}.
    part: CudaSlice<f32>,
    norm_scale: CudaSlice<f32>,
}

impl MultiAdamW {
    /// Takes ownership of the tensors (their buffers stay put: the tables hold their addresses),
    /// zeroes the moments.
    pub fn new(gpu: &Gpu, tensors: Vec<AdamTensor>) -> Result<MultiAdamW, Error> {
        let k = "adamw_multi";
        let s = gpu.stream();
        let mut m = Vec::new();
        let mut v = Vec::new();
        let (mut bt, mut bs) = (Vec::new(), Vec::new());
        for (i, t) in tensors.iter().enumerate() {
            check::len(
                k,
                &format!("gradient of tensor {i}"),
                t.grad.len(),
                t.param.len(),
            )?;
            if let Some(c) = &t.copy {
                check::len(
                    k,
                    &format!("bf16 copy of tensor {i}"),
                    c.len(),
                    t.param.len(),
                )?;
            }
            m.push(s.alloc_zeros::<f32>(t.param.len())?);
            v.push(s.alloc_zeros::<f32>(t.param.len())?);
            for start in (0..t.param.len()).step_by(CHUNK) {
                bt.push(i as i32);
                bs.push(start as i64);
            }
        }
        let ptrs = |f: &dyn Fn(usize) -> u64| (0..tensors.len()).map(f).collect::<Vec<u64>>();
        let p_params = ptrs(&|i| addr(gpu, &tensors[i].param).0);
        let p_grads = ptrs(&|i| addr(gpu, &tensors[i].grad).0);
        let p_m = ptrs(&|i| addr(gpu, &m[i]).0);
        let p_v = ptrs(&|i| addr(gpu, &v[i]).0);
        let p_copies = ptrs(&|i| tensors[i].copy.as_ref().map_or(0, |c| addr(gpu, c).0));
        let lens: Vec<i64> = tensors.iter().map(|t| t.param.len() as i64).collect();
        let decay: Vec<f32> = tensors.iter().map(|t| t.decay).collect();
        let blocks = bt.len() as u32;
        Ok(MultiAdamW {
            t_params: s.clone_htod(&p_params)?,
            t_grads: s.clone_htod(&p_grads)?,
            t_m: s.clone_htod(&p_m)?,
            t_v: s.clone_htod(&p_v)?,
            t_copies: s.clone_htod(&p_copies)?,
            t_lens: s.clone_htod(&lens)?,
            t_decay: s.clone_htod(&decay)?,
            b_tensor: s.clone_htod(&bt)?,
            b_start: s.clone_htod(&bs)?,
            part: s.alloc_zeros::<f32>(blocks.max(1) as usize)?,
            norm_scale: s.alloc_zeros::<f32>(2)?,
            blocks,
            tensors,
            m,
            v,
        })
    }

    /// The first and second moments of tensor `i`.
    pub fn moments(&self, i: usize) -> (&CudaSlice<f32>, &CudaSlice<f32>) {
        (&self.m[i], &self.v[i])
    }

    /// The moments of tensor `i`, writable (restoring a checkpoint's optimizer state).
    pub fn moments_mut(&mut self, i: usize) -> (&mut CudaSlice<f32>, &mut CudaSlice<f32>) {
        (&mut self.m[i], &mut self.v[i])
    }

    /// Global gradient norm and the clipping scale, computed on the device into a `[2]` buffer
    /// (`{norm, scale}`, scale = max_norm / (norm + 1e-6) when norm > max_norm, else 1) that
    /// [`MultiAdamW::step`] reads with `clip = true`. Returns that buffer (read it back only
    /// where the norm is logged).
    pub fn clip_grad_norm(&mut self, gpu: &Gpu, max_norm: f32) -> Result<&CudaSlice<f32>, Error> {
        if self.blocks == 0 {
            return Ok(&self.norm_scale);
        }
        {
            let (g, _g1) = addr(gpu, &self.t_grads);
            let (l, _g2) = addr(gpu, &self.t_lens);
            let (bt, _g3) = addr(gpu, &self.b_tensor);
            let (bs, _g4) = addr(gpu, &self.b_start);
            let (p, _g5) = addr_mut(gpu, &mut self.part);
            let args = [
                Arg::Ptr(g),
                Arg::Ptr(l),
                Arg::Ptr(bt),
                Arg::Ptr(bs),
                Arg::I32(CHUNK as i32),
                Arg::Ptr(p),
            ];
            gpu.launch(
                Family::Adamw,
                "sum_squares_multi",
                (self.blocks, 1, 1),
                BLOCK,
                &args,
            )?;
        }
        {
            let (p, _g1) = addr(gpu, &self.part);
            let (o, _g2) = addr_mut(gpu, &mut self.norm_scale);
            let args = [
                Arg::Ptr(p),
                Arg::I32(self.blocks as i32),
                Arg::F32(max_norm),
                Arg::Ptr(o),
            ];
            gpu.launch(Family::Reduce, "clip_scale_f32", (1, 1, 1), 1024, &args)?;
        }
        Ok(&self.norm_scale)
    }

    /// One AdamW step over every tensor; with `clip`, gradients are scaled by the factor the
    /// last [`MultiAdamW::clip_grad_norm`] computed (read on the device).
    pub fn step(&mut self, gpu: &Gpu, h: AdamStep, clip: bool) -> Result<(), Error> {
        if self.blocks == 0 {
            return Ok(());
        }
        // The tables hold raw addresses: take the tensors' guards so that the launch is ordered
        // after every earlier write to them (one stream: a no-op, kept for correctness).
        let _guards: Vec<_> = self
            .tensors
            .iter()
            .map(|t| t.param.device_ptr(gpu.stream()).1)
            .collect();
        let (a0, _g0) = addr(gpu, &self.t_params);
        let (a1, _g1) = addr(gpu, &self.t_grads);
        let (a2, _g2) = addr(gpu, &self.t_m);
        let (a3, _g3) = addr(gpu, &self.t_v);
        let (a4, _g4) = addr(gpu, &self.t_copies);
        let (a5, _g5) = addr(gpu, &self.t_lens);
        let (a6, _g6) = addr(gpu, &self.t_decay);
        let (a7, _g7) = addr(gpu, &self.b_tensor);
        let (a8, _g8) = addr(gpu, &self.b_start);
        let scale = if clip {
            addr(gpu, &self.norm_scale).0 + 4
        } else {
            0
        };
        let args = [
            Arg::Ptr(a0),
            Arg::Ptr(a1),
            Arg::Ptr(a2),
            Arg::Ptr(a3),
            Arg::Ptr(a4),
            Arg::Ptr(a5),
            Arg::Ptr(a6),
            Arg::Ptr(a7),
            Arg::Ptr(a8),
            Arg::I32(CHUNK as i32),
            Arg::F32(h.lr),
            Arg::F32(h.beta1),
            Arg::F32(h.beta2),
            Arg::F32(h.eps),
            Arg::F32(h.bc1),
            Arg::F32(h.bc2),
            Arg::Ptr(scale),
        ];
        gpu.launch(
            Family::Adamw,
            "adamw_multi",
            (self.blocks, 1, 1),
            BLOCK,
            &args,
        )
    }
}
