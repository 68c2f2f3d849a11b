//! The `bert` command line: a thin layer over the library crates.
//! Subcommands arrive with their issues; `bert demo` says "not yet" until the end-to-end demo
//! exists.

use clap::{Parser, Subcommand, ValueEnum};
use engine::simd::Isa;
use std::io::{BufRead, Write};
use tokenizer::{BertTokenizer, Truncation, TruncationStrategy};

#[derive(Parser)]
#[command(
    name = "bert",
    version,
    about = "BERT from scratch: tokenizer, engine, model"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The demo (today: the engine's kernels and sentence embeddings with --model).
    Demo {
        /// A model directory for the embedding part (scripts/demo passes all-MiniLM-L6-v2).
        #[arg(long)]
        model: Option<String>,
    },
    /// Train a WordPiece vocabulary; writes vocab.txt and tokenizer.json into --out.
    Vocab {
        /// Text files, one sentence or paragraph per line.
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<String>,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 30522)]
        size: usize,
        #[arg(long)]
        out: String,
        /// Keep case and accents.
        #[arg(long)]
        cased: bool,
        /// Pairs seen fewer times are not merged.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Keep at most this many distinct characters.
        #[arg(long, default_value_t = 1000)]
        limit_alphabet: usize,
    },
    /// Sentence embeddings of stdin's lines: one line of floats per input line.
    Embed {
        /// A model directory in HF layout (config.json, model.safetensors, tokenizer.json or vocab.txt).
        #[arg(long)]
        model: String,
        #[arg(long, value_parser = ["mean", "cls", "second-to-last"], default_value = "mean")]
        pooling: String,
        /// Scale each embedding to unit length.
        #[arg(long)]
        normalize: bool,
        /// Texts per forward pass (padded to the batch's longest).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = EmbedFormat::Text)]
        format: EmbedFormat,
    },
    /// Cosine similarity of two texts' mean-pooled embeddings.
    Similarity {
        #[arg(long)]
        model: String,
        a: String,
        b: String,
    },
    /// A model directory's configuration, parameter count, dtypes and size.
    Info {
        #[arg(long)]
        model: String,
    },
    /// Build pretraining instances (BERT's recipe) into binary shards: DIR/train.bin,
    /// DIR/heldout.bin, DIR/data.json, and a copy of the tokenizer.
    Data {
        /// Text files: one sentence per line, blank lines between documents.
        #[arg(long, required = true, num_args = 1..)]
        corpus: Vec<String>,
        /// tokenizer.json, or vocab.txt (uncased).
        #[arg(long)]
        tokenizer: String,
        #[arg(long)]
        out: String,
        #[arg(long, default_value_t = 128)]
        max_seq_len: usize,
        /// Passes over the corpus, each with other pairs and masks.
        #[arg(long, default_value_t = 1)]
        dupe_factor: usize,
        #[arg(long, default_value_t = 0.1)]
        short_seq_prob: f64,
        #[arg(long, default_value_t = 0.15)]
        masked_lm_prob: f64,
        #[arg(long, default_value_t = 20)]
        max_predictions: usize,
        /// Mask whole words (a piece and its ## continuations) together.
        #[arg(long)]
        whole_word_mask: bool,
        /// Share of documents held out for evaluation.
        #[arg(long, default_value_t = 0.02)]
        heldout: f64,
        #[arg(long, default_value_t = 12345)]
        seed: u64,
    },
    /// Pretrain (masked LM + next sentence) on `bert data` shards; checkpoints in OUT/checkpoint,
    /// metrics in OUT/metrics.jsonl.
    Pretrain {
        /// A preset (bert-tiny, bert-mini, bert-small, bert-medium, bert-base) or a config.json.
        #[arg(long, default_value = "bert-mini")]
        model_config: String,
        #[arg(long)]
        data: String,
        #[arg(long)]
        out: String,
        /// Optimizer steps.
        #[arg(long, conflicts_with = "minutes")]
        steps: Option<u64>,
        /// A time budget instead of --steps (the step count is fixed from the first steps' speed).
        #[arg(long)]
        minutes: Option<f64>,
        /// Sequences per optimizer step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Micro-batches per step (gradient accumulation).
        #[arg(long, default_value_t = 1)]
        accum: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f32,
        /// Warmup steps, or a fraction of all steps when below 1.
        #[arg(long, default_value_t = 0.06)]
        warmup: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 200)]
        eval_every: u64,
        #[arg(long, default_value_t = 500)]
        checkpoint_every: u64,
        /// Use the shard's fixed masks instead of re-drawing them every epoch.
        #[arg(long)]
        static_masking: bool,
        /// Continue from OUT/checkpoint exactly where it stopped.
        #[arg(long)]
        resume: bool,
        /// Stop after this step (after checkpointing), as an interrupted run would.
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
    },
    /// Fill each [MASK] in TEXT with the masked-LM head's most likely tokens.
    FillMask {
        /// A model directory with a masked-LM head (a pretraining checkpoint, BertForMaskedLM).
        #[arg(long)]
        model: String,
        text: String,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
    },
    /// Tokenize lines of stdin: one output line per input line.
    Tokenize {
        /// tokenizer.json, or vocab.txt (uncased BERT defaults; see --cased).
        #[arg(long)]
        tokenizer: String,
        /// With a vocab.txt: keep case and accents.
        #[arg(long)]
        cased: bool,
        /// Do not add [CLS] and [SEP].
        #[arg(long)]
        no_special: bool,
        /// Each line is a pair: first<TAB>second.
        #[arg(long)]
        pairs: bool,
        #[arg(long, value_enum, default_value_t = Format::Ids)]
        format: Format,
        /// Truncate to this many tokens (special tokens included), longest first.
        #[arg(long)]
        max_len: Option<usize>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum EmbedFormat {
    /// Space-separated floats.
    Text,
    /// JSON lines: {"index", "embedding"}.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Space-separated ids.
    Ids,
    /// Space-separated tokens.
    Tokens,
    /// JSON: ids, tokens, type ids, char offsets, word ids.
    Json,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo { model: None }) {
        Command::Demo { model } => demo(model),
        Command::Embed {
            model,
            pooling,
            normalize,
            batch,
            format,
        } => embed(&model, &pooling, normalize, batch, format),
        Command::Similarity { model, a, b } => similarity(&model, &a, &b),
        Command::Info { model } => info(&model),
        Command::FillMask { model, text, top_k } => fill_mask(&model, &text, top_k),
        Command::Pretrain {
            model_config,
            data,
            out,
            steps,
            minutes,
            batch,
            accum,
            lr,
            warmup,
            seed,
            threads,
            eval_every,
            checkpoint_every,
            static_masking,
            resume,
            stop_after,
        } => {
            if let Some(t) = threads {
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global();
            }
            let cfg = bert::train::PretrainConfig {
                steps: if minutes.is_some() {
                    None
                } else {
                    Some(steps.unwrap_or(1000))
                },
                minutes,
                batch,
                accum,
                lr,
                warmup,
                seed,
                eval_every: eval_every.max(1),
                checkpoint_every: checkpoint_every.max(1),
                dynamic_masking: !static_masking,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                stop_after,
                ..Default::default()
            };
            pretrain(&model_config, &data, &out, &cfg, resume)
        }
        Command::Data {
            corpus,
            tokenizer,
            out,
            max_seq_len,
            dupe_factor,
            short_seq_prob,
            masked_lm_prob,
            max_predictions,
            whole_word_mask,
            heldout,
            seed,
        } => data(
            &corpus,
            &tokenizer,
            &out,
            bert::data::DataConfig {
                max_seq_len,
                dupe_factor,
                short_seq_prob,
                masked_lm_prob,
                max_predictions,
                whole_word_mask,
                seed,
                heldout_fraction: heldout,
            },
        ),
        Command::Tokenize {
            tokenizer,
            cased,
            no_special,
            pairs,
            format,
            max_len,
        } => tokenize(&tokenizer, cased, !no_special, pairs, format, max_len),
        Command::Vocab {
            corpus,
            size,
            out,
            cased,
            min_frequency,
            limit_alphabet,
        } => vocab(&corpus, size, &out, cased, min_frequency, limit_alphabet),
    };
    if let Err(e) = result {
        // A reader that stopped early (`bert tokenize ... | head`) is not an error.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("bert: {e}");
        std::process::exit(1);
    }
}

