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

use crate::config::{Activation, BertConfig};
use crate::{BertError, Result};
use engine::device::{AttnDims, Device};

/// Where each tensor sits in the step's parameter list, by name (llm.c's `ParameterTensors`,
/// as indices into one list of buffers, so that gradients and moments share them): first the
/// embedding tables and their LayerNorm, then [`LayerIx::COUNT`] per encoder layer, then the
/// pretraining heads ([`HeadIx`]).
const WORD: usize = 0;
const POS: usize = 1;
const TYPE: usize = 2;
const EMB_LN_G: usize = 3;
const EMB_LN_B: usize = 4;
/// Parameters before the first layer.
const EMB: usize = 5;
/// Parameters per encoder layer.
const PER_LAYER: usize = LayerIx::COUNT;
/// Parameters after the last layer.
const HEADS: usize = HeadIx::COUNT;

/// One encoder layer's tensors: the fused query/key/value projection, the attention output, its
/// LayerNorm, the feed-forward pair and the output LayerNorm (post-LN, as HF's BERT).
#[derive(Clone, Copy, Debug)]
struct LayerIx {
    qkv_w: usize,
    qkv_b: usize,
    ao_w: usize,
    ao_b: usize,
    ln1_g: usize,
    ln1_b: usize,
    i_w: usize,
    i_b: usize,
    o_w: usize,
    o_b: usize,
    ln2_g: usize,
    ln2_b: usize,
}

impl LayerIx {
    const COUNT: usize = 12;
    /// Layer `l`'s indices.
    fn of(l: usize) -> Self {
        let b = EMB + Self::COUNT * l;
        LayerIx {
            qkv_w: b,
            qkv_b: b + 1,
            ao_w: b + 2,
            ao_b: b + 3,
            ln1_g: b + 4,
            ln1_b: b + 5,
            i_w: b + 6,
            i_b: b + 7,
            o_w: b + 8,
            o_b: b + 9,
            ln2_g: b + 10,
            ln2_b: b + 11,
        }
    }
}

/// The pretraining heads' tensors, after the last layer: the pooler, the MLM transform (dense,
/// LayerNorm) and its output bias (the decoder is the word table, tied), the NSP classifier.
#[derive(Clone, Copy, Debug)]
struct HeadIx {
    pool_w: usize,
    pool_b: usize,
    mlm_w: usize,
    mlm_b: usize,
    mlm_ln_g: usize,
    mlm_ln_b: usize,
    mlm_bias: usize,
    nsp_w: usize,
    nsp_b: usize,
}

impl HeadIx {
    const COUNT: usize = 9;
    /// The heads' indices in a model of `layers` layers.
    fn of(layers: usize) -> Self {
        let b = EMB + PER_LAYER * layers;
        HeadIx {
            pool_w: b,
            pool_b: b + 1,
            mlm_w: b + 2,
            mlm_b: b + 3,
            mlm_ln_g: b + 4,
            mlm_ln_b: b + 5,
            mlm_bias: b + 6,
            nsp_w: b + 7,
            nsp_b: b + 8,
        }
    }
}

/// The step's parameters in order: (name, shape). HF's names and order (the model's
/// [`crate::model::encoder_param_shapes`], then the pretraining heads'), except that each layer's
/// query, key and value tensors are one stacked `attention.self.qkv.{weight,bias}`.
pub fn layout(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = encoder_layout(c);
    let with_pooler = crate::model::encoder_param_shapes(c, true);
    v.extend(with_pooler[with_pooler.len() - 2..].iter().cloned());
    v.extend(crate::heads::Task::PreTraining.head_param_shapes(c));
    v
}

/// The first part of [`layout`]: embeddings and encoder layers (what [`encode`] reads).
pub fn encoder_layout(c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let mut v = Vec::new();
    for (name, shape) in crate::model::encoder_param_shapes(c, false) {
        if name.contains(".attention.self.query.") {
            let mut stacked = shape;
            stacked[0] *= 3;
            v.push((name.replace(".query.", ".qkv."), stacked));
        } else if !name.contains(".attention.self.") {
            v.push((name, shape));
        }
    }
    v
}

/// Step-ordered host values from HF-named tensors (`get(name)` returns the values, row-major):
/// the query, key and value tensors are stacked. Errors name a missing or misshapen tensor.
pub fn from_named(c: &BertConfig, get: impl Fn(&str) -> Option<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    values_for(layout(c), get)
}

