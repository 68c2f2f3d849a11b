//! Pretraining (MLM + NSP) on shards from `bert data`, as BERT's run_pretraining.py does:
//! AdamW (decoupled weight decay 0.01, not on biases and LayerNorm), linear warmup then linear
//! decay, gradient clipping at norm 1, optional gradient accumulation; held-out MLM and NSP
//! accuracy every `eval_every` steps; checkpoints in HF layout written atomically; metrics as
//! JSON lines.
//!
//! Everything random is a function of (seed, step): the batch order (a seeded permutation per
//! epoch), dropout masks, dynamic masking. With the optimizer's moments and step saved beside the
//! weights, `--resume` continues exactly: a run stopped and resumed ends with the same weights
//! as one that was not (tested in bert/tests/pretrain.rs).

use crate::config::BertConfig;
use crate::data::{DataConfig, Shard, Specials};
use crate::device::Devices;
use crate::heads::{Bert, Task};
use crate::model::Forward;
use crate::safetensors::SafeTensors;
use crate::step::{from_named, read_scalar, EvalBatch, StepBatch, StepTrainer};
use crate::{BertError, Result};
use engine::device::Device;
use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::rng::SplitMix64;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Flags of `bert pretrain`.
#[derive(Clone, Debug)]
pub struct PretrainConfig {
    /// Optimizer steps; with `minutes`, estimated from the first steps' speed.
    pub steps: Option<u64>,
    pub minutes: Option<f64>,
    /// Sequences per optimizer step (split into `accum` micro-batches).
    pub batch: usize,
    pub accum: usize,
    pub lr: f32,
    /// Warmup steps, or a fraction of the total when below 1.
    pub warmup: f64,
    /// The share of the steps after warmup over which the rate decays linearly to 0; the rate
    /// is held at its peak before that. 1 is BERT's linear decay from the end of warmup; 0.2 is
    /// a warmup-stable-decay schedule ([`LrSchedule::warmup_stable_decay`]).
    pub decay: f64,
    pub weight_decay: f32,
    pub clip: f32,
    pub seed: u64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    /// Re-draw the masking every epoch (else the static masks of the shard).
    pub dynamic_masking: bool,
    pub progress: bool,
    /// Stop (after checkpointing) once this step is done, as an interrupted run would.
    pub stop_after: Option<u64>,
    /// Where and how the step runs.
    pub device: TrainDevice,
    /// Drop the padding tokens of each batch (the hand-written step; the tape always pads): no
    /// compute on them. The same losses and gradients without dropout; with dropout the
    /// hidden-state masks follow the token index, so a packed run draws other masks.
    pub packed: bool,
    /// Overrides the new model's hidden and attention dropout (a resumed run keeps its
    /// checkpoint's).
    pub dropout: Option<f32>,
    /// Start afresh in an OUT that holds a run (its checkpoint and metrics are discarded);
    /// without it (or `resume`) such an OUT is an error.
    pub force: bool,
    /// A new run's initial weights: this checkpoint's (its architecture; a fresh optimizer,
    /// schedule and step count). Continued pretraining, e.g. on longer sequences after short
    /// ones (BERT's two phases). None: a random initialisation of `model_config`.
    pub init_from: Option<std::path::PathBuf>,
}

/// Where the training step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TrainDevice {
    /// The CPU, the fastest way: pretraining runs the hand-written step (`crate::step`, the
    /// code path the GPU runs; the tape for a relu model, which the step does not take),
    /// inference the prepacked fast path.
    #[default]
    Cpu,
    /// The CPU through the autograd tape (pretraining; for inference the same as `Cpu`).
    CpuTape,
    /// The CPU through the hand-written step (`crate::step`), for inference too.
    CpuStep,
    /// The hand-written step on the CPU with the Linear layers' GEMMs in bf16 (f32 sums,
    /// parameters and AdamW in f32): `engine::device::CpuBf16`. Pays where the CPU has
    /// AVX512-BF16 at full rate (AMD Zen 4).
    CpuBf16,
    /// A CUDA GPU (device 0) running the hand-written step in f32; needs the `cuda` feature.
    Cuda,
    /// The same in bf16 mixed precision (bf16 activations and GEMMs, f32 masters and moments).
    CudaBf16,
}

impl TrainDevice {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(TrainDevice::Cpu),
            "cpu-tape" => Ok(TrainDevice::CpuTape),
            "cpu-step" => Ok(TrainDevice::CpuStep),
            "cpu-bf16" => Ok(TrainDevice::CpuBf16),
            "cuda" | "gpu" => Ok(TrainDevice::Cuda),
            "cuda-bf16" => Ok(TrainDevice::CudaBf16),
            _ => Err(BertError::Input(format!(
                "unknown device '{s}' (known: cpu, cpu-tape, cpu-step, cpu-bf16, cuda, cuda-bf16)"
            ))),
        }
    }
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            steps: Some(1000),
            minutes: None,
            batch: 32,
            accum: 1,
            lr: 1e-3,
            warmup: 0.06,
            decay: 1.0,
            weight_decay: 0.01,
            clip: 1.0,
            seed: 42,
            eval_every: 200,
            eval_batches: 20,
            checkpoint_every: 500,
            dynamic_masking: true,
            progress: true,
            stop_after: None,
            device: TrainDevice::Cpu,
            packed: true,
            dropout: None,
            force: false,
            init_from: None,
        }
    }
}

