//! Text to [`Encoding`]: special-token splitting, normalization, pre-tokenization, WordPiece,
//! and BERT's template `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`.

use crate::normalizer::{is_punctuation, normalize_into, Normalized, NormalizerConfig};
use crate::vocab::{Vocab, VocabError};
use crate::wordpiece::{split_word, Trie, WordCache, WordPieceConfig};
use std::cell::RefCell;
use std::sync::Arc;

/// What a sequence or pair encodes to, as HF's `Encoding` (Python field names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
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
    /// Windows cut off by truncation (each with the template applied), for long documents.
    pub overflowing: Vec<Encoding>,
}

/// A pair that truncation cannot fit (HF: "Sequence to truncate too short to respect the
/// provided max_length").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncationError {
    pub max_length: usize,
    pub lengths: (usize, usize),
    pub strategy: TruncationStrategy,
}

impl std::fmt::Display for TruncationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "truncation: sequences of {} and {} tokens cannot fit in {} with {:?}: the sequence to truncate is too short", self.lengths.0, self.lengths.1, self.max_length, self.strategy)
    }
}
impl std::error::Error for TruncationError {}

/// Which sequence of a pair truncation shortens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TruncationStrategy {
    /// Balance the two: shorten the longer first (HF's rule).
    LongestFirst,
    OnlyFirst,
    OnlySecond,
}

/// Truncation to `max_length` tokens including the template's; `stride` tokens of overlap
/// between overflowing windows; `left` cuts from the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub max_length: usize,
    pub strategy: TruncationStrategy,
    pub stride: usize,
    pub left: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaddingStrategy {
    /// To the longest encoding of a batch.
    BatchLongest,
    /// To a fixed length.
    Fixed(usize),
}

/// Padding settings (HF names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Padding {
    pub strategy: PaddingStrategy,
    pub left: bool,
    pub pad_to_multiple_of: Option<usize>,
    pub pad_id: u32,
    pub pad_type_id: u32,
    pub pad_token: String,
}

impl Default for Padding {
    fn default() -> Self {
        Padding {
            strategy: PaddingStrategy::BatchLongest,
            left: false,
            pad_to_multiple_of: None,
            pad_id: 0,
            pad_type_id: 0,
            pad_token: "[PAD]".into(),
        }
    }
}

