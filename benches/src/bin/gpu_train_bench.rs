//! Pretraining throughput on the GPU (feature `cuda`; run by scripts/device/gpu-check.sh beside
//! scripts/gpu_train_torch.py, which trains transformers' BertForPreTraining on the same configs).
//!
//! Each row: the whole step (`bert::step::StepTrainer` on `engine::device::cuda::Cuda`: embeddings,
//! encoder with the fused attention kernel, MLM head at the masked rows only, NSP, backward,
//! clipping, multi-tensor AdamW), in f32, TF32 and bf16 mixed precision, on synthetic batches:
//! random ids, 15% of the valid positions masked, random NSP labels; `full` batches have every
//! sequence at full length, `padded` ones
//! the lengths BERT's data recipe gives (10% of sequences shorter, uniform in 8..S), `packed`
//! the padded batches without their padding tokens (tokens/s still counted as B x S, so that
//! the row compares with torch's padded one).
//! Output lines: `train <model> B<b> S<s> <lengths> <math>  ms/step  tokens/s  model-TFLOP/s`
//! (tokens counted as B x S, as torch's side counts them). Model FLOPs (`benches::model_flops`):
//! what the step computes, 6 per weight per token for the Linear layers, attention per sequence,
//! the MLM head at the masked rows.

use benches::{model_flops, synthetic};
use bert::step::{
    encode, encoder_from_named, from_named, read_scalar, EncoderInput, StepBatch, StepTrainer,
};
use bert::{Bert, BertConfig, Task};
use engine::cuda::blas::Math;
use engine::device::cuda::Cuda;
use engine::device::cuda::CudaBf16;
use engine::device::Device;
use engine::optim::AdamWConfig;

struct Run {
    model: &'static str,
    batch: usize,
    seq: usize,
    padded: bool,
    /// The padded batches with their padding removed (`StepBatch::to_packed`).
    packed: bool,
}

fn config(name: &str, seq: usize) -> BertConfig {
    let mut c = match name {
        "bert-base" => BertConfig::preset("bert-base", 30522).unwrap(),
        // The "BERT 4L-256H": 4 layers, hidden 256, 4 heads of 64.
        _ => BertConfig::preset("bert-mini", 30522).unwrap(),
    };
    c.max_position_embeddings = c.max_position_embeddings.max(seq);
    c
}

/// BERT-base inference (the encoder, random weights, full-length sequences): median ms of 20
/// runs, each synchronised. Lines: `infer bert-base B<b> S<s> full <math>  ms`.
/// The devices each row runs on: f32, TF32, bf16 mixed precision.
const MODES: [&str; 3] = ["F32", "Tf32", "Bf16"];

fn cuda(mode: &str) -> Cuda {
    let mut dev = Cuda::new(0).expect("a CUDA GPU");
    dev.math = if mode == "Tf32" {
        Math::Tf32
    } else {
        Math::F32
    };
    dev
}

