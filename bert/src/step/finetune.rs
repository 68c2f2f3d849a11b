//! The fine-tuning heads written out over any [`Device`], as HF's
//! `BertForSequenceClassification`, `BertForTokenClassification` and `BertForQuestionAnswering`
//! (modeling_bert.py): forward, loss and backward, on the encoder of `encoder.rs`.
//!
//! ```text
//! x = encoder(ids, types)                                               (T,H)
//! Classify / Regress: pooled = tanh(x[first] Wp^T + bp)                 (B,H)
//!                     logits = dropout(pooled) Wc^T + bc                (B,L), L = 1 regressing
//!                     loss   = CE(logits, class)  |  mean (logits - y)^2
//! Tag:                logits = dropout(x)[labelled rows] Wc^T + bc      (n,L)
//!                     loss   = CE over the n tokens whose tag is not -100 (HF's ignore index)
//! Span:               logits = x Wqa^T + bqa                            (T,2): start, end
//!                     loss   = (CE of each sequence's start over its positions
//!                               + the same for the end) / 2
//! ```
//! The classifier's dropout is `classifier_dropout` (else `hidden_dropout_prob`) with the tape's
//! seed (`seed ^ 0xC1A5_51F1`), so the step and `crate::heads::Bert` draw the same masks on a
//! padded batch. Question answering has no dropout before `qa_outputs` (as HF).
//!
//! Span positions: padded, each sequence's softmax runs over all `seq` positions and a target
//! is clamped to `[0, seq]` with `seq` ignored (HF's `ignored_index`); packed (no padding
//! tokens) it runs over the sequence's own `lens[b]` positions, `lens[b]` ignored. The span and
//! regression losses are computed on the host from the downloaded logits (2 or 1 per token or
//! sequence: a few KB), the classification losses on the device.

use super::batch::first_rows;
use super::*;
use crate::heads::Task;

/// A fine-tuning head: what it predicts and its loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtHead {
    /// One of `n` classes per sequence (cross-entropy), from the pooled first token.
    Classify(usize),
    /// One real value per sequence (mean squared error), from the pooled first token.
    Regress,
    /// One of `n` tags per token (cross-entropy over the labelled tokens).
    Tag(usize),
    /// Extractive question answering: a start and an end logit per token.
    Span,
}

impl FtHead {
    /// The HF class of a model with this head.
    pub fn task(self) -> Task {
        match self {
            FtHead::Classify(_) | FtHead::Regress => Task::SequenceClassification,
            FtHead::Tag(_) => Task::TokenClassification,
            FtHead::Span => Task::QuestionAnswering,
        }
    }

    /// Logits per sequence (Classify, Regress) or per token (Tag, Span).
    pub fn outputs(self) -> usize {
        match self {
            FtHead::Classify(n) | FtHead::Tag(n) => n,
            FtHead::Regress => 1,
            FtHead::Span => 2,
        }
    }

    fn pooled(self) -> bool {
        matches!(self, FtHead::Classify(_) | FtHead::Regress)
    }

    /// The step's parameters for this head, in order: the encoder ([`encoder_layout`]), the
    /// pooler for sequence heads, then the head (`classifier.*` or `qa_outputs.*`), HF-named.
    pub fn layout(self, c: &BertConfig) -> Vec<(String, Vec<usize>)> {
        let mut v = encoder_layout(c);
        if self.pooled() {
            let with_pooler = crate::model::encoder_param_shapes(c, true);
            v.extend(with_pooler[with_pooler.len() - 2..].iter().cloned());
        }
        let mut hc = c.clone();
        hc.num_labels = self.outputs();
        v.extend(self.task().head_param_shapes(&hc));
        v
    }

    /// Where the head's tensors sit in [`FtHead::layout`].
    fn ix(self, layers: usize) -> FtIx {
        let b = EMB + PER_LAYER * layers;
        if self.pooled() {
            FtIx {
                pool: Some((b, b + 1)),
                w: b + 2,
                b: b + 3,
            }
        } else {
            FtIx {
                pool: None,
                w: b,
                b: b + 1,
            }
        }
    }

    fn params(self, layers: usize) -> usize {
        self.ix(layers).b + 1
    }
}

/// The head's tensors' indices: the pooler's (weight, bias), the output Linear's.
struct FtIx {
    pool: Option<(usize, usize)>,
    w: usize,
    b: usize,
}

/// What a fine-tuning batch is trained to predict.
#[derive(Clone, Debug, PartialEq)]
pub enum FtTargets {
    /// (B) class ids, for [`FtHead::Classify`].
    Classes(Vec<i64>),
    /// (B) values, for [`FtHead::Regress`].
    Values(Vec<f32>),
    /// (tokens) tag ids, -100 where no loss is taken (padding, special tokens, a word's later
    /// pieces), for [`FtHead::Tag`].
    Tags(Vec<i64>),
    /// (B) start and end token positions within each sequence, for [`FtHead::Span`].
    Spans { start: Vec<i64>, end: Vec<i64> },
}

