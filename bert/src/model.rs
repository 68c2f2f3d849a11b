//! The BERT encoder, HF `BertModel` (modeling_bert.py: BertEmbeddings, BertEncoder, BertPooler):
//!
//! ```text
//! ids, type_ids (B,S); mask (B,S) of 1 (token) / 0 (padding)
//! e = LayerNorm(word[ids] + pos[0..S] + type[type_ids]); dropout        (B,S,H)
//! h_0 = e; h_l = EncoderLayer_l(h_{l-1}, additive mask (1 - mask) * f32::MIN)
//! pooled = tanh(h_L[:, 0] Wp^T + bp)                                     (B,H)
//! ```
//! Parameters live in a [`ParamStore`] under HF's names with the `bert.` prefix that HF's task
//! models use (`bert.embeddings.word_embeddings.weight`, `bert.encoder.layer.0. ...`).

use crate::config::BertConfig;
use crate::layer::{param_shapes, EncoderLayer, LayerConfig};
use crate::{BertError, Result};
use engine::{ParamStore, Tensor, Var};

/// A padded batch of token ids, row-major (B,S).
#[derive(Clone, Debug, PartialEq)]
pub struct BertInput {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    /// Segment A = 0, B = 1.
    pub token_type_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<f32>,
}

impl BertInput {
    /// One batch of unpadded sequences: type ids 0, mask 1.
    pub fn new(input_ids: Vec<i64>, batch: usize, seq: usize) -> Result<Self> {
        if input_ids.len() != batch * seq {
            return Err(BertError::Input(format!(
                "{} ids do not fill a batch of {batch} x {seq}",
                input_ids.len()
            )));
        }
        Ok(BertInput {
            batch,
            seq,
            token_type_ids: vec![0; input_ids.len()],
            attention_mask: vec![1.0; input_ids.len()],
            input_ids,
        })
    }

    /// Tokenizer encodings padded to the longest (with `pad_id`; mask 0 there).
    pub fn from_encodings(encs: &[tokenizer::Encoding], pad_id: u32) -> Result<Self> {
        let seq = encs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let batch = encs.len();
        let mut x = BertInput {
            batch,
            seq,
            input_ids: vec![pad_id as i64; batch * seq],
            token_type_ids: vec![0; batch * seq],
            attention_mask: vec![0.0; batch * seq],
        };
        for (b, e) in encs.iter().enumerate() {
            for (j, &id) in e.ids.iter().enumerate() {
                let at = b * seq + j;
                x.input_ids[at] = id as i64;
                x.token_type_ids[at] = e.type_ids[j] as i64;
                x.attention_mask[at] = e.attention_mask[j] as f32;
            }
        }
        Ok(x)
    }

    /// Checks every field against the model's tables; the error names the first bad entry.
    pub fn validate(&self, c: &BertConfig) -> Result<()> {
        let n = self.batch * self.seq;
        if self.input_ids.len() != n
            || self.token_type_ids.len() != n
            || self.attention_mask.len() != n
        {
            return Err(BertError::Input(format!(
                "a batch of {} x {} needs {n} ids, type ids and mask entries; got {}, {} and {}",
                self.batch,
                self.seq,
                self.input_ids.len(),
                self.token_type_ids.len(),
                self.attention_mask.len()
            )));
        }
        if self.seq > c.max_position_embeddings {
            return Err(BertError::Input(format!(
                "sequence length {} exceeds the model's {} positions",
                self.seq, c.max_position_embeddings
            )));
        }
        let bad = |what: &str, i: usize, v: i64, lim: usize| {
            BertError::Input(format!(
                "{what} {v} at batch {} position {} is outside 0..{lim}",
                i / self.seq.max(1),
                i % self.seq.max(1)
            ))
        };
        for (i, &t) in self.input_ids.iter().enumerate() {
            if t < 0 || t as usize >= c.vocab_size {
                return Err(bad("token id", i, t, c.vocab_size));
            }
        }
        for (i, &t) in self.token_type_ids.iter().enumerate() {
            if t < 0 || t as usize >= c.type_vocab_size {
                return Err(bad("token type id", i, t, c.type_vocab_size));
            }
        }
        Ok(())
    }