impl Encoding {
    fn with_capacity(n: usize) -> Encoding {
        Encoding {
            ids: Vec::with_capacity(n),
            type_ids: Vec::with_capacity(n),
            offsets: Vec::with_capacity(n),
            char_offsets: Vec::with_capacity(n),
            word_ids: Vec::with_capacity(n),
            sequence_ids: Vec::with_capacity(n),
            special_tokens_mask: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            overflowing: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Tokens `r` of this encoding (no overflow).
    fn slice(&self, r: std::ops::Range<usize>) -> Encoding {
        Encoding {
            ids: self.ids[r.clone()].to_vec(),
            type_ids: self.type_ids[r.clone()].to_vec(),
            offsets: self.offsets[r.clone()].to_vec(),
            char_offsets: self.char_offsets[r.clone()].to_vec(),
            word_ids: self.word_ids[r.clone()].to_vec(),
            sequence_ids: self.sequence_ids[r.clone()].to_vec(),
            special_tokens_mask: self.special_tokens_mask[r.clone()].to_vec(),
            attention_mask: self.attention_mask[r].to_vec(),
            overflowing: Vec::new(),
        }
    }

    /// Keeps `max_len` tokens; the rest becomes overflowing windows of `max_len` tokens that
    /// overlap by `stride` (HF's `Encoding::truncate`). `stride` must be below `max_len`.
    pub fn truncate(&mut self, max_len: usize, stride: usize, left: bool) {
        let n = self.ids.len();
        if max_len >= n {
            return;
        }
        if max_len == 0 {
            let whole = std::mem::take(self);
            self.overflowing.push(whole);
            return;
        }
        let step = max_len.saturating_sub(stride).max(1);
        let mut parts = Vec::new();
        if left {
            let mut stop = n;
            loop {
                let start = stop.saturating_sub(max_len);
                parts.push(start..stop);
                if start == 0 {
                    break;
                }
                stop -= step.min(stop);
            }
        } else {
            let mut start = 0;
            loop {
                let stop = (start + max_len).min(n);
                parts.push(start..stop);
                if stop == n {
                    break;
                }
                start += step;
            }
        }
        let mut first = self.slice(parts[0].clone());
        first.overflowing = parts[1..].iter().map(|r| self.slice(r.clone())).collect();
        *self = first;
    }

    /// Appends `pair` to this encoding, combining overflowing windows as HF's
    /// `Encoding::merge_with` does: each of our windows with `pair` (whose windows come along)
    /// and with each of `pair`'s windows, then ourself with each of `pair`'s windows.
    pub fn merge_with(&mut self, pair: Encoding) {
        let mut overflowing = Vec::new();
        for own in &self.overflowing {
            let mut n = own.clone();
            n.merge_with(pair.clone());
            overflowing.push(n);
            for other in &pair.overflowing {
                let mut n = own.clone();
                n.merge_with(other.clone());
                overflowing.push(n);
            }
        }
        for other in &pair.overflowing {
            let mut n = self.clone();
            n.merge_with(other.clone());
            overflowing.push(n);
        }
        append(self, pair);
        self.overflowing = overflowing;
    }

    /// Pads to `len` tokens (nothing if already as long), and each overflowing window too.
    pub fn pad(&mut self, len: usize, p: &Padding) {
        for o in &mut self.overflowing {
            o.pad(len, p);
        }
        if self.ids.len() >= len {
            return;
        }
        let k = len - self.ids.len();
        let at = if p.left { 0 } else { self.ids.len() };
        fn fill<T: Clone>(v: &mut Vec<T>, at: usize, k: usize, x: T) {
            v.splice(at..at, std::iter::repeat_n(x, k));
        }
        fill(&mut self.ids, at, k, p.pad_id);
        fill(&mut self.type_ids, at, k, p.pad_type_id);
        fill(&mut self.offsets, at, k, (0, 0));
        fill(&mut self.char_offsets, at, k, (0, 0));
        fill(&mut self.word_ids, at, k, None);
        fill(&mut self.sequence_ids, at, k, None);
        fill(&mut self.special_tokens_mask, at, k, 1);
        fill(&mut self.attention_mask, at, k, 0);
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Per-thread scratch reused by every encode, so encoding allocates nothing per word:
/// normalized text, its words, one word's pieces, a lookup buffer, the sequence's pieces.
#[derive(Default)]
struct Scratch {
    norm: Normalized,
    words: Vec<(usize, usize)>,
    word_pieces: Vec<(u32, usize, usize)>,
    buf: String,
    pieces: Vec<Piece>,
    cache: WordCache,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// One token of a sequence before the template: id, byte span, char span, word index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    id: u32,
    span: (usize, usize),
    cspan: (usize, usize),
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
    /// Id of `wordpiece.unk_token` (kept in step by `set_unk_token`).
    unk: u32,
    /// The vocabulary as tries, for WordPiece's longest match (built for the "##" prefix;
    /// another prefix falls back to hash lookups).
    trie: Arc<Trie>,
    /// Applied on every encode when set (as HF does when tokenizer.json sets them).
    pub truncation: Option<Truncation>,
    pub padding: Option<Padding>,
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
        let (_, unk) = need("[UNK]")?;
        let mut specials: Vec<(String, u32)> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter_map(|t| vocab.id(t).map(|id| (t.to_string(), id)))
            .collect();
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let trie = Arc::new(Trie::new(
            &vocab,
            &WordPieceConfig::default().continuing_subword_prefix,
        ));
        Ok(BertTokenizer {
            vocab,
            normalizer,
            wordpiece: WordPieceConfig::default(),
            specials,
            cls,
            sep,
            unk,
            trie,
            truncation: None,
            padding: None,
        })
    }

    /// Sets the continuation prefix ("##") and rebuilds the lookup tries for it.
    pub fn set_continuing_subword_prefix(&mut self, prefix: &str) {
        self.wordpiece.continuing_subword_prefix = prefix.to_string();
        self.trie = Arc::new(Trie::new(&self.vocab, prefix));
    }

    /// Sets the token for unmatchable words; it must be in the vocabulary.
    pub fn set_unk_token(&mut self, token: &str) -> Result<(), VocabError> {
        self.unk = self.vocab.id(token).ok_or_else(|| VocabError::Invalid {
            path: "vocabulary".into(),
            line: 0,
            why: format!("unknown-word token {token:?} is not in the vocabulary"),
        })?;
        self.wordpiece.unk_token = token.to_string();
        Ok(())
    }

    /// Replaces the tokens matched whole in raw text (tokenizer.json's added tokens).
    pub fn set_special_tokens(&mut self, mut specials: Vec<(String, u32)>) {
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        self.specials = specials;
    }
    /// The tokens matched whole in raw text, longest first.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }
    /// Sets the template's [CLS] (slot 0) or [SEP] (slot 1) token.
    pub fn set_template_token(&mut self, slot: usize, token: &str, id: u32) {
        let t = (token.to_string(), id);
        if slot == 0 {
            self.cls = t;
        } else {
            self.sep = t;
        }
    }
    /// The template's ([CLS], [SEP]) tokens.
    pub fn template_tokens(&self) -> (&(String, u32), &(String, u32)) {
        (&self.cls, &self.sep)
    }

    /// Decodes ids to text as HF's WordPiece decoder does: "##" pieces join the previous token,
    /// others get a space, and each piece is cleaned (" ." to ".", " n't" to "n't", ...).
    /// With `skip_special_tokens`, the special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let prefix = &self.wordpiece.continuing_subword_prefix;
        let mut out = String::new();
        let mut first = true;
        for &id in ids {
            let Some(tok) = self.vocab.token(id) else {
                continue;
            };
            if skip_special_tokens && self.specials.iter().any(|(_, sid)| *sid == id) {
                continue;
            }
            let piece = if first {
                tok.to_string()
            } else if let Some(rest) = tok.strip_prefix(prefix.as_str()) {
                rest.to_string()
            } else {
                format!(" {tok}")
            };
            first = false;
            out.push_str(&cleanup(&piece));
        }
        out
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

    /// Tokens of one sequence, no template, into `s.pieces`.
    fn pieces_into(&self, text: &str, s: &mut Scratch) {
        let Scratch {
            norm,
            words,
            word_pieces,
            buf,
            pieces,
            cache,
        } = s;
        pieces.clear();
        let mut word = 0u32;
        let use_trie = self.trie.serves(&self.wordpiece);
        // Special tokens are matched in the raw text, leftmost-longest, before normalization.
        let (mut seg_start, mut seg_char) = (0, 0);
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
            if i < bytes.len() && special.is_none() {
                i += 1;
                continue;
            }
            // The text before it: normalize, pre-tokenize, WordPiece.
            seg_char += normalize_into(
                &self.normalizer,
                &text[seg_start..i],
                seg_start,
                seg_char,
                norm,
            );
            pre_tokenize_into(&norm.chars, words);
            for &(ws, we) in words.iter() {
                let spans = &norm.spans;
                word_pieces.clear();
                let chars = &norm.chars[ws..we];
                let found = if use_trie {
                    cache.split(&self.trie, &self.wordpiece, chars, word_pieces)
                } else {
                    split_word(&self.vocab, &self.wordpiece, chars, buf, word_pieces)
                };
                if found {
                    for &(id, s, e) in word_pieces.iter() {
                        let (a, b) = (spans[ws + s], spans[ws + e - 1]);
                        pieces.push(Piece {
                            id,
                            span: (a.0, b.1),
                            cspan: (a.2, b.2 + 1),
                            word,
                        });
                    }
                } else {
                    let (a, b) = (spans[ws], spans[we - 1]);
                    pieces.push(Piece {
                        id: self.unk,
                        span: (a.0, b.1),
                        cspan: (a.2, b.2 + 1),
                        word,
                    });
                }
                word += 1;
            }
            let Some((t, id)) = special else { break };
            let n = t.chars().count();
            pieces.push(Piece {
                id: *id,
                span: (i, i + t.len()),
                cspan: (seg_char, seg_char + n),
                word,
            });
            word += 1;
            seg_char += n;
            i += t.len();
            seg_start = i;
        }
    }

    /// One sequence's tokens, no template, type id `seq`.
    fn sequence(&self, text: &str, seq: u8) -> Encoding {
        let mut e = Encoding::default();
        self.push_pieces(&mut e, text, seq);
        e
    }

    /// The token strings of an encoding (computed from its ids, so that encoding does not
    /// copy or reference-count a string per token); "" for an id outside the vocabulary.
    pub fn tokens<'a>(&'a self, e: &Encoding) -> Vec<&'a str> {
        e.ids
            .iter()
            .map(|&id| self.vocab.token(id).unwrap_or(""))
            .collect()
    }

