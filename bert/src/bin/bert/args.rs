//! The `bert` command line's arguments (clap): one variant per subcommand, each field's doc
//! comment its `--help` line. `main.rs` hands each to the library.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bert",
    version,
    about = "BERT from scratch: tokenizer, engine, model"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// The Brown corpus for the token-classification part (scripts/fetch-brown).
        #[arg(long, default_value = ".cache/brown")]
        brown: String,
        /// The time budget, in minutes, for pretraining plus the six fine-tuning runs.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Vocabulary size to train.
        #[arg(long, default_value_t = 8192)]
        vocab_size: usize,
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
        /// Where pretraining runs: cpu, cpu-tape, cpu-bf16, cuda or cuda-bf16 (a `--features cuda`
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
        /// On the CPU: the Linear layers' GEMMs with bf16 operands and f32 sums (weights rounded
        /// once). About 1.6x faster where the CPU has AVX512-BF16 at full rate (AMD Zen 4),
        /// about level with f32 elsewhere; embeddings within cosine 0.9999 of f32.
        #[arg(long)]
        bf16: bool,
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
        /// cpu-bf16 (the step with bf16 GEMMs: faster on CPUs with full-rate AVX512-BF16),
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
    /// Fine-tune for one task family (sequence classification or regression, token
    /// classification, question answering) on files or a built-in data set; reports the
    /// family's metrics, writes OUT/model (HF layout), OUT/summary.json, OUT/metrics.jsonl.
    Finetune {
        /// A pretrained model directory (its encoder; a fresh head).
        #[arg(long)]
        model: String,
        /// seq-cls, token-cls or qa; or a built-in data set, which implies its family:
        /// wordnet-supersense (seq-cls), brown-pos (token-cls), wordnet-qa (qa).
        #[arg(long, default_value = "seq-cls")]
        task: String,
        /// seq-cls: TSV, text<TAB>label or text_a<TAB>text_b<TAB>label (an optional header);
        /// token-cls: CoNLL (token ... tag per line, blank lines between sentences);
        /// qa: SQuAD v1.1 or v2.0 JSON.
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
        /// Warmup steps as a share of all steps (then linear decay to 0).
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
        /// Tokens per sequence, [CLS] and [SEP] included (default: 128; qa 384).
        #[arg(long, value_parser = positive)]
        max_len: Option<usize>,
        /// qa: the overlap of a long context's windows, in tokens.
        #[arg(long, default_value_t = 128)]
        doc_stride: usize,
        /// qa: candidate starts and ends per window.
        #[arg(long, value_parser = positive, default_value_t = 20)]
        n_best: usize,
        /// qa: the longest answer, in tokens.
        #[arg(long, value_parser = positive, default_value_t = 30)]
        max_answer_len: usize,
        /// qa, SQuAD v2: answer nothing when the null score beats the best span by more.
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        null_threshold: f32,
        /// Dev evaluations along the way (the curve), each on at most --eval-max examples.
        #[arg(long, default_value_t = 10)]
        evals: u64,
        #[arg(long, value_parser = positive, default_value_t = 2000)]
        eval_max: usize,
        /// seq-cls: the labels are real values (MSE loss; Pearson and Spearman), as STS-B;
        /// by default decided by the labels (numbers with a decimal point).
        #[arg(long, conflicts_with = "classification")]
        regression: bool,
        /// seq-cls: the labels are classes even if they look like numbers.
        #[arg(long)]
        classification: bool,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The same architecture from random initialisation (the baseline).
        #[arg(long)]
        scratch: bool,
        /// WordNet's data files (wordnet-supersense, wordnet-qa; scripts/fetch-corpus).
        #[arg(long, default_value = ".cache/corpus/wordnet")]
        wordnet: String,
        /// The Brown corpus (brown-pos; scripts/fetch-brown).
        #[arg(long, default_value = ".cache/brown")]
        brown: String,
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
        /// cpu, cpu-bf16 (bf16 GEMMs, f32 sums and parameters: faster on CPUs with full-rate
        /// AVX512-BF16), cuda (GPU 0, f32) or cuda-bf16 (bf16 mixed precision); cuda needs
        /// `--features cuda`.
        #[arg(long, default_value = "cpu", value_parser = |s: &str| bert::train::TrainDevice::parse(s).map_err(|e| e.to_string()))]
        device: bert::train::TrainDevice,
        /// Keep the padding tokens (default: packed batches, no compute on padding).
        #[arg(long)]
        padded: bool,
        /// Replace an OUT that holds a fine-tuning run.
        #[arg(long)]
        force: bool,
    },
    /// Predict with a fine-tuned model: one input per line of stdin (seq-cls: text or
    /// text<TAB>text; token-cls: raw text; qa: {"question": ..., "context": ...}), one JSON
    /// object per line on stdout.
    Predict {
        /// A fine-tuned model directory (bert finetune's OUT/model, or an HF BertFor... folder).
        #[arg(long)]
        model: String,
        /// Labels (seq-cls) or answers (qa) to list per input.
        #[arg(long, value_parser = positive, default_value_t = 1)]
        top_k: usize,
        #[arg(long, default_value = "cpu", value_parser = |s: &str| bert::train::TrainDevice::parse(s).map_err(|e| e.to_string()))]
        device: bert::train::TrainDevice,
        #[arg(long, value_parser = positive)]
        threads: Option<usize>,
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
pub enum EmbedFormat {
    /// Space-separated floats.
    Text,
    /// JSON lines: {"index", "embedding"}.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Space-separated ids.
    Ids,
    /// Space-separated tokens.
    Tokens,
    /// JSON: ids, tokens, type ids, char offsets, word ids.
    Json,
}

/// clap value parser for counts that must be at least 1 (batch sizes, lengths, threads).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl From<EmbedFormat> for bert::embed::OutputFormat {
    fn from(f: EmbedFormat) -> Self {
        match f {
            EmbedFormat::Text => Self::Text,
            EmbedFormat::Json => Self::Json,
        }
    }
}

impl From<Format> for bert::tokenize::TokenFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Ids => Self::Ids,
            Format::Tokens => Self::Tokens,
            Format::Json => Self::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert!(positive("-1").is_err() && positive("x").is_err());
    }
}