impl PretrainConfig {
    /// Every option in its range, with the limit in the message (a library caller gets the
    /// same checks as the command line).
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(BertError::Input(why));
        if self.batch == 0 || self.accum == 0 || !self.batch.is_multiple_of(self.accum) {
            return bad(format!(
                "--batch {} must be a positive multiple of --accum {}",
                self.batch, self.accum
            ));
        }
        crate::train::check_budget(self.steps, self.minutes, self.lr)?;
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return bad(format!(
                "--warmup {} must be a fraction in [0, 1) or a step count",
                self.warmup
            ));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return bad(format!(
                "--decay {} must be a share of the steps in (0, 1]",
                self.decay
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight decay {} must be >= 0", self.weight_decay));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!("gradient clip {} must be > 0", self.clip));
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 || self.eval_batches == 0 {
            return bad(
                "--eval-every, --checkpoint-every and eval batches must be at least 1".into(),
            );
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("--dropout {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// The settings a resumed run must share with the run it continues (stored in the
    /// checkpoint's trainer.json and compared on `--resume`).
    fn resume_args(&self) -> serde_json::Value {
        serde_json::json!({"steps": self.steps, "minutes": self.minutes, "batch": self.batch,
            "accum": self.accum, "lr": self.lr, "warmup": self.warmup, "decay": self.decay, "weight_decay": self.weight_decay,
            "clip": self.clip, "seed": self.seed, "dynamic_masking": self.dynamic_masking,
            "dropout": self.dropout})
    }
}

/// The checks pretraining and fine-tuning share: `--steps` at least 1, `--minutes` positive and
/// finite, `--lr` in (0, 1].
pub(crate) fn check_budget(steps: Option<u64>, minutes: Option<f64>, lr: f32) -> Result<()> {
    let bad = |why: String| Err(BertError::Input(why));
    if steps == Some(0) {
        return bad("--steps 0: at least one step".into());
    }
    if let Some(m) = minutes {
        if !(m.is_finite() && m > 0.0) {
            return bad(format!("--minutes {m} must be a positive number"));
        }
    }
    if !(lr.is_finite() && lr > 0.0 && lr <= 1.0) {
        return bad(format!("--lr {lr} must be in (0, 1]"));
    }
    Ok(())
}

/// The command-line flag of a [`PretrainConfig::resume_args`] key.
fn flag_of(key: &str) -> String {
    match key {
        "weight_decay" | "clip" => key.replace('_', " "),
        "dynamic_masking" => "--static-masking".into(),
        k => format!("--{}", k.replace('_', "-")),
    }
}

/// The first parameter holding a NaN or an infinity, with the index of the value.
pub fn first_non_finite(model: &Bert) -> Option<(String, usize)> {
    model.params.iter().find_map(|(name, v)| {
        let t = v.value();
        let pos = match t.as_slice() {
            Some(x) => x.iter().position(|x| !x.is_finite()),
            None => t.to_vec().iter().position(|x| !x.is_finite()),
        };
        pos.map(|i| (name.clone(), i))
    })
}

/// A rough upper bound on the memory one training step holds (activations kept for the
/// backward pass, the attention scores, parameters, gradients and moments), in bytes: checked
/// against the machine's available memory before the first batch is allocated.
pub fn estimate_step_bytes(c: &BertConfig, micro_batch: usize, seq: usize) -> u64 {
    let (b, s, h, i, l) = (
        micro_batch as u64,
        seq as u64,
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.num_hidden_layers as u64,
    );
    let heads = c.num_attention_heads as u64;
    let per_layer = b * s * (12 * h + 3 * i) + 3 * b * heads * s * s;
    let params = c.vocab_size as u64 * h
        + l * (4 * h * h + 2 * h * i)
        + c.max_position_embeddings as u64 * h;
    4 * (l * per_layer + 2 * b * s * c.vocab_size as u64 / 8 + 4 * params)
}

/// MemAvailable from /proc/meminfo (None where it cannot be read).
fn available_memory() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Keeps the lines of OUT/metrics.jsonl up to `step` (a run killed after its last checkpoint
/// logged steps that the resumed run takes again); none for a fresh start.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let keep: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if keep.len() != text.len() {
        crate::io::write_atomic(path, keep.as_bytes())?;
    }
    Ok(())
}

/// Held-out figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Eval {
    pub mlm_accuracy: f64,
    pub nsp_accuracy: f64,
    pub mlm_loss: f64,
    pub nsp_loss: f64,
    /// Accuracy of always predicting the most frequent masked token (the baseline).
    pub majority_accuracy: f64,
    /// MLM accuracy over the masked positions whose input is `[MASK]` (80% of them): what the
    /// model predicts from context alone. The other 20% show the token itself (10%) or a random
    /// one (10%), and a model that copies its input scores about 0.1 on them with no context
    /// at all, so `mlm_accuracy` alone can look like learning when none happened.
    pub mlm_accuracy_at_mask: f64,
    /// The most-frequent-token baseline over those positions.
    pub majority_accuracy_at_mask: f64,
    /// NSP accuracy of always answering the more frequent label. Not 0.5: BERT's recipe makes B
    /// a random span whenever A takes the whole target length, which short sequences make
    /// common (on the demo corpus 88% of pairs at 16 tokens, 69% at 32, 55% at 64).
    pub nsp_majority_accuracy: f64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub total_steps: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub final_loss: f64,
    pub eval: Eval,
}

impl std::fmt::Display for Summary {
    /// The one-line summary `bert pretrain` ends with.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.eval;
        write!(
            f,
            "{} of {} steps in {:.1} s, {:.0} tokens/s; last loss {:.4}; held-out MLM accuracy {:.3} (most frequent token: {:.3}; at [MASK] inputs, from context alone: {:.3} against {:.3}), NSP accuracy {:.3} (the more frequent label: {:.3})",
            self.steps,
            self.total_steps,
            self.seconds,
            self.tokens_per_second,
            self.final_loss,
            e.mlm_accuracy,
            e.majority_accuracy,
            e.mlm_accuracy_at_mask,
            e.majority_accuracy_at_mask,
            e.nsp_accuracy,
            e.nsp_majority_accuracy
        )
    }
}

/// Instance indices of micro-batch `micro` of step `step` (1-based): consecutive slices of a
/// seeded permutation per epoch.
fn batch_indices(
    n: usize,
    step: u64,
    micro: usize,
    cfg: &PretrainConfig,
    perm_cache: &mut (u64, Vec<usize>),
) -> Vec<usize> {
    let per_step = cfg.batch;
    let mb = cfg.batch / cfg.accum;
    let start = (step - 1) as usize * per_step + micro * mb;
    (start..start + mb)
        .map(|p| {
            let epoch = (p / n) as u64;
            if perm_cache.0 != epoch || perm_cache.1.len() != n {
                let mut perm: Vec<usize> = (0..n).collect();
                let mut r =
                    SplitMix64::new(cfg.seed ^ 0xE90C ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for i in (1..n).rev() {
                    let j = (r.next_u64() % (i as u64 + 1)) as usize;
                    perm.swap(i, j);
                }
                *perm_cache = (epoch, perm);
            }
            perm_cache.1[p % n]
        })
        .collect()
}

/// MLM / NSP accuracy and loss over the first `batches` batches of `shard` (static masks), on
/// the host through the tape.
pub fn evaluate(
    model: &Bert,
    shard: &Shard,
    batch: usize,
    batches: usize,
    (pad, mask): (u32, u32),
) -> Result<Eval> {
    let _g = engine::no_grad();
    let v = model.config.vocab_size;
    let cpu = engine::device::Cpu;
    summarize(eval_batches(shard, batch, batches, pad).map(|b| {
        let (x, labels, nsp) = b;
        let at_mask = at_mask(&x, &labels, mask);
        let out = model.pretraining(&x, &labels, Some(&nsp), Forward::default())?;
        let n = out.mlm_targets.len();
        let e = EvalBatch {
            mlm_loss: Some(out.mlm_loss.item()),
            nsp_loss: out.nsp_loss.map_or(0.0, |l| l.item()),
            mlm_pred: cpu.argmax_rows(&out.mlm_logits.value().to_vec(), n, v)?,
            mlm_targets: out.mlm_targets.clone(),
            nsp_pred: cpu.argmax_rows(&out.nsp_logits.value().to_vec(), nsp.len(), 2)?,
        };
        Ok((e, nsp, at_mask))
    }))
}

/// For each masked position of a batch (row-major, as the heads gather them), whether its
/// input is `[MASK]`.
fn at_mask(x: &crate::BertInput, labels: &[i64], mask: u32) -> Vec<bool> {
    labels
        .iter()
        .zip(&x.input_ids)
        .filter(|(&l, _)| l != -100)
        .map(|(_, &i)| i == mask as i64)
        .collect()
}

/// [`evaluate`] on a device, with a trainer's current parameters: the same batches and figures,
/// the forward on the device ([`crate::step::evaluate_batch`]: only losses and predicted ids
/// cross to the host), packed batches when `packed`. A GPU run evaluates here rather than
/// copying its weights to the host to run them on the CPU.
pub fn evaluate_device<D: Device>(
    tr: &mut StepTrainer<'_, D>,
    shard: &Shard,
    batch: usize,
    batches: usize,
    (pad, mask): (u32, u32),
    packed: bool,
) -> Result<Eval> {
    summarize(
        eval_batches(shard, batch, batches, pad).map(|(x, labels, nsp)| {
            let sb = StepBatch::new(&x, &labels, &nsp)?;
            let at_mask = at_mask(&x, &labels, mask);
            Ok((
                tr.evaluate(&if packed { sb.to_packed() } else { sb })?,
                nsp,
                at_mask,
            ))
        }),
    )
}

/// The evaluation batches: the first `batches` of `batch` instances, static masks.
fn eval_batches(
    shard: &Shard,
    batch: usize,
    batches: usize,
    pad: u32,
) -> impl Iterator<Item = (crate::BertInput, Vec<i64>, Vec<i64>)> + '_ {
    (0..batches)
        .map(move |b| (b * batch..((b + 1) * batch).min(shard.len())).collect::<Vec<usize>>())
        .take_while(|ids| !ids.is_empty())
        .map(move |ids| shard.batch(&ids, pad, None))
}

/// The figures over evaluated batches (each with its NSP labels and which masked positions
/// show `[MASK]`): accuracies over all masked positions, over the `[MASK]` ones, and over
/// sequences, losses averaged over batches, and the most-frequent-token baselines.
fn summarize(
    batches: impl Iterator<Item = Result<(EvalBatch, Vec<i64>, Vec<bool>)>>,
) -> Result<Eval> {
    let mut e = Eval::default();
    let (mut n_mlm, mut n_nsp, mut nb, mut n_at) = (0usize, 0usize, 0usize, 0usize);
    let mut counts: HashMap<i64, usize> = HashMap::new();
    let mut counts_at: HashMap<i64, usize> = HashMap::new();
    let mut nsp_random = 0usize;
    for b in batches {
        let (out, nsp, at_mask) = b?;
        if at_mask.len() != out.mlm_targets.len() {
            return Err(BertError::Input(format!(
                "evaluation: {} masked positions, {} predictions",
                at_mask.len(),
                out.mlm_targets.len()
            )));
        }
        for ((&p, &t), &m) in out.mlm_pred.iter().zip(&out.mlm_targets).zip(&at_mask) {
            e.mlm_accuracy += (p == t) as usize as f64;
            *counts.entry(t).or_default() += 1;
            if m {
                e.mlm_accuracy_at_mask += (p == t) as usize as f64;
                *counts_at.entry(t).or_default() += 1;
                n_at += 1;
            }
        }
        n_mlm += out.mlm_targets.len();
        for (&p, &t) in out.nsp_pred.iter().zip(&nsp) {
            e.nsp_accuracy += (p == t) as usize as f64;
            nsp_random += (t == 1) as usize;
        }
        n_nsp += nsp.len();
        e.mlm_loss += out.mlm_loss.unwrap_or(0.0) as f64;
        e.nsp_loss += out.nsp_loss as f64;
        nb += 1;
    }
    // No held-out instances: no figures (NaN, written as null in metrics.jsonl), not zeros.
    let per = |x: f64, n: usize| if n == 0 { f64::NAN } else { x / n as f64 };
    e.mlm_accuracy = per(e.mlm_accuracy, n_mlm);
    e.nsp_accuracy = per(e.nsp_accuracy, n_nsp);
    e.mlm_loss = per(e.mlm_loss, nb);
    e.nsp_loss = per(e.nsp_loss, nb);
    e.majority_accuracy = per(counts.values().copied().max().unwrap_or(0) as f64, n_mlm);
    e.mlm_accuracy_at_mask = per(e.mlm_accuracy_at_mask, n_at);
    e.nsp_majority_accuracy = per(nsp_random.max(n_nsp - nsp_random) as f64, n_nsp);
    e.majority_accuracy_at_mask = per(counts_at.values().copied().max().unwrap_or(0) as f64, n_at);
    Ok(e)
}

fn io_err(p: &Path, e: impl std::fmt::Display) -> BertError {
    BertError::Io(format!("{}: {e}", p.display()))
}

/// Saves weights (HF layout), tokenizer files, optimizer moments and the trainer state as one
/// set: written into a staging folder beside `dir`, flushed, and switched in by one rename
/// ([`crate::io::StagedDir`]), so that `dir` always holds one step's complete checkpoint.
fn save_checkpoint(
    dir: &Path,
    model: &Bert,
    opt: &AdamW,
    state: &serde_json::Value,
    data_dir: &Path,
) -> Result<()> {
    let staged = crate::io::StagedDir::new(dir)?;
    let sd = staged.path();
    model.save_dir(sd)?;
    for f in ["tokenizer.json", "vocab.txt"] {
        let src = data_dir.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| io_err(&src, e))?;
            crate::io::write_atomic(&sd.join(f), &bytes)?;
        }
    }
    let mut t = Vec::new();
    for (name, v) in model.params.iter() {
        if let Some((m, s)) = opt.moments(name) {
            let shape = v.shape();
            t.push((
                format!("m.{name}"),
                engine::Tensor::from_vec(m.to_vec(), &shape)?,
            ));
            t.push((
                format!("v.{name}"),
                engine::Tensor::from_vec(s.to_vec(), &shape)?,
            ));
        }
    }
    crate::safetensors::write(&sd.join("optimizer.safetensors"), &t, &BTreeMap::new())?;
    crate::io::write_atomic(
        &sd.join("trainer.json"),
        serde_json::to_string_pretty(state).unwrap().as_bytes(),
    )?;
    staged.commit()
}

