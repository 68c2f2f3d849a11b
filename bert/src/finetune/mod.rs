//! Fine-tuning for the task families BERT was published on, end to end (data, training,
//! evaluation, prediction), on the hand-written step ([`crate::step::FtHead`]) over any device:
//!
//! | family (`--task`) | data | head, loss | metrics |
//! |---|---|---|---|
//! | `seq-cls` ([`seqcls`]) | TSV: text or text pair, then a label (or a real value: regression); WordNet supersenses | pooled first token, CE or MSE | accuracy, macro-F1; Pearson, Spearman |
//! | `token-cls` ([`tokencls`]) | CoNLL: a token and its tag per line; the Brown corpus's POS tags | every word's first piece, CE | word accuracy; entity P/R/F1 as `seqeval` |
//! | `qa` ([`qa`]) | SQuAD v1.1 / v2.0 JSON; a WordNet question set | start and end logits, CE | exact match and F1 (official SQuAD) |
//!
//! A run: the examples become [`Feature`]s (token ids with the template, and a [`Target`]);
//! each step takes a batch of them (shuffled per epoch, packed: no padding tokens), one
//! forward, backward and AdamW update on the device ([`FtRunner`]), warmup then linear decay,
//! clipping at norm 1; the dev set is scored along the way, dev and test at the end; OUT gets
//! `summary.json`, `metrics.jsonl`, `finetune.svg` and `model/` (HF layout: a config with
//! `id2label`/`label2id` that `transformers` loads as the matching `BertFor...` class, the
//! weights, the tokenizer). [`crate::predict`] uses that model.

pub mod qa;
pub mod seqcls;
pub mod tokencls;
mod wordnet;

pub use seqcls::{
    read_tsv, read_tsv_known, scores, wordnet_supersense, Dataset, Example, Scores, LEXNAMES,
};

use crate::config::{BertConfig, ProblemType};
use crate::device::Devices;
use crate::heads::Bert;
use crate::step::{FtBatch, FtHead, FtTargets, StepTrainer};
use crate::train::TrainDevice;
use crate::{BertError, Result};
use engine::device::Device;
use engine::optim::{AdamWConfig, LrSchedule};
use engine::rng::SplitMix64;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokenizer::BertTokenizer;

/// The task families (`bert finetune --task`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Sequence (or pair) classification or regression.
    SeqCls,
    /// Token classification (tagging).
    TokenCls,
    /// Extractive question answering.
    Qa,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::SeqCls => "seq-cls",
            Family::TokenCls => "token-cls",
            Family::Qa => "qa",
        }
    }

    /// The family `--task` names: a family, or a built-in data set (which implies its family).
    pub fn parse(s: &str) -> Result<(Family, Option<Builtin>)> {
        Ok(match s {
            "seq-cls" => (Family::SeqCls, None),
            "token-cls" => (Family::TokenCls, None),
            "qa" => (Family::Qa, None),
            _ => match Builtin::parse(s) {
                Some(b) => (b.family(), Some(b)),
                None => {
                    return Err(BertError::Input(format!(
                        "unknown task '{s}' (known: seq-cls, token-cls, qa, or a built-in data set: {})",
                        Builtin::ALL.map(Builtin::name).join(", ")
                    )))
                }
            },
        })
    }

    /// The default `--max-len` (HF's run_glue / run_ner: 128; run_qa: 384).
    pub fn default_max_len(self) -> usize {
        match self {
            Family::SeqCls | Family::TokenCls => 128,
            Family::Qa => 384,
        }
    }
}

/// The data sets a family can run on without anything the user brings (fetched by
/// `scripts/fetch-corpus` and `scripts/fetch-brown` into `.cache/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// WordNet glosses -> their 45 lexicographer files ([`seqcls::wordnet_supersense`]).
    WordnetSupersense,
    /// The Brown corpus's part-of-speech tags ([`tokencls::brown`]).
    BrownPos,
    /// Questions about WordNet entries in a context of several ([`qa::wordnet_qa`]).
    WordnetQa,
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [
        Builtin::WordnetSupersense,
        Builtin::BrownPos,
        Builtin::WordnetQa,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Builtin::WordnetSupersense => "wordnet-supersense",
            Builtin::BrownPos => "brown-pos",
            Builtin::WordnetQa => "wordnet-qa",
        }
    }
    pub fn parse(s: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == s)
    }
    pub fn family(self) -> Family {
        match self {
            Builtin::WordnetSupersense => Family::SeqCls,
            Builtin::BrownPos => Family::TokenCls,
            Builtin::WordnetQa => Family::Qa,
        }
    }
}

