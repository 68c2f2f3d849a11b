//! The small BERT and padded batch the step tests use (`tests/tests/step.rs`, on every device).

use bert::step::{forward_backward, read_scalar, StepBatch};
use bert::{BertConfig, BertInput};
use engine::device::Device;

pub fn config(act: &str) -> BertConfig {
    let mut c = BertConfig::preset("bert-tiny", 97).unwrap();
    c.hidden_size = 64;
    c.num_attention_heads = 2;
    c.intermediate_size = 96;
    c.num_hidden_layers = 2;
    c.max_position_embeddings = 24;
    c.hidden_act = bert::Activation::parse(act).unwrap();
    c
}

/// A padded batch of three sequences (lengths 16, 11, 6 of 16), types 0 then 1, about 20% of
/// the valid positions masked, NSP labels 0/1.
pub fn batch() -> (BertInput, Vec<i64>, Vec<i64>) {
    let (b, s) = (3, 16);
    let lens = [16, 11, 6];
    let mut x = BertInput::new(vec![0; b * s], b, s).unwrap();
    let mut labels = vec![-100i64; b * s];
    let mut r = 12345u64;
    let mut next = |m: u64| {
        r = r
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (r >> 33) % m
    };
    for (bi, &len) in lens.iter().enumerate() {
        for j in 0..s {
            let i = bi * s + j;
            if j < len {
                x.input_ids[i] = 1 + next(96) as i64;
                x.token_type_ids[i] = (j >= len / 2) as i64;
                if j > 0 && next(5) == 0 {
                    labels[i] = 1 + next(96) as i64;
                }
            } else {
                x.input_ids[i] = 0;
                x.attention_mask[i] = 0.0;
            }
        }
    }
    (x, labels, vec![0, 1, 1])
}

/// One forward and backward on `dev` from step-ordered `values`: (MLM loss, NSP loss, every
/// gradient on the host).
pub fn grads_on<D: Device>(
    dev: &D,
    c: &bert::BertConfig,
    values: &[Vec<f32>],
    sb: &StepBatch,
    seed: Option<u64>,
) -> (f32, f32, Vec<Vec<f32>>) {
    let weights = dev.weights(values).unwrap();
    let mut grads: Vec<D::Grad> = values
        .iter()
        .map(|v| dev.zeros_grad(v.len()).unwrap())
        .collect();
    let prefs = dev.weight_refs(&weights);
    let mut grefs: Vec<&mut D::Grad> = grads.iter_mut().collect();
    let l = forward_backward(dev, c, &prefs, &mut grefs, sb, seed, 1.0).unwrap();
    (
        read_scalar(dev, l.mlm.as_ref().unwrap()).unwrap(),
        read_scalar(dev, &l.nsp).unwrap(),
        grads
            .iter()
            .map(|g| dev.download_grad(g).unwrap())
            .collect(),
    )
}
