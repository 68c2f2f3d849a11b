//! Sentence embeddings from a BERT: pooling over token vectors (as sentence-transformers'
//! `Pooling` module does) and cosine similarity.

use crate::heads::Bert;
use crate::model::{BertInput, Forward};
use crate::{BertError, Result};

/// How token vectors become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the last layer's token vectors, padding excluded.
    Mean,
    /// The last layer's `[CLS]` vector.
    Cls,
    /// Mean of the second-to-last layer's token vectors, padding excluded.
    SecondToLast,
}

impl Pooling {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "second-to-last" => Pooling::SecondToLast,
            _ => return None,
        })
    }
}

/// Mean over positions with mask 1 of `hidden` (B,S,H) row-major: (B,H), in f64 sums.
pub fn masked_mean(hidden: &[f32], mask: &[f32], b: usize, s: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; b * h];
    for i in 0..b {
        let mut acc = vec![0.0f64; h];
        let mut count = 0.0f64;
        for j in 0..s {
            let m = mask[i * s + j] as f64;
            if m == 0.0 {
                continue;
            }
            count += m;
            let row = &hidden[(i * s + j) * h..(i * s + j + 1) * h];
            acc.iter_mut()
                .zip(row)
                .for_each(|(a, &x)| *a += m * x as f64);
        }
        // sentence-transformers clamps the count at 1e-9.
        let count = count.max(1e-9);
        for (o, a) in out[i * h..(i + 1) * h].iter_mut().zip(&acc) {
            *o = (a / count) as f32;
        }
    }
    out
}

