//! Text to [`Encoding`]: special-token splitting, normalization, pre-tokenization, WordPiece,
//! and BERT's template `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`.

use crate::normalizer::{is_punctuation, normalize_into, Normalized, NormalizerConfig};
use crate::vocab::{Vocab, VocabError};
use crate::wordpiece::{split_word, WordPieceConfig};

/// What a sequence or pair encodes to, as HF's `Encoding` (Python field names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Byte offsets into the sequence's own text; (0, 0) for template tokens.
    pub offsets: Vec<(usize, usize)>,
    /// The same offsets in chars (what HF's Python API returns).
    pub char_offsets: Vec<(usize, usize)>,
    /// Index of the pre-tokenized word each token came from; None for template tokens.
    pub word_ids: Vec<Option<u32>>,
    /// Which sequence (0 or 1) each token belongs to; None for template tokens.
    pub sequence_ids: Vec<Option<u8>>,
    pub special_tokens_mask: Vec<u8>,
    pub attention_mask: Vec<u8>,
}

impl Encoding {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One token of a sequence before the template: id, byte span, word index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    id: u32,
    span: (usize, usize),
    word: u32,
}

/// BERT's tokenizer: vocabulary, normalizer, WordPiece, special tokens.
#[derive(Clone, Debug)]
pub struct BertTokenizer {
    pub vocab: Vocab,
    pub normalizer: NormalizerConfig,
    pub wordpiece: WordPieceConfig,
    /// Tokens recognised whole in raw input text (the special tokens), longest first.
    specials: Vec<(String, u32)>,
    cls: (String, u32),
    sep: (String, u32),
}

impl BertTokenizer {
    /// A tokenizer over `vocab` with BERT's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]
    /// where the vocabulary has them; [CLS], [SEP] and [UNK] are required).
    pub fn new(vocab: Vocab, normalizer: NormalizerConfig) -> Result<BertTokenizer, VocabError> {
        let need = |t: &str| {
            vocab
                .id(t)
                .map(|id| (t.to_string(), id))
                .ok_or_else(|| VocabError::Invalid {
                    path: "vocabulary".into(),
                    line: 0,
                    why: format!("{t} is missing"),
                })
        };
        let (cls, sep) = (need("[CLS]")?, need("[SEP]")?);
        need("[UNK]")?;
        let mut specials: Vec<(String, u32)> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter_map(|t| vocab.id(t).map(|id| (t.to_string(), id)))
            .collect();
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(BertTokenizer {
            vocab,
            normalizer,
            wordpiece: WordPieceConfig::default(),
            specials,
            cls,
            sep,
        })
    }

    /// Loads vocab.txt with uncased BERT defaults (or cased ones with `cased`).
    pub fn from_vocab_file(path: &str, cased: bool) -> Result<BertTokenizer, VocabError> {
        let vocab = Vocab::from_file(path)?;
        let cfg = if cased {
            NormalizerConfig::cased()
        } else {
            NormalizerConfig::default()
        };
        Self::new(vocab, cfg).map_err(|e| match e {
            VocabError::Invalid { why, .. } => VocabError::Invalid {
                path: path.into(),
                line: 0,
                why,
            },
            e => e,
        })
    }

    /// Tokens of one sequence, no template.
    fn pieces(&self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut norm = Normalized::default();
        let mut word_pieces = Vec::new();
        let mut buf = String::new();
        let mut word = 0u32;
        let unk = self
            .vocab
            .id(&self.wordpiece.unk_token)
            .expect("checked in new");
        // Special tokens are matched in the raw text, leftmost-longest, before normalization.
        let mut seg_start = 0;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i <= bytes.len() {
            let special = if i < bytes.len() && bytes[i] == b'[' {
                self.specials
                    .iter()
                    .find(|(t, _)| text[i..].starts_with(t.as_str()))
            } else {
                None
            };
            if i == bytes.len() || special.is_some() {
                // The text before it: normalize, pre-tokenize, WordPiece.
                normalize_into(&self.normalizer, &text[seg_start..i], seg_start, &mut norm);
                for (ws, we) in pre_tokenize(&norm.chars) {
                    let span = (norm.spans[ws].0, norm.spans[we - 1].1);
                    word_pieces.clear();
                    if split_word(
                        &self.vocab,
                        &self.wordpiece,
                        &norm.chars[ws..we],
                        &mut buf,
                        &mut word_pieces,
                    ) {
                        for &(id, s, e) in &word_pieces {
                            out.push(Piece {
                                id,
                                span: (norm.spans[ws + s].0, norm.spans[ws + e - 1].1),
                                word,
                            });
                        }
                    } else {
                        out.push(Piece {
                            id: unk,
                            span,
                            word,
                        });
                    }
                    word += 1;
                }
                let Some((t, id)) = special else { break };
                out.push(Piece {
                    id: *id,
                    span: (i, i + t.len()),
                    word,
                });
                word += 1;
                i += t.len();
                seg_start = i;
            } else {
                i += 1;
            }
        }
        out
    }