fn tokenize(
    path: &str,
    cased: bool,
    special: bool,
    pairs: bool,
    format: Format,
    max_len: Option<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
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
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| format!("stdin line {}: {e}", n + 1))?;
        let enc = if pairs {
            let (a, b) = line.split_once('\t').ok_or_else(|| {
                format!(
                    "stdin line {}: --pairs needs two texts separated by a tab",
                    n + 1
                )
            })?;
            tok.encode_pair(a, b, special)
                .map_err(|e| format!("stdin line {}: {e}", n + 1))?
        } else {
            tok.encode(&line, special)
        };
        match format {
            Format::Ids => writeln!(
                out,
                "{}",
                enc.ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )?,
            Format::Tokens => writeln!(
                out,
                "{}",
                enc.tokens
                    .iter()
                    .map(|t| t.as_ref())
                    .collect::<Vec<_>>()
                    .join(" ")
            )?,
            Format::Json => {
                let v = serde_json::json!({
                    "ids": enc.ids, "tokens": enc.tokens.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
                    "type_ids": enc.type_ids, "offsets": enc.char_offsets, "word_ids": enc.word_ids,
                });
                writeln!(out, "{v}")?
            }
        }
    }
    Ok(())
}

/// A model directory and its tokenizer, set up for embedding: no fixed padding (batches pad
/// to their longest), truncation to the model's positions when the tokenizer sets none.
fn load_for_embedding(
    dir: &str,
) -> Result<(bert::Bert, BertTokenizer), Box<dyn std::error::Error>> {
    let md = bert::ModelDir::load(
        std::path::Path::new(dir),
        &bert::LoadOptions {
            task: Some(bert::Task::Base),
            init_missing_head: None,
        },
    )?;
    let mut tok = md
        .tokenizer
        .ok_or_else(|| format!("{dir}: no tokenizer.json or vocab.txt in the model directory"))?;
    tok.padding = None;
    let max = md.model.config.max_position_embeddings;
    match &mut tok.truncation {
        Some(t) => t.max_length = t.max_length.min(max),
        None => {
            tok.truncation = Some(Truncation {
                max_length: max,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                left: false,
            })
        }
    }
    Ok((md.model, tok))
}

