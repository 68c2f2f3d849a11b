//! The BERT pretraining step written out by hand, forward then backward, over any
//! [`engine::device::Device`] (llm.c's shape: every activation named, every gradient by hand).
//!
//! This is the step the GPU runs (`engine::device::cuda`: `Cuda` and `CudaBf16`, feature
//! `cuda`) and the CPU's default pretraining path ([`engine::device::Cpu`], faster than the tape
//! through its fused attention). It is tested against the tape (`bert/tests/step.rs`): the same
//! loss and the same gradient for every parameter, dropout included (the masks are the
//! engine's, by element index, on every device).
//!
//! ```text
//! e   = LN(word[ids] + type[types] + pos); x_0 = dropout(e)                  (T,H), T = B*S
//! per layer l (dropout seeds as BertModel::forward):
//!   qkv = x Wqkv^T + bqkv                         (T,3H) = (T,3,nh,hd), Wqkv = [Wq; Wk; Wv]
//!   ctx = attention(qkv, key lengths)             (T,H), heads merged
//!   a   = LN(dropout(ctx Wo^T + bo) + x)
//!   u   = a Wi^T + bi;  m = gelu(u)               (T,I)
//!   x'  = LN(dropout(m Wo2^T + bo2) + a)
//! MLM at the N masked rows: t = LN(gelu(x[rows] Wt^T + bt)); logits = t E^T + b  (N,V)
//! NSP: pooled = tanh(x[b*S] Wp^T + bp); nsp = pooled Wn^T + bn                    (B,2)
//! loss = CE(logits, targets) + CE(nsp, labels), each a mean
//! ```
//! Parameters are held in the step's own order ([`layout`]), with the query, key and value
//! weights stacked into one (3H,H) matrix so that one GEMM makes the fused QKV buffer the
//! attention kernel reads; [`from_named`] and [`to_named`] convert from and to HF's names.
//!
//! The files: `params.rs` (where each tensor sits: [`LayerIx`], [`HeadIx`], the layout and the
//! HF-name conversions), `batch.rs` (the batch on the device: [`StepBatch`], packing),
//! `encoder.rs` (embeddings and layers, forward; [`encode`] for inference), `heads.rs` (MLM and
//! NSP heads, forward), this file (the step: [`forward_backward`], [`evaluate_batch`]),
//! `finetune.rs` (the fine-tuning heads, [`FtHead`]: sequence classification and regression,
//! token classification, question answering; forward, loss and backward) and `trainer.rs`
//! ([`StepTrainer`]: parameters, gradients and AdamW moments on the device, for any layout).

mod batch;
mod encoder;
mod finetune;
mod heads;
mod params;
mod trainer;

pub(crate) use batch::pack_tokens;
pub use batch::{key_lengths, StepBatch};
pub use encoder::{encode, EncoderInput};
pub use finetune::{ft_forward_backward, ft_logits, span_loss, FtBatch, FtHead, FtTargets};
pub use params::{
    encoder_from_named, encoder_layout, from_named, layout, named_in, to_named, values_for,
};
pub use trainer::{read_scalar, StepStats, StepTrainer};

use crate::config::{Activation, BertConfig};
use crate::{BertError, Result};
use encoder::*;
use engine::device::{AttnDims, Device};
use heads::*;
use params::*;

/// The step's losses, still on the device (one-element f32 buffers): reading them synchronises.
pub struct StepLosses<B> {
    pub mlm: Option<B>,
    pub nsp: B,
}