/// Median ms of 20 synchronised encoder passes (after 3 warm-up passes).
fn time_encoder<D: Device>(
    dev: &D,
    sync: &dyn Fn(),
    c: &BertConfig,
    vals: &[Vec<f32>],
    input: &EncoderInput<'_>,
) -> f64 {
    let weights = dev.weights(vals).unwrap();
    let refs = dev.weight_refs(&weights);
    let mut times = Vec::new();
    for k in 0..23 {
        let t0 = std::time::Instant::now();
        let out = encode(dev, c, &refs, input, c.num_hidden_layers).unwrap();
        sync();
        if k >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        drop(out);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

/// BERT-base inference (the encoder, random weights, full-length sequences): median ms of 20
/// runs, each synchronised. Lines: `infer bert-base B<b> S<s> full <mode>  ms`.
fn inference() {
    let c = config("bert-base", 128);
    let model = Bert::init(&c, Task::PreTraining, 1).unwrap();
    let vals = encoder_from_named(&c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })
    .unwrap();
    drop(model);
    for (b, s) in [(1usize, 128usize), (32, 128)] {
        let x = synthetic(&c, b, s, false, 5);
        let input = EncoderInput {
            batch: b,
            seq: s,
            input_ids: &x.input_ids,
            token_type_ids: &x.token_type_ids,
            lens: &x.lens,
            packed: false,
        };
        for mode in MODES {
            let ms = if mode == "Bf16" {
                let dev = CudaBf16::new(0).expect("a CUDA GPU");
                time_encoder(
                    &dev,
                    &|| dev.inner.gpu.synchronize().unwrap(),
                    &c,
                    &vals,
                    &input,
                )
            } else {
                let dev = cuda(mode);
                time_encoder(&dev, &|| dev.gpu.synchronize().unwrap(), &c, &vals, &input)
            };
            println!("infer bert-base B{b} S{s} full {mode}  {ms:.3}");
        }
    }
}

/// Times `batches[2..]` after two warm-up steps (kernel compilation, the allocator's pool),
/// with one synchronisation at the end; returns (seconds, model FLOPs).
fn time_training<D: Device>(
    dev: &D,
    c: &BertConfig,
    values: &[Vec<f32>],
    batches: &[StepBatch],
) -> (f64, f64) {
    let mut tr = StepTrainer::new(dev, c, values, AdamWConfig::default(), 0).unwrap();
    let mut one = |k: usize| {
        tr.step(&[(batches[k].clone(), Some(k as u64))], 1e-4, 1.0)
            .unwrap()
    };
    for k in 0..2 {
        let st = one(k);
        read_scalar(dev, &st.grad_norm).unwrap();
    }
    let t0 = std::time::Instant::now();
    let mut flops = 0.0;
    let mut last = None;
    for (k, b) in batches.iter().enumerate().skip(2) {
        flops += model_flops(c, b);
        last = Some(one(k));
    }
    let st = last.unwrap();
    let mlm = read_scalar(dev, st.losses[0].mlm.as_ref().unwrap()).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let nsp = read_scalar(dev, &st.losses[0].nsp).unwrap();
    assert!(
        mlm.is_finite() && nsp.is_finite(),
        "non-finite loss: MLM {mlm}, NSP {nsp}"
    );
    (secs, flops)
}

fn main() {
    inference();
    let runs = [
        Run {
            model: "bert-mini",
            batch: 128,
            seq: 128,
            padded: false,
            packed: false,
        },
        Run {
            model: "bert-base",
            batch: 256,
            seq: 128,
            padded: false,
            packed: false,
        },
        Run {
            model: "bert-base",
            batch: 256,
            seq: 128,
            padded: true,
            packed: false,
        },
        Run {
            model: "bert-base",
            batch: 256,
            seq: 128,
            padded: true,
            packed: true,
        },
        Run {
            model: "bert-base",
            batch: 32,
            seq: 512,
            padded: false,
            packed: false,
        },
    ];
    let steps = 5;
    println!("# model batch seq lengths math  ms/step  tokens/s  model-TFLOP/s");
    for run in &runs {
        let c = config(run.model, run.seq);
        let model = Bert::init(&c, Task::PreTraining, 1).unwrap();
        let values = from_named(&c, |n: &str| {
            model.params.get(n).map(|v| v.value().to_vec())
        })
        .unwrap();
        drop(model);
        let batches: Vec<StepBatch> = (0..steps + 2)
            .map(|k| synthetic(&c, run.batch, run.seq, run.padded, 17 + k as u64))
            .map(|b| if run.packed { b.to_packed() } else { b })
            .collect();
        for mode in MODES {
            let (secs, flops) = if mode == "Bf16" {
                time_training(
                    &CudaBf16::new(0).expect("a CUDA GPU"),
                    &c,
                    &values,
                    &batches,
                )
            } else {
                time_training(&cuda(mode), &c, &values, &batches)
            };
            let ms = secs * 1e3 / steps as f64;
            let tokens = (run.batch * run.seq * steps) as f64 / secs;
            println!(
                "train {} B{} S{} {} {mode}  {ms:.2}  {tokens:.0}  {:.1}",
                run.model,
                run.batch,
                run.seq,
                match (run.padded, run.packed) {
                    (_, true) => "packed",
                    (true, false) => "padded",
                    _ => "full",
                },
                flops / secs / 1e12
            );
        }
    }
}
