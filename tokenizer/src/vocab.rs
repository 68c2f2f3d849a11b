//! The WordPiece vocabulary: token strings and their ids, loaded from `vocab.txt`.

use std::sync::Arc;

/// A vocabulary: id i is line i of vocab.txt.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    ids: rustc_hash::FxHashMap<String, u32>,
    tokens: Vec<String>,
    /// The same strings, shared: encodings hold these handles instead of a copy per token.
    shared: Vec<Arc<str>>,
}

/// A vocabulary file that cannot be used, naming the file and line.
#[derive(Debug)]
pub enum VocabError {
    Io {
        path: String,
        error: std::io::Error,
    },
    Invalid {
        path: String,
        line: usize,
        why: String,
    },
}

impl std::fmt::Display for VocabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VocabError::Io { path, error } => write!(f, "{path}: {error}"),
            // Line 0: a problem of the whole file (e.g. a special token it lacks).
            VocabError::Invalid { path, line: 0, why } => write!(f, "{path}: {why}"),
            VocabError::Invalid { path, line, why } => write!(f, "{path}:{line}: {why}"),
        }
    }
}
impl std::error::Error for VocabError {}

impl Vocab {
    /// Builds a vocabulary from tokens in id order.
    pub fn from_tokens<S: AsRef<str>>(tokens: &[S]) -> Vocab {
        let tokens: Vec<String> = tokens.iter().map(|t| t.as_ref().to_string()).collect();
        // As HF: a repeated token maps to its last line.
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let shared = tokens.iter().map(|t| Arc::from(t.as_str())).collect();
        Vocab {
            ids,
            tokens,
            shared,
        }
    }

    /// Parses vocab.txt text (one token per line, trailing whitespace trimmed as HF does).
    /// `path` only names the source in errors.
    pub fn parse(text: &str, path: &str) -> Result<Vocab, VocabError> {
        let tokens: Vec<&str> = text.lines().map(|l| l.trim_end()).collect();
        if tokens.is_empty() {
            return Err(VocabError::Invalid {
                path: path.into(),
                line: 1,
                why: "the vocabulary is empty".into(),
            });
        }
        if let Some(i) = tokens.iter().position(|t| t.is_empty()) {
            return Err(VocabError::Invalid {
                path: path.into(),
                line: i + 1,
                why: "empty token".into(),
            });
        }
        if tokens.len() > u32::MAX as usize {
            return Err(VocabError::Invalid {
                path: path.into(),
                line: tokens.len(),
                why: "too many tokens".into(),
            });
        }
        Ok(Self::from_tokens(&tokens))
    }

    /// Reads vocab.txt.
    pub fn from_file(path: &str) -> Result<Vocab, VocabError> {
        let bytes = std::fs::read(path).map_err(|error| VocabError::Io {
            path: path.into(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            VocabError::Invalid {
                path: path.into(),
                line,
                why: "not valid UTF-8".into(),
            }
        })?;
        Self::parse(&text, path)
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }
    /// A shared handle to token `id`'s string (cheap to clone).
    pub fn token_shared(&self, id: u32) -> Option<Arc<str>> {
        self.shared.get(id as usize).cloned()
    }
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// vocab.txt text: one token per line, in id order.
    pub fn to_vocab_txt(&self) -> String {
        let mut s = self.tokens.join("\n");
        s.push('\n');
        s
    }
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}