fn embed_texts(
    model: &bert::Bert,
    tok: &BertTokenizer,
    texts: &[&str],
    pooling: bert::embed::Pooling,
    normalize: bool,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let encs = tok.encode_batch(texts, true);
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let x = bert::BertInput::from_encodings(&encs, pad)?;
    Ok(bert::embed::embed_batch(model, &x, pooling, normalize)?)
}

fn embed(
    dir: &str,
    pooling: &str,
    normalize: bool,
    batch: usize,
    format: EmbedFormat,
) -> Result<(), Box<dyn std::error::Error>> {
    let pooling = bert::embed::Pooling::parse(pooling).expect("clap checked the value");
    let (model, tok) = load_for_embedding(dir)?;
    let h = model.config.hidden_size;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = Vec::new();
    let mut index = 0usize;
    let mut flush =
        |lines: &mut Vec<String>, out: &mut dyn Write| -> Result<(), Box<dyn std::error::Error>> {
            if lines.is_empty() {
                return Ok(());
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let v = embed_texts(&model, &tok, &refs, pooling, normalize)?;
            for row in v.chunks(h) {
                match format {
                    EmbedFormat::Text => {
                        let s: Vec<String> = row.iter().map(|x| x.to_string()).collect();
                        writeln!(out, "{}", s.join(" "))?;
                    }
                    EmbedFormat::Json => writeln!(
                        out,
                        "{}",
                        serde_json::json!({"index": index, "embedding": row})
                    )?,
                }
                index += 1;
            }
            lines.clear();
            Ok(())
        };
    for (n, line) in stdin.lock().lines().enumerate() {
        lines.push(line.map_err(|e| format!("stdin line {}: {e}", n + 1))?);
        if lines.len() >= batch.max(1) {
            flush(&mut lines, &mut out)?;
        }
    }
    flush(&mut lines, &mut out)?;
    Ok(())
}

fn similarity(dir: &str, a: &str, b: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (model, tok) = load_for_embedding(dir)?;
    let h = model.config.hidden_size;
    let v = embed_texts(&model, &tok, &[a, b], bert::embed::Pooling::Mean, false)?;
    println!("{:.6}", bert::embed::cosine(&v[..h], &v[h..]));
    Ok(())
}

fn info(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(dir);
    let md = bert::ModelDir::load(path, &bert::LoadOptions::default())?;
    let c = &md.model.config;
    let st = bert::safetensors::SafeTensors::open(&md.weights_file)?;
    let mut dtypes = std::collections::BTreeMap::<String, (usize, usize)>::new();
    for n in st.names() {
        let i = st.info(n).unwrap();
        let e = dtypes.entry(i.dtype.clone()).or_default();
        e.0 += 1;
        e.1 += i.shape.iter().product::<usize>();
    }
    let size = std::fs::metadata(&md.weights_file)?.len();
    println!("model:        {}", path.display());
    println!("class:        {}", md.model.task.architecture());
    println!(
        "shape:        {} layers, hidden {}, {} heads, intermediate {}, {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.hidden_act.hf_name()
    );
    println!(
        "tables:       vocab {}, positions {}, token types {}",
        c.vocab_size, c.max_position_embeddings, c.type_vocab_size
    );
    println!(
        "parameters:   {} ({:.1} M)",
        md.model.params.numel(),
        md.model.params.numel() as f64 / 1e6
    );
    for (d, (count, n)) in &dtypes {
        println!("dtype:        {d}: {count} tensors, {n} values");
    }
    println!(
        "file:         {} ({:.1} MB)",
        md.weights_file.display(),
        size as f64 / 1e6
    );
    match &md.tokenizer {
        Some(t) => println!("tokenizer:    {} tokens", t.vocab.len()),
        None => println!("tokenizer:    none (no tokenizer.json or vocab.txt)"),
    }
    Ok(())
}

fn pretrain(
    model_config: &str,
    data: &str,
    out: &str,
    cfg: &bert::train::PretrainConfig,
    resume: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let s = bert::train::pretrain(
        model_config,
        std::path::Path::new(data),
        std::path::Path::new(out),
        cfg,
        resume,
    )?;
    eprintln!(
        "bert pretrain: {} of {} steps in {:.1} s, {:.0} tokens/s; last loss {:.4}; held-out MLM accuracy {:.3} (most frequent token: {:.3}), NSP accuracy {:.3} -> {out}/checkpoint",
        s.steps,
        s.total_steps,
        s.seconds,
        s.tokens_per_second,
        s.final_loss,
        s.eval.mlm_accuracy,
        s.eval.majority_accuracy,
        s.eval.nsp_accuracy
    );
    Ok(())
}

fn fill_mask(dir: &str, text: &str, top_k: usize) -> Result<(), Box<dyn std::error::Error>> {
    let md = bert::ModelDir::load(
        std::path::Path::new(dir),
        &bert::LoadOptions {
            task: Some(bert::Task::MaskedLm),
            init_missing_head: None,
        },
    )?;
    let mut tok = md
        .tokenizer
        .ok_or_else(|| format!("{dir}: no tokenizer.json or vocab.txt"))?;
    tok.padding = None;
    let model = md.model;
    let mask_id = tok
        .vocab
        .id("[MASK]")
        .ok_or("the vocabulary has no [MASK]")?;
    let enc = tok.encode(text, true);
    let rows: Vec<usize> = (0..enc.ids.len())
        .filter(|&i| enc.ids[i] == mask_id)
        .collect();
    if rows.is_empty() {
        return Err(format!("no [MASK] in {text:?}").into());
    }
    let x = bert::BertInput::from_encodings(std::slice::from_ref(&enc), 0)?;
    let _g = engine::no_grad();
    let out = model.forward(&x, bert::Forward::default())?;
    let logits = model.mlm_logits(&out, Some(&rows))?.value().to_vec();
    let v = model.config.vocab_size;
    let mut best = Vec::new();
    let mut stdout = std::io::stdout().lock();
    for (r, &pos) in rows.iter().enumerate() {
        let row = &logits[r * v..(r + 1) * v];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let z: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
        let mut idx: Vec<usize> = (0..v).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        if rows.len() > 1 {
            writeln!(stdout, "[MASK] {} (token {pos}):", r + 1)?;
        }
        for &i in idx.iter().take(top_k.max(1)) {
            let p = ((row[i] - max) as f64).exp() / z;
            writeln!(
                stdout,
                "{:>8.4}  {}",
                p,
                tok.vocab.token(i as u32).unwrap_or("?")
            )?;
        }
        best.push(idx[0] as u32);
    }
    let mut ids = enc.ids.clone();
    for (&pos, &b) in rows.iter().zip(&best) {
        ids[pos] = b;
    }
    writeln!(stdout, "{}", tok.decode(&ids, true))?;
    Ok(())
}

fn load_tokenizer(path: &str) -> Result<BertTokenizer, Box<dyn std::error::Error>> {
    let mut tok = if path.ends_with(".json") {
        tokenizer::load_tokenizer_json(path)?
    } else {
        BertTokenizer::from_vocab_file(path, false)?
    };
    tok.padding = None;
    tok.truncation = None;
    Ok(tok)
}

fn data(
    corpus: &[String],
    tok_path: &str,
    out: &str,
    cfg: bert::data::DataConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    use bert::data::{create_instances, is_heldout, read_documents, write_shard, Specials};
    let start = std::time::Instant::now();
    if cfg.max_seq_len < 8 || cfg.max_seq_len > 4096 {
        return Err(format!("--max-seq-len {} is outside 8..=4096", cfg.max_seq_len).into());
    }
    if !(0.0..1.0).contains(&cfg.masked_lm_prob)
        || !(0.0..=1.0).contains(&cfg.short_seq_prob)
        || !(0.0..1.0).contains(&cfg.heldout_fraction)
    {
        return Err(
            "--masked-lm-prob and --heldout must be in [0, 1), --short-seq-prob in [0, 1]".into(),
        );
    }
    let tok = load_tokenizer(tok_path)?;
    let sp = Specials::from_tokenizer(&tok)?;
    let docs = read_documents(corpus)?;
    if docs.is_empty() {
        return Err(format!(
            "{}: no documents (one sentence per line, blank lines between documents)",
            corpus.join(", ")
        )
        .into());
    }
    let n_sent: usize = docs.iter().map(Vec::len).sum();
    eprintln!(
        "bert data: {} documents, {n_sent} sentences; tokenizing ...",
        docs.len()
    );
    let mut train = Vec::new();
    let mut held = Vec::new();
    let mut n_tokens = 0usize;
    for (d, doc) in docs.iter().enumerate() {
        let refs: Vec<&str> = doc.iter().map(String::as_str).collect();
        let ids: Vec<Vec<u32>> = tok
            .encode_batch(&refs, false)
            .into_iter()
            .map(|e| e.ids)
            .filter(|v| !v.is_empty())
            .collect();
        n_tokens += ids.iter().map(Vec::len).sum::<usize>();
        if is_heldout(d, &cfg) {
            held.push(ids);
        } else {
            train.push(ids);
        }
    }
    eprintln!(
        "bert data: {n_tokens} tokens ({:.1} s); building instances ...",
        start.elapsed().as_secs_f64()
    );
    let train_inst = create_instances(&train, &cfg, &sp);
    let held_cfg = bert::data::DataConfig {
        dupe_factor: 1,
        seed: cfg.seed ^ 0x4E1D,
        ..cfg.clone()
    };
    let held_inst = create_instances(&held, &held_cfg, &sp);
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    let dir = std::path::Path::new(out);
    write_shard(
        &dir.join("train.bin"),
        &train_inst,
        cfg.max_seq_len,
        cfg.max_predictions,
    )?;
    write_shard(
        &dir.join("heldout.bin"),
        &held_inst,
        cfg.max_seq_len,
        cfg.max_predictions,
    )?;
    write_atomic(
        &format!("{out}/tokenizer.json"),
        &tokenizer::tokenizer_json(&tok),
    )?;
    write_atomic(&format!("{out}/vocab.txt"), &tok.vocab.to_vocab_txt())?;
    let meta = serde_json::json!({
        "corpus": corpus, "documents": docs.len(), "sentences": n_sent, "tokens": n_tokens,
        "train_documents": train.len(), "heldout_documents": held.len(),
        "train_instances": train_inst.len(), "heldout_instances": held_inst.len(),
        "max_seq_len": cfg.max_seq_len, "dupe_factor": cfg.dupe_factor, "short_seq_prob": cfg.short_seq_prob,
        "masked_lm_prob": cfg.masked_lm_prob, "max_predictions": cfg.max_predictions,
        "whole_word_mask": cfg.whole_word_mask, "seed": cfg.seed, "vocab_size": tok.vocab.len(),
    });
    write_atomic(
        &format!("{out}/data.json"),
        &serde_json::to_string_pretty(&meta)?,
    )?;
    eprintln!(
        "bert data: {} training and {} held-out instances -> {out}/train.bin, heldout.bin ({:.1} s)",
        train_inst.len(),
        held_inst.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn vocab(
    corpus: &[String],
    size: usize,
    out: &str,
    cased: bool,
    min_frequency: u64,
    limit_alphabet: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let mut text = String::new();
    for path in corpus {
        text.push_str(&std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?);
        text.push('\n');
    }
    let lines: Vec<&str> = text.lines().collect();
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
        ..Default::default()
    };
    let vocab = tokenizer::train(&cfg, &lines);
    let tok = BertTokenizer::new(vocab, normalizer)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    write_atomic(&format!("{out}/vocab.txt"), &tok.vocab.to_vocab_txt())?;
    write_atomic(
        &format!("{out}/tokenizer.json"),
        &tokenizer::tokenizer_json(&tok),
    )?;
    eprintln!("bert vocab: {} tokens from {:.1} MB ({} lines) in {:.1} s -> {out}/vocab.txt, {out}/tokenizer.json", tok.vocab.len(), text.len() as f64 / 1e6, lines.len(), start.elapsed().as_secs_f64());
    Ok(())
}

/// Writes `path` through a temporary file and a rename, so a reader never sees half a file
/// and an interrupted run leaves the old file intact.
fn write_atomic(path: &str, contents: &str) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, contents).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{path}: {e}"))?;
    Ok(())
}