    /// Encodes one text; with `add_special_tokens`, as `[CLS] text [SEP]`. Truncation (with
    /// overflowing windows) and padding apply when set.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Encoding {
        if self.truncation.is_none() {
            // The common case, built in place: no second copy for the template.
            // The pieces first, so that every vector is allocated once at its final size.
            return SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                self.pieces_into(text, s);
                let mut e = Encoding::with_capacity(s.pieces.len() + 2);
                if add_special_tokens {
                    self.push_template(&mut e, &self.cls, 0);
                }
                self.push_piece_list(&mut e, &s.pieces, 0);
                if add_special_tokens {
                    self.push_template(&mut e, &self.sep, 0);
                }
                self.pad_one(&mut e);
                e
            });
        }
        let mut a = self.sequence(text, 0);
        if let Some(t) = &self.truncation {
            let room = t
                .max_length
                .saturating_sub(if add_special_tokens { 2 } else { 0 });
            a.truncate(room, t.stride.min(room.saturating_sub(1)), t.left);
        }
        let mut e = self.template(a, None, add_special_tokens);
        self.pad_one(&mut e);
        e
    }

    /// Encodes a pair; with `add_special_tokens`, as `[CLS] a [SEP] b [SEP]` with type ids
    /// 0 up to the first [SEP] and 1 after. Offsets of b are into b. Truncation (HF's
    /// strategies, with the windows cut off returned as HF combines them) and padding apply
    /// when set.
    /// Errors when OnlyFirst/OnlySecond cannot shorten the chosen sequence enough.
    pub fn encode_pair(
        &self,
        a: &str,
        b: &str,
        add_special_tokens: bool,
    ) -> Result<Encoding, TruncationError> {
        let (mut a, mut b) = (self.sequence(a, 0), self.sequence(b, 1));
        if let Some(t) = &self.truncation {
            let max = t
                .max_length
                .saturating_sub(if add_special_tokens { 3 } else { 0 });
            let (n1, n2) =
                pair_lengths(a.len(), b.len(), max, t.strategy).ok_or(TruncationError {
                    max_length: t.max_length,
                    lengths: (a.len(), b.len()),
                    strategy: t.strategy,
                })?;
            // As HF: the stride must be below the kept length of a side that is cut.
            if (a.len() > n1 && t.stride >= n1) || (b.len() > n2 && t.stride >= n2) {
                return Err(TruncationError {
                    max_length: t.max_length,
                    lengths: (a.len(), b.len()),
                    strategy: t.strategy,
                });
            }
            a.truncate(n1, t.stride, t.left);
            b.truncate(n2, t.stride, t.left);
        }
        let mut e = self.template(a, Some(b), add_special_tokens);
        self.pad_one(&mut e);
        Ok(e)
    }

    /// Encodes many texts on rayon's threads; BatchLongest padding pads to the longest.
    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool) -> Vec<Encoding> {
        use rayon::prelude::*;
        let mut out: Vec<Encoding> = texts
            .par_iter()
            .map(|t| self.encode(t, add_special_tokens))
            .collect();
        if let Some(p) = self
            .padding
            .as_ref()
            .filter(|p| p.strategy == PaddingStrategy::BatchLongest)
        {
            let longest = out.iter().map(Encoding::len).max().unwrap_or(0);
            let target = p
                .pad_to_multiple_of
                .filter(|&m| m > 0)
                .map_or(longest, |m| longest.next_multiple_of(m));
            out.par_iter_mut().for_each(|e| e.pad(target, p));
        }
        out
    }

    /// Fixed padding (or rounding up to a multiple) of one encoding.
    fn pad_one(&self, e: &mut Encoding) {
        if let Some(p) = &self.padding {
            let base = match p.strategy {
                PaddingStrategy::Fixed(n) => n,
                PaddingStrategy::BatchLongest => e.len(),
            };
            let target = p
                .pad_to_multiple_of
                .filter(|&m| m > 0)
                .map_or(base, |m| base.next_multiple_of(m));
            e.pad(target, p);
        }
    }

    /// The template around one or two sequences, built as HF's post-processor builds it: the
    /// pieces `[CLS] A [SEP] (B [SEP])` merged left to right with [`Encoding::merge_with`], which
    /// also combines the overflowing windows of A and B (so their order matches HF's).
    fn template(&self, a: Encoding, b: Option<Encoding>, add_special_tokens: bool) -> Encoding {
        let special = |t: &(String, u32), type_id: u32| {
            let mut e = Encoding::default();
            self.push_template(&mut e, t, type_id);
            e
        };
        let mut parts = Vec::with_capacity(5);
        if add_special_tokens {
            parts.push(special(&self.cls, 0));
        }
        parts.push(a);
        if add_special_tokens {
            parts.push(special(&self.sep, 0));
        }
        if let Some(b) = b {
            parts.push(b);
            if add_special_tokens {
                parts.push(special(&self.sep, 1));
            }
        }
        let mut parts = parts.into_iter();
        let mut e = parts.next().expect("at least one part");
        for p in parts {
            e.merge_with(p);
        }
        e
    }

    fn push_template(&self, e: &mut Encoding, (_, id): &(String, u32), type_id: u32) {
        e.ids.push(*id);
        e.type_ids.push(type_id);
        e.offsets.push((0, 0));
        e.char_offsets.push((0, 0));
        e.word_ids.push(None);
        e.sequence_ids.push(None);
        e.special_tokens_mask.push(1);
        e.attention_mask.push(1);
    }

    fn push_pieces(&self, e: &mut Encoding, text: &str, seq: u8) {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            self.pieces_into(text, s);
            self.push_piece_list(e, &s.pieces, seq);
        })
    }

    fn push_piece_list(&self, e: &mut Encoding, pieces: &[Piece], seq: u8) {
        {
            for p in pieces {
                e.ids.push(p.id);
                e.type_ids.push(seq as u32);
                e.offsets.push(p.span);
                e.char_offsets.push(p.cspan);
                e.word_ids.push(Some(p.word));
                e.sequence_ids.push(Some(seq));
                e.special_tokens_mask.push(0);
                e.attention_mask.push(1);
            }
        }
    }
}

