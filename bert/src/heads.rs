//! BERT with a task head, as HF's `BertFor*` classes (modeling_bert.py), with their losses:
//!
//! | task                     | head (HF names)                                      | loss                      |
//! |--------------------------|------------------------------------------------------|---------------------------|
//! | `BertForPreTraining`     | `cls.predictions.*` + `cls.seq_relationship`         | MLM CE + NSP CE           |
//! | `BertForMaskedLM`        | `cls.predictions.*` (no pooler)                      | CE, labels -100 ignored   |
//! | `BertForNextSentencePrediction` | `cls.seq_relationship`                        | CE                        |
//! | `BertForSequenceClassification` | `classifier` on the pooled output             | MSE / CE / BCE-with-logits|
//! | `BertForTokenClassification`    | `classifier` on every token (no pooler)       | CE, labels -100 ignored   |
//! | `BertForQuestionAnswering`      | `qa_outputs` (2 logits a token, no pooler)    | (CE start + CE end) / 2   |
//!
//! The MLM decoder is tied to the word embeddings (BertLMPredictionHead): logits =
//! LayerNorm(act(h Wt^T + bt)) E^T + bias. Pretraining computes logits only at the masked
//! positions (as the original BERT does), which gives HF's loss exactly, since HF's
//! cross-entropy ignores every other position.

use crate::config::{Activation, BertConfig, ProblemType};
use crate::model::{get_param, init_param, BertInput, BertModel, BertOutput, Forward};
use crate::{BertError, Result};
use engine::{ParamStore, Tensor, Var};

/// Which HF model class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Base,
    PreTraining,
    MaskedLm,
    NextSentence,
    SequenceClassification,
    TokenClassification,
    QuestionAnswering,
}

pub const TASKS: &[(Task, &str)] = &[
    (Task::Base, "BertModel"),
    (Task::PreTraining, "BertForPreTraining"),
    (Task::MaskedLm, "BertForMaskedLM"),
    (Task::NextSentence, "BertForNextSentencePrediction"),
    (
        Task::SequenceClassification,
        "BertForSequenceClassification",
    ),
    (Task::TokenClassification, "BertForTokenClassification"),
    (Task::QuestionAnswering, "BertForQuestionAnswering"),
];

impl Task {
    pub fn architecture(self) -> &'static str {
        TASKS.iter().find(|t| t.0 == self).unwrap().1
    }
    pub fn from_architecture(s: &str) -> Option<Task> {
        TASKS.iter().find(|t| t.1 == s).map(|t| t.0)
    }
    /// Whether HF builds this class with the pooler (`add_pooling_layer`).
    pub fn has_pooler(self) -> bool {
        matches!(
            self,
            Task::Base | Task::PreTraining | Task::NextSentence | Task::SequenceClassification
        )
    }
    /// HF names and shapes of the head's parameters.
    pub fn head_param_shapes(self, c: &BertConfig) -> Vec<(String, Vec<usize>)> {
        let h = c.hidden_size;
        let mlm = || {
            vec![
                (
                    "cls.predictions.transform.dense.weight".to_string(),
                    vec![h, h],
                ),
                ("cls.predictions.transform.dense.bias".into(), vec![h]),
                ("cls.predictions.transform.LayerNorm.weight".into(), vec![h]),
                ("cls.predictions.transform.LayerNorm.bias".into(), vec![h]),
                ("cls.predictions.bias".into(), vec![c.vocab_size]),
            ]
        };
        let nsp = || {
            vec![
                ("cls.seq_relationship.weight".to_string(), vec![2, h]),
                ("cls.seq_relationship.bias".into(), vec![2]),
            ]
        };
        let classifier = |name: &str, n: usize| {
            vec![
                (format!("{name}.weight"), vec![n, h]),
                (format!("{name}.bias"), vec![n]),
            ]
        };
        match self {
            Task::Base => vec![],
            Task::PreTraining => mlm().into_iter().chain(nsp()).collect(),
            Task::MaskedLm => mlm(),
            Task::NextSentence => nsp(),
            Task::SequenceClassification | Task::TokenClassification => {
                classifier("classifier", c.num_labels)
            }
            Task::QuestionAnswering => classifier("qa_outputs", 2),
        }
    }
}