/// A checkpoint's trainer.json: where the run stands and the settings it ran with.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerState {
    pub step: u64,
    pub total_steps: u64,
    pub seconds: f64,
    /// [`PretrainConfig`]'s settings that a resumed run must share (absent in older checkpoints).
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
}

impl TrainerState {
    /// Reads and checks `path`: whole-number `step` and `total_steps` with
    /// `0 <= step <= total_steps`, `total_steps >= 1`; an error names the file and field.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let bad = |why: String| BertError::Input(format!("{source}: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| bad(format!("`{k}` is missing or not a whole number")))
        };
        let step = field("step")?;
        let total_steps = field("total_steps")?;
        if total_steps == 0 || step > total_steps {
            return Err(bad(format!(
                "step {step} of total_steps {total_steps} is not a run's state"
            )));
        }
        let seconds = v
            .get("seconds")
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite() && *x >= 0.0)
            .unwrap_or(0.0);
        let args = match v.get("args") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err(bad("`args` is not an object".into())),
        };
        Ok(TrainerState {
            step,
            total_steps,
            seconds,
            args,
        })
    }
}

/// The architecture fields two configs must share for a checkpoint of one to continue as the other.
fn same_architecture(a: &BertConfig, b: &BertConfig) -> std::result::Result<(), String> {
    for (name, x, y) in [
        ("vocab_size", a.vocab_size, b.vocab_size),
        ("hidden_size", a.hidden_size, b.hidden_size),
        (
            "num_hidden_layers",
            a.num_hidden_layers,
            b.num_hidden_layers,
        ),
        (
            "num_attention_heads",
            a.num_attention_heads,
            b.num_attention_heads,
        ),
        (
            "intermediate_size",
            a.intermediate_size,
            b.intermediate_size,
        ),
        (
            "max_position_embeddings",
            a.max_position_embeddings,
            b.max_position_embeddings,
        ),
    ] {
        if x != y {
            return Err(format!(
                "{name} {x} (given) differs from the checkpoint's {y}"
            ));
        }
    }
    Ok(())
}

