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
                DemoModel::gpu(device)
            } else {
                DemoModel::cpu(device)
            };
            if let Some(c) = model_config {
                dm.config = c;
            }
            if let Some(b) = batch {
                dm.batch = b;
            }
            demo(model.clone()).and_then(|_| match corpus {
                Some(c) => train_demo(&c, &out, minutes, vocab_size, &dm),
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
            finetune_cmd(
                &model,
                task.as_deref(),
                train,
                dev,
                test,
                &out,
                &cfg,
                scratch,
                &wordnet,
            )
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
                ..Default::default()
            };
            // With --resume and no --model-config, the checkpoint's architecture ("" skips the check).
            let mc = model_config.unwrap_or_else(|| {
                if resume {
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
        } => vocab(
            &corpus,
            size,
            &out,
            cased,
            min_frequency,
            limit_alphabet,
            algorithm,
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

/// Embeds a batch of tokenized texts (one vector per text, concatenated).
type Embedder<'a> =
    Box<dyn FnMut(&[Encoding]) -> Result<Vec<f32>, Box<dyn std::error::Error>> + 'a>;

/// An embedder running the encoder on `dev` (weights uploaded once).
fn device_embedder<'a, D: engine::device::Device>(
    dev: &'a D,
    model: &'a bert::Bert,
    tok: &'a BertTokenizer,
    pooling: bert::embed::Pooling,
    normalize: bool,
) -> Result<Embedder<'a>, Box<dyn std::error::Error>>
where
    D::Weights: 'a,
{
    let c = &model.config;
    let vals = bert::step::encoder_from_named(c, |n: &str| {
        model.params.get(n).map(|v| v.value().to_vec())
    })?;
    let weights = dev.weights(&vals)?;
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    Ok(Box::new(move |encs: &[Encoding]| {
        let x = bert::BertInput::from_encodings(encs, pad)?;
        let refs = dev.weight_refs(&weights);
        Ok(bert::embed::embed_batch_on(
            dev, c, &refs, &x, pooling, normalize,
        )?)
    }))
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
    #[cfg(feature = "cuda")]
    let cuda = match device {
        TrainDevice::Cuda => Some(engine::device_cuda::Cuda::new(0)?),
        _ => None,
    };
    #[cfg(feature = "cuda")]
    let cuda_bf16 = match device {
        TrainDevice::CudaBf16 => Some(engine::device_cuda_bf16::CudaBf16::new(0)?),
        _ => None,
    };
    let mut run: Embedder<'_> = match device {
        TrainDevice::Cpu | TrainDevice::CpuTape => {
            Box::new(|encs: &[Encoding]| embed_encodings(&model, &tok, encs, pooling, normalize))
        }
        TrainDevice::CpuStep => {
            device_embedder(&engine::device::Cpu, &model, &tok, pooling, normalize)?
        }
        #[cfg(feature = "cuda")]
        TrainDevice::Cuda => {
            device_embedder(cuda.as_ref().unwrap(), &model, &tok, pooling, normalize)?
        }
        #[cfg(feature = "cuda")]
        TrainDevice::CudaBf16 => device_embedder(
            cuda_bf16.as_ref().unwrap(),
            &model,
            &tok,
            pooling,
            normalize,
        )?,
        #[cfg(not(feature = "cuda"))]
        TrainDevice::Cuda | TrainDevice::CudaBf16 => {
            return Err(
                "--device cuda: this build has no CUDA support (build with `--features cuda`)"
                    .into(),
            )
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = Vec::new();
    let mut index = 0usize;
    // Lines are read in windows of 64 batches; each window is tokenized at once and its texts
    // are batched in order of token count, so that a batch pads its texts to a similar length
    // instead of to the window's longest. (sentence-transformers sorts by characters; on the
    // corpus, where code and URLs make many tokens per character, batches sorted that way
    // padded to 1.59x the real tokens, sorted by tokens 1.08x.) The output keeps the input's
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
            let mut encs = tok.encode_batch(&refs, true);
            let mut order: Vec<usize> = (0..lines.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(encs[i].ids.len()));
            let mut v = vec![0.0f32; lines.len() * h];
            for chunk in order.chunks(batch) {
                let group: Vec<Encoding> = chunk
                    .iter()
                    .map(|&i| std::mem::take(&mut encs[i]))
                    .collect();
                let e = run(&group)?;
                tokens += group.iter().map(|e| e.ids.len()).sum::<usize>();
                if let Some(b) = &bar {
                    b.inc(group.len() as u64);
                    let rate = tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                    b.set_message(format!("{rate:.0} tokens/s"));
                }
                for (&i, row) in chunk.iter().zip(e.chunks(h)) {
                    v[i * h..(i + 1) * h].copy_from_slice(row);
                }
            }
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

#[allow(clippy::too_many_arguments)]
fn finetune_cmd(
    model: &str,
    task: Option<&str>,
    train: Option<String>,
    dev: Option<String>,
    test: Option<String>,
    out: &str,
    cfg: &bert::finetune::FinetuneConfig,
    scratch: bool,
    wordnet: &str,
) -> Result<bert::finetune::FinetuneReport, Box<dyn std::error::Error>> {
    use bert::finetune::*;
    let data = match (task, train, dev) {
        (Some("wordnet-supersense"), _, _) => wordnet_supersense(std::path::Path::new(wordnet))?,
        (Some(other), _, _) => {
            return Err(format!("unknown task '{other}' (known: wordnet-supersense)").into())
        }
        (None, Some(tr), Some(dv)) => {
            let mut labels = Vec::new();
            let train = read_tsv(std::path::Path::new(&tr), &mut labels)?;
            let dev = read_tsv_known(std::path::Path::new(&dv), &labels)?;
            let test = match test {
                Some(t) => read_tsv_known(std::path::Path::new(&t), &labels)?,
                None => vec![],
            };
            Dataset {
                train,
                dev,
                test,
                labels,
            }
        }
        _ => return Err("give --task wordnet-supersense, or --train and --dev TSV files".into()),
    };
    eprintln!(
        "bert finetune: {} labels; {} train, {} dev, {} test examples; {} from {model}",
        data.labels.len(),
        data.train.len(),
        data.dev.len(),
        data.test.len(),
        if scratch {
            "random initialisation, architecture"
        } else {
            "encoder"
        }
    );
    let (m, tok) = classifier(std::path::Path::new(model), &data.labels, scratch, cfg.seed)?;
    let r = finetune(&m, &tok, &data, cfg, std::path::Path::new(out))?;
    let test = r
        .test
        .map(|t| {
            format!(
                "; test accuracy {:.4}, macro-F1 {:.4} ({} examples)",
                t.accuracy, t.macro_f1, t.n
            )
        })
        .unwrap_or_default();
    eprintln!(
        "bert finetune: {} steps in {:.1} s; dev accuracy {:.4}, macro-F1 {:.4}{test} -> {out}/model",
        r.steps, r.seconds, r.dev.accuracy, r.dev.macro_f1
    );
    let summary = serde_json::json!({
        "steps": r.steps, "seconds": r.seconds, "scratch": scratch,
        "dev_accuracy": r.dev.accuracy, "dev_macro_f1": r.dev.macro_f1,
        "test_accuracy": r.test.map(|t| t.accuracy), "test_macro_f1": r.test.map(|t| t.macro_f1),
        "curve": r.curve,
    });
    write_atomic(
        &format!("{out}/summary.json"),
        &serde_json::to_string_pretty(&summary)?,
    )?;
    Ok(r)
}

fn fill_mask(dir: &str, text: &str, top_k: usize) -> Result<String, Box<dyn std::error::Error>> {
    let fm = bert::fill_mask::FillMask::load(std::path::Path::new(dir))?;
    Ok(fm.fill(text, top_k)?.to_text())
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
    force: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let tok = load_tokenizer(tok_path)?;
    bert::data::build(corpus, &tok, std::path::Path::new(out), &cfg, force)?;
    Ok(())
}

fn vocab(
    corpus: &[String],
    size: usize,
    out: &str,
    cased: bool,
    min_frequency: u64,
    limit_alphabet: usize,
    algorithm: tokenizer::trainer::Algorithm,
) -> Result<tokenizer::trainer::PiecesPerWord, Box<dyn std::error::Error>> {
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
    let (train_lines, held) = if lines.len() >= tokenizer::trainer::HELDOUT_EVERY {
        tokenizer::trainer::heldout_split(&lines)
    } else {
        (lines.clone(), Vec::new())
    };
    let vocab = tokenizer::train(&cfg, &train_lines);
    let train_secs = start.elapsed().as_secs_f64();
    let tok = BertTokenizer::new(vocab, normalizer)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    write_atomic(&format!("{out}/vocab.txt"), &tok.vocab.to_vocab_txt())?;
    write_atomic(
        &format!("{out}/tokenizer.json"),
        &tokenizer::tokenizer_json(&tok),
    )?;
    eprintln!(
        "bert vocab: {} tokens from {:.1} MB ({} lines) in {train_secs:.1} s -> {out}/vocab.txt, {out}/tokenizer.json",
        tok.vocab.len(),
        text.len() as f64 / 1e6,
        train_lines.len()
    );
    let score = tokenizer::trainer::pieces_per_word(&tok, &held);
    if score.words > 0 {
        let top: Vec<String> = score
            .top
            .iter()
            .map(|(t, f)| format!("{t} {:.1}%", 100.0 * f))
            .collect();
        eprintln!(
            "bert vocab: held-out {} lines (every {}th): {:.3} pieces per word ({} pieces, {} words, {} [UNK]); most frequent: {}",
            held.len(),
            tokenizer::trainer::HELDOUT_EVERY,
            score.ratio(),
            score.pieces,
            score.words,
            score.unknown,
            top.join(", ")
        );
    }
    Ok(score)
}

/// Writes `path` through a temporary file and a rename ([`bert::io::write_atomic`]), so a
/// reader never sees half a file and an interrupted run leaves the old file intact.
fn write_atomic(path: &str, contents: &str) -> Result<(), Box<dyn std::error::Error>> {
    Ok(bert::io::write_atomic(
        std::path::Path::new(path),
        contents.as_bytes(),
    )?)
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

/// The training demo: corpus -> vocabulary -> shards -> pretraining -> fill-mask -> fine-tuning
/// (pretrained and from scratch, same budget) -> OUT/report.md with plots.
/// What the demo pretrains, where, and how: the recipe. The CPU's was chosen by measured
/// ablations at equal wall-clock on two cores (README, "Pretraining recipes"; scripts/pretrain-recipes).
struct DemoModel {
    device: bert::train::TrainDevice,
    config: String,
    batch: usize,
    lr: f32,
    warmup: f64,
    /// Hidden and attention dropout (None: the preset's 0.1).
    dropout: Option<f32>,
    max_seq_len: usize,
    max_predictions: usize,
    eval_every: u64,
}

impl DemoModel {
    /// Two CPU cores, minutes: the smallest BERT without dropout, on short sequences and small
    /// batches (more, smaller steps), at a high learning rate.
    fn cpu(device: bert::train::TrainDevice) -> Self {
        DemoModel {
            device,
            config: "bert-tiny".into(),
            batch: 16,
            lr: 2e-3,
            warmup: 0.1,
            dropout: Some(0.0),
            max_seq_len: 64,
            max_predictions: 10,
            eval_every: 100,
        }
    }

    /// A GPU: BERT-Small, batch 128 of 128 tokens.
    fn gpu(device: bert::train::TrainDevice) -> Self {
        DemoModel {
            device,
            config: "bert-small".into(),
            batch: 128,
            lr: 5e-4,
            warmup: 0.1,
            dropout: None,
            max_seq_len: 128,
            max_predictions: 20,
            eval_every: 25,
        }
    }
}

fn train_demo(
    corpus_dir: &str,
    out: &str,
    minutes: f64,
    vocab_size: usize,
    dm: &DemoModel,
) -> Result<(), Box<dyn std::error::Error>> {
    use bert::report::{line_chart, Series};
    let t0 = std::time::Instant::now();
    let corpus = format!("{corpus_dir}/corpus.txt");
    let wordnet = format!("{corpus_dir}/wordnet");
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    let step = |s: &str| outln!("\n== {s} ({:.0} s)", t0.elapsed().as_secs_f64());
    step("1/6 WordPiece vocabulary")?;
    let vdir = format!("{out}/vocab");
    let vocab_score = vocab(
        std::slice::from_ref(&corpus),
        vocab_size,
        &vdir,
        false,
        2,
        1000,
        tokenizer::trainer::Algorithm::TopDown,
    )?;
    step("2/6 pretraining data")?;
    let ddir = format!("{out}/data");
    let dcfg = bert::data::DataConfig {
        max_seq_len: dm.max_seq_len,
        max_predictions: dm.max_predictions,
        ..Default::default()
    };
    data(
        std::slice::from_ref(&corpus),
        &format!("{vdir}/tokenizer.json"),
        &ddir,
        dcfg,
        true,
    )?;
    step(&format!("3/6 pretraining {} on {:?}", dm.config, dm.device))?;
    let pt_minutes = minutes * 0.6;
    let pcfg = bert::train::PretrainConfig {
        steps: None,
        minutes: Some(pt_minutes),
        batch: dm.batch,
        device: dm.device,
        lr: dm.lr,
        warmup: dm.warmup,
        dropout: dm.dropout,
        eval_every: dm.eval_every,
        // About 320 held-out sequences per evaluation, whatever the batch size.
        eval_batches: 320usize.div_ceil(dm.batch).max(1),
        checkpoint_every: 1000,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        // The demo's folder is its own: a second demo replaces the first one's runs.
        force: true,
        ..Default::default()
    };
    let pdir = format!("{out}/pretrain");
    let ps = bert::train::pretrain(
        &dm.config,
        std::path::Path::new(&ddir),
        std::path::Path::new(&pdir),
        &pcfg,
        false,
    )?;
    outln!(
        "pretrained {} steps in {:.0} s ({:.0} tokens/s); held-out MLM accuracy {:.3} (most frequent token {:.3}), NSP accuracy {:.3}",
        ps.steps, ps.seconds, ps.tokens_per_second, ps.eval.mlm_accuracy, ps.eval.majority_accuracy, ps.eval.nsp_accuracy
    )?;
    step("4/6 fill-mask")?;
    let ckpt = format!("{pdir}/checkpoint");
    let mut fills = String::new();
    for text in [
        "The [MASK] is the largest animal that lives in the sea.",
        "A small bird that [MASK] in the spring.",
        "The function returns a [MASK] of the list.",
        "To cut with a [MASK].",
    ] {
        let r = fill_mask(&ckpt, text, 3)?;
        outln!("{text}\n{r}")?;
        fills += &format!("`{text}`\n\n```\n{r}```\n\n");
    }
    step("5/6 fine-tuning on WordNet supersenses: pretrained, then from scratch")?;
    let fcfg = bert::finetune::FinetuneConfig {
        steps: None,
        minutes: Some(minutes * 0.2),
        // A short budget: a higher rate than BERT's usual 2e-5..1e-4 (the same for both runs).
        lr: 3e-4,
        eval_max: 1000,
        final_max: 3000,
        evals: 8,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        force: true,
        ..Default::default()
    };
    let task = Some("wordnet-supersense");
    let pre = finetune_cmd(
        &ckpt,
        task,
        None,
        None,
        None,
        &format!("{out}/finetune-pretrained"),
        &fcfg,
        false,
        &wordnet,
    )?;
    let scr = finetune_cmd(
        &ckpt,
        task,
        None,
        None,
        None,
        &format!("{out}/finetune-scratch"),
        &fcfg,
        true,
        &wordnet,
    )?;
    step("6/6 report")?;
    bert::report::write_pretrain_plots(
        std::path::Path::new(&format!("{pdir}/metrics.jsonl")),
        std::path::Path::new(out),
    )?;
    let curve = |r: &bert::finetune::FinetuneReport| {
        r.curve
            .iter()
            .map(|&(s, a)| (s as f64, a))
            .collect::<Vec<_>>()
    };
    std::fs::write(
        format!("{out}/finetune_accuracy.svg"),
        line_chart(
            "WordNet supersense fine-tuning: dev accuracy",
            "step",
            "accuracy",
            &[
                Series {
                    name: "pretrained",
                    points: curve(&pre),
                },
                Series {
                    name: "from scratch",
                    points: curve(&scr),
                },
            ],
        ),
    )?;
    let t = |r: &bert::finetune::FinetuneReport| r.test.unwrap_or_default();
    let model_desc = match bert::BertConfig::preset(&dm.config, vocab_size) {
        Ok(c) => format!(
            "{}: {} layers, hidden {}, {} heads, batch {}, on {:?}",
            dm.config,
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            dm.batch,
            dm.device
        ),
        Err(_) => format!("{}, batch {}, on {:?}", dm.config, dm.batch, dm.device),
    };
    let recipe = format!(
        "sequences of up to {} tokens, at most {} masked; peak learning rate {}, warmup {} of the steps then linear decay; dropout {}",
        dm.max_seq_len,
        dm.max_predictions,
        dm.lr,
        dm.warmup,
        dm.dropout.map_or("0.1 (the preset's)".to_string(), |p| p.to_string())
    );
    let vocab_line = format!(
        "Vocabulary: {} pieces by `bert vocab` (Google's top-down WordPiece learner); on the {} held-out words of every 50th corpus line, {:.3} pieces per word (most frequent: {}).",
        vocab_size,
        vocab_score.words,
        vocab_score.ratio(),
        vocab_score
            .top
            .iter()
            .map(|(t, f)| format!("`{t}` {:.1}%", 100.0 * f))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let curve_table = learning_curve_table(std::path::Path::new(&format!("{pdir}/metrics.jsonl")))?;
    let report = format!(
        "# bert demo report\n\n\
         Corpus: `{corpus}` (Debian's dict-gcide without its WordNet senses, dict-foldoc, python3.11-doc and perl-doc).\n\
         Budget: {minutes} minutes for pretraining and fine-tuning; whole run {:.0} s on {} threads.\n\n\
         {vocab_line}\n\n\
         ## Pretraining ({model_desc})\n\n\
         Recipe: {recipe}.\n\n\
         | steps | seconds | tokens/s | last loss | held-out MLM accuracy | most-frequent-token accuracy | NSP accuracy |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} |\n\n\
         Learning curve (held-out, every evaluation or a sample of them):\n\n{curve_table}\n\
         ![accuracy](pretrain_accuracy.svg)\n\n![loss](pretrain_loss.svg)\n\n\
         ## Fill-mask with the pretrained model\n\n{fills}\
         ## Fine-tuning: WordNet glosses -> 45 lexicographer files\n\n\
         Same architecture, same budget ({:.1} minutes each), same data and seed; test scores on {} held-out synsets.\n\n\
         | initialisation | steps | test accuracy | test macro-F1 | dev accuracy |\n|---|---|---|---|---|\n\
         | pretrained | {} | {:.4} | {:.4} | {:.4} |\n| from scratch | {} | {:.4} | {:.4} | {:.4} |\n\n\
         ![fine-tuning](finetune_accuracy.svg)\n",
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
        ps.steps, ps.seconds, ps.tokens_per_second, ps.final_loss, ps.eval.mlm_accuracy, ps.eval.majority_accuracy, ps.eval.nsp_accuracy,
        minutes * 0.2,
        t(&pre).n,
        pre.steps, t(&pre).accuracy, t(&pre).macro_f1, pre.dev.accuracy,
        scr.steps, t(&scr).accuracy, t(&scr).macro_f1, scr.dev.accuracy,
    );
    write_atomic(&format!("{out}/report.md"), &report)?;
    outln!(
        "\nbert demo: done in {:.0} s. Held-out MLM accuracy {:.3} vs {:.3} for the most frequent token; WordNet test accuracy {:.4} pretrained vs {:.4} from scratch. Report: {out}/report.md",
        t0.elapsed().as_secs_f64(), ps.eval.mlm_accuracy, ps.eval.majority_accuracy, t(&pre).accuracy, t(&scr).accuracy
    )?;
    Ok(())
}

/// The held-out evaluations of a pretraining run's metrics.jsonl as a markdown table against
/// wall-clock (at most 12 rows, evenly spaced, the last one always).
fn learning_curve_table(metrics: &std::path::Path) -> Result<String, Box<dyn std::error::Error>> {
    let evals: Vec<serde_json::Value> = bert::report::read_metrics(metrics)?
        .into_iter()
        .filter(|m| m.get("eval_mlm_accuracy").is_some())
        .collect();
    let mut t = String::from(
        "| minutes | step | MLM accuracy | most frequent token | NSP accuracy | MLM loss |\n|---|---|---|---|---|---|\n",
    );
    let n = evals.len();
    let every = n.div_ceil(12).max(1);
    for (i, m) in evals.iter().enumerate() {
        if i % every != every - 1 && i + 1 != n {
            continue;
        }
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        t += &format!(
            "| {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            f("seconds") / 60.0,
            m["step"],
            f("eval_mlm_accuracy"),
            f("majority_accuracy"),
            f("eval_nsp_accuracy"),
            f("eval_mlm_loss")
        );
    }
    Ok(t)
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
