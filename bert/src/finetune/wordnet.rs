//! WordNet 3.0's data files (`data.noun`, `data.verb`, `data.adj`, `data.adv`), read once for the
//! two built-in tasks made from them: supersenses (seqcls.rs) and questions (qa.rs).

use crate::{BertError, Result};
use std::path::Path;

/// One synset line: `offset lex_filenum ss_type w_cnt word ... | gloss`.
pub(crate) struct Synset {
    /// The file's index in noun, verb, adj, adv.
    pub pos: usize,
    /// Byte offset of the line in its file (WordNet's synset id within the part of speech).
    pub offset: u64,
    /// The lexicographer file: the supersense.
    pub lex: usize,
    /// The first lemma, as written (underscores, adjective markers such as "(a)").
    pub word: String,
    /// Everything after " | ", trimmed.
    pub gloss: String,
}

/// Every synset of the four files in `dir`, in file order; the license header is skipped. A
/// missing file or a malformed line is an error naming it (and its line).
pub(crate) fn synsets(dir: &Path) -> Result<Vec<Synset>> {
    let mut out = Vec::new();
    for (pos, name) in ["noun", "verb", "adj", "adv"].iter().enumerate() {
        let path = dir.join(format!("data.{name}"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BertError::Io(format!(
                "{}: {e} (run scripts/fetch-corpus)",
                path.display()
            ))
        })?;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("  ") || line.is_empty() {
                continue; // the license header
            }
            let bad = || {
                BertError::Input(format!(
                    "{}:{}: not a WordNet data line",
                    path.display(),
                    n + 1
                ))
            };
            let mut f = line.split(' ');
            let offset: u64 = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let lex: usize = f.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let word = f.nth(2).ok_or_else(bad)?.to_string();
            let gloss = line.split_once(" | ").map(|x| x.1.trim()).ok_or_else(bad)?;
            out.push(Synset {
                pos,
                offset,
                lex,
                word,
                gloss: gloss.to_string(),
            });
        }
    }
    Ok(out)
}
