//! WordPiece: greedy longest-match-first over a word, continuations prefixed with "##".
//! A word longer than 100 chars (HF's `max_input_chars_per_word`; Google's code used 200), or
//! with a piece no vocabulary entry matches, becomes a single [UNK].

use crate::vocab::Vocab;

/// WordPiece settings (HF names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordPieceConfig {
    pub unk_token: String,
    pub continuing_subword_prefix: String,
    pub max_input_chars_per_word: usize,
}

impl Default for WordPieceConfig {
    fn default() -> Self {
        WordPieceConfig {
            unk_token: "[UNK]".into(),
            continuing_subword_prefix: "##".into(),
            max_input_chars_per_word: 100,
        }
    }
}

/// Splits one word (`chars`) into pieces, appending (id, first char, end char) to `out`, char
/// indices relative to the word. Returns false, and appends nothing, when the word is [UNK].
/// `buf` is scratch space reused across calls (no allocation per piece on the hot path).
pub fn split_word(
    vocab: &Vocab,
    cfg: &WordPieceConfig,
    chars: &[char],
    buf: &mut String,
    out: &mut Vec<(u32, usize, usize)>,
) -> bool {
    if chars.len() > cfg.max_input_chars_per_word {
        return false;
    }
    let mark = out.len();
    let mut start = 0;
    while start < chars.len() {
        let mut end = chars.len();
        let mut found = None;
        while start < end {
            buf.clear();
            if start > 0 {
                buf.push_str(&cfg.continuing_subword_prefix);
            }
            buf.extend(&chars[start..end]);
            if let Some(id) = vocab.id(buf) {
                found = Some(id);
                break;
            }
            end -= 1;
        }
        match found {
            Some(id) => out.push((id, start, end)),
            None => {
                out.truncate(mark);
                return false;
            }
        }
        start = end;
    }
    true
}
