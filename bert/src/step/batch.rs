//! A batch of pretraining instances on the device: padded or packed, with its MLM rows,
//! targets and NSP labels.

use super::*;

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
    pub(super) fn first_tokens(&self) -> Vec<i64> {
        first_rows(&self.lens, self.seq, self.packed)
    }
}

/// The row of every sequence's first token in a batch of `lens` (padded to `seq`, or packed).
pub(super) fn first_rows(lens: &[usize], seq: usize, packed: bool) -> Vec<i64> {
    let mut at = 0;
    lens.iter()
        .map(|&l| {
            let first = at as i64;
            at += if packed { l } else { seq };
            first
        })
        .collect()
}
