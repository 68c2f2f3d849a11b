//! The one place that names devices: [`Devices::open`] makes the device a `TrainDevice` names
//! (the CPU, or GPU 0 in f32 or bf16 with the `cuda` feature), and its methods hand out what runs
//! there ([`Devices::embedder`], [`Devices::finetuner`] and [`Devices::head_logits`] here, the
//! pretraining step trainer in `train.rs`), each a single generic body over
//! `engine::device::Device`. Code elsewhere matches no device and carries no
//! `cfg(feature = "cuda")`.

use crate::embed::Pooling;
use crate::finetune::{FtRunner, FtTrainer};
use crate::heads::Bert;
use crate::step::{FtBatch, FtHead};
use crate::train::TrainDevice;
use crate::Result;
use tokenizer::Encoding;

/// Embeds a batch of tokenized texts: one vector per text, concatenated.
pub type Embedder<'a> = Box<dyn FnMut(&[Encoding]) -> Result<Vec<f32>> + 'a>;

/// A fine-tuned head's logits on a batch ([`crate::step::ft_logits`]).
pub type HeadLogits<'a> = Box<dyn FnMut(&FtBatch) -> Result<Vec<f32>> + 'a>;

/// The devices a run can hold (made once, before the trainer that borrows them).
pub enum Devices {
    Cpu(engine::device::Cpu),
    CpuBf16(engine::device::CpuBf16),
    #[cfg(feature = "cuda")]
    Cuda(engine::device::cuda::Cuda),
    #[cfg(feature = "cuda")]
    CudaBf16(engine::device::cuda::CudaBf16),
}

/// Says once on stderr which bf16 GEMM kernel this CPU runs (`engine::gemm::bf16::bf16_kernel`):
/// the native `vdpbf16ps` where it outruns f32 FMA, else the f32 tile over bf16-rounded
/// operands, which keeps bf16 about as fast as f32 rather than faster.
pub fn note_bf16_kernel() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let kernel = engine::gemm::bf16::bf16_kernel(engine::simd::Isa::best());
        let why = match kernel {
            engine::gemm::bf16::Bf16Kernel::Native => "vdpbf16ps outruns f32 FMA on this CPU",
            _ => "no vdpbf16ps in use here that outruns f32 FMA: bf16 runs about as fast as f32",
        };
        eprintln!("bf16 GEMMs: the {} kernel ({why})", kernel.name());
    });
}

impl Devices {
    /// The device `kind` names (GPU 0 for the CUDA kinds); an error for CUDA in a build without
    /// the `cuda` feature.
    pub fn open(kind: TrainDevice) -> Result<Self> {
        Ok(match kind {
            TrainDevice::Cpu | TrainDevice::CpuTape | TrainDevice::CpuStep => {
                Devices::Cpu(engine::device::Cpu)
            }
            TrainDevice::CpuBf16 => {
                note_bf16_kernel();
                Devices::CpuBf16(engine::device::CpuBf16)
            }
            #[cfg(feature = "cuda")]
            TrainDevice::Cuda => Devices::Cuda(engine::device::cuda::Cuda::new(0)?),
            #[cfg(feature = "cuda")]
            TrainDevice::CudaBf16 => Devices::CudaBf16(engine::device::cuda::CudaBf16::new(0)?),
            #[cfg(not(feature = "cuda"))]
            TrainDevice::Cuda | TrainDevice::CudaBf16 => {
                return Err(crate::BertError::Input(
                    "--device cuda: this build has no CUDA support (build with `--features cuda`)"
                        .into(),
                ))
            }
        })
    }

    /// An embedder running `model`'s encoder on this device (weights uploaded once, padding-free
    /// batches; [`crate::embed::embed_batch_on`]). `pad` is the tokenizer's padding id.
    pub fn embedder<'a>(
        &'a self,
        model: &'a Bert,
        pad: u32,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Embedder<'a>> {
        match self {
            Devices::Cpu(d) => device_embedder(d, model, pad, pooling, normalize),
            Devices::CpuBf16(d) => device_embedder(d, model, pad, pooling, normalize),
            #[cfg(feature = "cuda")]
            Devices::Cuda(d) => device_embedder(d, model, pad, pooling, normalize),
            #[cfg(feature = "cuda")]
            Devices::CudaBf16(d) => device_embedder(d, model, pad, pooling, normalize),
        }
    }
}

impl Devices {
    /// A fine-tuning trainer for `model`'s `head` on this device (its parameters uploaded in
    /// the head's layout, AdamW's moments at zero).
    pub fn finetuner<'a>(
        &'a self,
        model: &Bert,
        head: FtHead,
        adam: engine::optim::AdamWConfig,
    ) -> Result<Box<dyn FtRunner + 'a>> {
        Ok(match self {
            Devices::Cpu(d) => Box::new(FtTrainer::new(d, model, head, adam)?),
            Devices::CpuBf16(d) => Box::new(FtTrainer::new(d, model, head, adam)?),
            #[cfg(feature = "cuda")]
            Devices::Cuda(d) => Box::new(FtTrainer::new(d, model, head, adam)?),
            #[cfg(feature = "cuda")]
            Devices::CudaBf16(d) => Box::new(FtTrainer::new(d, model, head, adam)?),
        })
    }

    /// `model`'s `head` for inference on this device (weights uploaded once).
    pub fn head_logits<'a>(&'a self, model: &'a Bert, head: FtHead) -> Result<HeadLogits<'a>> {
        match self {
            Devices::Cpu(d) => device_head_logits(d, model, head),
            Devices::CpuBf16(d) => device_head_logits(d, model, head),
            #[cfg(feature = "cuda")]
            Devices::Cuda(d) => device_head_logits(d, model, head),
            #[cfg(feature = "cuda")]
            Devices::CudaBf16(d) => device_head_logits(d, model, head),
        }
    }
}

fn device_head_logits<'a, D: engine::device::Device>(
    dev: &'a D,
    model: &'a Bert,
    head: FtHead,
) -> Result<HeadLogits<'a>>
where
    D::Weights: 'a,
{
    let c = &model.config;
    let vals = crate::step::values_for(head.layout(c), |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })?;
    let weights = dev.weights(&vals)?;
    Ok(Box::new(move |x: &FtBatch| {
        let refs = dev.weight_refs(&weights);
        crate::step::ft_logits(dev, c, head, &refs, &x.input())
    }))
}

fn device_embedder<'a, D: engine::device::Device>(
    dev: &'a D,
    model: &'a Bert,
    pad: u32,
    pooling: Pooling,
    normalize: bool,
) -> Result<Embedder<'a>>
where
    D::Weights: 'a,
{
    let c = &model.config;
    let vals = crate::step::encoder_from_named(c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })?;
    let weights = dev.weights(&vals)?;
    Ok(Box::new(move |encs: &[Encoding]| {
        let x = crate::BertInput::from_encodings(encs, pad)?;
        let refs = dev.weight_refs(&weights);
        crate::embed::embed_batch_on(dev, c, &refs, &x, pooling, normalize)
    }))
}