    /// The additive attention mask (B,1,1,S): 0 for tokens, f32::MIN for padding (HF's
    /// `(1 - mask) * finfo.min`); None when nothing is padded.
    pub fn additive_mask(&self) -> Option<Tensor> {
        if self.attention_mask.iter().all(|&m| m == 1.0) {
            return None;
        }
        let v = self
            .attention_mask
            .iter()
            .map(|&m| (1.0 - m) * f32::MIN)
            .collect();
        Some(Tensor::from_vec(v, &[self.batch, 1, 1, self.seq]).expect("sizes agree"))
    }
}

/// What a forward pass returns.
pub struct BertOutput {
    /// (B,S,H)
    pub last_hidden: Var,
    /// (B,H), when the model has a pooler.
    pub pooled: Option<Var>,
    /// The embeddings output then every layer's output (L+1 of them), when asked for.
    pub hidden_states: Vec<Var>,
    /// Every layer's attention probabilities (B,nh,S,S), when asked for.
    pub attentions: Vec<Tensor>,
    /// The dropout seed of the pass (Some in training), for the heads' own dropout.
    pub dropout_seed: Option<u64>,
}

/// Forward-pass options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Forward {
    /// Some(seed): training, with dropout masks derived from the seed. None: evaluation.
    pub dropout_seed: Option<u64>,
    pub hidden_states: bool,
    pub attentions: bool,
}

/// The encoder: embeddings, layers, optional pooler.
pub struct BertModel {
    pub config: BertConfig,
    word: Var,
    pos: Var,
    typ: Var,
    emb_ln: (Var, Var),
    layers: Vec<EncoderLayer>,
    pooler: Option<(Var, Var)>,
}

/// HF names (under `bert.`) and shapes of the encoder's parameters.
pub fn encoder_param_shapes(c: &BertConfig, pooler: bool) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let mut v = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    let lc = layer_config(c);
    for l in 0..c.num_hidden_layers {
        for (name, shape) in param_shapes(&lc) {
            v.push((format!("encoder.layer.{l}.{name}"), shape));
        }
    }
    if pooler {
        v.push(("pooler.dense.weight".into(), vec![h, h]));
        v.push(("pooler.dense.bias".into(), vec![h]));
    }
    v.into_iter()
        .map(|(n, s)| (format!("bert.{n}"), s))
        .collect()
}

pub fn layer_config(c: &BertConfig) -> LayerConfig {
    LayerConfig {
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        intermediate: c.intermediate_size,
        layer_norm_eps: c.layer_norm_eps,
        act: c.hidden_act,
        dropout: c.hidden_dropout_prob,
        attention_dropout: c.attention_probs_dropout_prob,
    }
}

/// A parameter initialised as HF's `BertPreTrainedModel._init_weights` does: weights and
/// embeddings N(0, initializer_range) (the padding row of the word embeddings zeroed),
/// biases 0, LayerNorm weight 1.
pub fn init_param(c: &BertConfig, name: &str, shape: &[usize], seed: u64) -> Tensor {
    if name.contains("LayerNorm.weight") {
        return Tensor::ones(shape);
    }
    if name.ends_with("bias") {
        return Tensor::zeros(shape);
    }
    // A per-name seed: adding a head does not change the encoder's initial weights.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let t = Tensor::randn(shape, 0.0, c.initializer_range, seed ^ h);
    if name.ends_with("word_embeddings.weight") && c.pad_token_id < shape[0] {
        let mut v = t.to_vec();
        v[c.pad_token_id * shape[1]..(c.pad_token_id + 1) * shape[1]].fill(0.0);
        return Tensor::from_vec(v, shape).expect("sizes agree");
    }
    t
}

/// The Var named `name` in `store`, checked against `shape`.
pub fn get_param(store: &ParamStore, name: &str, shape: &[usize]) -> Result<Var> {
    let v = store.get(name).ok_or_else(|| {
        BertError::Checkpoint(format!("missing tensor '{name}' (shape {shape:?})"))
    })?;
    if v.shape() != shape {
        return Err(BertError::Checkpoint(format!(
            "tensor '{name}' has shape {:?}, the model expects {shape:?}",
            v.shape()
        )));
    }
    Ok(v.clone())
}