/// Appends `x`'s tokens (not its overflow) to `e`.
fn append(e: &mut Encoding, x: Encoding) {
    e.ids.extend(x.ids);
    e.type_ids.extend(x.type_ids);
    e.offsets.extend(x.offsets);
    e.char_offsets.extend(x.char_offsets);
    e.word_ids.extend(x.word_ids);
    e.sequence_ids.extend(x.sequence_ids);
    e.special_tokens_mask.extend(x.special_tokens_mask);
    e.attention_mask.extend(x.attention_mask);
}

/// Lengths (n1, n2) a pair keeps under `max` tokens (HF's `truncate_encodings`). LongestFirst,
/// with s the shorter and l the longer: keep s whole when l can shrink to max - s, else give
/// each half of max (the longer one the odd token).
/// None when OnlyFirst/OnlySecond would need to remove the whole chosen sequence or more.
pub fn pair_lengths(
    n1: usize,
    n2: usize,
    max: usize,
    strategy: TruncationStrategy,
) -> Option<(usize, usize)> {
    if max == 0 {
        return Some((0, 0));
    }
    if n1 + n2 <= max {
        return Some((n1, n2));
    }
    let excess = n1 + n2 - max;
    match strategy {
        TruncationStrategy::LongestFirst => {
            let swap = n1 > n2;
            let mut s = n1.min(n2);
            let mut l = if s > max { s } else { s.max(max - s) };
            if s + l > max {
                s = max / 2;
                l = s + max % 2;
            }
            Some(if swap { (l, s) } else { (s, l) })
        }
        TruncationStrategy::OnlyFirst => (n1 > excess).then(|| (n1 - excess, n2)),
        TruncationStrategy::OnlySecond => (n2 > excess).then(|| (n1, n2 - excess)),
    }
}

/// HF's WordPiece decoder cleanup, applied to each piece.
fn cleanup(s: &str) -> String {
    s.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" do not", " don't")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// BertPreTokenizer on normalized chars: split on whitespace (dropped) and punctuation
/// (each punctuation char its own word). Returns [start, end) char ranges.
pub fn pre_tokenize(chars: &[char]) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    pre_tokenize_into(chars, &mut words);
    words
}

/// [`pre_tokenize`] into a reused buffer (cleared first).
pub fn pre_tokenize_into(chars: &[char], words: &mut Vec<(usize, usize)>) {
    words.clear();
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
}