/// [`from_named`] for the encoder alone ([`encoder_layout`]): what inference needs, from any
/// BERT checkpoint (no pretraining heads required).
pub fn encoder_from_named(
    c: &BertConfig,
    get: impl Fn(&str) -> Option<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    values_for(encoder_layout(c), get)
}

fn values_for(
    lay: Vec<(String, Vec<usize>)>,
    get: impl Fn(&str) -> Option<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    let fetch = |name: &str, n: usize| -> Result<Vec<f32>> {
        let v =
            get(name).ok_or_else(|| BertError::Checkpoint(format!("missing tensor '{name}'")))?;
        if v.len() != n {
            return Err(BertError::Checkpoint(format!(
                "tensor '{name}' has {} values, the step expects {n}",
                v.len()
            )));
        }
        Ok(v)
    };
    let mut out = Vec::new();
    for (name, shape) in lay {
        let n: usize = shape.iter().product();
        if let Some(stem) = name
            .strip_suffix("qkv.weight")
            .or(name.strip_suffix("qkv.bias"))
        {
            let what = if name.ends_with("weight") {
                "weight"
            } else {
                "bias"
            };
            let mut v = Vec::with_capacity(n);
            for part in ["query", "key", "value"] {
                v.extend(fetch(&format!("{stem}{part}.{what}"), n / 3)?);
            }
            out.push(v);
        } else {
            out.push(fetch(&name, n)?);
        }
    }
    Ok(out)
}

/// HF-named (name, shape, values) from step-ordered values (the stacked QKV split back).
pub fn to_named(c: &BertConfig, values: &[Vec<f32>]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for ((name, shape), v) in layout(c).into_iter().zip(values) {
        if let Some(stem) = name
            .strip_suffix("qkv.weight")
            .or(name.strip_suffix("qkv.bias"))
        {
            let what = if name.ends_with("weight") {
                "weight"
            } else {
                "bias"
            };
            let third = v.len() / 3;
            let mut part_shape = shape.clone();
            part_shape[0] /= 3;
            for (k, part) in ["query", "key", "value"].iter().enumerate() {
                out.push((
                    format!("{stem}{part}.{what}"),
                    part_shape.clone(),
                    v[k * third..(k + 1) * third].to_vec(),
                ));
            }
        } else {
            out.push((name, shape, v.clone()));
        }
    }
    out
}

/// Each sequence's valid length from a batch's attention mask, which must be ones then zeros
/// (as tokenizer batches and pretraining shards give); the error names the sequence.
pub fn key_lengths(x: &crate::BertInput) -> Result<Vec<usize>> {
    (0..x.batch)
        .map(|b| {
            let m = &x.attention_mask[b * x.seq..(b + 1) * x.seq];
            let l = m.iter().take_while(|&&v| v == 1.0).count();
            if m[l..].iter().any(|&v| v != 0.0) {
                return Err(BertError::Input(format!(
                    "sequence {b}: the attention mask must be ones then zeros"
                )));
            }
            Ok(l)
        })
        .collect()
}

/// One batch of pretraining instances: padded (B x S tokens, sequence b valid for its first
/// `lens[b]`), or packed (the valid tokens only, back to back; `seq` the longest length).
#[derive(Clone, Debug)]
pub struct StepBatch {
    pub batch: usize,
    pub seq: usize,
    /// (tokens): B*S padded, the sum of `lens` packed.
    pub input_ids: Vec<i64>,
    /// (tokens)
    pub token_type_ids: Vec<i64>,
    /// Valid tokens per sequence (the attention mask is a prefix of ones).
    pub lens: Vec<usize>,
    /// (tokens): the original id at masked positions, -100 elsewhere.
    pub mlm_labels: Vec<i64>,
    /// (B): 0 = B follows A, 1 = random.
    pub nsp_labels: Vec<i64>,
    /// No padding tokens: no compute spent on them.
    pub packed: bool,
}

/// The valid tokens of a padded `(B, seq)` array, sequence after sequence (`lens[b]` of row b):
/// the packed layout.
pub(crate) fn pack_tokens(v: &[i64], lens: &[usize], seq: usize) -> Vec<i64> {
    lens.iter()
        .enumerate()
        .flat_map(|(b, &l)| v[b * seq..b * seq + l].iter().copied())
        .collect()
}