    /// Encodes one text; with `add_special_tokens`, as `[CLS] text [SEP]`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Encoding {
        let mut e = Encoding::default();
        let map = CharMap::new(text);
        if add_special_tokens {
            self.push_template(&mut e, &self.cls, 0);
        }
        self.push_pieces(&mut e, text, &map, 0);
        if add_special_tokens {
            self.push_template(&mut e, &self.sep, 0);
        }
        e
    }

    /// Encodes a pair; with `add_special_tokens`, as `[CLS] a [SEP] b [SEP]` with type ids
    /// 0 up to the first [SEP] and 1 after. Offsets of b are into b.
    pub fn encode_pair(&self, a: &str, b: &str, add_special_tokens: bool) -> Encoding {
        let mut e = Encoding::default();
        if add_special_tokens {
            self.push_template(&mut e, &self.cls, 0);
        }
        self.push_pieces(&mut e, a, &CharMap::new(a), 0);
        if add_special_tokens {
            self.push_template(&mut e, &self.sep, 0);
        }
        self.push_pieces(&mut e, b, &CharMap::new(b), 1);
        if add_special_tokens {
            self.push_template(&mut e, &self.sep, 1);
        }
        e
    }

    /// Encodes many texts on rayon's threads.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Vec<Encoding> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|t| self.encode(t, add_special_tokens))
            .collect()
    }

    fn push_template(&self, e: &mut Encoding, (tok, id): &(String, u32), type_id: u32) {
        e.ids.push(*id);
        e.type_ids.push(type_id);
        e.tokens.push(tok.clone());
        e.offsets.push((0, 0));
        e.char_offsets.push((0, 0));
        e.word_ids.push(None);
        e.sequence_ids.push(None);
        e.special_tokens_mask.push(1);
        e.attention_mask.push(1);
    }

    fn push_pieces(&self, e: &mut Encoding, text: &str, map: &CharMap, seq: u8) {
        for p in self.pieces(text) {
            e.ids.push(p.id);
            e.type_ids.push(seq as u32);
            e.tokens
                .push(self.vocab.token(p.id).unwrap_or("").to_string());
            e.offsets.push(p.span);
            e.char_offsets
                .push((map.char_of(p.span.0), map.char_of(p.span.1)));
            e.word_ids.push(Some(p.word));
            e.sequence_ids.push(Some(seq));
            e.special_tokens_mask.push(0);
            e.attention_mask.push(1);
        }
    }
}

/// BertPreTokenizer on normalized chars: split on whitespace (dropped) and punctuation
/// (each punctuation char its own word). Returns [start, end) char ranges.
pub fn pre_tokenize(chars: &[char]) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push((s, i));
            }
        } else if is_punctuation(c) {
            if let Some(s) = start.take() {
                words.push((s, i));
            }
            words.push((i, i + 1));
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push((s, chars.len()));
    }
    words
}

/// Byte offset to char offset in one text.
struct CharMap {
    /// Byte offsets of each char start, plus the text length.
    starts: Vec<usize>,
}

impl CharMap {
    fn new(text: &str) -> CharMap {
        let mut starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        starts.push(text.len());
        CharMap { starts }
    }
    fn char_of(&self, byte: usize) -> usize {
        self.starts.partition_point(|&b| b < byte)
    }
}
