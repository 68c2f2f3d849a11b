//! `bert tokenize` as a library call: each input line through a tokenizer, one output line
//! each (ids, tokens or JSON).

use std::io::{BufRead, Write};
use tokenizer::{BertTokenizer, Truncation, TruncationStrategy};

/// What [`tokenize_stream`] writes per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFormat {
    /// Space-separated ids.
    Ids,
    /// Space-separated tokens.
    Tokens,
    /// JSON: ids, tokens, type ids, char offsets, word ids.
    Json,
}

/// How [`tokenize_stream`] reads and encodes.
#[derive(Clone, Copy, Debug)]
pub struct TokenizeOptions {
    /// For a `vocab.txt`: keep case and accents (a `tokenizer.json` says for itself).
    pub cased: bool,
    /// Add `[CLS]` and `[SEP]`.
    pub special: bool,
    /// Each line is a pair: first<TAB>second.
    pub pairs: bool,
    pub format: TokenFormat,
    /// Truncate to this many tokens (special tokens included), longest first.
    pub max_len: Option<usize>,
}

/// A `tokenizer.json` or `vocab.txt` (by its extension), set up to write one line per input:
/// no padding, `max_len` truncation.
pub fn load(
    path: &str,
    cased: bool,
    max_len: Option<usize>,
) -> Result<BertTokenizer, Box<dyn std::error::Error>> {
    let mut tok = if path.ends_with(".json") {
        tokenizer::load_tokenizer_json(path)?
    } else {
        BertTokenizer::from_vocab_file(path, cased)?
    };
    // Output is one line per input: padding from a tokenizer.json would only add [PAD]s.
    tok.padding = None;
    tok.truncation = max_len.map(|m| Truncation {
        max_length: m,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        left: false,
    });
    Ok(tok)
}

/// Tokenizes each line of `input` with the tokenizer at `path`; errors name the line.
pub fn tokenize_stream(
    path: &str,
    opts: &TokenizeOptions,
    input: impl BufRead,
    output: impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let tok = load(path, opts.cased, opts.max_len)?;
    let mut out = std::io::BufWriter::new(output);
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| format!("stdin line {}: {e}", n + 1))?;
        let enc = if opts.pairs {
            let (a, b) = line.split_once('\t').ok_or_else(|| {
                format!(
                    "stdin line {}: --pairs needs two texts separated by a tab",
                    n + 1
                )
            })?;
            tok.encode_pair(a, b, opts.special)
                .map_err(|e| format!("stdin line {}: {e}", n + 1))?
        } else {
            tok.encode(&line, opts.special)
        };
        match opts.format {
            TokenFormat::Ids => writeln!(
                out,
                "{}",
                enc.ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )?,
            TokenFormat::Tokens => writeln!(out, "{}", tok.tokens(&enc).join(" "))?,
            TokenFormat::Json => {
                let v = serde_json::json!({
                    "ids": enc.ids, "tokens": tok.tokens(&enc),
                    "type_ids": enc.type_ids, "offsets": enc.char_offsets, "word_ids": enc.word_ids,
                });
                writeln!(out, "{v}")?
            }
        }
    }
    // A BufWriter dropped unflushed drops its error too (a full disk would exit 0).
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_ids_tokens_and_json_and_bad_pairs_name_their_line() {
        let dir = std::env::temp_dir().join(format!("bert-tokenize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vocab = dir.join("vocab.txt");
        std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n").unwrap();
        let path = vocab.to_str().unwrap();
        let run = |format, pairs, input: &str| {
            let mut out = Vec::new();
            let opts = TokenizeOptions {
                cased: false,
                special: true,
                pairs,
                format,
                max_len: None,
            };
            tokenize_stream(path, &opts, input.as_bytes(), &mut out)
                .map(|_| String::from_utf8(out).unwrap())
        };
        assert_eq!(
            run(TokenFormat::Ids, false, "Hello world\nworld\n").unwrap(),
            "2 5 6 3\n2 6 3\n"
        );
        assert_eq!(
            run(TokenFormat::Tokens, false, "hello").unwrap(),
            "[CLS] hello [SEP]\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(run(TokenFormat::Json, true, "hello\tworld").unwrap().trim())
                .unwrap();
        assert_eq!(j["type_ids"], serde_json::json!([0, 0, 0, 1, 1]));
        let e = run(TokenFormat::Ids, true, "hello\tworld\nno tab")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("tab"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