/// Scales each row of (n, h) to unit Euclidean norm (rows of zeros stay zero).
pub fn normalize_rows(v: &mut [f32], h: usize) {
    for row in v.chunks_mut(h) {
        let n = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
        }
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// One embedding (B rows of H) per sequence of the batch.
pub fn embed_batch(
    model: &Bert,
    x: &BertInput,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let _g = engine::no_grad();
    let h = model.config.hidden_size;
    if pooling == Pooling::SecondToLast && model.config.num_hidden_layers < 2 {
        return Err(BertError::Input(
            "second-to-last pooling needs a model with at least 2 layers".into(),
        ));
    }
    let out = model.forward(
        x,
        Forward {
            hidden_states: pooling == Pooling::SecondToLast,
            ..Default::default()
        },
    )?;
    let hidden = match pooling {
        Pooling::SecondToLast => &out.hidden_states[out.hidden_states.len() - 2],
        _ => &out.last_hidden,
    };
    Ok(pool(&hidden.value().to_vec(), x, pooling, normalize, h))
}

/// Pools hidden states `(B*S, H)` (the last layer's, or the second-to-last's for that pooling)
/// into one vector per sequence, optionally L2-normalised.
fn pool(hidden: &[f32], x: &BertInput, pooling: Pooling, normalize: bool, h: usize) -> Vec<f32> {
    let mut v = match pooling {
        Pooling::Mean | Pooling::SecondToLast => {
            masked_mean(hidden, &x.attention_mask, x.batch, x.seq, h)
        }
        Pooling::Cls => (0..x.batch)
            .flat_map(|i| hidden[i * x.seq * h..i * x.seq * h + h].to_vec())
            .collect(),
    };
    if normalize {
        normalize_rows(&mut v, h);
    }
    v
}

/// [`embed_batch`] on a device: the encoder runs there ([`crate::step::encode`] on the packed
/// batch: no padding tokens; weights from [`crate::step::encoder_from_named`]), pooling on the
/// host. The mask must be a prefix of ones per sequence (as tokenizer batches are).
pub fn embed_batch_on<D: engine::device::Device>(
    dev: &D,
    c: &crate::BertConfig,
    params: &[D::W<'_>],
    x: &BertInput,
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let layers = match pooling {
        Pooling::SecondToLast if c.num_hidden_layers < 2 => {
            return Err(BertError::Input(
                "second-to-last pooling needs a model with at least 2 layers".into(),
            ))
        }
        Pooling::SecondToLast => c.num_hidden_layers - 1,
        _ => c.num_hidden_layers,
    };
    // Padding-free: each sequence's valid tokens back to back, so no compute goes to padding.
    let lens = crate::step::key_lengths(x)?;
    let pack = |v: &[i64]| crate::step::pack_tokens(v, &lens, x.seq);
    let (ids, types) = (pack(&x.input_ids), pack(&x.token_type_ids));
    let input = crate::step::EncoderInput {
        batch: x.batch,
        seq: x.seq,
        input_ids: &ids,
        token_type_ids: &types,
        lens: &lens,
        packed: true,
    };
    let packed = dev.download(&crate::step::encode(dev, c, params, &input, layers)?)?;
    // Back to the padded layout (zeros at padding) for the pooling the host path shares.
    let h = c.hidden_size;
    let mut hidden = vec![0.0f32; x.batch * x.seq * h];
    let mut at = 0;
    for (b, &l) in lens.iter().enumerate() {
        hidden[b * x.seq * h..(b * x.seq + l) * h].copy_from_slice(&packed[at * h..(at + l) * h]);
        at += l;
    }
    Ok(pool(&hidden, x, pooling, normalize, h))
}

/// A model directory and its tokenizer, set up for embedding: no fixed padding (batches pad
/// to their longest), truncation to the model's positions when the tokenizer sets none.
pub fn load_for_embedding(
    dir: &std::path::Path,
) -> std::result::Result<(Bert, tokenizer::BertTokenizer), Box<dyn std::error::Error>> {
    use tokenizer::{Truncation, TruncationStrategy};
    let md = crate::ModelDir::load(
        dir,
        &crate::LoadOptions {
            task: Some(crate::Task::Base),
            init_missing_head: None,
        },
    )?;
    let mut tok = md.tokenizer.ok_or_else(|| {
        format!(
            "{}: no tokenizer.json or vocab.txt in the model directory",
            dir.display()
        )
    })?;
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

/// Embeds `texts` in one batch on the CPU (tokenized with special tokens).
pub fn embed_texts(
    model: &Bert,
    tok: &tokenizer::BertTokenizer,
    texts: &[&str],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<f32>> {
    let encs = tok.encode_batch(texts, true);
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let x = BertInput::from_encodings(&encs, pad)?;
    embed_batch(model, &x, pooling, normalize)
}

/// How [`embed_stream`] writes one embedding per line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Space-separated floats ([`format_component`]).
    Text,
    /// JSON lines: {"index", "embedding"}.
    Json,
}

/// One embedding component as text: the shortest decimal that reads back as the same f32,
/// in scientific notation outside [1e-4, 1e7) so that tiny values stay short
/// (`2.6975832e-32`, not 40 characters of zeros).
pub fn format_component(x: f32) -> String {
    let a = x.abs();
    if a == 0.0 || (1e-4..1e7).contains(&a) || !a.is_finite() {
        x.to_string()
    } else {
        format!("{x:e}")
    }
}

/// What [`embed_stream`] does with each line of its input.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    pub pooling: Pooling,
    pub normalize: bool,
    /// Texts per forward pass (1: one at a time, in input order).
    pub batch: usize,
    pub format: OutputFormat,
    pub device: crate::train::TrainDevice,
    /// The Linear layers' GEMMs on the CPU path: f32, or bf16 operands with f32 sums (weights
    /// rounded once; faster where the CPU's `vdpbf16ps` outruns its FMA, about level elsewhere).
    pub precision: engine::Precision,
    /// A spinner with texts and tokens/s on stderr.
    pub progress: bool,
}

/// What [`embed_stream`] embedded.
#[derive(Clone, Copy, Debug)]
pub struct StreamSummary {
    pub texts: usize,
    pub tokens: usize,
    pub seconds: f64,
}

/// Embeds each line of `input` with the model in `dir` and writes one embedding per line to
/// `output`, in input order. Lines are read in windows of 64 batches; each window is tokenized
/// at once and its texts are batched by token count ([`crate::batching::by_length`]); each
/// text's embedding does not depend on its batch (tested). The CPU runs the tape's inference
/// path (prepacked, fused); other devices run the encoder there ([`crate::device::Devices`]).
pub fn embed_stream(
    dir: &std::path::Path,
    opts: &StreamOptions,
    input: impl std::io::BufRead,
    output: impl std::io::Write,
) -> std::result::Result<StreamSummary, Box<dyn std::error::Error>> {
    use crate::train::TrainDevice;
    use std::io::Write;
    use tokenizer::Encoding;
    let (model, tok) = load_for_embedding(dir)?;
    if opts.precision == engine::Precision::Bf16 {
        if !matches!(opts.device, TrainDevice::Cpu | TrainDevice::CpuTape) {
            return Err(crate::BertError::Input(format!(
                "bf16 GEMMs are an option of the CPU path (--device cpu), not of {:?}; \
                 on a GPU use --device cuda-bf16",
                opts.device
            ))
            .into());
        }
        crate::device::note_bf16_kernel();
        model
            .encoder
            .set_inference_precision(engine::Precision::Bf16);
    }
    let h = model.config.hidden_size;
    let (pooling, normalize) = (opts.pooling, opts.normalize);
    let devices = crate::device::Devices::open(opts.device)?;
    let pad = tok.vocab.id("[PAD]").unwrap_or(0);
    let mut run: crate::device::Embedder<'_> = match opts.device {
        TrainDevice::Cpu | TrainDevice::CpuTape => Box::new(|encs: &[Encoding]| {
            let x = BertInput::from_encodings(encs, pad)?;
            embed_batch(&model, &x, pooling, normalize)
        }),
        _ => devices.embedder(&model, pad, pooling, normalize)?,
    };
    let mut out = std::io::BufWriter::new(output);
    let mut lines = Vec::new();
    let mut index = 0usize;
    let batch = opts.batch.max(1);
    let window = if batch == 1 { 1 } else { batch * 64 };
    let t0 = std::time::Instant::now();
    let mut tokens = 0usize;
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} texts  {msg}  [{elapsed}]")
                .unwrap(),
        );
        b
    });
    let mut flush = |lines: &mut Vec<String>,
                     out: &mut dyn Write|
     -> std::result::Result<(), Box<dyn std::error::Error>> {
        if lines.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let encs = tok.encode_batch(&refs, true);
        let v = crate::batching::by_length(encs, batch, h, |group| {
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
            match opts.format {
                OutputFormat::Text => {
                    let s: Vec<String> = row.iter().map(|&x| format_component(x)).collect();
                    writeln!(out, "{}", s.join(" "))?;
                }
                OutputFormat::Json => writeln!(
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
    for (n, line) in input.lines().enumerate() {
        lines.push(line.map_err(|e| format!("stdin line {}: {e}", n + 1))?);
        if lines.len() >= window {
            flush(&mut lines, &mut out)?;
        }
    }
    flush(&mut lines, &mut out)?;
    // A BufWriter dropped unflushed drops its error too (a full disk would exit 0).
    out.flush()?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(StreamSummary {
        texts: index,
        tokens,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::format_component;

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
            let s = format_component(x);
            assert_eq!(s.parse::<f32>().unwrap().to_bits(), x.to_bits(), "{x}: {s}");
            assert!(s.len() <= 16, "{x}: {s} is {} characters", s.len());
        }
        assert_eq!(format_component(-2.6975832e-32), "-2.6975832e-32");
        assert_eq!(format_component(0.25), "0.25");
        assert!(format_component(f32::NAN).parse::<f32>().unwrap().is_nan());
    }
}