/// How the loop takes a step: the tape (model and optimizer on the host), or the hand-written
/// step on a device (parameters and moments there, copied back for evaluation and checkpoints).
enum Runner<'d> {
    Tape,
    Device(Box<dyn DeviceRunner + 'd>),
}

/// The loop's view of a [`StepTrainer`] on any device: one step, an evaluation, a copy of the
/// parameters and moments to the host. Implemented once for every `Device`, so the loop does
/// not name devices and the `cuda` feature appears only where a device is made.
trait DeviceRunner {
    /// One optimizer step over micro-batches: (summed loss, gradient norm).
    fn step(
        &mut self,
        batches: &[(StepBatch, Option<u64>)],
        lr: f32,
        clip: f32,
    ) -> Result<(f64, f32)>;
    fn evaluate(
        &mut self,
        shard: &Shard,
        batch: usize,
        batches: usize,
        ids: (u32, u32),
        packed: bool,
    ) -> Result<Eval>;
    fn sync_to_host(&self, model: &Bert, opt: &mut AdamW) -> Result<()>;
}

impl<D: Device> DeviceRunner for StepTrainer<'_, D> {
    fn step(
        &mut self,
        batches: &[(StepBatch, Option<u64>)],
        lr: f32,
        clip: f32,
    ) -> Result<(f64, f32)> {
        device_step(self, batches, lr, clip)
    }
    fn evaluate(
        &mut self,
        shard: &Shard,
        batch: usize,
        batches: usize,
        ids: (u32, u32),
        packed: bool,
    ) -> Result<Eval> {
        evaluate_device(self, shard, batch, batches, ids, packed)
    }
    fn sync_to_host(&self, model: &Bert, opt: &mut AdamW) -> Result<()> {
        sync_to_host(self, model, opt)
    }
}

