//! The pretraining heads' forward: MLM at the gathered masked rows (transform, LayerNorm, the
//! tied decoder) and NSP on each sequence's first token (pooler, classifier).

use super::*;

/// The MLM head's forward at `n` gathered rows, with what its backward needs.
pub(super) struct MlmHead<D: Device> {
    /// The gathered hidden states (n, H).
    pub(super) hm: D::Buf,
    /// The transform's pre-activation (n, H).
    pub(super) t1: D::Buf,
    /// After GELU and LayerNorm (n, H): the decoder's input.
    pub(super) t3: D::Buf,
    pub(super) lnm: engine::device::LnSaved<D::Buf, D::Grad>,
    /// (n, V), over the tied word embeddings.
    pub(super) logits: D::Buf,
}

pub(super) fn mlm_head<D: Device>(
    dev: &D,
    c: &BertConfig,
    params: &[D::W<'_>],
    xcur: &D::Buf,
    rows_d: &D::Ids,
    n: usize,
) -> Result<MlmHead<D>> {
    let (h, v) = (c.hidden_size, c.vocab_size);
    let hx = HeadIx::of(c.num_hidden_layers);
    let act = gelu_kind(c)?;
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
pub(super) struct NspHead<D: Device> {
    /// The first tokens' hidden states (B, H).
    pub(super) first: D::Buf,
    /// tanh of the pooler's Linear (B, H).
    pub(super) pooled: D::Buf,
    /// (B, 2)
    pub(super) logits: D::Buf,
}

pub(super) fn nsp_head<D: Device>(
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