/// Labels for a sequence classifier; the variant decides the loss as HF's `problem_type` does.
#[derive(Clone, Debug)]
pub enum SeqLabels {
    /// One class per sequence: cross-entropy.
    Classes(Vec<i64>),
    /// (B, num_labels) of 0/1 (or soft) targets: binary cross-entropy with logits.
    MultiLabel(Tensor),
    /// (B * num_labels) real targets: mean squared error.
    Values(Vec<f32>),
}

/// What the pretraining objective returns.
pub struct PretrainingOutput {
    /// MLM + NSP (or MLM alone when no NSP labels were given).
    pub loss: Var,
    pub mlm_loss: Var,
    pub nsp_loss: Option<Var>,
    /// Logits at the masked positions only (M,V), in row-major position order.
    pub mlm_logits: Var,
    /// Targets of those positions (M).
    pub mlm_targets: Vec<i64>,
    /// (B,2)
    pub nsp_logits: Var,
}

struct MlmHead {
    dense: (Var, Var),
    ln: (Var, Var),
    bias: Var,
}

/// BERT with one task head, its parameters in `params` under HF names.
pub struct Bert {
    pub config: BertConfig,
    pub task: Task,
    pub params: ParamStore,
    pub encoder: BertModel,
    mlm: Option<MlmHead>,
    /// (weight, bias) of `cls.seq_relationship`, `classifier` or `qa_outputs`.
    nsp: Option<(Var, Var)>,
    classifier: Option<(Var, Var)>,
    qa: Option<(Var, Var)>,
}

/// Every parameter name and shape of a task model.
pub fn param_shapes(c: &BertConfig, task: Task) -> Vec<(String, Vec<usize>)> {
    let mut v = crate::model::encoder_param_shapes(c, task.has_pooler());
    v.extend(task.head_param_shapes(c));
    v
}

fn linear(x: &Var, (w, b): &(Var, Var)) -> Result<Var> {
    Ok(x.linear(w, Some(b))?)
}

impl Bert {
    /// A freshly initialised model (HF's initialisation; reproducible from `seed`).
    pub fn init(config: &BertConfig, task: Task, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut params = ParamStore::new();
        for (name, shape) in param_shapes(config, task) {
            params.insert(&name, init_param(config, &name, &shape, seed))?;
        }
        Self::from_params(config, task, params)
    }

    /// Builds over `params`, which must hold exactly the task's parameters with the right
    /// shapes: the error names the first missing, misshapen or unexpected tensor.
    pub fn from_params(config: &BertConfig, task: Task, params: ParamStore) -> Result<Self> {
        config.validate()?;
        let shapes = param_shapes(config, task);
        for (name, shape) in &shapes {
            get_param(&params, name, shape)?;
        }
        if let Some((name, v)) = params
            .iter()
            .find(|(n, _)| !shapes.iter().any(|(s, _)| s == *n))
        {
            return Err(BertError::Checkpoint(format!(
                "unexpected tensor '{name}' (shape {:?}) for {}",
                v.shape(),
                task.architecture()
            )));
        }
        let encoder = BertModel::from_store(&params, config, task.has_pooler())?;
        let g = |n: &str| params.get(n).unwrap().clone();
        let pair = |p: &str| (g(&format!("{p}.weight")), g(&format!("{p}.bias")));
        let mlm = matches!(task, Task::PreTraining | Task::MaskedLm).then(|| MlmHead {
            dense: pair("cls.predictions.transform.dense"),
            ln: pair("cls.predictions.transform.LayerNorm"),
            bias: g("cls.predictions.bias"),
        });
        let nsp = matches!(task, Task::PreTraining | Task::NextSentence)
            .then(|| pair("cls.seq_relationship"));
        let classifier = matches!(
            task,
            Task::SequenceClassification | Task::TokenClassification
        )
        .then(|| pair("classifier"));
        let qa = (task == Task::QuestionAnswering).then(|| pair("qa_outputs"));
        Ok(Bert {
            config: config.clone(),
            task,
            encoder,
            params,
            mlm,
            nsp,
            classifier,
            qa,
        })
    }

