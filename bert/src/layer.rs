//! One BERT encoder layer, as HuggingFace's `BertLayer` computes it (modeling_bert.py:
//! BertSelfAttention, BertSelfOutput, BertIntermediate, BertOutput), on the autograd tape.
//!
//! ```text
//! x (B,S,H), mask additive (B,1,1,S) or None
//! q,k,v = x W^T + b                     each (B,S,H) -> heads (B,nh,S,hd)
//! ctx   = softmax(q k^T / sqrt(hd) + mask) v    fused attention op
//! a     = LayerNorm(ctx Wo^T + bo + x)           "attention.output"
//! h     = gelu(a Wi^T + bi)                      "intermediate", (B,S,I)
//! y     = LayerNorm(h Wo2^T + bo2 + a)           "output"
//! ```
//! Weights are stored as HF stores them, Linear weights (out, in), and used through a
//! transposed view (no copy: the GEMM packs the strides). Parameter names are HF's.

use crate::config::Activation;
use engine::{PackedLinear, ParamStore, Result, Tensor, Var};
use std::cell::RefCell;

/// Shape of one encoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerConfig {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layer_norm_eps: f32,
    pub act: Activation,
    /// Dropout on the two residual branches (training only): `hidden_dropout_prob`.
    pub dropout: f32,
    /// Dropout on the attention probabilities (training only): `attention_probs_dropout_prob`.
    pub attention_dropout: f32,
}

/// The layer's parameters, by HF name under a prefix (e.g. `encoder.layer.0.`).
pub struct EncoderLayer {
    pub config: LayerConfig,
    q: (Var, Var),
    k: (Var, Var),
    v: (Var, Var),
    attn_out: (Var, Var),
    attn_ln: (Var, Var),
    inter: (Var, Var),
    out: (Var, Var),
    out_ln: (Var, Var),
    /// Prepacked weights for inference, built on first use and rebuilt when a parameter's
    /// value is replaced (an optimizer step).
    packed: RefCell<Option<Packed>>,
    /// Inference GEMM precision: F32, or Bf16 (operands rounded to bf16, f32 sums).
    pub precision: std::cell::Cell<engine::Precision>,
}

/// The layer's Linear weights packed for inference (query, key and value stacked into one).
struct Packed {
    /// The parameter values they were packed from (to notice updates).
    sources: Vec<Tensor>,
    qkv: PackedLinear,
    attn_out: PackedLinear,
    inter: PackedLinear,
    out: PackedLinear,
}

/// HF names of a layer's parameters, relative to the layer prefix, with their shapes.
pub fn param_shapes(c: &LayerConfig) -> Vec<(&'static str, Vec<usize>)> {
    let (h, i) = (c.hidden, c.intermediate);
    vec![
        ("attention.self.query.weight", vec![h, h]),
        ("attention.self.query.bias", vec![h]),
        ("attention.self.key.weight", vec![h, h]),
        ("attention.self.key.bias", vec![h]),
        ("attention.self.value.weight", vec![h, h]),
        ("attention.self.value.bias", vec![h]),
        ("attention.output.dense.weight", vec![h, h]),
        ("attention.output.dense.bias", vec![h]),
        ("attention.output.LayerNorm.weight", vec![h]),
        ("attention.output.LayerNorm.bias", vec![h]),
        ("intermediate.dense.weight", vec![i, h]),
        ("intermediate.dense.bias", vec![i]),
        ("output.dense.weight", vec![h, i]),
        ("output.dense.bias", vec![h]),
        ("output.LayerNorm.weight", vec![h]),
        ("output.LayerNorm.bias", vec![h]),
    ]
}