/// Forward and backward of the pretraining loss on one batch: adds every parameter's gradient
/// into `grads` (same order as `params`, see [`layout`]; zero them first for a fresh step) and
/// returns the two losses. `dropout_seed` Some: training (dropout on), None: no dropout.
/// `scale` multiplies the loss before differentiation (1 / accumulation steps).
pub fn forward_backward<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    grads: &mut [&mut D::Grad],
    x: &StepBatch,
    dropout_seed: Option<u64>,
    scale: f32,
) -> Result<StepLosses<D::Grad>> {
    let nl = c.num_hidden_layers;
    let want = EMB + PER_LAYER * nl + HEADS;
    if params.len() != want || grads.len() != want {
        return Err(BertError::Input(format!(
            "the step takes {want} parameter and gradient buffers, got {} and {}",
            params.len(),
            grads.len()
        )));
    }
    let act = gelu_kind(c)?;
    let (b, s, h, v) = (x.batch, x.seq, c.hidden_size, c.vocab_size);
    let t = if x.packed { x.lens.iter().sum() } else { b * s };
    if x.mlm_labels.len() != t {
        return Err(BertError::Input(format!(
            "{} MLM labels for a batch of {t} tokens",
            x.mlm_labels.len()
        )));
    }
    let hx = HeadIx::of(nl);

    // ---- forward ----
    let input = EncoderInput {
        batch: b,
        seq: s,
        input_ids: &x.input_ids,
        token_type_ids: &x.token_type_ids,
        lens: &x.lens,
        packed: x.packed,
    };
    let enc = encoder_forward(dev, c, params, &input, dropout_seed, nl, true)?;
    // MLM head at the masked rows only.
    let rows: Vec<i64> = (0..t)
        .filter(|&i| x.mlm_labels[i] != -100)
        .map(|i| i as i64)
        .collect();
    let targets: Vec<i64> = rows.iter().map(|&i| x.mlm_labels[i as usize]).collect();
    if let Some((i, &bad)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t < 0 || t as usize >= v)
    {
        return Err(BertError::Input(format!(
            "MLM label {bad} at position {} is outside 0..{v}",
            rows[i]
        )));
    }
    let mut dx = dev.zeros(t * h)?;
    let n = rows.len();
    let mlm_loss = if n > 0 {
        let rows_d = dev.upload_ids(&rows)?;
        let targets_d = dev.upload_ids(&targets)?;
        let MlmHead {
            hm,
            t1,
            t3,
            lnm,
            logits,
        } = mlm_head(dev, c, params, &enc.out, &rows_d, n)?;
        let (loss, dlogits) = dev.cross_entropy(logits, &targets_d, n, v, scale)?;
        // backward of the MLM head
        {
            let (g0, rest) = grads.split_at_mut(1);
            dev.linear_dw(
                &dlogits,
                &t3,
                n,
                h,
                v,
                &mut *g0[0],
                Some(&mut *rest[hx.mlm_bias - 1]),
            )?;
        }
        let dt3 = dev.linear_dx(&dlogits, params[WORD], n, h, v)?;
        drop(dlogits);
        let (gg, gb) = pair_mut(grads, hx.mlm_ln_g, hx.mlm_ln_b);
        let dt2 = dev.layernorm_bwd(&lnm, &dt3, params[hx.mlm_ln_g], h, gg, gb)?;
        let dt1 = dev.gelu_bwd(&t1, &dt2, act)?;
        let (gw, gb) = pair_mut(grads, hx.mlm_w, hx.mlm_b);
        dev.linear_dw(&dt1, &hm, n, h, h, gw, Some(&mut **gb))?;
        let dhm = dev.linear_dx(&dt1, params[hx.mlm_w], n, h, h)?;
        dev.scatter_add_rows(&dhm, &rows_d, h, &mut dx)?;
        Some(loss)
    } else {
        None
    };

    // NSP head on the first token of each sequence.
    if let Some((i, &bad)) = x
        .nsp_labels
        .iter()
        .enumerate()
        .find(|(_, &l)| !(0..2).contains(&l))
    {
        return Err(BertError::Input(format!(
            "NSP label {bad} of sequence {i} is not 0 or 1"
        )));
    }
    let first_rows = x.first_tokens();
    let first_d = dev.upload_ids(&first_rows)?;
    let nsp_t = dev.upload_ids(&x.nsp_labels)?;
    let NspHead {
        first,
        pooled,
        logits: nl_logits,
    } = nsp_head(dev, c, params, &enc.out, &first_d, b)?;
    let (nsp_loss, dnl) = dev.cross_entropy(nl_logits, &nsp_t, b, 2, scale)?;
    let (gw, gb) = pair_mut(grads, hx.nsp_w, hx.nsp_b);
    dev.linear_dw(&dnl, &pooled, b, h, 2, gw, Some(&mut **gb))?;
    let dpooled = dev.linear_dx(&dnl, params[hx.nsp_w], b, h, 2)?;
    let dpl = dev.tanh_bwd(&pooled, &dpooled)?;
    let (gw, gb) = pair_mut(grads, hx.pool_w, hx.pool_b);
    dev.linear_dw(&dpl, &first, b, h, h, gw, Some(&mut **gb))?;
    let dfirst = dev.linear_dx(&dpl, params[hx.pool_w], b, h, h)?;
    dev.scatter_add_rows(&dfirst, &first_d, h, &mut dx)?;

    encoder_backward(dev, c, params, grads, enc, dx, &input, dropout_seed)?;
    Ok(StepLosses {
        mlm: mlm_loss,
        nsp: nsp_loss,
    })
}

