//! Fill-mask: the masked-LM head's most likely tokens at each `[MASK]` of a text (HF's
//! `fill-mask` pipeline, one text at a time), and the text with every mask replaced by its best
//! guess. Probabilities are the engine's softmax over the vocabulary.

use crate::checkpoint::{LoadOptions, ModelDir};
use crate::heads::{Bert, Task};
use crate::model::{BertInput, Forward};
use crate::{BertError, Result};
use std::path::Path;

/// One candidate for a mask.
#[derive(Clone, Debug, PartialEq)]
pub struct Guess {
    pub id: u32,
    pub token: String,
    pub probability: f32,
}

/// The candidates for the mask at token `position`, most likely first.
#[derive(Clone, Debug, PartialEq)]
pub struct Mask {
    pub position: usize,
    pub guesses: Vec<Guess>,
}

/// What [`FillMask::fill`] found: each mask's candidates and the text with the best ones in.
#[derive(Clone, Debug, PartialEq)]
pub struct Filled {
    pub masks: Vec<Mask>,
    pub text: String,
}

impl Filled {
    /// The command line's form: `probability  token` lines per mask (headed by the mask's number
    /// when there are several), then the filled text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (r, m) in self.masks.iter().enumerate() {
            if self.masks.len() > 1 {
                s += &format!("[MASK] {} (token {}):\n", r + 1, m.position);
            }
            for g in &m.guesses {
                s += &format!("{:>8.4}  {}\n", g.probability, g.token);
            }
        }
        s + &self.text + "\n"
    }
}

/// A masked-LM model and its tokenizer.
pub struct FillMask {
    pub model: Bert,
    pub tokenizer: tokenizer::BertTokenizer,
    mask_id: u32,
}

impl FillMask {
    /// Loads a model directory with a masked-LM head (a pretraining checkpoint, BertForMaskedLM)
    /// and its tokenizer.
    pub fn load(dir: &Path) -> Result<Self> {
        let md = ModelDir::load(
            dir,
            &LoadOptions {
                task: Some(Task::MaskedLm),
                init_missing_head: None,
            },
        )?;
        let mut tok = md.tokenizer.ok_or_else(|| {
            BertError::Io(format!("{}: no tokenizer.json or vocab.txt", dir.display()))
        })?;
        tok.padding = None;
        let mask_id = tok.vocab.id("[MASK]").ok_or_else(|| {
            BertError::Input(format!("{}: the vocabulary has no [MASK]", dir.display()))
        })?;
        Ok(FillMask {
            model: md.model,
            tokenizer: tok,
            mask_id,
        })
    }

    /// The `top_k` most likely tokens at each `[MASK]` of `text`.
    pub fn fill(&self, text: &str, top_k: usize) -> Result<Filled> {
        let (model, tok) = (&self.model, &self.tokenizer);
        let enc = tok.encode(text, true);
        let rows: Vec<usize> = (0..enc.ids.len())
            .filter(|&i| enc.ids[i] == self.mask_id)
            .collect();
        if rows.is_empty() {
            return Err(BertError::Input(format!("no [MASK] in {text:?}")));
        }
        let x = BertInput::from_encodings(std::slice::from_ref(&enc), 0)?;
        let _g = engine::no_grad();
        let out = model.forward(&x, Forward::default())?;
        let probs = model
            .mlm_logits(&out, Some(&rows))?
            .value()
            .softmax(None)?
            .to_vec();
        let v = model.config.vocab_size;
        let mut masks = Vec::new();
        let mut ids = enc.ids.clone();
        for (r, &pos) in rows.iter().enumerate() {
            let row = &probs[r * v..(r + 1) * v];
            let mut idx: Vec<usize> = (0..v).collect();
            // Highest first; ties by id, so the order is deterministic.
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let guesses = idx
                .iter()
                .take(top_k.max(1))
                .map(|&i| Guess {
                    id: i as u32,
                    token: tok.vocab.token(i as u32).unwrap_or("?").to_string(),
                    probability: row[i],
                })
                .collect();
            ids[pos] = idx[0] as u32;
            masks.push(Mask {
                position: pos,
                guesses,
            });
        }
        Ok(Filled {
            masks,
            text: tok.decode(&ids, true),
        })
    }
}