/// A fine-tuning batch on the device: padded (B x S tokens) or packed (the valid tokens only,
/// back to back, `seq` the longest), with its targets.
#[derive(Clone, Debug)]
pub struct FtBatch {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub lens: Vec<usize>,
    pub packed: bool,
    pub targets: FtTargets,
}

impl FtBatch {
    /// Sequences of token ids and type ids (each with its template), padded with `pad` to the
    /// longest, or packed; `targets` as [`FtTargets`] says (tags per token of the sequences
    /// before padding, in order).
    pub fn new(seqs: &[(&[u32], &[u32])], pad: u32, packed: bool, targets: FtTargets) -> Self {
        let lens: Vec<usize> = seqs.iter().map(|s| s.0.len()).collect();
        let seq = lens.iter().copied().max().unwrap_or(0);
        let width = |l: usize| if packed { l } else { seq };
        let (mut ids, mut types) = (Vec::new(), Vec::new());
        for (i, t) in seqs {
            ids.extend(i.iter().map(|&x| x as i64));
            types.extend(t.iter().map(|&x| x as i64));
            ids.extend(std::iter::repeat_n(pad as i64, width(i.len()) - i.len()));
            types.extend(std::iter::repeat_n(0, width(i.len()) - i.len()));
        }
        let targets = match targets {
            FtTargets::Tags(t) if !packed => {
                let mut out = Vec::with_capacity(seqs.len() * seq);
                let mut at = 0;
                for &l in &lens {
                    out.extend(t[at..(at + l).min(t.len())].iter().copied());
                    out.extend(std::iter::repeat_n(-100, seq - l));
                    at += l;
                }
                FtTargets::Tags(out)
            }
            other => other,
        };
        FtBatch {
            batch: seqs.len(),
            seq,
            input_ids: ids,
            token_type_ids: types,
            lens,
            packed,
            targets,
        }
    }

    /// The encoder's view of the batch.
    pub fn input(&self) -> EncoderInput<'_> {
        EncoderInput {
            batch: self.batch,
            seq: self.seq,
            input_ids: &self.input_ids,
            token_type_ids: &self.token_type_ids,
            lens: &self.lens,
            packed: self.packed,
        }
    }

    /// The rows (in the batch's token layout) of sequence b.
    pub fn rows_of(&self, b: usize) -> std::ops::Range<usize> {
        if self.packed {
            let at: usize = self.lens[..b].iter().sum();
            at..at + self.lens[b]
        } else {
            b * self.seq..b * self.seq + self.lens[b]
        }
    }
}

fn check_params(c: &BertConfig, head: FtHead, n: usize) -> Result<()> {
    let want = head.params(c.num_hidden_layers);
    if n != want {
        return Err(BertError::Input(format!(
            "the {head:?} step takes {want} parameter buffers, got {n}"
        )));
    }
    Ok(())
}

/// The classifier dropout's probability and seed (none without a dropout seed).
fn classifier_dropout(c: &BertConfig, dropout_seed: Option<u64>) -> (f32, u64) {
    match dropout_seed {
        Some(s) => (
            c.classifier_dropout.unwrap_or(c.hidden_dropout_prob),
            s ^ 0xC1A5_51F1,
        ),
        None => (0.0, 0),
    }
}