/// One batch's evaluation on a device (no dropout): the mean losses, the masked-LM head's
/// prediction at each masked position (in token order) beside its target, and the NSP
/// predictions. Only these cross to the host (the logits' arg-max is taken on the device).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalBatch {
    /// None when the batch has no masked position.
    pub mlm_loss: Option<f32>,
    pub nsp_loss: f32,
    pub mlm_pred: Vec<i64>,
    pub mlm_targets: Vec<i64>,
    pub nsp_pred: Vec<i64>,
}

/// The pretraining heads' forward on one batch, for evaluation (see [`EvalBatch`]).
pub fn evaluate_batch<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    x: &StepBatch,
) -> Result<EvalBatch> {
    let t = if x.packed {
        x.lens.iter().sum()
    } else {
        x.batch * x.seq
    };
    if x.mlm_labels.len() != t || x.nsp_labels.len() != x.batch {
        return Err(BertError::Input(format!(
            "{} MLM labels and {} NSP labels for a batch of {} sequences, {t} tokens",
            x.mlm_labels.len(),
            x.nsp_labels.len(),
            x.batch
        )));
    }
    let v = c.vocab_size;
    let enc = encoder_forward(
        dev,
        c,
        params,
        &EncoderInput {
            batch: x.batch,
            seq: x.seq,
            input_ids: &x.input_ids,
            token_type_ids: &x.token_type_ids,
            lens: &x.lens,
            packed: x.packed,
        },
        None,
        c.num_hidden_layers,
        false,
    )?;
    let rows: Vec<i64> = (0..t)
        .filter(|&i| x.mlm_labels[i] != -100)
        .map(|i| i as i64)
        .collect();
    let targets: Vec<i64> = rows.iter().map(|&i| x.mlm_labels[i as usize]).collect();
    if let Some(&bad) = targets.iter().find(|&&t| t < 0 || t as usize >= v) {
        return Err(BertError::Input(format!(
            "MLM label {bad} is outside 0..{v}"
        )));
    }
    let n = rows.len();
    let (mlm_loss, mlm_pred) = if n > 0 {
        let rows_d = dev.upload_ids(&rows)?;
        let logits = mlm_head(dev, c, params, &enc.out, &rows_d, n)?.logits;
        // The arg-max first: the cross-entropy writes its gradient over the logits.
        let pred = dev.argmax_rows(&logits, n, v)?;
        let (loss, _) = dev.cross_entropy(logits, &dev.upload_ids(&targets)?, n, v, 1.0)?;
        (Some(read_scalar(dev, &loss)?), pred)
    } else {
        (None, Vec::new())
    };
    if let Some(&bad) = x.nsp_labels.iter().find(|&&l| !(0..2).contains(&l)) {
        return Err(BertError::Input(format!("NSP label {bad} is not 0 or 1")));
    }
    let first_d = dev.upload_ids(&x.first_tokens())?;
    let logits = nsp_head(dev, c, params, &enc.out, &first_d, x.batch)?.logits;
    let nsp_pred = dev.argmax_rows(&logits, x.batch, 2)?;
    let (loss, _) = dev.cross_entropy(logits, &dev.upload_ids(&x.nsp_labels)?, x.batch, 2, 1.0)?;
    Ok(EvalBatch {
        mlm_loss,
        nsp_loss: read_scalar(dev, &loss)?,
        mlm_pred,
        mlm_targets: targets,
        nsp_pred,
    })
}
