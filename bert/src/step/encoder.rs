//! The encoder's forward: embeddings, then each layer (fused QKV, attention, the residual
//! LayerNorms, the feed-forward pair), keeping what the backward in `mod.rs` needs.

use super::*;

/// What one layer's forward keeps for its backward.
pub(super) struct LayerSaved<D: Device> {
    pub(super) x: D::Buf,
    pub(super) qkv: D::Buf,
    pub(super) ctx: D::Buf,
    pub(super) att: D::AttnSaved,
    pub(super) ln1: engine::device::LnSaved<D::Buf, D::Grad>,
    pub(super) a: D::Buf,
    pub(super) u: D::Buf,
    pub(super) m: D::Buf,
    pub(super) ln2: engine::device::LnSaved<D::Buf, D::Grad>,
}

/// The step's GELU (it takes no relu model; the tape does).
pub(super) fn gelu_kind(c: &BertConfig) -> Result<engine::gelu::Gelu> {
    match c.hidden_act {
        Activation::Gelu(g) => Ok(g),
        Activation::Relu => Err(BertError::Input(
            "the explicit step supports gelu activations, not relu".into(),
        )),
    }
}

/// (hidden dropout, attention dropout, seed): the config's with a seed, none without.
pub(super) fn dropout_of(c: &BertConfig, dropout_seed: Option<u64>) -> (f32, f32, u64) {
    match dropout_seed {
        Some(sd) => (c.hidden_dropout_prob, c.attention_probs_dropout_prob, sd),
        None => (0.0, 0.0, 0),
    }
}

/// The attention shape of a batch, and the 1 / sqrt(head size) scale.
pub(super) fn attn_dims(c: &BertConfig, x: &EncoderInput<'_>) -> (AttnDims, f32) {
    let (h, nh) = (c.hidden_size, c.num_attention_heads);
    let dims = AttnDims {
        batch: x.batch,
        seq: x.seq,
        heads: nh,
        head_dim: h / nh,
        lens: x.lens.to_vec(),
        packed: x.packed,
    };
    (dims, 1.0 / ((h / nh) as f32).sqrt())
}

/// Seed of layer `l`'s dropout masks, as `BertModel::forward` derives it.
pub(super) fn layer_seed(seed: u64, l: usize) -> u64 {
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
    pub(super) fn tokens(&self) -> usize {
        if self.packed {
            self.lens.iter().sum()
        } else {
            self.batch * self.seq
        }
    }

    /// (sequence, position) of token `t`.
    pub(super) fn place(&self, t: usize) -> (usize, usize) {
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
    pub(super) fn positions(&self) -> Vec<i64> {
        self.lens.iter().flat_map(|&l| 0..l as i64).collect()
    }

    /// Checks every id against the model's tables and the lengths against the batch; the error
    /// names the first bad entry (the device kernels index with them unchecked).
    pub(super) fn validate(&self, c: &BertConfig) -> Result<()> {
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
pub(super) struct Encoded<D: Device> {
    pub(super) ids: D::Ids,
    pub(super) types: D::Ids,
    pub(super) positions: Option<D::Ids>,
    pub(super) ln_e: engine::device::LnSaved<D::Buf, D::Grad>,
    /// The last layer's output (T,H).
    pub(super) out: D::Buf,
    /// Per layer, when kept.
    pub(super) saved: Vec<LayerSaved<D>>,
}

/// Embeddings then the first `layers` encoder layers (see the module comment), with dropout
/// when `dropout_seed` is Some; `keep` retains each layer's activations for the backward.
pub(super) fn encoder_forward<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    x: &EncoderInput<'_>,
    dropout_seed: Option<u64>,
    layers: usize,
    keep: bool,
) -> Result<Encoded<D>> {
    x.validate(c)?;
    let act = gelu_kind(c)?;
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
    let (p, pa, seed) = dropout_of(c, dropout_seed);
    let (dims, att_scale) = attn_dims(c, x);
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

/// Backward of [`encoder_forward`] (run with `keep`): from `dx`, the gradient of the loss with
/// respect to the last layer's output `(T, H)`, through every layer in reverse and the
/// embeddings, accumulating into `grads`. `x` and `dropout_seed` are the forward's.
pub(super) fn encoder_backward<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    grads: &mut [&mut D::Grad],
    enc: Encoded<D>,
    mut dx: D::Buf,
    x: &EncoderInput<'_>,
    dropout_seed: Option<u64>,
) -> Result<()> {
    let Encoded {
        ids,
        types,
        positions,
        ln_e,
        mut saved,
        ..
    } = enc;
    let act = gelu_kind(c)?;
    let (s, h, inter) = (x.seq, c.hidden_size, c.intermediate_size);
    let t = x.tokens();
    let (p, pa, seed) = dropout_of(c, dropout_seed);
    let (dims, att_scale) = attn_dims(c, x);
    for l in (0..saved.len()).rev() {
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
    // The embeddings.
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
        (c.pad_token_id < c.vocab_size).then_some(c.pad_token_id),
        g0[0],
        g1[0],
        rest[0],
    )
    .map_err(Into::into)
}