impl EncoderLayer {
    /// Registers the layer's parameters in `store` under `prefix`, initialised as BERT does:
    /// weights N(0, 0.02), biases 0, LayerNorm weight 1 and bias 0; `seed` makes it reproducible.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        config: LayerConfig,
        seed: u64,
    ) -> Result<Self> {
        let mut made = Vec::new();
        for (k, (name, shape)) in param_shapes(&config).into_iter().enumerate() {
            let t = if name.contains("LayerNorm.weight") {
                Tensor::ones(&shape)
            } else if name.ends_with("bias") {
                Tensor::zeros(&shape)
            } else {
                Tensor::randn(
                    &shape,
                    0.0,
                    0.02,
                    seed.wrapping_mul(1000).wrapping_add(k as u64),
                )
            };
            made.push(store.insert(&format!("{prefix}{name}"), t)?);
        }
        Self::from_vars(config, made)
    }

    /// Builds the layer over existing parameters of `store` named `prefix` + HF name.
    pub fn from_store(store: &ParamStore, prefix: &str, config: LayerConfig) -> Result<Self> {
        let mut vars = Vec::new();
        for (name, shape) in param_shapes(&config) {
            let full = format!("{prefix}{name}");
            let v = store.get(&full).ok_or_else(|| engine::Error::Arg {
                op: "EncoderLayer",
                shape: shape.clone(),
                why: format!("missing parameter '{full}'"),
            })?;
            if v.shape() != shape {
                return Err(engine::Error::Shape {
                    op: "EncoderLayer",
                    lhs: v.shape(),
                    rhs: shape,
                    why: format!("parameter '{full}' has the wrong shape"),
                });
            }
            vars.push(v.clone());
        }
        Self::from_vars(config, vars)
    }

    fn from_vars(config: LayerConfig, v: Vec<Var>) -> Result<Self> {
        if config.heads == 0 || !config.hidden.is_multiple_of(config.heads) {
            return Err(engine::Error::Arg {
                op: "EncoderLayer",
                shape: vec![config.hidden, config.heads],
                why: "hidden size must be a multiple of the head count".into(),
            });
        }
        let p = |i: usize| (v[2 * i].clone(), v[2 * i + 1].clone());
        Ok(EncoderLayer {
            q: p(0),
            k: p(1),
            v: p(2),
            attn_out: p(3),
            attn_ln: p(4),
            inter: p(5),
            out: p(6),
            out_ln: p(7),
            config,
            packed: RefCell::new(None),
            precision: std::cell::Cell::new(engine::Precision::F32),
        })
    }

    /// The layer on x (B,S,H). `mask` is additive, broadcastable to (B,nh,S,S). With
    /// `dropout_seed` Some, dropout is applied (training) with masks derived from that seed.
    pub fn forward(
        &self,
        x: &Var,
        mask: Option<&Tensor>,
        dropout_seed: Option<u64>,
    ) -> Result<Var> {
        Ok(self.forward_ext(x, mask, dropout_seed, false)?.0)
    }

    fn all_params(&self) -> [&(Var, Var); 8] {
        [
            &self.q,
            &self.k,
            &self.v,
            &self.attn_out,
            &self.attn_ln,
            &self.inter,
            &self.out,
            &self.out_ln,
        ]
    }

    /// Runs `f` with the packed weights, (re)packing them if a parameter changed since.
    fn with_packed<T>(&self, f: impl FnOnce(&Packed) -> Result<T>) -> Result<T> {
        let now: Vec<Tensor> = self
            .all_params()
            .iter()
            .flat_map(|(w, b)| [w.value(), b.value()])
            .collect();
        let prec = self.precision.get();
        let fresh = self.packed.borrow().as_ref().is_some_and(|p| {
            p.qkv.precision() == prec
                && p.sources.iter().zip(&now).all(|(a, b)| {
                    a.shares_storage(b) && a.offset() == b.offset() && a.shape() == b.shape()
                })
        });
        if !fresh {
            let v = |i: usize| &now[i];
            let lin = |w: &[&Tensor], b: &[&Tensor]| PackedLinear::new_with(w, b, prec);
            *self.packed.borrow_mut() = Some(Packed {
                qkv: lin(&[v(0), v(2), v(4)], &[v(1), v(3), v(5)])?,
                attn_out: lin(&[v(6)], &[v(7)])?,
                inter: lin(&[v(10)], &[v(11)])?,
                out: lin(&[v(12)], &[v(13)])?,
                sources: now,
            });
        }
        f(self.packed.borrow().as_ref().unwrap())
    }

    /// Inference (nothing recorded, no dropout): prepacked weights, query/key/value as one
    /// GEMM, bias and residual written as the GEMMs' initial C, GELU applied in place, and the
    /// fused attention kernel. The same arithmetic as the training path up to rounding. With
    /// [`EncoderLayer::precision`] at bf16 the four Linear GEMMs take bf16 operands (weights
    /// rounded once, when packed; f32 sums); attention, LayerNorm and GELU stay in f32.
    fn forward_inference(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let c = &self.config;
        let s = x.shape();
        let (b, sl, h) = (s[0], s[1], s[2]);
        let (nh, hd) = (c.heads, c.hidden / c.heads);
        let act = match c.act {
            Activation::Gelu(g) => Some(g),
            Activation::Relu => None,
        };
        let prec = self.precision.get();
        self.with_packed(|p| {
            // (B,S,3H) -> (3,B,nh,S,hd) views, no copies.
            let qkv = p
                .qkv
                .forward(x, None, None)?
                .reshape(&[b, sl, 3, nh, hd])?
                .permute(&[2, 0, 3, 1, 4])?;
            let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
            let scale = 1.0 / (hd as f32).sqrt();
            let ctx = engine::attention::attention_inference_with(&q, &k, &v, mask, scale, prec)?;
            let a = p.attn_out.forward(&ctx, Some(x), None)?.layernorm(
                &self.attn_ln.0.value(),
                &self.attn_ln.1.value(),
                c.layer_norm_eps,
            )?;
            let mut hmid = p.inter.forward(&a, None, act)?;
            if act.is_none() {
                hmid = hmid.map(engine::UnaryOp::Relu)?;
            }
            debug_assert_eq!(a.shape(), &[b, sl, h]);
            p.out.forward(&hmid, Some(&a), None)?.layernorm(
                &self.out_ln.0.value(),
                &self.out_ln.1.value(),
                c.layer_norm_eps,
            )
        })
    }

    /// [`EncoderLayer::forward`], also returning the attention probabilities (B,nh,S,S)
    /// when `want_probs` (recomputed outside the tape, for inspection only).
    pub fn forward_ext(
        &self,
        x: &Var,
        mask: Option<&Tensor>,
        dropout_seed: Option<u64>,
        want_probs: bool,
    ) -> Result<(Var, Option<Tensor>)> {
        if dropout_seed.is_none() && !want_probs && !engine::autograd::is_recording() {
            return Ok((
                Var::constant(self.forward_inference(&x.value(), mask)?),
                None,
            ));
        }
        let c = &self.config;
        let s = x.shape();
        let (b, sl) = (s[0], s[1]);
        let (nh, hd) = (c.heads, c.hidden / c.heads);
        let p = if dropout_seed.is_some() {
            c.dropout
        } else {
            0.0
        };
        let seed = dropout_seed.unwrap_or(0);
        let linear = |x: &Var, (w, bias): &(Var, Var)| -> Result<Var> { x.linear(w, Some(bias)) };
        let heads = |t: Var| -> Result<Var> { t.reshape(&[b, sl, nh, hd])?.permute(&[0, 2, 1, 3]) };
        let q = heads(linear(x, &self.q)?)?;
        let k = heads(linear(x, &self.k)?)?;
        let v = heads(linear(x, &self.v)?)?;
        let scale = 1.0 / (hd as f32).sqrt();
        let probs = if want_probs {
            let scores = q
                .value()
                .matmul_scaled(&k.value().t()?, scale, engine::Precision::F32)?;
            Some(scores.softmax(mask)?)
        } else {
            None
        };
        let pa = if dropout_seed.is_some() {
            c.attention_dropout
        } else {
            0.0
        };
        let ctx = Var::attention_merged(&q, &k, &v, mask, scale, pa, seed)?;
        let a = linear(&ctx, &self.attn_out)?
            .dropout(p, seed ^ 0x5151)?
            .add(x)?;
        let a = a.layernorm(&self.attn_ln.0, &self.attn_ln.1, c.layer_norm_eps)?;
        let hmid = linear(&a, &self.inter)?;
        let hmid = match c.act {
            Activation::Gelu(g) => hmid.gelu(g)?,
            Activation::Relu => hmid.relu()?,
        };
        let y = linear(&hmid, &self.out)?
            .dropout(p, seed ^ 0xA2A2)?
            .add(&a)?;
        Ok((
            y.layernorm(&self.out_ln.0, &self.out_ln.1, c.layer_norm_eps)?,
            probs,
        ))
    }
}
