//! Where each tensor sits in the step's parameter list, and the conversions from and to HF's
//! names.

use super::*;

/// Where each tensor sits in the step's parameter list, by name (llm.c's `ParameterTensors`,
/// as indices into one list of buffers, so that gradients and moments share them): first the
/// embedding tables and their LayerNorm, then [`LayerIx::COUNT`] per encoder layer, then the
/// pretraining heads ([`HeadIx`]).
pub(super) const WORD: usize = 0;
pub(super) const POS: usize = 1;
pub(super) const TYPE: usize = 2;
pub(super) const EMB_LN_G: usize = 3;
pub(super) const EMB_LN_B: usize = 4;
/// Parameters before the first layer.
pub(super) const EMB: usize = 5;
/// Parameters per encoder layer.
pub(super) const PER_LAYER: usize = LayerIx::COUNT;
/// Parameters after the last layer.
pub(super) const HEADS: usize = HeadIx::COUNT;

/// One encoder layer's tensors: the fused query/key/value projection, the attention output, its
/// LayerNorm, the feed-forward pair and the output LayerNorm (post-LN, as HF's BERT).
#[derive(Clone, Copy, Debug)]
pub(super) struct LayerIx {
    pub(super) qkv_w: usize,
    pub(super) qkv_b: usize,
    pub(super) ao_w: usize,
    pub(super) ao_b: usize,
    pub(super) ln1_g: usize,
    pub(super) ln1_b: usize,
    pub(super) i_w: usize,
    pub(super) i_b: usize,
    pub(super) o_w: usize,
    pub(super) o_b: usize,
    pub(super) ln2_g: usize,
    pub(super) ln2_b: usize,
}

impl LayerIx {
    pub(super) const COUNT: usize = 12;
    /// Layer `l`'s indices.
    pub(super) fn of(l: usize) -> Self {
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
pub(super) struct HeadIx {
    pub(super) pool_w: usize,
    pub(super) pool_b: usize,
    pub(super) mlm_w: usize,
    pub(super) mlm_b: usize,
    pub(super) mlm_ln_g: usize,
    pub(super) mlm_ln_b: usize,
    pub(super) mlm_bias: usize,
    pub(super) nsp_w: usize,
    pub(super) nsp_b: usize,
}

impl HeadIx {
    pub(super) const COUNT: usize = 9;
    /// The heads' indices in a model of `layers` layers.
    pub(super) fn of(layers: usize) -> Self {
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

/// Step-ordered host values for the layout `lay` from HF-named tensors (see [`from_named`]).
pub fn values_for(
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
    named_in(&layout(c), values)
}

/// [`to_named`] for any step layout (the pretraining one, or a fine-tuning head's).
pub fn named_in(
    lay: &[(String, Vec<usize>)],
    values: &[Vec<f32>],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for ((name, shape), v) in lay.iter().zip(values) {
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
            out.push((name.clone(), shape.clone(), v.clone()));
        }
    }
    out
}

/// Two distinct elements of a slice, mutably (i < j).
pub(super) fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert!(i < j, "pair_mut: indices must be increasing");
    let (a, b) = v.split_at_mut(j);
    (&mut a[i], &mut b[0])
}
