//! `bert vocab` as a library call: a WordPiece vocabulary trained on text files, written as
//! vocab.txt and tokenizer.json, and scored on held-out lines (pieces per word).

use crate::io::write_atomic;
use std::path::Path;
use tokenizer::trainer::{self, Algorithm, PiecesPerWord};
use tokenizer::BertTokenizer;

/// The options of `bert vocab`.
#[derive(Clone, Copy, Debug)]
pub struct VocabOptions {
    /// Vocabulary size, special tokens included.
    pub size: usize,
    /// Keep case and accents (else BERT's uncased normalizer).
    pub cased: bool,
    /// Pairs (bottom-up) or candidate pieces (top-down) seen fewer times are not kept.
    pub min_frequency: u64,
    /// Keep at most this many distinct characters.
    pub limit_alphabet: usize,
    pub algorithm: Algorithm,
}

impl Default for VocabOptions {
    fn default() -> Self {
        VocabOptions {
            size: 30522,
            cased: false,
            min_frequency: 2,
            limit_alphabet: 1000,
            algorithm: Algorithm::TopDown,
        }
    }
}

/// Trains a vocabulary on `corpus` (every 50th line set aside), writes OUT/vocab.txt and
/// OUT/tokenizer.json (each through a temporary file), reports on stderr, and returns the
/// held-out score.
pub fn build(
    corpus: &[String],
    out: &Path,
    opts: &VocabOptions,
) -> Result<PiecesPerWord, Box<dyn std::error::Error>> {
    let VocabOptions {
        size,
        cased,
        min_frequency,
        limit_alphabet,
        algorithm,
    } = *opts;
    let start = std::time::Instant::now();
    let mut text = String::new();
    for path in corpus {
        text.push_str(&std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?);
        text.push('\n');
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(format!(
            "{}: no text to train a vocabulary on (every line is empty)",
            corpus.join(", ")
        )
        .into());
    }
    let normalizer = if cased {
        tokenizer::NormalizerConfig::cased()
    } else {
        tokenizer::NormalizerConfig::default()
    };
    let cfg = tokenizer::TrainerConfig {
        vocab_size: size,
        min_frequency,
        limit_alphabet: Some(limit_alphabet),
        normalizer: normalizer.clone(),
        algorithm,
        ..Default::default()
    };
    // Every 50th line is set aside and scored afterwards: pieces per word on text the
    // vocabulary was not trained on (scripts/bench-vocab holds out the same lines for HF's).
    let (train_lines, held) = if lines.len() >= trainer::HELDOUT_EVERY {
        trainer::heldout_split(&lines)
    } else {
        (lines.clone(), Vec::new())
    };
    let vocab = tokenizer::train(&cfg, &train_lines);
    let train_secs = start.elapsed().as_secs_f64();
    let tok = BertTokenizer::new(vocab, normalizer)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_atomic(&out.join("vocab.txt"), tok.vocab.to_vocab_txt().as_bytes())?;
    write_atomic(
        &out.join("tokenizer.json"),
        tokenizer::tokenizer_json(&tok).as_bytes(),
    )?;
    let out = out.display();
    eprintln!(
        "bert vocab: {} tokens from {:.1} MB ({} lines) in {train_secs:.1} s -> {out}/vocab.txt, {out}/tokenizer.json",
        tok.vocab.len(),
        text.len() as f64 / 1e6,
        train_lines.len()
    );
    let score = trainer::pieces_per_word(&tok, &held);
    if score.words > 0 {
        let top: Vec<String> = score
            .top
            .iter()
            .map(|(t, f)| format!("{t} {:.1}%", 100.0 * f))
            .collect();
        eprintln!(
            "bert vocab: held-out {} lines (every {}th): {:.3} pieces per word ({} pieces, {} words, {} [UNK]); most frequent: {}",
            held.len(),
            trainer::HELDOUT_EVERY,
            score.ratio(),
            score.pieces,
            score.words,
            score.unknown,
            top.join(", ")
        );
    }
    Ok(score)
}

/// A tokenizer for building data or fine-tuning: tokenizer.json, or a vocab.txt read as
/// uncased BERT; without padding or truncation (the callers pack and cut themselves).
pub fn load_tokenizer(path: &Path) -> Result<BertTokenizer, Box<dyn std::error::Error>> {
    let p = path.to_string_lossy();
    let mut tok = if p.ends_with(".json") {
        tokenizer::load_tokenizer_json(&p)?
    } else {
        BertTokenizer::from_vocab_file(&p, false)?
    };
    tok.padding = None;
    tok.truncation = None;
    Ok(tok)
}
