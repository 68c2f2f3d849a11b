//! Optimisation: AdamW, gradient clipping, learning-rate schedules, non-finite checks.
//!
//! AdamW (Loshchilov & Hutter), decoupled weight decay, per parameter:
//! ```text
//! p -= lr * wd * p                       (only for parameters that decay)
//! m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//! p -= lr * m_hat / (sqrt(v_hat) + eps)  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
//! ```
//! With `bias_correction: false` it is the optimizer of the original BERT
//! (`AdamWeightDecayOptimizer`): m_hat = m, v_hat = v. This is the update of
//! `torch.optim.AdamW` (and of HF's `AdamW` with `correct_bias`).

use crate::autograd::ParamStore;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// AdamW hyper-parameters. Defaults are BERT's: lr 1e-4, betas (0.9, 0.999), eps 1e-6, wd 0.01.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.01,
            bias_correction: true,
        }
    }
}

/// The parameter groups of BERT training: biases and LayerNorm weights do not decay.
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.ends_with("bias")
        || lower.ends_with(".beta")
        || lower.ends_with(".gamma")
        || lower.contains("layernorm")
        || lower.contains("layer_norm"))
}

/// AdamW state: first and second moments per parameter name, and the step count.
pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    moments: HashMap<String, (Vec<f32>, Vec<f32>)>,
    decay_rule: fn(&str) -> bool,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
            decay_rule: decays,
        }
    }
    /// Replaces the rule that decides which parameters decay (default: [`decays`]).
    pub fn with_decay_rule(mut self, rule: fn(&str) -> bool) -> Self {
        self.decay_rule = rule;
        self
    }
    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }
    /// The moments of a parameter (for checkpoints), if it has been stepped.
    pub fn moments(&self, name: &str) -> Option<(&[f32], &[f32])> {
        self.moments.get(name).map(|(m, v)| (&m[..], &v[..]))
    }
    /// Restores state saved from [`AdamW::moments`] and [`AdamW::steps`] (resuming).
    pub fn restore(&mut self, step: u64, moments: HashMap<String, (Vec<f32>, Vec<f32>)>) {
        self.step = step;
        self.moments = moments;
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`. Refuses
    /// (before changing anything) when a gradient is not finite, naming the parameter.
    pub fn step(&mut self, params: &ParamStore, lr: f32) -> Result<()> {
        check_finite_grads(params, self.step + 1)?;
        self.step += 1;
        let t = self.step as i32;
        let c = &self.config;
        let (bc1, bc2) = if c.bias_correction {
            (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t))
        } else {
            (1.0, 1.0)
        };
        for (name, var) in params.iter() {
            let Some(g) = var.grad() else { continue };
            let g = g.contiguous();
            let g = g.as_slice().expect("gradients are f32");
            let mut p = var.value().contiguous().to_vec();
            let (m, v) = self
                .moments
                .entry(name.clone())
                .or_insert_with(|| (vec![0.0; p.len()], vec![0.0; p.len()]));
            let wd = if (self.decay_rule)(name) {
                c.weight_decay
            } else {
                0.0
            };
            let update = |(((p, m), v), g): (((&mut f32, &mut f32), &mut f32), &f32)| {
                *p -= lr * wd * *p;
                *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + c.eps);
            };
            if p.len() >= 1 << 16 {
                use rayon::prelude::*;
                p.par_iter_mut()
                    .zip(m.par_iter_mut())
                    .zip(v.par_iter_mut())
                    .zip(g.par_iter())
                    .for_each(update);
            } else {
                p.iter_mut()
                    .zip(m.iter_mut())
                    .zip(v.iter_mut())
                    .zip(g.iter())
                    .for_each(update);
            }
            var.set_value(Tensor::from_vec(p, &var.shape())?)?;
        }
        Ok(())
    }
}

/// Fixed-size blocks for the threaded scans below: the result does not depend on the threads.
const SCAN_BLOCK: usize = 1 << 14;

/// The first NaN or infinity in `v`, scanning blocks on every thread when large.
fn find_non_finite(v: &[f32]) -> Option<f32> {
    use rayon::prelude::*;
    if v.len() < SCAN_BLOCK * 4 {
        return v.iter().copied().find(|x| !x.is_finite());
    }
    v.par_chunks(SCAN_BLOCK)
        .find_first(|c| c.iter().any(|x| !x.is_finite()))
        .and_then(|c| c.iter().copied().find(|x| !x.is_finite()))
}

/// Sum of squares in f64: per-block sums on every thread, added in block order.
pub(crate) fn sum_squares_f64(v: &[f32]) -> f64 {
    use rayon::prelude::*;
    let block = |c: &[f32]| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    if v.len() < SCAN_BLOCK * 4 {
        return block(v);
    }
    let parts: Vec<f64> = v.par_chunks(SCAN_BLOCK).map(block).collect();
    parts.iter().sum()
}

/// Errors with the first parameter (in name order) whose gradient holds a NaN or infinity.
pub fn check_finite_grads(params: &ParamStore, step: u64) -> Result<()> {
    for (name, var) in params.iter() {
        if let Some(g) = var.grad() {
            let g = g.contiguous();
            let v = g.as_slice().expect("gradients are f32");
            if let Some(bad) = find_non_finite(v) {
                return Err(Error::NonFinite {
                    what: format!("the gradient of '{name}' (holds {bad})"),
                    step,
                });
            }
        }
    }
    Ok(())
}

/// Errors when a loss is NaN or infinite.
pub fn check_finite_loss(loss: f32, step: u64) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite {
            what: format!("the loss ({loss})"),
            step,
        })
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (accumulated in f64).
pub fn clip_grad_norm(params: &ParamStore, max_norm: f32) -> Result<f32> {
    let mut sq = 0.0f64;
    for (_, v) in params.iter() {
        if let Some(g) = v.grad() {
            let g = g.contiguous();
            sq += sum_squares_f64(g.as_slice().expect("gradients are f32"));
        }
    }
    let norm = sq.sqrt() as f32;
    if norm > max_norm && norm.is_finite() {
        let s = max_norm / (norm + 1e-6);
        for (_, v) in params.iter() {
            if let Some(g) = v.grad() {
                v.set_grad(Some(g.affine(s, 0.0)?));
            }
        }
    }
    Ok(norm)
}

/// Linear warmup from 0 to `peak` over `warmup` steps, then `peak` held until `decay_from`
/// (at most `warmup`: no hold, as BERT), then polynomial decay to `end` at `total` steps (power
/// 1 is linear decay, as BERT uses), constant `end` after. A hold with a short final decay is
/// the warmup-stable-decay schedule (Hägele et al. 2024, "Scaling laws and compute-optimal
/// training beyond fixed training durations").
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f32,
    pub warmup: u64,
    pub total: u64,
    pub end: f32,
    pub power: f32,
    pub decay_from: u64,
}

impl LrSchedule {
    pub fn linear(peak: f32, warmup: u64, total: u64) -> Self {
        LrSchedule {
            peak,
            warmup,
            total,
            end: 0.0,
            power: 1.0,
            decay_from: 0,
        }
    }
    /// Warmup, then `peak` held until the last `decay` share of the steps (0 < decay <= 1),
    /// then linear decay to 0; `decay` 1 is [`LrSchedule::linear`].
    pub fn warmup_stable_decay(peak: f32, warmup: u64, total: u64, decay: f64) -> Self {
        let tail = ((total.saturating_sub(warmup)) as f64 * decay.clamp(0.0, 1.0)).round() as u64;
        LrSchedule {
            decay_from: total.saturating_sub(tail).max(warmup),
            ..Self::linear(peak, warmup, total)
        }
    }
    /// The learning rate for step `step` (1-based: the first update uses step 1).
    pub fn lr(&self, step: u64) -> f32 {
        if self.warmup > 0 && step <= self.warmup {
            return self.peak * step as f32 / self.warmup as f32;
        }
        if step >= self.total || self.total <= self.warmup {
            return self.end;
        }
        let from = self.decay_from.max(self.warmup);
        if step <= from {
            return self.peak;
        }
        let frac = 1.0 - (step - from) as f32 / (self.total - from) as f32;
        self.end + (self.peak - self.end) * frac.powf(self.power)
    }
}