impl Devices {
    /// A step trainer over `model` and `opt` on this device.
    fn trainer<'d>(&'d self, model: &Bert, opt: &AdamW) -> Result<Box<dyn DeviceRunner + 'd>> {
        Ok(match self {
            Devices::Cpu(d) => Box::new(device_trainer(d, model, opt)?),
            Devices::CpuBf16(d) => Box::new(device_trainer(d, model, opt)?),
            #[cfg(feature = "cuda")]
            Devices::Cuda(d) => Box::new(device_trainer(d, model, opt)?),
            #[cfg(feature = "cuda")]
            Devices::CudaBf16(d) => Box::new(device_trainer(d, model, opt)?),
        })
    }
}

/// A device trainer over `model`'s current values and `opt`'s moments and step count.
fn device_trainer<'d, D: Device>(
    dev: &'d D,
    model: &Bert,
    opt: &AdamW,
) -> Result<StepTrainer<'d, D>> {
    let c = &model.config;
    let get = |n: &str| model.params.get(n).map(|v| v.value().to_vec());
    let mut tr = StepTrainer::new(
        dev,
        c,
        &from_named(c, get)?,
        opt.config.clone(),
        opt.steps(),
    )?;
    if opt.steps() > 0 {
        tr.set_moments_named(
            |n: &str| opt.moments(n).map(|(m, _)| m.to_vec()),
            |n: &str| opt.moments(n).map(|(_, v)| v.to_vec()),
        )?;
    }
    Ok(tr)
}

/// One optimizer step's input, built ahead of time by the [`Loader`] thread.
struct StepData {
    /// The micro-batches as the tape takes them: (input, MLM labels, NSP labels, dropout seed).
    /// Empty when the step runs on a device.
    tape: Vec<(crate::BertInput, Vec<i64>, Vec<i64>, u64)>,
    /// The same, as the hand-written step takes them (packed unless `--padded`); empty for the
    /// tape.
    device: Vec<(StepBatch, Option<u64>)>,
    /// Real (non-padding) tokens in the step.
    tokens: usize,
}