/// Forward and backward of a fine-tuning head's loss on one batch: adds every parameter's
/// gradient into `grads` (order of [`FtHead::layout`]) and returns the loss (unscaled; `scale`
/// multiplies it before differentiation). `dropout_seed` Some: training (dropout on).
pub fn ft_forward_backward<D: Device>(
    dev: &D,
    c: &BertConfig,
    head: FtHead,
    params: &[D::W<'_>],
    grads: &mut [&mut D::Grad],
    x: &FtBatch,
    dropout_seed: Option<u64>,
    scale: f32,
) -> Result<f32> {
    check_params(c, head, params.len())?;
    check_params(c, head, grads.len())?;
    gelu_kind(c)?;
    let (b, h, nl) = (x.batch, c.hidden_size, c.num_hidden_layers);
    let input = x.input();
    let t = input.tokens();
    let ix = head.ix(nl);
    let l = head.outputs();
    check_targets(head, x, t)?;
    let (pc, cseed) = classifier_dropout(c, dropout_seed);
    let enc = encoder_forward(dev, c, params, &input, dropout_seed, nl, true)?;
    let mut dx = dev.zeros(t * h)?;
    let loss = match &x.targets {
        FtTargets::Classes(_) | FtTargets::Values(_) => {
            let (pw, pb) = ix.pool.expect("a sequence head has a pooler");
            let first_d = dev.upload_ids(&first_rows(&x.lens, x.seq, x.packed))?;
            let first = dev.gather_rows(&enc.out, &first_d, h)?;
            let pl = dev.linear(&first, params[pw], Some(params[pb]), b, h, h)?;
            let pooled = dev.tanh(&pl)?;
            drop(pl);
            let pd = dev.dropout(&pooled, pc, cseed)?;
            let logits = dev.linear(&pd, params[ix.w], Some(params[ix.b]), b, h, l)?;
            let (loss, dlogits) = match &x.targets {
                FtTargets::Classes(y) => {
                    let (loss, d) = dev.cross_entropy(logits, &dev.upload_ids(y)?, b, l, scale)?;
                    (read_scalar(dev, &loss)?, d)
                }
                FtTargets::Values(y) => {
                    let (loss, d) = mse(&dev.download(&logits)?, y, scale);
                    (loss, dev.upload(&d)?)
                }
                _ => unreachable!(),
            };
            let (gw, gb) = pair_mut(grads, ix.w, ix.b);
            dev.linear_dw(&dlogits, &pd, b, h, l, gw, Some(&mut **gb))?;
            let dpd = dev.linear_dx(&dlogits, params[ix.w], b, h, l)?;
            drop(dlogits);
            let dpooled = dev.dropout(&dpd, pc, cseed)?;
            let dpl = dev.tanh_bwd(&pooled, &dpooled)?;
            let (gw, gb) = pair_mut(grads, pw, pb);
            dev.linear_dw(&dpl, &first, b, h, h, gw, Some(&mut **gb))?;
            let dfirst = dev.linear_dx(&dpl, params[pw], b, h, h)?;
            dev.scatter_add_rows(&dfirst, &first_d, h, &mut dx)?;
            loss
        }
        FtTargets::Tags(tags) => {
            let rows: Vec<i64> = (0..t)
                .filter(|&i| tags[i] != -100)
                .map(|i| i as i64)
                .collect();
            let n = rows.len();
            if n == 0 {
                0.0
            } else {
                let targets: Vec<i64> = rows.iter().map(|&i| tags[i as usize]).collect();
                let xd = dev.dropout(&enc.out, pc, cseed)?;
                let rows_d = dev.upload_ids(&rows)?;
                let hm = dev.gather_rows(&xd, &rows_d, h)?;
                drop(xd);
                let logits = dev.linear(&hm, params[ix.w], Some(params[ix.b]), n, h, l)?;
                let (loss, dlogits) =
                    dev.cross_entropy(logits, &dev.upload_ids(&targets)?, n, l, scale)?;
                let (gw, gb) = pair_mut(grads, ix.w, ix.b);
                dev.linear_dw(&dlogits, &hm, n, h, l, gw, Some(&mut **gb))?;
                let dhm = dev.linear_dx(&dlogits, params[ix.w], n, h, l)?;
                let mut dxd = dev.zeros(t * h)?;
                dev.scatter_add_rows(&dhm, &rows_d, h, &mut dxd)?;
                dx = dev.dropout(&dxd, pc, cseed)?;
                read_scalar(dev, &loss)?
            }
        }
        FtTargets::Spans { start, end } => {
            let logits = dev.linear(&enc.out, params[ix.w], Some(params[ix.b]), t, h, 2)?;
            let (loss, d) = span_loss(&dev.download(&logits)?, x, start, end, scale);
            let dlogits = dev.upload(&d)?;
            let (gw, gb) = pair_mut(grads, ix.w, ix.b);
            dev.linear_dw(&dlogits, &enc.out, t, h, 2, gw, Some(&mut **gb))?;
            dx = dev.linear_dx(&dlogits, params[ix.w], t, h, 2)?;
            loss
        }
    };
    encoder_backward(dev, c, params, grads, enc, dx, &input, dropout_seed)?;
    Ok(loss)
}

/// The head's logits on one batch, no dropout, on the host: (B, L) for a sequence head, (T, 2)
/// or (T, L) for a token head (T the batch's token rows, padding included when padded).
pub fn ft_logits<D: Device>(
    dev: &D,
    c: &BertConfig,
    head: FtHead,
    params: &[D::W<'_>],
    x: &EncoderInput<'_>,
) -> Result<Vec<f32>> {
    check_params(c, head, params.len())?;
    gelu_kind(c)?;
    let (h, nl, l) = (c.hidden_size, c.num_hidden_layers, head.outputs());
    let enc = encoder_forward(dev, c, params, x, None, nl, false)?;
    let ix = head.ix(nl);
    let logits = match ix.pool {
        Some((pw, pb)) => {
            let first_d = dev.upload_ids(&first_rows(x.lens, x.seq, x.packed))?;
            let first = dev.gather_rows(&enc.out, &first_d, h)?;
            let pl = dev.linear(&first, params[pw], Some(params[pb]), x.batch, h, h)?;
            let pooled = dev.tanh(&pl)?;
            dev.linear(&pooled, params[ix.w], Some(params[ix.b]), x.batch, h, l)?
        }
        None => dev.linear(&enc.out, params[ix.w], Some(params[ix.b]), x.tokens(), h, l)?,
    };
    Ok(dev.download(&logits)?)
}

/// Targets of the right kind and count for the head, each in range; the error names the first
/// bad one.
fn check_targets(head: FtHead, x: &FtBatch, tokens: usize) -> Result<()> {
    let bad = |why: String| Err(BertError::Input(why));
    let classes = |v: &[i64], n: usize, what: &str, ignore: bool| -> Result<()> {
        match v
            .iter()
            .enumerate()
            .find(|(_, &y)| !((0..n as i64).contains(&y) || ignore && y == -100))
        {
            Some((i, y)) => bad(format!("{what} {y} at {i} is outside 0..{n}")),
            None => Ok(()),
        }
    };
    match (head, &x.targets) {
        (FtHead::Classify(n), FtTargets::Classes(y)) if y.len() == x.batch => {
            classes(y, n, "class", false)
        }
        (FtHead::Regress, FtTargets::Values(y)) if y.len() == x.batch => {
            match y.iter().position(|v| !v.is_finite()) {
                Some(i) => bad(format!("regression target {} of sequence {i}", y[i])),
                None => Ok(()),
            }
        }
        (FtHead::Tag(n), FtTargets::Tags(y)) if y.len() == tokens => classes(y, n, "tag", true),
        (FtHead::Span, FtTargets::Spans { start, end })
            if start.len() == x.batch && end.len() == x.batch =>
        {
            Ok(())
        }
        (head, t) => bad(format!(
            "targets {} do not fit a {head:?} head on a batch of {} sequences, {tokens} tokens",
            match t {
                FtTargets::Classes(v) => format!("Classes({})", v.len()),
                FtTargets::Values(v) => format!("Values({})", v.len()),
                FtTargets::Tags(v) => format!("Tags({})", v.len()),
                FtTargets::Spans { start, .. } => format!("Spans({})", start.len()),
            },
            x.batch
        )),
    }
}

/// Mean squared error of `y (B)` against `t (B)` and its gradient times `scale`.
fn mse(y: &[f32], t: &[f32], scale: f32) -> (f32, Vec<f32>) {
    let n = y.len().max(1) as f64;
    let loss = y
        .iter()
        .zip(t)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / n;
    let d = y
        .iter()
        .zip(t)
        .map(|(&a, &b)| (2.0 * (a as f64 - b as f64) / n) as f32 * scale)
        .collect();
    (loss as f32, d)
}

/// HF's span loss from the (T, 2) logits (see the module comment for the positions each
/// softmax covers), and its gradient over the logits times `scale`.
pub fn span_loss(
    logits: &[f32],
    x: &FtBatch,
    start: &[i64],
    end: &[i64],
    scale: f32,
) -> (f32, Vec<f32>) {
    let mut d = vec![0f32; logits.len()];
    let mut total = 0f64;
    for (col, targets) in [(0usize, start), (1, end)] {
        // Each sequence's positions, and its target if not ignored.
        let seqs: Vec<(usize, usize, Option<usize>)> = (0..x.batch)
            .map(|b| {
                let (at, n) = if x.packed {
                    (x.rows_of(b).start, x.lens[b])
                } else {
                    (b * x.seq, x.seq)
                };
                let y = targets[b].clamp(0, n as i64) as usize;
                (at, n, (y < n).then_some(y))
            })
            .collect();
        let valid = seqs.iter().filter(|s| s.2.is_some()).count();
        if valid == 0 {
            continue;
        }
        let mut sum = 0f64;
        for &(at, n, y) in &seqs {
            let Some(y) = y else { continue };
            let z = |j: usize| logits[(at + j) * 2 + col] as f64;
            let m = (0..n).map(z).fold(f64::NEG_INFINITY, f64::max);
            let se: f64 = (0..n).map(|j| (z(j) - m).exp()).sum();
            let lse = m + se.ln();
            sum += lse - z(y);
            let g = 0.5 / valid as f64 * scale as f64;
            for j in 0..n {
                let p = (z(j) - lse).exp() - if j == y { 1.0 } else { 0.0 };
                d[(at + j) * 2 + col] = (p * g) as f32;
            }
        }
        total += 0.5 * sum / valid as f64;
    }
    (total as f32, d)
}
