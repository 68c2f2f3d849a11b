//! BertNormalizer with alignment: each output char carries the byte span of the input char it
//! came from, so offsets survive characters being removed, split (NFD) or multiplied
//! (lowercasing 'İ' gives two chars).
//!
//! Differences from Google's `tokenization.py`, where this follows HuggingFace:
//! - control characters are every general category C* (Cc, Cf, Cn, Co, and surrogates), not only
//!   Cc and Cf; tab, newline and carriage return count as whitespace;
//! - whitespace is Unicode White_Space (Rust's `char::is_whitespace`), a slightly larger set
//!   than Python's `Zs` check;
//! - accents are stripped only when `strip_accents` (default: follow `lowercase`), independently
//!   of lowercasing;
//! - WordPiece's limit is 100 characters per word, not 200 (see `wordpiece.rs`).

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// BertNormalizer's switches (HF names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalizerConfig {
    pub clean_text: bool,
    pub handle_chinese_chars: bool,
    /// None: strip accents exactly when lowercasing.
    pub strip_accents: Option<bool>,
    pub lowercase: bool,
}

impl Default for NormalizerConfig {
    fn default() -> Self {
        NormalizerConfig {
            clean_text: true,
            handle_chinese_chars: true,
            strip_accents: None,
            lowercase: true,
        }
    }
}

impl NormalizerConfig {
    /// Cased models: no lowercasing and (by default) no accent stripping.
    pub fn cased() -> Self {
        NormalizerConfig {
            lowercase: false,
            ..Self::default()
        }
    }
}

/// Tab, newline, carriage return, and Unicode White_Space.
pub fn is_whitespace(c: char) -> bool {
    c == '\t' || c == '\n' || c == '\r' || c.is_whitespace()
}

/// General category C* except tab, newline, carriage return.
pub fn is_control(c: char) -> bool {
    !(c == '\t' || c == '\n' || c == '\r') && c.is_other()
}

const CONTROL: u8 = 1;
const WHITESPACE: u8 = 2;
const PUNCT: u8 = 4;

/// The classes of the 128 ASCII chars, computed once from the same functions that classify
/// every other char (so the fast path cannot disagree with them): most text is ASCII, and the
/// Unicode category tables are binary searches.
fn ascii_classes() -> &'static [u8; 128] {
    static TABLE: std::sync::OnceLock<[u8; 128]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u8; 128];
        for (b, slot) in t.iter_mut().enumerate() {
            let c = b as u8 as char;
            let mut class = 0;
            if is_control(c) {
                class |= CONTROL;
            }
            if is_whitespace(c) {
                class |= WHITESPACE;
            }
            if is_punctuation_slow(c) {
                class |= PUNCT;
            }
            *slot = class;
        }
        t
    })
}

/// [`is_control`] with the ASCII table.
#[inline]
fn is_control_fast(c: char) -> bool {
    if c.is_ascii() {
        ascii_classes()[c as usize] & CONTROL != 0
    } else {
        is_control(c)
    }
}

/// [`is_whitespace`] with the ASCII table.
#[inline]
fn is_whitespace_fast(c: char) -> bool {
    if c.is_ascii() {
        ascii_classes()[c as usize] & WHITESPACE != 0
    } else {
        is_whitespace(c)
    }
}

/// The CJK Unified Ideographs blocks BERT pads with spaces (not Hangul, Hiragana, Katakana).
pub fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F |
        0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// ASCII punctuation or Unicode general category P* (table lookup for ASCII).
#[inline]
pub fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        ascii_classes()[c as usize] & PUNCT != 0
    } else {
        is_punctuation_slow(c)
    }
}

fn is_punctuation_slow(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// Normalized text: chars, and for each the original char it came from, as
/// (byte start, byte end, char index) in the original text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Normalized {
    pub chars: Vec<char>,
    pub spans: Vec<(usize, usize, usize)>,
}

/// Normalizes `text` into `out` (cleared first). `base` and `base_char` are the byte and char
/// positions of `text` in the whole input, so spans point into the whole input. Returns the
/// number of chars in `text`.
pub fn normalize_into(
    cfg: &NormalizerConfig,
    text: &str,
    base: usize,
    base_char: usize,
    out: &mut Normalized,
) -> usize {
    out.chars.clear();
    out.spans.clear();
    let strip = cfg.strip_accents.unwrap_or(cfg.lowercase);
    let push = |c: char, span: (usize, usize, usize), out: &mut Normalized| {
        if cfg.lowercase && c.is_ascii() {
            out.chars.push(c.to_ascii_lowercase());
            out.spans.push(span);
        } else if cfg.lowercase {
            // Full Unicode lowercasing, one char at a time, as HF: 'İ' becomes "i\u{307}".
            for l in c.to_lowercase() {
                out.chars.push(l);
                out.spans.push(span);
            }
        } else {
            out.chars.push(c);
            out.spans.push(span);
        }
    };
    let mut count = 0;
    let table = ascii_classes();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 128 {
            // ASCII (most text): one table lookup decides everything; no CJK, no accents.
            let span = (base + i, base + i + 1, base_char + count);
            count += 1;
            i += 1;
            let class = table[b as usize];
            let mut c = b;
            if cfg.clean_text {
                if b == 0 || class & CONTROL != 0 {
                    continue;
                }
                if class & WHITESPACE != 0 {
                    c = b' ';
                }
            }
            if cfg.lowercase {
                c = c.to_ascii_lowercase();
            }
            out.chars.push(c as char);
            out.spans.push(span);
            continue;
        }
        let c = text[i..].chars().next().expect("i is on a char boundary");
        let span = (base + i, base + i + c.len_utf8(), base_char + count);
        count += 1;
        i += c.len_utf8();
        let mut c = c;
        if cfg.clean_text {
            if c == '\0' || c == '\u{fffd}' || is_control_fast(c) {
                continue;
            }
            if is_whitespace_fast(c) {
                c = ' ';
            }
        }
        let cjk = cfg.handle_chinese_chars && is_chinese_char(c);
        if cjk {
            push(' ', span, out);
        }
        if strip && !c.is_ascii() {
            // NFD, then drop nonspacing marks (Mn); the decomposed chars keep c's span. (Per
            // char: canonical reordering across chars only moves marks, which are dropped.)
            let mut utf8 = [0u8; 4];
            for (d, _) in (&*c.encode_utf8(&mut utf8)).nfd() {
                if !d.is_mark_nonspacing() {
                    push(d, span, out);
                }
            }
        } else {
            push(c, span, out);
        }
        if cjk {
            push(' ', span, out);
        }
    }
    count
}
