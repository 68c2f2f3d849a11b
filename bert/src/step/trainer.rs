//! [`StepTrainer`]: a model training with the step and the device's AdamW.

use super::*;

/// A model training with [`forward_backward`] and the device's AdamW: parameters, gradients and
/// moments stay on the device; the host sees the losses and the gradient norm when it asks.
pub struct StepTrainer<'d, D: Device> {
    pub dev: &'d D,
    pub config: BertConfig,
    pub opt: D::Optim,
    pub adam: engine::optim::AdamWConfig,
    /// Optimizer steps taken (the bias corrections' t).
    pub steps: u64,
    /// The parameters' (HF name, shape) in step order: [`layout`] for pretraining, a
    /// fine-tuning head's ([`super::FtHead::layout`]) otherwise.
    pub layout: Vec<(String, Vec<usize>)>,
}

/// The device buffers of one optimizer step's figures (read them where they are logged).
pub struct StepStats<B> {
    /// Per micro-batch (MLM loss if any position was masked, NSP loss), unscaled means.
    pub losses: Vec<StepLosses<B>>,
    /// Global gradient norm before clipping.
    pub grad_norm: B,
}

impl<'d, D: Device> StepTrainer<'d, D> {
    /// Uploads step-ordered `values` ([`from_named`]); weight decay as BERT's (not on biases and
    /// LayerNorm, [`engine::optim::decays`]).
    pub fn new(
        dev: &'d D,
        config: &BertConfig,
        values: &[Vec<f32>],
        adam: engine::optim::AdamWConfig,
        steps: u64,
    ) -> Result<Self> {
        Self::with_layout(dev, config, layout(config), values, adam, steps)
    }

    /// [`StepTrainer::new`] over another step layout (a fine-tuning head's): `values` in its
    /// order, weight decay by its names.
    pub fn with_layout(
        dev: &'d D,
        config: &BertConfig,
        lay: Vec<(String, Vec<usize>)>,
        values: &[Vec<f32>],
        adam: engine::optim::AdamWConfig,
        steps: u64,
    ) -> Result<Self> {
        if values.len() != lay.len() {
            return Err(BertError::Input(format!(
                "{} parameter tensors for a step that takes {}",
                values.len(),
                lay.len()
            )));
        }
        let decay = lay
            .iter()
            .map(|(n, _)| {
                if engine::optim::decays(n) {
                    adam.weight_decay
                } else {
                    0.0
                }
            })
            .collect();
        Ok(StepTrainer {
            dev,
            config: config.clone(),
            opt: dev.optim_new(values, decay)?,
            adam,
            steps,
            layout: lay,
        })
    }

    /// One optimizer step: forward and backward over each micro-batch (its dropout seed beside
    /// it; the loss scaled by 1 / micro-batches, gradients accumulated), clipping at `clip`,
    /// AdamW at `lr`.
    pub fn step(
        &mut self,
        micro: &[(StepBatch, Option<u64>)],
        lr: f32,
        clip: f32,
    ) -> Result<StepStats<D::Grad>> {
        let config = self.config.clone();
        let (losses, grad_norm) =
            self.step_with(micro.len(), lr, clip, |dev, params, grads, i, scale| {
                let (batch, seed) = &micro[i];
                forward_backward(dev, &config, params, grads, batch, *seed, scale)
            })?;
        Ok(StepStats { losses, grad_norm })
    }

    /// One optimizer step whose gradients `fwd_bwd(dev, params, grads, i, scale)` adds, for
    /// micro-batch i of `micro` (scale = 1 / micro); then clipping at `clip` and AdamW at `lr`.
    /// Returns what each call returned and the gradient norm before clipping.
    pub fn step_with<T>(
        &mut self,
        micro: usize,
        lr: f32,
        clip: f32,
        mut fwd_bwd: impl FnMut(&D, &[D::W<'_>], &mut [&mut D::Grad], usize, f32) -> Result<T>,
    ) -> Result<(Vec<T>, D::Grad)> {
        let dev = self.dev;
        dev.optim_zero_grads(&mut self.opt)?;
        let mut out = Vec::with_capacity(micro);
        let scale = 1.0 / micro.max(1) as f32;
        for i in 0..micro {
            let (params, mut grads) = dev.optim_parts(&mut self.opt);
            out.push(fwd_bwd(dev, &params, &mut grads, i, scale)?);
        }
        self.steps += 1;
        let a = &self.adam;
        let t = self.steps as i32;
        let (bc1, bc2) = if a.bias_correction {
            (1.0 - a.beta1.powi(t), 1.0 - a.beta2.powi(t))
        } else {
            (1.0, 1.0)
        };
        let h = engine::device::AdamHyper {
            lr,
            beta1: a.beta1,
            beta2: a.beta2,
            eps: a.eps,
            bc1,
            bc2,
        };
        let grad_norm = dev.optim_step(&mut self.opt, h, clip)?;
        Ok((out, grad_norm))
    }

    /// [`evaluate_batch`] with the trainer's current parameters.
    pub fn evaluate(&mut self, x: &StepBatch) -> Result<EvalBatch> {
        let (params, _) = self.dev.optim_parts(&mut self.opt);
        evaluate_batch(self.dev, &self.config, &params, x)
    }

    /// Host copies, HF-named: the parameters and the (first, second) moments.
    #[expect(clippy::type_complexity)]
    pub fn state_named(
        &self,
    ) -> Result<(
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
        Vec<(String, Vec<usize>, Vec<f32>)>,
    )> {
        let st = self.dev.optim_state(&self.opt)?;
        let mut p = Vec::with_capacity(st.len());
        let mut m = Vec::with_capacity(st.len());
        let mut v = Vec::with_capacity(st.len());
        for (a, b, c) in st {
            p.push(a);
            m.push(b);
            v.push(c);
        }
        Ok((
            named_in(&self.layout, &p),
            named_in(&self.layout, &m),
            named_in(&self.layout, &v),
        ))
    }

    /// Sets the moments from HF-named host tensors (resuming a checkpoint).
    pub fn set_moments_named(
        &mut self,
        m: impl Fn(&str) -> Option<Vec<f32>>,
        v: impl Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<()> {
        let ms = values_for(self.layout.clone(), m)?;
        let vs = values_for(self.layout.clone(), v)?;
        Ok(self
            .dev
            .optim_set_moments(&mut self.opt, ms.into_iter().zip(vs).collect())?)
    }
}

/// Reads a one-element device buffer (a loss, a norm): this waits for the device.
pub fn read_scalar<D: Device>(dev: &D, x: &D::Grad) -> Result<f32> {
    Ok(dev.download_grad(x)?.first().copied().unwrap_or(f32::NAN))
}