impl StepBatch {
    /// From a [`crate::BertInput`] (its mask must be a prefix of ones per sequence) and labels.
    pub fn new(x: &crate::BertInput, mlm_labels: &[i64], nsp_labels: &[i64]) -> Result<Self> {
        let lens = key_lengths(x)?;
        if mlm_labels.len() != x.batch * x.seq || nsp_labels.len() != x.batch {
            return Err(BertError::Input(format!(
                "{} MLM labels and {} NSP labels for a batch of {} x {}",
                mlm_labels.len(),
                nsp_labels.len(),
                x.batch,
                x.seq
            )));
        }
        Ok(StepBatch {
            batch: x.batch,
            seq: x.seq,
            input_ids: x.input_ids.clone(),
            token_type_ids: x.token_type_ids.clone(),
            lens,
            mlm_labels: mlm_labels.to_vec(),
            nsp_labels: nsp_labels.to_vec(),
            packed: false,
        })
    }

    /// The same instances with the padding removed: each sequence's valid tokens back to back,
    /// `seq` the longest length. Same losses and gradients as the padded batch (without
    /// dropout; with dropout the hidden-state masks follow the token index, so they differ).
    pub fn to_packed(&self) -> StepBatch {
        if self.packed {
            return self.clone();
        }
        let take = |v: &[i64]| pack_tokens(v, &self.lens, self.seq);
        StepBatch {
            batch: self.batch,
            seq: self.lens.iter().copied().max().unwrap_or(0),
            input_ids: take(&self.input_ids),
            token_type_ids: take(&self.token_type_ids),
            lens: self.lens.clone(),
            mlm_labels: take(&self.mlm_labels),
            nsp_labels: self.nsp_labels.clone(),
            packed: true,
        }
    }

    /// The first token of every sequence (the pooler's input).
    fn first_tokens(&self) -> Vec<i64> {
        let mut at = 0;
        self.lens
            .iter()
            .map(|&l| {
                let first = at as i64;
                at += if self.packed { l } else { self.seq };
                first
            })
            .collect()
    }
}

/// The step's losses, still on the device (one-element f32 buffers): reading them synchronises.
pub struct StepLosses<B> {
    pub mlm: Option<B>,
    pub nsp: B,
}

/// What one layer's forward keeps for its backward.
struct LayerSaved<D: Device> {
    x: D::Buf,
    qkv: D::Buf,
    ctx: D::Buf,
    att: D::AttnSaved,
    ln1: engine::device::LnSaved<D::Buf, D::Grad>,
    a: D::Buf,
    u: D::Buf,
    m: D::Buf,
    ln2: engine::device::LnSaved<D::Buf, D::Grad>,
}

/// Seed of layer `l`'s dropout masks, as `BertModel::forward` derives it.
fn layer_seed(seed: u64, l: usize) -> u64 {
    seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(l as u64 + 1))
}

/// A batch for the encoder alone: ids and type ids (B*S padded, or the valid tokens only when
/// `packed`), valid lengths (the mask is a prefix).
pub struct EncoderInput<'a> {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: &'a [i64],
    pub token_type_ids: &'a [i64],
    pub lens: &'a [usize],
    pub packed: bool,
}

