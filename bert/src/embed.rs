//! Sentence embeddings from a BERT: pooling over token vectors (as sentence-transformers'
//! `Pooling` module does) and cosine similarity.

use crate::heads::Bert;
use crate::model::{BertInput, Forward};
use crate::{BertError, Result};

/// How token vectors become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the last layer's token vectors, padding excluded.
    Mean,
    /// The last layer's `[CLS]` vector.
    Cls,
    /// Mean of the second-to-last layer's token vectors, padding excluded.
    SecondToLast,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "second-to-last" => Pooling::SecondToLast,
            _ => return None,
        })
    }
}

/// Mean over positions with mask 1 of `hidden` (B,S,H) row-major: (B,H), in f64 sums.
pub fn masked_mean(hidden: &[f32], mask: &[f32], b: usize, s: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; b * h];
    for i in 0..b {
        let mut acc = vec![0.0f64; h];
        let mut count = 0.0f64;
        for j in 0..s {
            let m = mask[i * s + j] as f64;
            if m == 0.0 {
                continue;
            }
            count += m;
            let row = &hidden[(i * s + j) * h..(i * s + j + 1) * h];
            acc.iter_mut()
                .zip(row)
                .for_each(|(a, &x)| *a += m * x as f64);
        }
        // sentence-transformers clamps the count at 1e-9.
        let count = count.max(1e-9);
        for (o, a) in out[i * h..(i + 1) * h].iter_mut().zip(&acc) {
            *o = (a / count) as f32;
        }
    }
    out
}

/// Scales each row of (n, h) to unit Euclidean norm (rows of zeros stay zero).
pub fn normalize_rows(v: &mut [f32], h: usize) {
    for row in v.chunks_mut(h) {
        let n = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
        }
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// One embedding (B rows of H) per sequence of the batch.
pub fn embed_batch(
    model: &Bert,
    x: &BertInput,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let _g = engine::no_grad();
    let h = model.config.hidden_size;
    if pooling == Pooling::SecondToLast && model.config.num_hidden_layers < 2 {
        return Err(BertError::Input(
            "second-to-last pooling needs a model with at least 2 layers".into(),
        ));
    }
    let out = model.forward(
        x,
        Forward {
            hidden_states: pooling == Pooling::SecondToLast,
            ..Default::default()
        },
    )?;
    let hidden = match pooling {
        Pooling::SecondToLast => &out.hidden_states[out.hidden_states.len() - 2],
        _ => &out.last_hidden,
    };
    Ok(pool(&hidden.value().to_vec(), x, pooling, normalize, h))
}

/// Pools hidden states `(B*S, H)` (the last layer's, or the second-to-last's for that pooling)
/// into one vector per sequence, optionally L2-normalised.
fn pool(hidden: &[f32], x: &BertInput, pooling: Pooling, normalize: bool, h: usize) -> Vec<f32> {
    let mut v = match pooling {
        Pooling::Mean | Pooling::SecondToLast => {
            masked_mean(hidden, &x.attention_mask, x.batch, x.seq, h)
        }
        Pooling::Cls => (0..x.batch)
            .flat_map(|i| hidden[i * x.seq * h..i * x.seq * h + h].to_vec())
            .collect(),
    };
    if normalize {
        normalize_rows(&mut v, h);
    }
    v
}

/// [`embed_batch`] on a device: the encoder runs there ([`crate::step::encode`] on the packed
/// batch: no padding tokens; weights from [`crate::step::encoder_from_named`]), pooling on the
/// host. The mask must be a prefix of ones per sequence (as tokenizer batches are).
pub fn embed_batch_on<D: engine::device::Device>(
    dev: &D,
    c: &crate::BertConfig,
    params: &[D::W<'_>],
    x: &BertInput,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let layers = match pooling {
        Pooling::SecondToLast if c.num_hidden_layers < 2 => {
            return Err(BertError::Input(
                "second-to-last pooling needs a model with at least 2 layers".into(),
            ))
        }
        Pooling::SecondToLast => c.num_hidden_layers - 1,
        _ => c.num_hidden_layers,
    };
    // Padding-free: each sequence's valid tokens back to back, so no compute goes to padding.
    let lens = crate::step::key_lengths(x)?;
    let pack = |v: &[i64]| crate::step::pack_tokens(v, &lens, x.seq);
    let (ids, types) = (pack(&x.input_ids), pack(&x.token_type_ids));
    let input = crate::step::EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &ids,
        token_type_ids: &types,
        lens: &lens,
        packed: true,
    };
    let packed = dev.download(&crate::step::encode(dev, c, params, &input, layers)?)?;
    // Back to the padded layout (zeros at padding) for the pooling the host path shares.
    let h = c.hidden_size;
    let mut hidden = vec![0.0f32; x.batch * x.seq * h];
    let mut at = 0;
    for (b, &l) in lens.iter().enumerate() {
        hidden[b * x.seq * h..(b * x.seq + l) * h].copy_from_slice(&packed[at * h..(at + l) * h]);
        at += l;
    }
    Ok(pool(&hidden, x, pooling, normalize, h))
}