    /// The encoder on a batch.
    pub fn forward(&self, x: &BertInput, opt: Forward) -> Result<BertOutput> {
        self.encoder.forward(x, opt)
    }

    fn need<'a, T>(&self, head: &'a Option<T>, what: &str) -> Result<&'a T> {
        head.as_ref().ok_or_else(|| {
            BertError::Input(format!("{} has no {what} head", self.task.architecture()))
        })
    }

    fn pooled<'a>(&self, out: &'a BertOutput) -> Result<&'a Var> {
        out.pooled
            .as_ref()
            .ok_or_else(|| BertError::Input(format!("{} has no pooler", self.task.architecture())))
    }

    /// MLM logits (N,V) at `rows` (indices into the flattened B*S positions), or at every
    /// position (B*S,V) when `rows` is None.
    pub fn mlm_logits(&self, out: &BertOutput, rows: Option<&[usize]>) -> Result<Var> {
        let head = self.need(&self.mlm, "masked-LM")?;
        let s = out.last_hidden.shape();
        let h = self.config.hidden_size;
        let flat = out.last_hidden.reshape(&[s[0] * s[1], h])?;
        let x = match rows {
            Some(r) => {
                let ids: Vec<i64> = r.iter().map(|&i| i as i64).collect();
                flat.embedding(&ids, &[ids.len()])?
            }
            None => flat,
        };
        let t = linear(&x, &head.dense)?;
        let t = match self.config.hidden_act {
            Activation::Gelu(g) => t.gelu(g)?,
            Activation::Relu => t.relu()?,
        };
        let t = t.layernorm(&head.ln.0, &head.ln.1, self.config.layer_norm_eps)?;
        let word = self.encoder.word_embeddings();
        Ok(t.linear(word, Some(&head.bias))?)
    }

    /// Next-sentence logits (B,2): index 0 = "B follows A", 1 = "B is random" (HF's order).
    pub fn nsp_logits(&self, out: &BertOutput) -> Result<Var> {
        linear(self.pooled(out)?, self.need(&self.nsp, "next-sentence")?)
    }

    /// The pretraining objective. `mlm_labels` (B*S): the original id at masked positions,
    /// -100 elsewhere; `nsp_labels` (B): 0 = "B follows A", 1 = random.
    pub fn pretraining(
        &self,
        x: &BertInput,
        mlm_labels: &[i64],
        nsp_labels: Option<&[i64]>,
        opt: Forward,
    ) -> Result<PretrainingOutput> {
        if mlm_labels.len() != x.batch * x.seq {
            return Err(BertError::Input(format!(
                "{} MLM labels for a batch of {} x {}",
                mlm_labels.len(),
                x.batch,
                x.seq
            )));
        }
        let out = self.forward(x, opt)?;
        let rows: Vec<usize> = (0..mlm_labels.len())
            .filter(|&i| mlm_labels[i] != -100)
            .collect();
        let targets: Vec<i64> = rows.iter().map(|&i| mlm_labels[i]).collect();
        let mlm_logits = self.mlm_logits(&out, Some(&rows))?;
        let mlm_loss = mlm_logits.cross_entropy(&targets, -100)?;
        let nsp_logits = self.nsp_logits(&out)?;
        let (loss, nsp_loss) = match nsp_labels {
            Some(l) => {
                let n = nsp_logits.cross_entropy(l, -100)?;
                (mlm_loss.add(&n)?, Some(n))
            }
            None => (mlm_loss.clone(), None),
        };
        Ok(PretrainingOutput {
            loss,
            mlm_loss,
            nsp_loss,
            mlm_logits,
            mlm_targets: targets,
            nsp_logits,
        })
    }

    /// Sequence-classification logits (B, num_labels) from the pooled output.
    pub fn classify(&self, out: &BertOutput) -> Result<Var> {
        if self.task != Task::SequenceClassification {
            return Err(BertError::Input(format!(
                "{} is not a sequence classifier",
                self.task.architecture()
            )));
        }
        let x = self.classifier_dropout(self.pooled(out)?, out)?;
        linear(&x, self.need(&self.classifier, "classifier")?)
    }

    /// HF's dropout before a classifier (training only).
    fn classifier_dropout(&self, x: &Var, out: &BertOutput) -> Result<Var> {
        let c = &self.config;
        match out.dropout_seed {
            Some(seed) => Ok(x.dropout(
                c.classifier_dropout.unwrap_or(c.hidden_dropout_prob),
                seed ^ 0xC1A5_51F1,
            )?),
            None => Ok(x.clone()),
        }
    }

    /// HF's sequence-classification loss for `logits` (B,L).
    pub fn sequence_classification_loss(&self, logits: &Var, labels: &SeqLabels) -> Result<Var> {
        let want = match labels {
            SeqLabels::Values(_) => ProblemType::Regression,
            SeqLabels::Classes(_) => ProblemType::SingleLabel,
            SeqLabels::MultiLabel(_) => ProblemType::MultiLabel,
        };
        if let Some(p) = self.config.problem_type {
            if p != want {
                return Err(BertError::Input(format!(
                    "the config's problem_type is {p:?} but the labels are for {want:?}"
                )));
            }
        }
        Ok(match labels {
            SeqLabels::Classes(c) => logits.cross_entropy(c, -100)?,
            SeqLabels::MultiLabel(t) => logits.bce_with_logits(t)?,
            SeqLabels::Values(v) => {
                let n = logits.value().numel();
                if v.len() != n {
                    return Err(BertError::Input(format!(
                        "{} regression targets for {n} logits",
                        v.len()
                    )));
                }
                let t = Var::constant(Tensor::from_vec(v.clone(), &[n])?);
                let d = logits.reshape(&[n])?.sub(&t)?;
                d.mul(&d)?.mean(0, false)?
            }
        })
    }

    /// Token-classification logits (B,S,L).
    pub fn token_logits(&self, out: &BertOutput) -> Result<Var> {
        if self.task != Task::TokenClassification {
            return Err(BertError::Input(format!(
                "{} is not a token classifier",
                self.task.architecture()
            )));
        }
        let x = self.classifier_dropout(&out.last_hidden, out)?;
        linear(&x, self.need(&self.classifier, "classifier")?)
    }

    /// Cross-entropy over every position whose label is not -100.
    pub fn token_classification_loss(&self, logits: &Var, labels: &[i64]) -> Result<Var> {
        let l = self.config.num_labels;
        let n = logits.value().numel() / l.max(1);
        Ok(logits.reshape(&[n, l])?.cross_entropy(labels, -100)?)
    }

    /// Span logits: (start (B,S), end (B,S)).
    pub fn qa_logits(&self, out: &BertOutput) -> Result<(Var, Var)> {
        let lg = linear(&out.last_hidden, self.need(&self.qa, "question-answering")?)?;
        let s = lg.shape();
        let (b, sl) = (s[0], s[1]);
        Ok((
            lg.narrow(2, 0, 1)?.reshape(&[b, sl])?,
            lg.narrow(2, 1, 1)?.reshape(&[b, sl])?,
        ))
    }

    /// HF's span loss: positions clamped to [0, S], position S ignored, (start + end) / 2.
    pub fn qa_loss(
        &self,
        start: &Var,
        end: &Var,
        start_pos: &[i64],
        end_pos: &[i64],
    ) -> Result<Var> {
        let sl = start.shape()[1] as i64;
        let clamp = |p: &[i64]| p.iter().map(|&x| x.clamp(0, sl)).collect::<Vec<_>>();
        let a = start.cross_entropy(&clamp(start_pos), sl)?;
        let b = end.cross_entropy(&clamp(end_pos), sl)?;
        Ok(a.add(&b)?.affine(0.5, 0.0)?)
    }
}