impl EncoderInput<'_> {
    fn tokens(&self) -> usize {
        if self.packed {
            self.lens.iter().sum()
        } else {
            self.batch * self.seq
        }
    }

    /// (sequence, position) of token `t`.
    fn place(&self, t: usize) -> (usize, usize) {
        if !self.packed {
            return (t / self.seq.max(1), t % self.seq.max(1));
        }
        let mut at = 0;
        for (b, &l) in self.lens.iter().enumerate() {
            if t < at + l {
                return (b, t - at);
            }
            at += l;
        }
        (self.batch, 0)
    }

    /// Each token's position within its sequence (packed batches; padded ones use t % S).
    fn positions(&self) -> Vec<i64> {
        self.lens.iter().flat_map(|&l| 0..l as i64).collect()
    }

    /// Checks every id against the model's tables and the lengths against the batch; the error
    /// names the first bad entry (the device kernels index with them unchecked).
    fn validate(&self, c: &BertConfig) -> Result<()> {
        let n = self.tokens();
        if self.input_ids.len() != n
            || self.token_type_ids.len() != n
            || self.lens.len() != self.batch
        {
            return Err(BertError::Input(format!(
                "a batch of {} x {}{} needs {n} ids and type ids and {} lengths; got {}, {} and {}",
                self.batch,
                self.seq,
                if self.packed { " (packed)" } else { "" },
                self.batch,
                self.input_ids.len(),
                self.token_type_ids.len(),
                self.lens.len()
            )));
        }
        if self.seq > c.max_position_embeddings {
            return Err(BertError::Input(format!(
                "sequence length {} exceeds the model's {} positions",
                self.seq, c.max_position_embeddings
            )));
        }
        if let Some((b, &l)) = self.lens.iter().enumerate().find(|(_, &l)| l > self.seq) {
            return Err(BertError::Input(format!(
                "sequence {b} has length {l} > {}",
                self.seq
            )));
        }
        let bad = |what: &str, i: usize, v: i64, lim: usize| {
            let (b, p) = self.place(i);
            BertError::Input(format!(
                "{what} {v} at batch {b} position {p} is outside 0..{lim}"
            ))
        };
        if let Some((i, &t)) = self
            .input_ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t < 0 || t as usize >= c.vocab_size)
        {
            return Err(bad("token id", i, t, c.vocab_size));
        }
        if let Some((i, &t)) = self
            .token_type_ids
            .iter()
            .enumerate()
            .find(|(_, &t)| t < 0 || t as usize >= c.type_vocab_size)
        {
            return Err(bad("token type id", i, t, c.type_vocab_size));
        }
        Ok(())
    }
}

/// The encoder's forward and what its backward needs.
struct Encoded<D: Device> {
    ids: D::Ids,
    types: D::Ids,
    positions: Option<D::Ids>,
    ln_e: engine::device::LnSaved<D::Buf, D::Grad>,
    /// The last layer's output (T,H).
    out: D::Buf,
    /// Per layer, when kept.
    saved: Vec<LayerSaved<D>>,
}

/// Embeddings then the first `layers` encoder layers (see the module comment), with dropout
/// when `dropout_seed` is Some; `keep` retains each layer's activations for the backward.
#[allow(clippy::too_many_arguments)]
fn encoder_forward<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    x: &EncoderInput<'_>,
    dropout_seed: Option<u64>,
    layers: usize,
    keep: bool,
) -> Result<Encoded<D>> {
    x.validate(c)?;
    let act = match c.hidden_act {
        Activation::Gelu(g) => g,
        Activation::Relu => {
            return Err(BertError::Input(
                "the explicit step supports gelu activations, not relu".into(),
            ))
        }
    };
    if params.len() < EMB + PER_LAYER * layers || layers > c.num_hidden_layers {
        return Err(BertError::Input(format!(
            "{layers} layers need {} parameter buffers, got {}",
            EMB + PER_LAYER * layers,
            params.len()
        )));
    }
    let (s, h, inter) = (x.seq, c.hidden_size, c.intermediate_size);
    let t = x.tokens();
    let eps = c.layer_norm_eps;
    let (p, pa, seed) = match dropout_seed {
        Some(sd) => (c.hidden_dropout_prob, c.attention_probs_dropout_prob, sd),
        None => (0.0, 0.0, 0),
    };
    let nh = c.num_attention_heads;
    let dims = AttnDims {
        batch: x.batch,
        seq: s,
        heads: nh,
        head_dim: h / nh,
        lens: x.lens.to_vec(),
        packed: x.packed,
    };
    let att_scale = 1.0 / ((h / nh) as f32).sqrt();
    let ids = dev.upload_ids(x.input_ids)?;
    let types = dev.upload_ids(x.token_type_ids)?;
    let positions = if x.packed {
        Some(dev.upload_ids(&x.positions())?)
    } else {
        None
    };
    let e = dev.embed(
        &ids,
        &types,
        positions.as_ref(),
        params[WORD],
        params[POS],
        params[TYPE],
        s,
        h,
    )?;
    let (e_ln, ln_e) = dev.layernorm(
        &e,
        None,
        (0.0, 0),
        params[EMB_LN_G],
        params[EMB_LN_B],
        h,
        eps,
    )?;
    drop(e);
    let mut xcur = dev.dropout(&e_ln, p, seed ^ 0xE3B0)?;
    drop(e_ln);
    let mut saved: Vec<LayerSaved<D>> = Vec::with_capacity(if keep { layers } else { 0 });
    for l in 0..layers {
        let lx = LayerIx::of(l);
        let ls = layer_seed(seed, l);
        let qkv = dev.linear(&xcur, params[lx.qkv_w], Some(params[lx.qkv_b]), t, h, 3 * h)?;
        let (ctx, att) = dev.attention(&qkv, &dims, att_scale, (pa, ls))?;
        let ao = dev.linear(&ctx, params[lx.ao_w], Some(params[lx.ao_b]), t, h, h)?;
        let (a, ln1) = dev.layernorm(
            &ao,
            Some(&xcur),
            (p, ls ^ 0x5151),
            params[lx.ln1_g],
            params[lx.ln1_b],
            h,
            eps,
        )?;
        let u = dev.linear(&a, params[lx.i_w], Some(params[lx.i_b]), t, h, inter)?;
        let m = dev.gelu(&u, act)?;
        let o = dev.linear(&m, params[lx.o_w], Some(params[lx.o_b]), t, inter, h)?;
        let (y, ln2) = dev.layernorm(
            &o,
            Some(&a),
            (p, ls ^ 0xA2A2),
            params[lx.ln2_g],
            params[lx.ln2_b],
            h,
            eps,
        )?;
        let x_in = std::mem::replace(&mut xcur, y);
        if !keep {
            continue;
        }
        saved.push(LayerSaved {
            x: x_in,
            qkv,
            ctx,
            att,
            ln1,
            a,
            u,
            m,
            ln2,
        });
    }
    Ok(Encoded {
        ids,
        types,
        positions,
        ln_e,
        out: xcur,
        saved,
    })
}