/// Where the built-in data sets are read from.
#[derive(Clone, Debug)]
pub struct DataDirs {
    /// WordNet 3.0's `data.*` files (`scripts/fetch-corpus`: `.cache/corpus/wordnet`).
    pub wordnet: PathBuf,
    /// The Brown corpus files (`scripts/fetch-brown`: `.cache/brown`).
    pub brown: PathBuf,
}

impl Default for DataDirs {
    fn default() -> Self {
        DataDirs {
            wordnet: ".cache/corpus/wordnet".into(),
            brown: ".cache/brown".into(),
        }
    }
}

/// Flags of `bert finetune`.
#[derive(Clone, Debug)]
pub struct FinetuneConfig {
    pub steps: Option<u64>,
    pub minutes: Option<f64>,
    pub batch: usize,
    pub lr: f32,
    pub warmup: f64,
    /// Tokens per sequence, the template's included; None: the family's default
    /// ([`Family::default_max_len`]), never above the model's positions.
    pub max_len: Option<usize>,
    /// Question answering: the overlap of a long context's windows, in tokens.
    pub doc_stride: usize,
    /// Question answering: candidates per feature and the longest answer, in tokens.
    pub n_best: usize,
    pub max_answer_len: usize,
    /// SQuAD v2: predict no answer when the null score exceeds the best span's by this.
    pub null_threshold: f32,
    pub seed: u64,
    /// Dev evaluations during training (the curve), on at most `eval_max` examples each.
    pub evals: u64,
    pub eval_max: usize,
    /// The final dev and test scores use at most this many examples of each.
    pub final_max: usize,
    pub progress: bool,
    /// Replace an OUT that holds a fine-tuning run (else such an OUT is an error).
    pub force: bool,
    /// Where the step runs (the CPU, or a GPU with the `cuda` feature).
    pub device: TrainDevice,
    /// Keep each batch's padding tokens (default: packed, no compute on padding).
    pub padded: bool,
    pub weight_decay: f32,
    pub clip: f32,
}

impl FinetuneConfig {
    /// Every option in its range, the limit in the message.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(BertError::Input(why));
        crate::train::check_budget(self.steps, self.minutes, self.lr)?;
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return bad(format!("warmup {} must be >= 0", self.warmup));
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if let Some(m) = self.max_len.filter(|&m| m < 8) {
            return bad(format!(
                "--max-len {m} is below 8 (a pair needs [CLS] a [SEP] b [SEP] and some text)"
            ));
        }
        if self.n_best == 0 || self.max_answer_len == 0 {
            return bad("--n-best and --max-answer-len must be at least 1".into());
        }
        if !self.null_threshold.is_finite() {
            return bad(format!(
                "--null-threshold {} must be finite",
                self.null_threshold
            ));
        }
        if matches!(self.device, TrainDevice::CpuTape) {
            return bad(
                "fine-tuning runs the hand-written step: --device cpu, cuda or cuda-bf16".into(),
            );
        }
        Ok(())
    }

    /// The sequence length for `family` on `config`'s model.
    pub fn max_len_for(&self, family: Family, config: &BertConfig) -> usize {
        self.max_len
            .unwrap_or(family.default_max_len())
            .min(config.max_position_embeddings)
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            steps: Some(1000),
            minutes: None,
            batch: 32,
            lr: 1e-4,
            warmup: 0.1,
            max_len: None,
            doc_stride: 128,
            n_best: 20,
            max_answer_len: 30,
            null_threshold: 0.0,
            seed: 7,
            evals: 10,
            eval_max: 2000,
            final_max: usize::MAX,
            progress: true,
            force: false,
            device: TrainDevice::Cpu,
            padded: false,
            weight_decay: 0.01,
            clip: 1.0,
        }
    }
}

/// One sequence the model sees: token ids and type ids with the template, and what it is
/// trained to predict.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    pub target: Target,
}

/// A feature's training target.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Class(usize),
    Value(f32),
    /// Per token: a tag id, or -100 (no loss: special tokens, a word's later pieces).
    Tags(Vec<i64>),
    /// Start and end token of the answer (0, 0: no answer in this window, HF's CLS label).
    Span(usize, usize),
}