/// Builds each step's batches on a thread of its own, up to two steps ahead of the trainer, so
/// that reading the memory-mapped shard, masking and packing overlap the step (on a GPU the
/// host is otherwise idle while it waits; on the CPU it fills the step's serial gaps). Every
/// batch is a function of (seed, step) alone, so the batches are the same as built in line.
/// Dropping the loader stops and joins the thread.
struct Loader {
    rx: Option<std::sync::mpsc::Receiver<Result<StepData>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// What the loader thread needs (owned: it outlives no borrow).
struct LoaderJob {
    train: Shard,
    pad: u32,
    dcfg: DataConfig,
    sp: Specials,
    cfg: PretrainConfig,
    /// Build [`StepData::device`] (packed per `cfg.packed`) rather than [`StepData::tape`].
    device: bool,
}

impl LoaderJob {
    fn build(&self, step: u64, perm: &mut (u64, Vec<usize>)) -> Result<StepData> {
        let cfg = &self.cfg;
        let mut data = StepData {
            tape: Vec::new(),
            device: Vec::new(),
            tokens: 0,
        };
        for micro in 0..cfg.accum {
            let ids = batch_indices(self.train.len(), step, micro, cfg, perm);
            let remask = cfg.dynamic_masking.then(|| {
                let epoch = ((step - 1) as usize * cfg.batch / self.train.len()) as u64;
                (
                    &self.dcfg,
                    &self.sp,
                    cfg.seed ^ 0xAA55 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                )
            });
            let (x, labels, nsp) = self.train.batch(&ids, self.pad, remask);
            data.tokens += x.attention_mask.iter().filter(|&&m| m == 1.0).count();
            let seed = cfg
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(step * 64 + micro as u64);
            if self.device {
                let b = StepBatch::new(&x, &labels, &nsp)?;
                let b = if cfg.packed { b.to_packed() } else { b };
                data.device.push((b, Some(seed)));
            } else {
                data.tape.push((x, labels, nsp, seed));
            }
        }
        Ok(data)
    }
}

impl Loader {
    /// Starts building steps `first`, `first + 1`, ... on a new thread.
    fn spawn(job: LoaderJob, first: u64) -> Result<Loader> {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let handle = std::thread::Builder::new()
            .name("batch-loader".into())
            .spawn(move || {
                let mut perm = (u64::MAX, Vec::new());
                for step in first.. {
                    let data = job.build(step, &mut perm);
                    let failed = data.is_err();
                    // The trainer hung up (the run is over): stop.
                    if tx.send(data).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| BertError::Io(format!("cannot start the batch loader thread: {e}")))?;
        Ok(Loader {
            rx: Some(rx),
            handle: Some(handle),
        })
    }

    /// The next step's batches, waiting for them if the loader is behind.
    fn next(&self) -> Result<StepData> {
        self.rx
            .as_ref()
            .and_then(|rx| rx.recv().ok())
            .unwrap_or_else(|| Err(BertError::Io("the batch loader thread stopped".into())))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Hang up first: a loader blocked on a full channel then sees the send fail and exits.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One optimizer step on a device: returns (loss, gradient norm), reading both back.
fn device_step<D: Device>(
    tr: &mut StepTrainer<'_, D>,
    batches: &[(StepBatch, Option<u64>)],
    lr: f32,
    clip: f32,
) -> Result<(f64, f32)> {
    let st = tr.step(batches, lr, clip)?;
    let mut loss = 0.0f64;
    for l in &st.losses {
        if let Some(m) = &l.mlm {
            loss += read_scalar(tr.dev, m)? as f64;
        }
        loss += read_scalar(tr.dev, &l.nsp)? as f64;
    }
    Ok((
        loss / batches.len().max(1) as f64,
        read_scalar(tr.dev, &st.grad_norm)?,
    ))
}

/// Copies a device trainer's parameters and moments into the host model and optimizer.
fn sync_to_host<D: Device>(tr: &StepTrainer<'_, D>, model: &Bert, opt: &mut AdamW) -> Result<()> {
    let (p, m, v) = tr.state_named()?;
    for (name, shape, vals) in p {
        let var = model
            .params
            .get(&name)
            .ok_or_else(|| BertError::Checkpoint(format!("the model has no parameter '{name}'")))?;
        var.set_value(engine::Tensor::from_vec(vals, &shape)?)?;
    }
    let moments = m
        .into_iter()
        .zip(v)
        .map(|((name, _, m), (_, _, v))| (name, (m, v)))
        .collect();
    opt.restore(tr.steps, moments);
    Ok(())
}

/// Runs pretraining. `model_config` is a preset name or a config.json path.
pub fn pretrain(
    model_config: &str,
    data_dir: &Path,
    out: &Path,
    cfg: &PretrainConfig,
    resume: bool,
) -> Result<Summary> {
    cfg.validate()?;
    let tok_path = data_dir.join("tokenizer.json");
    let tok = tokenizer::load_tokenizer_json(&tok_path.display().to_string()).map_err(|e| {
        BertError::Io(format!(
            "{e} (is {} a `bert data` folder?)",
            data_dir.display()
        ))
    })?;
    let sp = Specials::from_tokenizer(&tok)?;
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let mask = tok.vocab.id("[MASK]").ok_or_else(|| {
        BertError::Input(format!(
            "{}: the data's tokenizer has no [MASK] token",
            data_dir.display()
        ))
    })?;
    let meta_path = data_dir.join("data.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path).map_err(|e| io_err(&meta_path, e))?,
    )
    .map_err(|e| io_err(&meta_path, e))?;
    let dcfg = DataConfig {
        max_seq_len: meta["max_seq_len"].as_u64().unwrap_or(128) as usize,
        max_predictions: meta["max_predictions"].as_u64().unwrap_or(20) as usize,
        masked_lm_prob: meta["masked_lm_prob"].as_f64().unwrap_or(0.15),
        whole_word_mask: meta["whole_word_mask"].as_bool().unwrap_or(false),
        ..Default::default()
    };
    let train = Shard::open(&data_dir.join("train.bin"), sp.vocab_size)?;
    let held = Shard::open(&data_dir.join("heldout.bin"), sp.vocab_size)?;
    if train.is_empty() {
        return Err(BertError::Input(format!(
            "{}: no training instances",
            train.source()
        )));
    }
    if held.is_empty() {
        eprintln!(
            "bert pretrain: {}: no held-out instances; evaluations report no accuracy",
            held.source()
        );
    }
    // The data's limits against the shards' (a data.json edited by hand, or shards of another run).
    if train.max_seq_len != dcfg.max_seq_len || train.max_predictions != dcfg.max_predictions {
        return Err(BertError::Input(format!(
            "{}: max_seq_len {} / max_predictions {} differ from the shard's {} / {}",
            meta_path.display(),
            dcfg.max_seq_len,
            dcfg.max_predictions,
            train.max_seq_len,
            train.max_predictions
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let ckpt = out.join("checkpoint");
    let metrics_path = out.join("metrics.jsonl");
    // A killed run's leftovers: staging folders and temporary files.
    crate::io::clean_staged(&ckpt)?;
    crate::io::clean_tmp_files(out);
    let has_run = ckpt.exists() || metrics_path.exists();
    if has_run && !resume && !cfg.force {
        return Err(BertError::Input(format!(
            "{} holds a run (checkpoint or metrics.jsonl): pass --resume to continue it, or --force to start afresh and discard it",
            out.display()
        )));
    }
    if cfg.force && !resume {
        let _ = std::fs::remove_file(&metrics_path);
        if ckpt.exists() {
            std::fs::remove_dir_all(&ckpt).map_err(|e| io_err(&ckpt, e))?;
        }
    }
    let mut opt = AdamW::new(AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..Default::default()
    });
    let mut start_step = 0u64;
    let mut total: Option<u64> = match (cfg.steps, cfg.minutes) {
        (_, Some(_)) => None,
        (Some(n), None) => Some(n),
        (None, None) => Some(1000),
    };
    let mut elapsed0 = 0.0f64;
    let resolve_config = || -> Result<BertConfig> {
        let mut c = if Path::new(model_config).exists() {
            BertConfig::from_file(Path::new(model_config))?
        } else {
            BertConfig::preset(model_config, tok.vocab.len())?
        };
        c.max_position_embeddings = c.max_position_embeddings.max(dcfg.max_seq_len);
        Ok(c)
    };
    // A checkpoint's weights for `--resume` or `--init-from` (`what`): its architecture (checked
    // against --model-config when one is given) and vocabulary (against the data's), as owned
    // copies (the mapped file is replaced by the next save, and may be OUT's own).
    let load_weights = |dir: &Path, what: &str| -> Result<Bert> {
        let md = crate::checkpoint::ModelDir::load(
            dir,
            &crate::LoadOptions {
                task: Some(Task::PreTraining),
                init_missing_head: None,
            },
        )?;
        if !model_config.is_empty() {
            same_architecture(&resolve_config()?, &md.model.config).map_err(|e| {
                BertError::Input(format!(
                    "{what}: --model-config {model_config}: {e} ({})",
                    dir.display()
                ))
            })?;
        }
        if md.model.config.vocab_size != tok.vocab.len() {
            return Err(BertError::Input(format!(
                "{what} {}: the checkpoint's vocab_size {} differs from the data's vocabulary of {} ({})",
                dir.display(),
                md.model.config.vocab_size,
                tok.vocab.len(),
                tok_path.display()
            )));
        }
        for (_, v) in md.model.params.iter() {
            v.set_value(engine::Tensor::from_vec(v.value().to_vec(), &v.shape())?)?;
        }
        Ok(md.model)
    };
    let model = if resume && ckpt.join("trainer.json").exists() {
        let tj = ckpt.join("trainer.json");
        let state = TrainerState::read(&tj)?;
        start_step = state.step;
        total = Some(state.total_steps);
        elapsed0 = state.seconds;
        // The run's settings against this invocation's: a changed one is an error naming it.
        if let Some(args) = &state.args {
            let now = cfg.resume_args();
            for (k, was) in args {
                let is = &now[k];
                let same = match (was.as_f64(), is.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                    _ => was == is,
                };
                if !same {
                    return Err(BertError::Input(format!(
                        "--resume: {} is {is} here but {was} in the run being resumed ({}); give the run's settings, or start afresh with --force",
                        flag_of(k),
                        tj.display()
                    )));
                }
            }
        }
        let model = load_weights(&ckpt, "--resume")?;
        let st = SafeTensors::open(&ckpt.join("optimizer.safetensors"))?;
        let mut moments = HashMap::new();
        for (name, _) in model.params.iter() {
            let m = st.tensor(&format!("m.{name}"))?.to_vec();
            let v = st.tensor(&format!("v.{name}"))?.to_vec();
            moments.insert(name.clone(), (m, v));
        }
        opt.restore(start_step, moments);
        truncate_metrics(&metrics_path, start_step)?;
        model
    } else {
        if resume {
            eprintln!(
                "bert pretrain: --resume: no checkpoint in {} yet; starting from step 0",
                ckpt.display()
            );
        }
        truncate_metrics(&metrics_path, 0)?;
        if let Some(from) = &cfg.init_from {
            let model = load_weights(from, "--init-from")?;
            if dcfg.max_seq_len > model.config.max_position_embeddings {
                return Err(BertError::Input(format!(
                    "--init-from {}: the data's sequences of {} tokens exceed the model's {} positions",
                    from.display(),
                    dcfg.max_seq_len,
                    model.config.max_position_embeddings
                )));
            }
            let had = model.config.hidden_dropout_prob;
            if let Some(p) = cfg.dropout.filter(|&p| p != had) {
                return Err(BertError::Input(format!(
                    "--init-from {}: the model keeps its dropout {had}; --dropout {p} differs (drop it, or give {had})",
                    from.display()
                )));
            }
            model
        } else {
            let mut c = resolve_config()?;
            if c.vocab_size != tok.vocab.len() {
                return Err(BertError::Config(format!(
                    "the model's vocab_size {} differs from the data's vocabulary of {} ({})",
                    c.vocab_size,
                    tok.vocab.len(),
                    tok_path.display()
                )));
            }
            if let Some(p) = cfg.dropout {
                c.hidden_dropout_prob = p;
                c.attention_probs_dropout_prob = p;
            }
            Bert::init(&c, Task::PreTraining, cfg.seed)?
        }
    };
    // Memory: a batch too large for this machine is refused before it is allocated.
    let need = estimate_step_bytes(&model.config, cfg.batch / cfg.accum, dcfg.max_seq_len);
    if let Some(avail) = available_memory() {
        if need > avail {
            return Err(BertError::Input(format!(
                "--batch {} (micro-batches of {}) at {} tokens needs about {:.1} GiB for a step, more than the {:.1} GiB available: lower --batch or raise --accum",
                cfg.batch,
                cfg.batch / cfg.accum,
                dcfg.max_seq_len,
                need as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            )));
        }
    }
    let devices = Devices::open(cfg.device)?;
    let relu = model.config.hidden_act == crate::config::Activation::Relu;
    let mut runner = match cfg.device {
        TrainDevice::CpuTape => Runner::Tape,
        TrainDevice::Cpu if relu => Runner::Tape,
        _ => Runner::Device(devices.trainer(&model, &opt)?),
    };
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| io_err(&metrics_path, e))?;
    let mut log = |v: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{v}").map_err(|e| io_err(out, e))
    };
    let loader = Loader::spawn(
        LoaderJob {
            train,
            pad,
            dcfg,
            sp,
            cfg: cfg.clone(),
            device: !matches!(runner, Runner::Tape),
        },
        start_step + 1,
    )?;
    let t0 = std::time::Instant::now();
    let mut step = start_step;
    let mut tokens = 0usize;
    let mut last_loss = f64::NAN;
    let mut sched: Option<LrSchedule> = None;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut eval = Eval::default();
    loop {
        if let Some(t) = total {
            if step >= t {
                break;
            }
            if sched.is_none() {
                let warm = if cfg.warmup < 1.0 {
                    (cfg.warmup * t as f64).round() as u64
                } else {
                    cfg.warmup as u64
                };
                sched = Some(LrSchedule::warmup_stable_decay(cfg.lr, warm, t, cfg.decay));
                if cfg.progress {
                    let b = indicatif::ProgressBar::new(t);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                        )
                        .unwrap(),
                    );
                    b.set_position(step);
                    bar = Some(b);
                }
            }
        }
        step += 1;
        // Before the total is known (--minutes), the first steps run at the peak rate's warmup
        // start; the total is fixed after 3 steps from their speed.
        let lr = sched.as_ref().map_or(cfg.lr * 0.01, |s| s.lr(step));
        let st = std::time::Instant::now();
        let data = loader.next()?;
        let data_wait = st.elapsed().as_secs_f64();
        tokens += data.tokens;
        let (loss_sum, gnorm) = match &mut runner {
            Runner::Tape => {
                model.params.zero_grad();
                let mut loss_sum = 0.0f64;
                for (x, labels, nsp, seed) in &data.tape {
                    let o = model.pretraining(
                        x,
                        labels,
                        Some(nsp),
                        Forward {
                            dropout_seed: Some(*seed),
                            ..Default::default()
                        },
                    )?;
                    let loss = if cfg.accum > 1 {
                        o.loss.affine(1.0 / cfg.accum as f32, 0.0)?
                    } else {
                        o.loss
                    };
                    engine::optim::check_finite_loss(loss.item(), step)?;
                    loss_sum += loss.item() as f64;
                    loss.backward()?;
                }
                let gnorm = clip_grad_norm(&model.params, cfg.clip)?;
                opt.step(&model.params, lr)?;
                (loss_sum, gnorm)
            }
            Runner::Device(tr) => tr.step(&data.device, lr, cfg.clip)?,
        };
        // The device steps refuse non-finite losses here (after the update, which the next
        // checkpoint does not keep): the run stops with the same error as the tape's.
        engine::optim::check_finite_loss(loss_sum as f32, step)?;
        last_loss = loss_sum;
        let secs = t0.elapsed().as_secs_f64();
        // With --minutes the total is fixed from the speed so far, once 3 steps and 3% of the
        // budget (at most 10 s) have passed: the first steps are slow (allocation, the loader
        // filling), and a total fixed after 3 short steps ended a 6-minute run after 277 s.
        let budget = cfg.minutes.unwrap_or(1.0) * 60.0;
        if total.is_none() && step >= start_step + 3 && secs >= (0.03 * budget).min(10.0) {
            let per = secs / (step - start_step) as f64;
            total = Some(((budget / per) as u64).max(step + 1));
        }
        let tps = tokens as f64 / secs.max(1e-9);
        log(
            serde_json::json!({"step": step, "loss": loss_sum, "lr": lr, "grad_norm": gnorm,
            "step_seconds": st.elapsed().as_secs_f64(), "data_wait_seconds": data_wait, "tokens_per_second": tps, "seconds": elapsed0 + secs}),
        )?;
        if let Some(b) = &bar {
            b.set_position(step);
            b.set_message(format!("loss {loss_sum:.3}  {tps:.0} tok/s"));
        }
        let done = total.is_some_and(|t| step >= t);
        let stop = cfg.stop_after == Some(step);
        let ckpt_now = step.is_multiple_of(cfg.checkpoint_every) || done || stop;
        // A device run copies its weights and moments to the host for checkpoints only; it
        // evaluates on the device.
        if ckpt_now {
            match &runner {
                Runner::Tape => {}
                Runner::Device(tr) => tr.sync_to_host(&model, &mut opt)?,
            }
        }
        if step.is_multiple_of(cfg.eval_every) || done {
            let (eb, n) = (cfg.batch / cfg.accum, cfg.eval_batches);
            eval = match &mut runner {
                Runner::Tape => evaluate(&model, &held, eb, n, (pad, mask))?,
                Runner::Device(tr) => tr.evaluate(&held, eb, n, (pad, mask), cfg.packed)?,
            };
            log(
                serde_json::json!({"step": step, "seconds": elapsed0 + t0.elapsed().as_secs_f64(), "eval_mlm_accuracy": eval.mlm_accuracy,
                "eval_nsp_accuracy": eval.nsp_accuracy, "eval_mlm_loss": eval.mlm_loss,
                "eval_nsp_loss": eval.nsp_loss, "majority_accuracy": eval.majority_accuracy,
                "eval_mlm_accuracy_at_mask": eval.mlm_accuracy_at_mask,
                "majority_accuracy_at_mask": eval.majority_accuracy_at_mask,
                "nsp_majority_accuracy": eval.nsp_majority_accuracy}),
            )?;
        }
        if ckpt_now {
            // Never saved: non-finite weights. The run stops, keeping the last finite checkpoint.
            if let Some((name, i)) = first_non_finite(&model) {
                return Err(BertError::Input(format!(
                    "step {step}: parameter {name} holds a non-finite value (at index {i}); the run stops and {} keeps the last finite checkpoint",
                    ckpt.display()
                )));
            }
            let state = serde_json::json!({"step": step, "total_steps": total, "seconds": elapsed0 + secs,
                "seed": cfg.seed, "batch": cfg.batch, "lr": cfg.lr, "args": cfg.resume_args()});
            save_checkpoint(&ckpt, &model, &opt, &state, data_dir)?;
            crate::report::write_pretrain_plots(&out.join("metrics.jsonl"), out)?;
        }
        if stop {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(Summary {
        steps: step,
        total_steps: total.unwrap_or(step),
        seconds: elapsed0 + secs,
        tokens_per_second: tokens as f64 / secs.max(1e-9),
        final_loss: last_loss,
        eval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that copies its input scores on the shown-token positions only: the figure at
    /// `[MASK]` inputs says it learned nothing from context.
    #[test]
    fn accuracy_at_mask_leaves_out_the_copied_positions() {
        let x = crate::BertInput {
            batch: 1,
            seq: 6,
            input_ids: vec![2, 4, 9, 4, 4, 3],
            token_type_ids: vec![0; 6],
            attention_mask: vec![1.0; 6],
        };
        let labels = vec![-100, 7, 9, 8, 7, -100];
        let m = at_mask(&x, &labels, 4);
        assert_eq!(m, vec![true, false, true, true]);
        let b = EvalBatch {
            mlm_loss: Some(1.0),
            nsp_loss: 0.5,
            mlm_pred: vec![0, 9, 0, 7],
            mlm_targets: vec![7, 9, 8, 7],
            nsp_pred: vec![1],
        };
        let e = summarize(std::iter::once(Ok((b, vec![1], m)))).unwrap();
        assert_eq!(e.mlm_accuracy, 0.5);
        assert!((e.mlm_accuracy_at_mask - 1.0 / 3.0).abs() < 1e-12);
        assert!((e.majority_accuracy_at_mask - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.majority_accuracy, 0.5);
        assert_eq!(e.nsp_majority_accuracy, 1.0);
        let short = EvalBatch {
            mlm_loss: Some(1.0),
            nsp_loss: 0.5,
            mlm_pred: vec![0],
            mlm_targets: vec![7],
            nsp_pred: vec![1],
        };
        assert!(summarize(std::iter::once(Ok((short, vec![1], vec![true, true])))).is_err());
    }
}
