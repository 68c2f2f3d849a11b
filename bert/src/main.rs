//! The `bert` command line: a thin layer over the library crates.
//! Subcommands arrive with their issues; `bert demo` says "not yet" until the end-to-end demo
//! exists.

use clap::{Parser, Subcommand, ValueEnum};
use engine::simd::Isa;
use std::io::{BufRead, Write};
use tokenizer::{BertTokenizer, Encoding, Truncation, TruncationStrategy};

/// `println!` that returns the error (a full disk, a closed pipe) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { writeln!(std::io::stdout().lock(), $($t)*) };
}

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
    /// The end-to-end demo: vocabulary, data, pretraining, fill-mask, fine-tuning pretrained vs
    /// from scratch, and a report with plots (scripts/demo fetches the corpus and runs this).
    Demo {
        /// A model directory for the sentence-embedding part (scripts/demo passes all-MiniLM-L6-v2).
        #[arg(long)]
        model: Option<String>,
        /// The folder scripts/fetch-corpus made (corpus.txt, wordnet/); without it only the
        /// engine and embedding parts run.
        #[arg(long)]
        corpus: Option<String>,
        #[arg(long, default_value = "demo-output")]
        out: String,
        /// The time budget, in minutes, for pretraining plus both fine-tuning runs.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Vocabulary size to train.
        #[arg(long, default_value_t = 8192)]
        vocab_size: usize,
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
        /// Where pretraining runs: cpu, cpu-tape, cuda or cuda-bf16 (a `--features cuda`
        /// build); fine-tuning runs on the CPU.
        #[arg(long, default_value = "cpu", value_parser = |s: &str| bert::train::TrainDevice::parse(s).map_err(|e| e.to_string()))]
        device: bert::train::TrainDevice,
        /// The pretrained model's size (default: bert-mini on the CPU, bert-small on a GPU).
        #[arg(long)]
        model_config: Option<String>,
        /// Sequences per pretraining step (default: 32 on the CPU, 128 on a GPU).
        #[arg(long, value_parser = positive)]
        batch: Option<usize>,
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
        /// top-down (Google's WordPiece learner) or likelihood (bottom-up likelihood-gain
        /// merges); see tokenizer::trainer.
        #[arg(long, default_value = "top-down", value_parser = tokenizer::trainer::Algorithm::parse)]
        algorithm: tokenizer::trainer::Algorithm,
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
        #[arg(long, value_parser = positive, default_value_t = 32)]
        batch: usize,
        #[arg(long, value_enum, default_value_t = EmbedFormat::Text)]
        format: EmbedFormat,
        /// cpu, cpu-step (the device code path on the CPU), cuda or cuda-bf16 (a `--features cuda` build).
        #[arg(long, default_value = "cpu", value_parser = |s: &str| bert::train::TrainDevice::parse(s).map_err(|e| e.to_string()))]
        device: bert::train::TrainDevice,
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
        /// Replace an OUT that holds files (the new data is built aside and switched in only
        /// when complete); without it a non-empty OUT is an error.
        #[arg(long)]
        force: bool,
    },
    /// Pretrain (masked LM + next sentence) on `bert data` shards; checkpoints in OUT/checkpoint,
    /// metrics in OUT/metrics.jsonl.
    Pretrain {
        /// A preset (bert-tiny, bert-mini, bert-small, bert-medium, bert-base) or a config.json;
        /// default bert-mini (with --resume: the checkpoint's, and a given one must match it).
        #[arg(long)]
        model_config: Option<String>,
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
        #[arg(long, value_parser = positive, default_value_t = 32)]
        batch: usize,
        /// Micro-batches per step (gradient accumulation).
        #[arg(long, value_parser = positive, default_value_t = 1)]
        accum: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f32,
        /// Warmup steps, or a fraction of all steps when below 1.
        #[arg(long, default_value_t = 0.06)]
        warmup: f64,
        /// Start a new run from this checkpoint's weights (its architecture; a fresh optimizer,
        /// schedule and step count): continued pretraining, e.g. on longer sequences
        #[arg(long)]
        init_from: Option<String>,
        /// The share of the steps after warmup over which the rate decays linearly to 0, held at
        /// its peak before (1: BERT's linear decay; 0.2: warmup-stable-decay)
        #[arg(long, default_value_t = 1.0)]
        decay: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
        #[arg(long, default_value_t = 200)]
        eval_every: u64,
        #[arg(long, default_value_t = 500)]
        checkpoint_every: u64,
        /// Use the shard's fixed masks instead of re-drawing them every epoch.
        #[arg(long)]
        static_masking: bool,
        /// Continue from OUT/checkpoint exactly where it stopped (give the run's settings again:
        /// a changed one is an error naming it).
        #[arg(long, conflicts_with = "force")]
        resume: bool,
        /// Start afresh in an OUT that holds a run, discarding its checkpoint and metrics
        /// (without --resume or --force, such an OUT is an error).
        #[arg(long)]
        force: bool,
        /// Stop after this step (after checkpointing), as an interrupted run would.
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
        /// cpu (the hand-written step, the code path the GPU runs), cpu-tape (the autograd tape),
        /// cuda (GPU 0, f32) or cuda-bf16 (bf16 mixed precision); cuda needs `--features cuda`.
        #[arg(long, default_value = "cpu", value_parser = |s: &str| bert::train::TrainDevice::parse(s).map_err(|e| e.to_string()))]
        device: bert::train::TrainDevice,
        /// Keep the padding tokens (the hand-written step packs each batch's sequences back to
        /// back by default: no compute on padding; the tape always pads).
        #[arg(long)]
        padded: bool,
        /// Set the new model's hidden and attention dropout (0 turns it off, which learns
        /// faster on short budgets); default: the preset's or config's (BERT's 0.1).
        #[arg(long)]
        dropout: Option<f32>,
    },
    /// Fine-tune a sequence classifier: the built-in WordNet supersense task or TSV files;
    /// reports accuracy and macro-F1, writes OUT/model and OUT/metrics.jsonl.
    Finetune {
        /// A pretrained model directory (its encoder; a fresh classifier head).
        #[arg(long)]
        model: String,
        /// A built-in task: wordnet-supersense.
        #[arg(long, conflicts_with_all = ["train", "dev"])]
        task: Option<String>,
        /// TSV: text<TAB>label or text_a<TAB>text_b<TAB>label (an optional header).
        #[arg(long, requires = "dev")]
        train: Option<String>,
        #[arg(long)]
        dev: Option<String>,
        #[arg(long)]
        test: Option<String>,
        #[arg(long)]
        out: String,
        #[arg(long, conflicts_with = "minutes")]
        steps: Option<u64>,
        #[arg(long)]
        minutes: Option<f64>,
        #[arg(long, value_parser = positive, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 1e-4)]
        lr: f32,
        #[arg(long, value_parser = positive, default_value_t = 64)]
        max_len: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The same architecture from random initialisation (the baseline).
        #[arg(long)]
        scratch: bool,
        /// WordNet's data files for --task wordnet-supersense (scripts/fetch-corpus puts them here).
        #[arg(long, default_value = ".cache/corpus/wordnet")]
        wordnet: String,
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
        /// Replace an OUT that holds a fine-tuning run.
        #[arg(long)]
        force: bool,
    },
    /// Fill each [MASK] in TEXT with the masked-LM head's most likely tokens.
    FillMask {
        /// A model directory with a masked-LM head (a pretraining checkpoint, BertForMaskedLM).
        #[arg(long)]
        model: String,
        text: String,
        #[arg(long, value_parser = positive, default_value_t = 5)]
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

/// clap value parser for counts that must be at least 1 (batch sizes, lengths, threads).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// One embedding component as text: the shortest decimal that reads back as the same f32,
/// in scientific notation outside [1e-4, 1e7) so that tiny values stay short
/// (`2.6975832e-32`, not 40 characters of zeros).
fn fmt_component(x: f32) -> String {
    let a = x.abs();
    if a == 0.0 || (1e-4..1e7).contains(&a) || !a.is_finite() {
        x.to_string()
    } else {
        format!("{x:e}")
    }
}

/// glibc hands freed blocks above 128 KB back to the kernel (munmap) and trims the heap's top;
/// training frees and re-allocates the same activation and gradient sizes every step, so every
/// step paid again for fresh zeroed pages (12% of a one-thread BERT-Mini step). Keep freed
/// memory for reuse below 1 GiB instead: the setting the PyTorch comparison in
/// scripts/bench-pretrain also gets (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_). A user's
/// own MALLOC_* environment settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    let set = |var: &str| std::env::var_os(var).is_some();
    // SAFETY: mallopt only changes glibc's allocation thresholds; called before any thread starts.
    unsafe {
        if !set("MALLOC_MMAP_THRESHOLD_") {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
        }
        if !set("MALLOC_TRIM_THRESHOLD_") {
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let default = Command::Demo {
        model: None,
        corpus: None,
        out: "demo-output".into(),
        minutes: 10.0,
        vocab_size: 8192,
        threads: None,
        device: bert::train::TrainDevice::Cpu,
        model_config: None,
        batch: None,
    };
    let result = match cli.command.unwrap_or(default) {
        Command::Demo {
            model,
            corpus,
            out,
            minutes,
            vocab_size,
            threads,
            device,
            model_config,
            batch,
        } => {
            if let Some(t) = threads {
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global();
            }
            let gpu = matches!(
                device,
                bert::train::TrainDevice::Cuda | bert::train::TrainDevice::CudaBf16
            );
            let mut dm = if gpu {
                bert::demo::Recipe::gpu(device)
            } else {
                bert::demo::Recipe::cpu(device)
            };
            if let Some(c) = model_config {
                dm.config = c;
            }
            if let Some(b) = batch {
                for p in &mut dm.phases {
                    p.batch = b;
                }
            }
            demo(model.clone()).and_then(|_| match corpus {
                Some(c) => bert::demo::run(&c, &out, minutes, vocab_size, &dm),
                None => Ok(()),
            })
        }
        Command::Embed {
            model,
            pooling,
            normalize,
            batch,
            format,
            device,
        } => embed(&model, &pooling, normalize, batch, format, device),
        Command::Similarity { model, a, b } => similarity(&model, &a, &b),
        Command::Info { model } => info(&model),
        Command::FillMask { model, text, top_k } => fill_mask(&model, &text, top_k).and_then(|t| {
            std::io::stdout().lock().write_all(t.as_bytes())?;
            Ok(())
        }),
        Command::Finetune {
            model,
            task,
            train,
            dev,
            test,
            out,
            steps,
            minutes,
            batch,
            lr,
            max_len,
            seed,
            scratch,
            wordnet,
            threads,
            force,
        } => {
            if let Some(t) = threads {
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global();
            }
            let cfg = bert::finetune::FinetuneConfig {
                steps: if minutes.is_some() {
                    None
                } else {
                    Some(steps.unwrap_or(1000))
                },
                minutes,
                batch,
                lr,
                max_len,
                seed,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                force,
                ..Default::default()
            };
            let p = |s: &Option<String>| s.as_ref().map(std::path::PathBuf::from);
            bert::finetune::load_dataset(
                task.as_deref(),
                p(&train).as_deref(),
                p(&dev).as_deref(),
                p(&test).as_deref(),
                std::path::Path::new(&wordnet),
            )
            .and_then(|data| {
                bert::finetune::run(
                    std::path::Path::new(&model),
                    &data,
                    std::path::Path::new(&out),
                    &cfg,
                    scratch,
                )
            })
            .map(|_| ())
        }
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
            decay,
            init_from,
            seed,
            threads,
            eval_every,
            checkpoint_every,
            static_masking,
            resume,
            force,
            stop_after,
            device,
            padded,
            dropout,
        } => {
            if let Some(t) = threads {
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build_global();
            }
            let cfg = bert::train::PretrainConfig {
                // None with neither: 1000 steps for a new run, the checkpoint's for --resume.
                steps: steps.filter(|_| minutes.is_none()),
                minutes,
                batch,
                accum,
                lr,
                warmup,
                decay,
                seed,
                eval_every,
                checkpoint_every,
                dynamic_masking: !static_masking,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                stop_after,
                device,
                packed: !padded,
                dropout,
                force,
                init_from: init_from.map(std::path::PathBuf::from),
                ..Default::default()
            };
            // With --resume or --init-from and no --model-config, the checkpoint's architecture
            // ("" skips the check).
            let mc = model_config.unwrap_or_else(|| {
                if resume || cfg.init_from.is_some() {
                    String::new()
                } else {
                    "bert-mini".into()
                }
            });
            pretrain(&mc, &data, &out, &cfg, resume)
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
            force,
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
            force,
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
            algorithm,
        } => bert::vocab::build(
            &corpus,
            std::path::Path::new(&out),
            &bert::vocab::VocabOptions {
                size,
                cased,
                min_frequency,
                limit_alphabet,
                algorithm,
            },
        )
        .map(|_| ()),
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
            Format::Tokens => writeln!(out, "{}", tok.tokens(&enc).join(" "))?,
            Format::Json => {
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
    embed_encodings(model, tok, &encs, pooling, normalize)
}

fn embed_encodings(
    model: &bert::Bert,
    tok: &BertTokenizer,
    encs: &[Encoding],
    pooling: bert::embed::Pooling,
    normalize: bool,
) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let x = bert::BertInput::from_encodings(encs, pad)?;
    Ok(bert::embed::embed_batch(model, &x, pooling, normalize)?)
}

fn embed(
    dir: &str,
    pooling: &str,
    normalize: bool,
    batch: usize,
    format: EmbedFormat,
    device: bert::train::TrainDevice,
) -> Result<(), Box<dyn std::error::Error>> {
    use bert::train::TrainDevice;
    let pooling = bert::embed::Pooling::parse(pooling).expect("clap checked the value");
    let (model, tok) = load_for_embedding(dir)?;
    let h = model.config.hidden_size;
    // The tape's inference path (prepacked, fused) for the CPU; the encoder on a device
    // otherwise (bert::device: the one place that names devices).
    let devices = bert::device::Devices::open(device)?;
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let mut run: bert::device::Embedder<'_> = match device {
        TrainDevice::Cpu | TrainDevice::CpuTape => Box::new(|encs: &[Encoding]| {
            let x = bert::BertInput::from_encodings(encs, pad)?;
            bert::embed::embed_batch(&model, &x, pooling, normalize)
        }),
        _ => devices.embedder(&model, pad, pooling, normalize)?,
    };
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = Vec::new();
    let mut index = 0usize;
    // Lines are read in windows of 64 batches; each window is tokenized at once and its texts
    // are batched in order of token count ([`bert::batching`]). The output keeps the input's
    // order, and each text's embedding does not depend on its batch (tested).
    let batch = batch.max(1);
    let window = if batch == 1 { 1 } else { batch * 64 };
    // Progress on a terminal (texts embedded, tokens/s); a one-line summary at the end.
    let t0 = std::time::Instant::now();
    let mut tokens = 0usize;
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} texts  {msg}  [{elapsed}]")
                .unwrap(),
        );
        b
    });
    let mut flush =
        |lines: &mut Vec<String>, out: &mut dyn Write| -> Result<(), Box<dyn std::error::Error>> {
            if lines.is_empty() {
                return Ok(());
            }
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let encs = tok.encode_batch(&refs, true);
            let v = bert::batching::by_length(encs, batch, h, |group| {
                let e = run(group)?;
                tokens += group.iter().map(|e| e.ids.len()).sum::<usize>();
                if let Some(b) = &bar {
                    b.inc(group.len() as u64);
                    let rate = tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                    b.set_message(format!("{rate:.0} tokens/s"));
                }
                Ok::<_, Box<dyn std::error::Error>>(e)
            })?;
            for row in v.chunks(h) {
                match format {
                    EmbedFormat::Text => {
                        let s: Vec<String> = row.iter().map(|&x| fmt_component(x)).collect();
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
        if lines.len() >= window {
            flush(&mut lines, &mut out)?;
        }
    }
    flush(&mut lines, &mut out)?;
    out.flush()?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "bert embed: {index} texts, {tokens} tokens in {secs:.1} s ({:.0} tokens/s)",
        tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn similarity(dir: &str, a: &str, b: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (model, tok) = load_for_embedding(dir)?;
    let h = model.config.hidden_size;
    let v = embed_texts(&model, &tok, &[a, b], bert::embed::Pooling::Mean, false)?;
    outln!("{:.6}", bert::embed::cosine(&v[..h], &v[h..]))?;
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
    outln!("model:        {}", path.display())?;
    outln!("class:        {}", md.model.task.architecture())?;
    outln!(
        "shape:        {} layers, hidden {}, {} heads, intermediate {}, {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.hidden_act.hf_name()
    )?;
    outln!(
        "tables:       vocab {}, positions {}, token types {}",
        c.vocab_size,
        c.max_position_embeddings,
        c.type_vocab_size
    )?;
    outln!(
        "parameters:   {} ({:.1} M)",
        md.model.params.numel(),
        md.model.params.numel() as f64 / 1e6
    )?;
    for (d, (count, n)) in &dtypes {
        outln!("dtype:        {d}: {count} tensors, {n} values")?;
    }
    outln!(
        "file:         {} ({:.1} MB)",
        md.weights_file.display(),
        size as f64 / 1e6
    )?;
    match &md.tokenizer {
        Some(t) => outln!("tokenizer:    {} tokens", t.vocab.len())?,
        None => outln!("tokenizer:    none (no tokenizer.json or vocab.txt)")?,
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
        "bert pretrain: {} of {} steps in {:.1} s, {:.0} tokens/s; last loss {:.4}; held-out MLM accuracy {:.3} (most frequent token: {:.3}; at [MASK] inputs, from context alone: {:.3} against {:.3}), NSP accuracy {:.3} (the more frequent label: {:.3}) -> {out}/checkpoint",
        s.steps,
        s.total_steps,
        s.seconds,
        s.tokens_per_second,
        s.final_loss,
        s.eval.mlm_accuracy,
        s.eval.majority_accuracy,
        s.eval.mlm_accuracy_at_mask,
        s.eval.majority_accuracy_at_mask,
        s.eval.nsp_accuracy,
        s.eval.nsp_majority_accuracy
    );
    Ok(())
}

fn fill_mask(dir: &str, text: &str, top_k: usize) -> Result<String, Box<dyn std::error::Error>> {
    let fm = bert::fill_mask::FillMask::load(std::path::Path::new(dir))?;
    Ok(fm.fill(text, top_k)?.to_text())
}

fn load_tokenizer(path: &str) -> Result<BertTokenizer, Box<dyn std::error::Error>> {
    bert::vocab::load_tokenizer(std::path::Path::new(path))
}

fn data(
    corpus: &[String],
    tok_path: &str,
    out: &str,
    cfg: bert::data::DataConfig,
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let tok = load_tokenizer(tok_path)?;
    bert::data::build(corpus, &tok, std::path::Path::new(out), &cfg, force)?;
    Ok(())
}

fn demo(model: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_components_read_back_exactly_and_stay_short() {
        let xs = [
            0.0f32,
            -0.0,
            1.0,
            -0.55494356,
            1e-4,
            9.99e-5,
            -2.6975832e-32,
            1.1e-38,
            3e-45,
            1e7,
            -1.2345678e9,
            123.456,
            f32::MAX,
            f32::MIN_POSITIVE,
        ];
        for &x in &xs {
            let s = fmt_component(x);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), x.to_bits(), "{x}: {s}");
            assert!(s.len() <= 16, "{x}: {s} is {} characters", s.len());
        }
        assert_eq!(fmt_component(-2.6975832e-32), "-2.6975832e-32");
        assert_eq!(fmt_component(0.25), "0.25");
        assert!(fmt_component(f32::NAN).parse::<f32>().unwrap().is_nan());
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert!(positive("-1").is_err() && positive("x").is_err());
    }
}