fn demo(model: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "bert demo: the training demo (corpus -> vocabulary -> pretraining -> fine-tuning -> report)")?;
    writeln!(out, "is not here yet (issue 6). What runs today:")?;
    writeln!(
        out,
        "  tensor engine: CPU kernels {:?} (using {:?}); bf16 GEMM {}",
        Isa::available(),
        Isa::best(),
        engine::gemm_bf16::bf16_mode(Isa::best())
    )?;
    let Some(dir) = model else {
        writeln!(out, "  (give --model DIR, or run scripts/demo, for sentence embeddings with all-MiniLM-L6-v2)")?;
        return Ok(());
    };
    let t = std::time::Instant::now();
    let (model, tok) = load_for_embedding(&dir)?;
    writeln!(
        out,
        "  loaded {dir}: {} layers, hidden {}, {:.1} M parameters, in {:.2} s",
        model.config.num_hidden_layers,
        model.config.hidden_size,
        model.params.numel() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    )?;
    let texts = [
        "A man is playing a guitar.",
        "Someone plays an instrument on stage.",
        "The cat sleeps on the warm windowsill.",
        "A kitten is napping in the sun.",
        "Interest rates rose by half a point.",
    ];
    let t = std::time::Instant::now();
    let v = embed_texts(&model, &tok, &texts, bert::embed::Pooling::Mean, true)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let h = model.config.hidden_size;
    writeln!(
        out,
        "  sentence embeddings (mean pooling, normalized) of {} texts in {ms:.0} ms; cosine similarities:",
        texts.len()
    )?;
    for (i, a) in texts.iter().enumerate() {
        let row: Vec<String> = (0..texts.len())
            .map(|j| {
                format!(
                    "{:5.2}",
                    bert::embed::cosine(&v[i * h..(i + 1) * h], &v[j * h..(j + 1) * h])
                )
            })
            .collect();
        writeln!(out, "    [{i}] {} {a}", row.join(" "))?;
    }
    writeln!(
        out,
        "  more: bert embed | similarity | info | tokenize | vocab (bert --help); README.md"
    )?;
    Ok(())
}
