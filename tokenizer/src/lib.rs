//! BERT's tokenizer, as HuggingFace `tokenizers` implements it (BertNormalizer,
//! BertPreTokenizer, WordPiece, the `[CLS] A [SEP] B [SEP]` template): text to ids, with offsets
//! into the original text.
//!
//! ```text
//! raw text ─ split out special tokens ([CLS], [SEP], [MASK], ...: matched in the raw text)
//!          ─ normalize (clean control chars, pad CJK, NFD + drop accents, lowercase)
//!            every normalized char remembers the byte span of the original char it came from
//!          ─ pre-tokenize (split on whitespace, isolate punctuation)
//!          ─ WordPiece (greedy longest match, "##" continuations, [UNK] for the unmatchable)
//! ```
//! Where Google's original `tokenization.py` differs, this follows HF: see `normalizer.rs`.

pub mod config;
pub mod encoding;
pub mod normalizer;
pub mod trainer;
pub mod vocab;
pub mod wordpiece;

pub use config::{load_tokenizer_json, parse_tokenizer_json, tokenizer_json};
pub use encoding::{
    BertTokenizer, Encoding, Padding, PaddingStrategy, Truncation, TruncationError,
    TruncationStrategy,
};
pub use normalizer::NormalizerConfig;
pub use trainer::{train, TrainerConfig};
pub use vocab::{Vocab, VocabError};