/// The encoder's hidden states after `layers` layers (no dropout, nothing kept), `(B*S, H)`:
/// inference on any device. `params` holds at least the embedding and those layers' buffers
/// ([`encoder_from_named`]).
pub fn encode<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    x: &EncoderInput<'_>,
    layers: usize,
) -> Result<D::Buf> {
    Ok(encoder_forward(dev, c, params, x, None, layers, false)?.out)
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
    let act = match c.hidden_act {
        Activation::Gelu(g) => g,
        Activation::Relu => {
            return Err(BertError::Input(
                "the explicit step supports gelu activations, not relu".into(),
            ))
        }
    };
    let (b, s, h, inter, v) = (
        x.batch,
        x.seq,
        c.hidden_size,
        c.intermediate_size,
        c.vocab_size,
    );
    let t = if x.packed { x.lens.iter().sum() } else { b * s };
    if x.mlm_labels.len() != t {
        return Err(BertError::Input(format!(
            "{} MLM labels for a batch of {t} tokens",
            x.mlm_labels.len()
        )));
    }
    let (p, pa, seed) = match dropout_seed {
        Some(sd) => (c.hidden_dropout_prob, c.attention_probs_dropout_prob, sd),
        None => (0.0, 0.0, 0),
    };
    let nh = c.num_attention_heads;
    let dims = AttnDims {
        batch: b,
        seq: s,
        heads: nh,
        head_dim: h / nh,
        lens: x.lens.clone(),
        packed: x.packed,
    };
    let att_scale = 1.0 / ((h / nh) as f32).sqrt();
    let hx = HeadIx::of(nl);

    // ---- forward ----
    let enc = encoder_forward(
        dev,
        c,
        params,
        &EncoderInput {
            batch: b,
            seq: s,
            input_ids: &x.input_ids,
            token_type_ids: &x.token_type_ids,
            lens: &x.lens,
            packed: x.packed,
        },
        dropout_seed,
        nl,
        true,
    )?;
    let Encoded {
        ids,
        types,
        positions,
        ln_e,
        out: xcur,
        mut saved,
    } = enc;

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
        } = mlm_head(dev, c, params, &xcur, &rows_d, n)?;
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
    } = nsp_head(dev, c, params, &xcur, &first_d, b)?;
    let (nsp_loss, dnl) = dev.cross_entropy(nl_logits, &nsp_t, b, 2, scale)?;
    let (gw, gb) = pair_mut(grads, hx.nsp_w, hx.nsp_b);
    dev.linear_dw(&dnl, &pooled, b, h, 2, gw, Some(&mut **gb))?;
    let dpooled = dev.linear_dx(&dnl, params[hx.nsp_w], b, h, 2)?;
    let dpl = dev.tanh_bwd(&pooled, &dpooled)?;
    let (gw, gb) = pair_mut(grads, hx.pool_w, hx.pool_b);
    dev.linear_dw(&dpl, &first, b, h, h, gw, Some(&mut **gb))?;
    let dfirst = dev.linear_dx(&dpl, params[hx.pool_w], b, h, h)?;
    dev.scatter_add_rows(&dfirst, &first_d, h, &mut dx)?;

    // ---- backward through the layers ----
    for l in (0..nl).rev() {
        let lx = LayerIx::of(l);
        let ls = layer_seed(seed, l);
        let sv = saved.pop().expect("one saved state per layer");
        let (gg, gb) = pair_mut(grads, lx.ln2_g, lx.ln2_b);
        let dh2 = dev.layernorm_bwd(&sv.ln2, &dx, params[lx.ln2_g], h, gg, gb)?;
        let do_ = dev.dropout(&dh2, p, ls ^ 0xA2A2)?;
        let mut da = dh2;
        let (gw, gb) = pair_mut(grads, lx.o_w, lx.o_b);
        dev.linear_dw(&do_, &sv.m, t, inter, h, gw, Some(&mut **gb))?;
        let dm = dev.linear_dx(&do_, params[lx.o_w], t, inter, h)?;
        drop(do_);
        let du = dev.gelu_bwd(&sv.u, &dm, act)?;
        drop(dm);
        let (gw, gb) = pair_mut(grads, lx.i_w, lx.i_b);
        dev.linear_dw(&du, &sv.a, t, h, inter, gw, Some(&mut **gb))?;
        let da2 = dev.linear_dx(&du, params[lx.i_w], t, h, inter)?;
        drop(du);
        dev.add_into(&mut da, &da2)?;
        let (gg, gb) = pair_mut(grads, lx.ln1_g, lx.ln1_b);
        let dh1 = dev.layernorm_bwd(&sv.ln1, &da, params[lx.ln1_g], h, gg, gb)?;
        let dao = dev.dropout(&dh1, p, ls ^ 0x5151)?;
        let mut dxin = dh1;
        let (gw, gb) = pair_mut(grads, lx.ao_w, lx.ao_b);
        dev.linear_dw(&dao, &sv.ctx, t, h, h, gw, Some(&mut **gb))?;
        let dctx = dev.linear_dx(&dao, params[lx.ao_w], t, h, h)?;
        drop(dao);
        let dqkv =
            dev.attention_bwd(&sv.qkv, &sv.ctx, &sv.att, &dctx, &dims, att_scale, (pa, ls))?;
        drop(dctx);
        let (gw, gb) = pair_mut(grads, lx.qkv_w, lx.qkv_b);
        dev.linear_dw(&dqkv, &sv.x, t, h, 3 * h, gw, Some(&mut **gb))?;
        let dx2 = dev.linear_dx(&dqkv, params[lx.qkv_w], t, h, 3 * h)?;
        dev.add_into(&mut dxin, &dx2)?;
        dx = dxin;
    }

    // ---- embeddings ----
    let de_ln = dev.dropout(&dx, p, seed ^ 0xE3B0)?;
    let (gg, gb) = pair_mut(grads, EMB_LN_G, EMB_LN_B);
    let de = dev.layernorm_bwd(&ln_e, &de_ln, params[EMB_LN_G], h, gg, gb)?;
    let (g0, rest) = grads.split_at_mut(1);
    let (g1, rest) = rest.split_at_mut(1);
    dev.embed_bwd(
        &ids,
        &types,
        positions.as_ref(),
        &de,
        s,
        h,
        g0[0],
        g1[0],
        rest[0],
    )?;
    Ok(StepLosses {
        mlm: mlm_loss,
        nsp: nsp_loss,
    })
}