/// One split's scores: named figures (numbers, or objects such as per-type scores), one of
/// them the primary figure (the curve's and the demo's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    pub primary: String,
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl Metrics {
    pub fn new(primary: &str) -> Self {
        Metrics {
            primary: primary.to_string(),
            values: serde_json::Map::new(),
        }
    }
    pub fn set(&mut self, k: &str, v: impl Into<serde_json::Value>) {
        self.values.insert(k.to_string(), v.into());
    }
    /// A numeric figure (NaN when absent or not a number).
    pub fn get(&self, k: &str) -> f64 {
        self.values
            .get(k)
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    }
    pub fn primary_value(&self) -> f64 {
        self.get(&self.primary)
    }
    /// `name value, ...` of the numeric figures, for a summary line.
    pub fn line(&self) -> String {
        self.values
            .iter()
            .filter_map(|(k, v)| match (v.as_u64(), v.as_f64()) {
                (Some(n), _) => Some(format!("{k} {n}")),
                (None, Some(x)) => Some(format!("{k} {x:.4}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which evaluation split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Dev,
    Test,
}

/// A fine-tuning data set of any family.
#[derive(Clone, Debug)]
pub enum TaskData {
    Seq(seqcls::Dataset),
    Tok(tokencls::Dataset),
    Qa(qa::Dataset),
}

/// Computes each feature's logits: per feature, (L) for a sequence head or (tokens x L) for a
/// token head.
pub type LogitsFn<'a> = dyn FnMut(&[&Feature]) -> Result<Vec<Vec<f32>>> + 'a;

impl TaskData {
    pub fn family(&self) -> Family {
        match self {
            TaskData::Seq(_) => Family::SeqCls,
            TaskData::Tok(_) => Family::TokenCls,
            TaskData::Qa(_) => Family::Qa,
        }
    }

    pub fn head(&self) -> FtHead {
        match self {
            TaskData::Seq(d) if d.regression => FtHead::Regress,
            TaskData::Seq(d) => FtHead::Classify(d.labels.len()),
            TaskData::Tok(d) => FtHead::Tag(d.tags.len()),
            TaskData::Qa(_) => FtHead::Span,
        }
    }

    /// The model config's `id2label` (empty: HF's LABEL_i names).
    pub fn label_names(&self) -> Vec<String> {
        match self {
            TaskData::Seq(d) if d.regression => vec![],
            TaskData::Seq(d) => d.labels.clone(),
            TaskData::Tok(d) => d.tags.clone(),
            TaskData::Qa(_) => vec![],
        }
    }

    /// (train, dev, test) example counts.
    pub fn counts(&self) -> [usize; 3] {
        match self {
            TaskData::Seq(d) => [d.train.len(), d.dev.len(), d.test.len()],
            TaskData::Tok(d) => [d.train.len(), d.dev.len(), d.test.len()],
            TaskData::Qa(d) => [d.train.len(), d.dev.len(), d.test.len()],
        }
    }

    /// The tokenizer as this family encodes (truncation to `max_len`; QA windows).
    pub fn tokenizer_for(
        &self,
        tok: &BertTokenizer,
        max_len: usize,
        cfg: &FinetuneConfig,
    ) -> BertTokenizer {
        let mut t = tok.clone();
        t.padding = None;
        t.truncation = match self {
            TaskData::Seq(_) => Some(tokenizer::Truncation {
                max_length: max_len,
                strategy: tokenizer::TruncationStrategy::LongestFirst,
                stride: 0,
                left: false,
            }),
            TaskData::Tok(_) => None,
            TaskData::Qa(_) => Some(tokenizer::Truncation {
                max_length: max_len,
                strategy: tokenizer::TruncationStrategy::OnlySecond,
                stride: cfg.doc_stride,
                left: false,
            }),
        };
        t
    }

    /// The training set's features.
    pub fn train_features(&self, tok: &BertTokenizer, max_len: usize) -> Result<Vec<Feature>> {
        match self {
            TaskData::Seq(d) => seqcls::features(d, &d.train, tok),
            TaskData::Tok(d) => tokencls::features(&d.train, tok, max_len),
            TaskData::Qa(d) => Ok(qa::train_features(&d.train, tok)?),
        }
    }

    /// Scores on the first `limit` examples of a split.
    pub fn evaluate(
        &self,
        split: Split,
        limit: usize,
        tok: &BertTokenizer,
        max_len: usize,
        cfg: &FinetuneConfig,
        logits: &mut LogitsFn<'_>,
    ) -> Result<Metrics> {
        fn take<'a, T>(v: &'a [T], split: Split, test: &'a [T], limit: usize) -> &'a [T] {
            let s = if split == Split::Dev { v } else { test };
            &s[..s.len().min(limit)]
        }
        match self {
            TaskData::Seq(d) => {
                seqcls::evaluate(d, take(&d.dev, split, &d.test, limit), tok, logits)
            }
            TaskData::Tok(d) => tokencls::evaluate(
                &d.tags,
                take(&d.dev, split, &d.test, limit),
                tok,
                max_len,
                logits,
            ),
            TaskData::Qa(d) => qa::evaluate(
                take(&d.dev, split, &d.test, limit),
                tok,
                d.version_2,
                &qa::PostProcess::from(cfg),
                logits,
            ),
        }
    }

    pub fn describe(&self) -> String {
        let [tr, dv, te] = self.counts();
        let what = match self {
            TaskData::Seq(d) if d.regression => "regression".to_string(),
            TaskData::Seq(d) => format!("{} labels", d.labels.len()),
            TaskData::Tok(d) => format!("{} tags", d.tags.len()),
            TaskData::Qa(d) => format!("SQuAD v{}", if d.version_2 { "2.0" } else { "1.1" }),
        };
        format!(
            "{}: {what}; {tr} train, {dv} dev, {te} test examples",
            self.family().name()
        )
    }
}

/// A tensor on the host: its HF name, shape and values.
pub type Named = (String, Vec<usize>, Vec<f32>);

/// The loop's view of a device trainer: one optimizer step, logits, the parameters on the host.
/// Implemented once for every `Device` ([`FtTrainer`]); [`Devices::finetuner`] makes one.
pub trait FtRunner {
    /// One forward, backward and AdamW update: (loss, gradient norm before clipping).
    fn step(&mut self, x: &FtBatch, seed: Option<u64>, lr: f32, clip: f32) -> Result<(f32, f32)>;
    /// The head's logits on a batch, no dropout ([`crate::step::ft_logits`]).
    fn logits(&mut self, x: &FtBatch) -> Result<Vec<f32>>;
    /// The parameters, HF-named, on the host.
    fn named(&self) -> Result<Vec<Named>>;
}

/// A [`StepTrainer`] over a fine-tuning head's layout.
pub struct FtTrainer<'d, D: Device> {
    pub tr: StepTrainer<'d, D>,
    pub head: FtHead,
}

impl<'d, D: Device> FtTrainer<'d, D> {
    /// Uploads the HF-named tensors of `model` in the head's layout.
    pub fn new(dev: &'d D, model: &Bert, head: FtHead, adam: AdamWConfig) -> Result<Self> {
        let c = &model.config;
        let lay = head.layout(c);
        let values = crate::step::values_for(lay.clone(), |n: &str| {
            model.params.get(n).map(|v| v.value().to_vec())
        })?;
        Ok(FtTrainer {
            tr: StepTrainer::with_layout(dev, c, lay, &values, adam, 0)?,
            head,
        })
    }
}

impl<D: Device> FtRunner for FtTrainer<'_, D> {
    fn step(&mut self, x: &FtBatch, seed: Option<u64>, lr: f32, clip: f32) -> Result<(f32, f32)> {
        let (c, head) = (self.tr.config.clone(), self.head);
        let (losses, norm) = self
            .tr
            .step_with(1, lr, clip, |dev, params, grads, _, scale| {
                crate::step::ft_forward_backward(dev, &c, head, params, grads, x, seed, scale)
            })?;
        Ok((losses[0], crate::step::read_scalar(self.tr.dev, &norm)?))
    }
    fn logits(&mut self, x: &FtBatch) -> Result<Vec<f32>> {
        let dev = self.tr.dev;
        let (params, _) = dev.optim_parts(&mut self.tr.opt);
        crate::step::ft_logits(dev, &self.tr.config, self.head, &params, &x.input())
    }
    fn named(&self) -> Result<Vec<Named>> {
        Ok(self.tr.state_named()?.0)
    }
}

/// Each feature's logits from `forward` (one call per batch of at most `batch` features of
/// similar length, packed unless `padded`), in the features' order: (L) per feature for a
/// sequence head, (its tokens x L) for a token head.
pub fn logits_by_length(
    feats: &[&Feature],
    batch: usize,
    head: FtHead,
    pad: u32,
    padded: bool,
    mut forward: impl FnMut(&FtBatch) -> Result<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    let l = head.outputs();
    let mut order: Vec<usize> = (0..feats.len()).collect();
    order.sort_by_key(|&i| feats[i].ids.len());
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); feats.len()];
    for group in order.chunks(batch.max(1)) {
        let seqs: Vec<(&[u32], &[u32])> = group
            .iter()
            .map(|&i| (feats[i].ids.as_slice(), feats[i].types.as_slice()))
            .collect();
        let x = FtBatch::new(&seqs, pad, !padded, FtTargets::Classes(vec![]));
        let lg = forward(&x)?;
        for (k, &i) in group.iter().enumerate() {
            out[i] = match head {
                FtHead::Classify(_) | FtHead::Regress => lg[k * l..(k + 1) * l].to_vec(),
                FtHead::Tag(_) | FtHead::Span => {
                    let r = x.rows_of(k);
                    lg[r.start * l..r.end * l].to_vec()
                }
            };
        }
    }
    Ok(out)
}

/// What a fine-tuning run reports.
#[derive(Clone, Debug)]
pub struct FinetuneReport {
    pub steps: u64,
    pub seconds: f64,
    pub dev: Metrics,
    pub test: Option<Metrics>,
    /// (step, dev primary figure) along the way.
    pub curve: Vec<(u64, f64)>,
    pub train_features: usize,
    /// Real (non-padding) tokens per second of training steps.
    pub tokens_per_second: f64,
}

/// The pad id of a tokenizer.
fn pad_id(tok: &BertTokenizer) -> u32 {
    tok.vocab.id("[PAD]").unwrap_or(0)
}

/// A batch of training features.
fn train_batch(feats: &[&Feature], pad: u32, packed: bool) -> FtBatch {
    let seqs: Vec<(&[u32], &[u32])> = feats
        .iter()
        .map(|f| (f.ids.as_slice(), f.types.as_slice()))
        .collect();
    let targets = match &feats[0].target {
        Target::Class(_) => FtTargets::Classes(
            feats
                .iter()
                .map(|f| match f.target {
                    Target::Class(c) => c as i64,
                    _ => -1,
                })
                .collect(),
        ),
        Target::Value(_) => FtTargets::Values(
            feats
                .iter()
                .map(|f| match f.target {
                    Target::Value(v) => v,
                    _ => f32::NAN,
                })
                .collect(),
        ),
        Target::Tags(_) => FtTargets::Tags(
            feats
                .iter()
                .flat_map(|f| match &f.target {
                    Target::Tags(t) => t.clone(),
                    _ => vec![-1; f.ids.len()],
                })
                .collect(),
        ),
        Target::Span(..) => {
            let (s, e) = feats
                .iter()
                .map(|f| match f.target {
                    Target::Span(s, e) => (s as i64, e as i64),
                    _ => (-1, -1),
                })
                .unzip();
            FtTargets::Spans { start: s, end: e }
        }
    };
    FtBatch::new(&seqs, pad, packed, targets)
}

/// Fine-tunes `model` (its task and labels those of `data`: see [`load_model`]) on `data`,
/// writing `out/metrics.jsonl`, `out/finetune.svg` and `out/model` (HF layout, with the
/// tokenizer). Nothing in `out` is replaced before the run succeeds, and a run there is
/// replaced only with `cfg.force`.
pub fn finetune(
    model: &Bert,
    tok: &BertTokenizer,
    data: &TaskData,
    cfg: &FinetuneConfig,
    out: &Path,
) -> Result<FinetuneReport> {
    cfg.validate()?;
    let [ntrain, ndev, _] = data.counts();
    if ntrain == 0 || ndev == 0 {
        return Err(BertError::Input(
            "fine-tuning needs training and dev examples".into(),
        ));
    }
    let head = data.head();
    if model.task != head.task() || model.config.num_labels != head.outputs() {
        return Err(BertError::Input(format!(
            "the model is a {} with {} labels; the data needs a {} with {}",
            model.task.architecture(),
            model.config.num_labels,
            head.task().architecture(),
            head.outputs()
        )));
    }
    let has_run = out.join("metrics.jsonl").exists() || out.join("model").exists();
    if has_run && !cfg.force {
        return Err(BertError::Input(format!(
            "{} holds a fine-tuning run (model/ or metrics.jsonl): pass --force to replace it",
            out.display()
        )));
    }
    let max_len = cfg.max_len_for(data.family(), &model.config);
    let tok = data.tokenizer_for(tok, max_len, cfg);
    let pad = pad_id(&tok);
    let feats = data.train_features(&tok, max_len)?;
    if feats.is_empty() {
        return Err(BertError::Input(
            "no training feature: every training example was empty".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| BertError::Io(format!("{}: {e}", out.display())))?;
    // Metrics go to a file beside the final one, renamed when the run succeeds.
    let metrics_tmp = out.join(".metrics.jsonl.tmp");
    let mut metrics = std::fs::File::create(&metrics_tmp)
        .map_err(|e| BertError::Io(format!("{}: {e}", metrics_tmp.display())))?;
    let devices = Devices::open(cfg.device)?;
    let adam = AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    };
    let mut runner = devices.finetuner(model, head, adam)?;
    let t0 = std::time::Instant::now();
    let mut total = cfg.steps.filter(|_| cfg.minutes.is_none());
    let mut sched: Option<LrSchedule> = None;
    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch: Option<u64> = None;
    let mut curve = Vec::new();
    let mut step = 0u64;
    let (mut tokens, mut step_seconds) = (0usize, 0f64);
    let bar = cfg.progress.then(|| {
        let b = indicatif::ProgressBar::new(total.unwrap_or(0));
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap(),
        );
        b
    });
    let eval_batch = 64;
    let log = |m: &mut std::fs::File, v: serde_json::Value| {
        writeln!(m, "{v}").map_err(|e| BertError::Io(format!("{}: {e}", metrics_tmp.display())))
    };
    let dev_tok = tok.clone();
    loop {
        if let Some(t) = total {
            if step >= t {
                break;
            }
            if sched.is_none() {
                sched = Some(LrSchedule::linear(
                    cfg.lr,
                    (cfg.warmup * t as f64) as u64,
                    t,
                ));
                if let Some(b) = &bar {
                    b.set_length(t);
                }
            }
        }
        step += 1;
        let lr = sched.as_ref().map_or(cfg.lr * 0.01, |s| s.lr(step));
        let n = feats.len();
        let start = (step - 1) as usize * cfg.batch;
        let batch: Vec<&Feature> = (start..start + cfg.batch)
            .map(|p| {
                let epoch = (p / n) as u64;
                if order_epoch != Some(epoch) {
                    order_epoch = Some(epoch);
                    order = (0..n).collect();
                    let mut r =
                        SplitMix64::new(cfg.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    for i in (1..n).rev() {
                        order.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
                    }
                }
                &feats[order[p % n]]
            })
            .collect();
        let x = train_batch(&batch, pad, !cfg.padded);
        let ts = std::time::Instant::now();
        let (loss, norm) = runner.step(
            &x,
            Some(cfg.seed.wrapping_mul(7919).wrapping_add(step)),
            lr,
            cfg.clip,
        )?;
        step_seconds += ts.elapsed().as_secs_f64();
        tokens += x.lens.iter().sum::<usize>();
        engine::optim::check_finite_loss(loss, step)?;
        if total.is_none() && step >= 3 {
            let per = t0.elapsed().as_secs_f64() / step as f64;
            total = Some(((cfg.minutes.unwrap_or(1.0) * 60.0 / per) as u64).max(step + 1));
        }
        log(
            &mut metrics,
            serde_json::json!({"step": step, "loss": loss, "lr": lr, "grad_norm": norm}),
        )?;
        if let Some(b) = &bar {
            b.set_position(step);
            b.set_message(format!("loss {loss:.3}"));
        }
        let t = total.unwrap_or(u64::MAX);
        let every = (t / cfg.evals.max(1)).max(1);
        if step.is_multiple_of(every) || step == t {
            let mut lf = |f: &[&Feature]| {
                logits_by_length(f, eval_batch, head, pad, cfg.padded, |x| runner.logits(x))
            };
            let m = data.evaluate(Split::Dev, cfg.eval_max, &dev_tok, max_len, cfg, &mut lf)?;
            curve.push((step, m.primary_value()));
            let mut rec = serde_json::Map::new();
            rec.insert("step".into(), step.into());
            rec.insert("seconds".into(), t0.elapsed().as_secs_f64().into());
            for (k, v) in &m.values {
                if v.is_number() {
                    rec.insert(format!("dev_{k}"), v.clone());
                }
            }
            log(&mut metrics, serde_json::Value::Object(rec))?;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mut lf = |f: &[&Feature]| {
        logits_by_length(f, eval_batch, head, pad, cfg.padded, |x| runner.logits(x))
    };
    let dev = data.evaluate(Split::Dev, cfg.final_max, &dev_tok, max_len, cfg, &mut lf)?;
    let test = if data.counts()[2] == 0 {
        None
    } else {
        Some(data.evaluate(Split::Test, cfg.final_max, &dev_tok, max_len, cfg, &mut lf)?)
    };
    drop(metrics);
    // The model: the device's parameters into the host model, written as one folder.
    for (name, shape, v) in runner.named()? {
        let p = model.params.get(&name).ok_or_else(|| {
            BertError::Checkpoint(format!("the step's '{name}' is not in the model"))
        })?;
        p.set_value(engine::Tensor::from_vec(v, &shape)?)?;
    }
    if let Some((name, i)) = crate::train::first_non_finite(model) {
        return Err(BertError::Input(format!(
            "fine-tuning diverged: {name}[{i}] is not finite; nothing was saved"
        )));
    }
    let staged = crate::io::StagedDir::new(&out.join("model"))?;
    model.save_dir(staged.path())?;
    let mut tok_out = tok.clone();
    tok_out.truncation = None;
    crate::io::write_atomic(
        &staged.path().join("tokenizer.json"),
        tokenizer::tokenizer_json(&tok_out).as_bytes(),
    )?;
    let settings = crate::predict::HeadSettings {
        max_len,
        doc_stride: cfg.doc_stride,
        version_2: matches!(data, TaskData::Qa(d) if d.version_2),
        pp: qa::PostProcess::from(cfg),
    };
    crate::io::write_atomic(
        &staged.path().join("finetune.json"),
        serde_json::to_string_pretty(&settings.to_json(data.family()))
            .map_err(|e| BertError::Io(e.to_string()))?
            .as_bytes(),
    )?;
    staged.commit()?;
    std::fs::rename(&metrics_tmp, out.join("metrics.jsonl"))
        .map_err(|e| BertError::Io(format!("{}: {e}", out.display())))?;
    crate::report::write_finetune_plot(&out.join("metrics.jsonl"), out)?;
    Ok(FinetuneReport {
        steps: step,
        seconds,
        dev,
        test,
        curve,
        train_features: feats.len(),
        tokens_per_second: tokens as f64 / step_seconds.max(1e-9),
    })
}

/// A model for `data` over the pretrained encoder in `dir` (the head freshly initialised, HF's
/// initialisation from `seed`), or, with `scratch`, the same architecture from random
/// initialisation; with its tokenizer (`tokenizer.json`, else `vocab.txt`).
pub fn load_model(
    dir: &Path,
    data: &TaskData,
    scratch: bool,
    seed: u64,
) -> Result<(Bert, BertTokenizer)> {
    let head = data.head();
    let mut config = BertConfig::from_file(&dir.join("config.json"))?;
    config.num_labels = head.outputs();
    config.id2label = data.label_names();
    config.problem_type = match head {
        FtHead::Classify(_) => Some(ProblemType::SingleLabel),
        FtHead::Regress => Some(ProblemType::Regression),
        _ => None,
    };
    config.architecture = Some(head.task().architecture().to_string());
    let tok = load_tokenizer(dir)?;
    let model = if scratch {
        Bert::init(&config, head.task(), seed)?
    } else {
        let st = crate::safetensors::SafeTensors::open(&dir.join("model.safetensors"))?;
        let (m, _) = Bert::from_safetensors(&st, &config, head.task(), Some(seed))?;
        // Owned copies, so the updates never alias the mapped file.
        for (_, v) in m.params.iter() {
            v.set_value(engine::Tensor::from_vec(v.value().to_vec(), &v.shape())?)?;
        }
        m
    };
    Ok((model, tok))
}

/// A model folder's tokenizer: `tokenizer.json`, else `vocab.txt` (uncased).
pub fn load_tokenizer(dir: &Path) -> Result<BertTokenizer> {
    let tj = dir.join("tokenizer.json");
    if tj.exists() {
        tokenizer::load_tokenizer_json(&tj.display().to_string())
            .map_err(|e| BertError::Io(format!("{}: {e}", tj.display())))
    } else {
        let v = dir.join("vocab.txt");
        tokenizer::BertTokenizer::from_vocab_file(&v.display().to_string(), false)
            .map_err(|e| BertError::Io(format!("{}: {e}", v.display())))
    }
}

/// The data `bert finetune` trains on: a built-in set, or `train` and `dev` (and optionally
/// `test`) files of the family's format, whose dev and test labels must all occur in train.
/// `regression`: for TSV, force (true) or forbid (false) regression; None decides by the labels.
pub fn load_dataset(
    family: Family,
    builtin: Option<Builtin>,
    files: (Option<&Path>, Option<&Path>, Option<&Path>),
    dirs: &DataDirs,
    regression: Option<bool>,
) -> Result<TaskData> {
    let (train, dev, test) = files;
    match (builtin, train, dev) {
        (Some(b), None, None) if b.family() == family => Ok(match b {
            Builtin::WordnetSupersense => TaskData::Seq(wordnet_supersense(&dirs.wordnet)?),
            Builtin::BrownPos => TaskData::Tok(tokencls::brown(&dirs.brown)?),
            Builtin::WordnetQa => TaskData::Qa(qa::wordnet_qa(&dirs.wordnet)?),
        }),
        (Some(b), _, _) => Err(BertError::Input(format!(
            "{} is a built-in {} data set: give it without --train/--dev",
            b.name(),
            b.family().name()
        ))),
        (None, Some(tr), Some(dv)) => Ok(match family {
            Family::SeqCls => TaskData::Seq(seqcls::load_tsv(tr, dv, test, regression)?),
            Family::TokenCls => TaskData::Tok(tokencls::load_conll(tr, dv, test)?),
            Family::Qa => TaskData::Qa(qa::load_squad(tr, dv, test)?),
        }),
        _ => Err(BertError::Input(format!(
            "give --train and --dev files for --task {}, or a built-in data set as the task ({})",
            family.name(),
            Builtin::ALL.map(Builtin::name).join(", ")
        ))),
    }
}

/// `bert finetune`: a model for `data` over the encoder in `model` (or, with `scratch`, a
/// freshly initialised one of its architecture) fine-tuned on `data`; writes OUT/model,
/// OUT/metrics.jsonl, OUT/finetune.svg and OUT/summary.json, reports on stderr.
pub fn run(
    model: &Path,
    data: &TaskData,
    out: &Path,
    cfg: &FinetuneConfig,
    scratch: bool,
) -> Result<FinetuneReport> {
    eprintln!(
        "bert finetune: {}; {} from {}",
        data.describe(),
        if scratch {
            "random initialisation, architecture"
        } else {
            "encoder"
        },
        model.display()
    );
    let (m, tok) = load_model(model, data, scratch, cfg.seed)?;
    let r = finetune(&m, &tok, data, cfg, out)?;
    let test = r
        .test
        .as_ref()
        .map(|t| format!("; test {}", t.line()))
        .unwrap_or_default();
    eprintln!(
        "bert finetune: {} steps in {:.1} s ({:.0} tokens/s); dev {}{test} -> {}/model",
        r.steps,
        r.seconds,
        r.tokens_per_second,
        r.dev.line(),
        out.display()
    );
    let [tr, dv, te] = data.counts();
    let summary = serde_json::json!({
        "task": data.family().name(),
        "head": format!("{:?}", data.head()),
        "model": model.display().to_string(),
        "scratch": scratch,
        "device": format!("{:?}", cfg.device),
        "examples": {"train": tr, "dev": dv, "test": te},
        "train_features": r.train_features,
        "steps": r.steps,
        "seconds": r.seconds,
        "tokens_per_second": r.tokens_per_second,
        "primary": r.dev.primary,
        "dev": r.dev.values,
        "test": r.test.as_ref().map(|t| &t.values),
        "curve": r.curve,
    });
    crate::io::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .map_err(|e| BertError::Io(e.to_string()))?
            .as_bytes(),
    )?;
    Ok(r)
}