impl BertModel {
    /// Adds freshly initialised encoder parameters to `store`, then builds over them.
    pub fn init(
        store: &mut ParamStore,
        config: &BertConfig,
        pooler: bool,
        seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        for (name, shape) in encoder_param_shapes(config, pooler) {
            store.insert(&name, init_param(config, &name, &shape, seed))?;
        }
        Self::from_store(store, config, pooler)
    }

    /// Builds over the encoder parameters already in `store` (names under `bert.`).
    pub fn from_store(store: &ParamStore, config: &BertConfig, pooler: bool) -> Result<Self> {
        config.validate()?;
        let shapes = encoder_param_shapes(config, pooler);
        let get = |i: usize| get_param(store, &shapes[i].0, &shapes[i].1);
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            for (name, shape) in param_shapes(&layer_config(config)) {
                get_param(store, &format!("bert.encoder.layer.{l}.{name}"), &shape)?;
            }
            layers.push(EncoderLayer::from_store(
                store,
                &format!("bert.encoder.layer.{l}."),
                layer_config(config),
            )?);
        }
        let n = shapes.len();
        Ok(BertModel {
            config: config.clone(),
            word: get(0)?,
            pos: get(1)?,
            typ: get(2)?,
            emb_ln: (get(3)?, get(4)?),
            layers,
            pooler: if pooler {
                Some((get(n - 2)?, get(n - 1)?))
            } else {
                None
            },
        })
    }

    /// The GEMM precision of inference (no_grad) passes: `Bf16` rounds activations and weights
    /// to bf16 and sums in f32. Training is always f32.
    pub fn set_inference_precision(&self, p: engine::Precision) {
        for l in &self.layers {
            l.precision.set(p);
        }
    }

    /// The word-embedding table (V,H), which the MLM decoder shares.
    pub fn word_embeddings(&self) -> &Var {
        &self.word
    }

    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The encoder on a batch.
    pub fn forward(&self, x: &BertInput, opt: Forward) -> Result<BertOutput> {
        let c = &self.config;
        x.validate(c)?;
        let (b, s, h) = (x.batch, x.seq, c.hidden_size);
        let p = if opt.dropout_seed.is_some() {
            c.hidden_dropout_prob
        } else {
            0.0
        };
        let seed = opt.dropout_seed.unwrap_or(0);
        // HF's word embeddings have `padding_idx`: the pad token's row gets no gradient.
        let pad = (c.pad_token_id < c.vocab_size).then_some(c.pad_token_id);
        let words = self.word.embedding_padded(&x.input_ids, &[b, s], pad)?;
        let types = self.typ.embedding(&x.token_type_ids, &[b, s])?;
        let pos = self.pos.narrow(0, 0, s)?;
        let e = words.add(&types)?.add(&pos)?;
        let mut hcur = e
            .layernorm(&self.emb_ln.0, &self.emb_ln.1, c.layer_norm_eps)?
            .dropout(p, seed ^ 0xE3B0)?;
        let mask = x.additive_mask();
        let mut hidden_states = Vec::new();
        let mut attentions = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            if opt.hidden_states {
                hidden_states.push(hcur.clone());
            }
            let lseed = opt
                .dropout_seed
                .map(|s| s.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(l as u64 + 1)));
            let (y, probs) = layer.forward_ext(&hcur, mask.as_ref(), lseed, opt.attentions)?;
            attentions.extend(probs);
            hcur = y;
        }
        if opt.hidden_states {
            hidden_states.push(hcur.clone());
        }
        let pooled = match &self.pooler {
            Some((w, bias)) => {
                let first = hcur.narrow(1, 0, 1)?.reshape(&[b, h])?;
                Some(first.linear(w, Some(bias))?.tanh()?)
            }
            None => None,
        };
        Ok(BertOutput {
            last_hidden: hcur,
            pooled,
            hidden_states,
            attentions,
            dropout_seed: opt.dropout_seed,
        })
    }
}