/// The MLM head's forward at `n` gathered rows, with what its backward needs.
struct MlmHead<D: Device> {
    /// The gathered hidden states (n, H).
    hm: D::Buf,
    /// The transform's pre-activation (n, H).
    t1: D::Buf,
    /// After GELU and LayerNorm (n, H): the decoder's input.
    t3: D::Buf,
    lnm: engine::device::LnSaved<D::Buf, D::Grad>,
    /// (n, V), over the tied word embeddings.
    logits: D::Buf,
}

fn mlm_head<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    xcur: &D::Buf,
    rows_d: &D::Ids,
    n: usize,
) -> Result<MlmHead<D>> {
    let (h, v) = (c.hidden_size, c.vocab_size);
    let hx = HeadIx::of(c.num_hidden_layers);
    let act = match c.hidden_act {
        Activation::Gelu(g) => g,
        Activation::Relu => {
            return Err(BertError::Input(
                "the explicit step supports gelu activations, not relu".into(),
            ))
        }
    };
    let hm = dev.gather_rows(xcur, rows_d, h)?;
    let t1 = dev.linear(&hm, params[hx.mlm_w], Some(params[hx.mlm_b]), n, h, h)?;
    let t2 = dev.gelu(&t1, act)?;
    let (t3, lnm) = dev.layernorm(
        &t2,
        None,
        (0.0, 0),
        params[hx.mlm_ln_g],
        params[hx.mlm_ln_b],
        h,
        c.layer_norm_eps,
    )?;
    drop(t2);
    let logits = dev.linear(&t3, params[WORD], Some(params[hx.mlm_bias]), n, h, v)?;
    Ok(MlmHead {
        hm,
        t1,
        t3,
        lnm,
        logits,
    })
}

/// The pooler and NSP classifier on each sequence's first token.
struct NspHead<D: Device> {
    /// The first tokens' hidden states (B, H).
    first: D::Buf,
    /// tanh of the pooler's Linear (B, H).
    pooled: D::Buf,
    /// (B, 2)
    logits: D::Buf,
}

fn nsp_head<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    xcur: &D::Buf,
    first_d: &D::Ids,
    b: usize,
) -> Result<NspHead<D>> {
    let h = c.hidden_size;
    let hx = HeadIx::of(c.num_hidden_layers);
    let first = dev.gather_rows(xcur, first_d, h)?;
    let pl = dev.linear(&first, params[hx.pool_w], Some(params[hx.pool_b]), b, h, h)?;
    let pooled = dev.tanh(&pl)?;
    let logits = dev.linear(&pooled, params[hx.nsp_w], Some(params[hx.nsp_b]), b, h, 2)?;
    Ok(NspHead {
        first,
        pooled,
        logits,
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

/// Two distinct elements of a slice, mutably (i < j).
fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert!(i < j, "pair_mut: indices must be increasing");
    let (a, b) = v.split_at_mut(j);
    (&mut a[i], &mut b[0])
}

/// A model training with [`forward_backward`] and the device's AdamW: parameters, gradients and
/// moments stay on the device; the host sees the losses and the gradient norm when it asks.
pub struct StepTrainer<'d, D: Device> {
    pub dev: &'d D,
    pub config: BertConfig,
    pub opt: D::Optim,
    pub adam: engine::optim::AdamWConfig,
    /// Optimizer steps taken (the bias corrections' t).
    pub steps: u64,
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
        let lay = layout(config);
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
        let dev = self.dev;
        dev.optim_zero_grads(&mut self.opt)?;
        let mut losses = Vec::with_capacity(micro.len());
        let scale = 1.0 / micro.len().max(1) as f32;
        for (batch, seed) in micro {
            let (params, mut grads) = dev.optim_parts(&mut self.opt);
            losses.push(forward_backward(
                dev,
                &self.config,
                &params,
                &mut grads,
                batch,
                *seed,
                scale,
            )?);
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
        Ok(StepStats { losses, grad_norm })
    }

    /// [`evaluate_batch`] with the trainer's current parameters.
    pub fn evaluate(&mut self, x: &StepBatch) -> Result<EvalBatch> {
        let (params, _) = self.dev.optim_parts(&mut self.opt);
        evaluate_batch(self.dev, &self.config, &params, x)
    }

    /// Host copies, HF-named: the parameters and the (first, second) moments.
    #[allow(clippy::type_complexity)]
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
            to_named(&self.config, &p),
            to_named(&self.config, &m),
            to_named(&self.config, &v),
        ))
    }

    /// Sets the moments from HF-named host tensors (resuming a checkpoint).
    pub fn set_moments_named(
        &mut self,
        m: impl Fn(&str) -> Option<Vec<f32>>,
        v: impl Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<()> {
        let ms = from_named(&self.config, m)?;
        let vs = from_named(&self.config, v)?;
        Ok(self
            .dev
            .optim_set_moments(&mut self.opt, ms.into_iter().zip(vs).collect())?)
    }
}

/// Reads a one-element device buffer (a loss, a norm): this waits for the device.
pub fn read_scalar<D: Device>(dev: &D, x: &D::Grad) -> Result<f32> {
    Ok(dev.download_grad(x)?.first().copied().unwrap_or(f32::NAN))
}
