//! Training parity with HuggingFace: our BertForPreTraining and transformers', started from the
//! same checkpoint (saved by transformers), fed the same 50 batches with dropout off and the same
//! optimizer (AdamW, eps 1e-6, decay 0.01 except biases and LayerNorm, clipping at 1, warmup 5
//! then linear decay), give losses that agree to 1e-3 relative at every step.
//! Fixture: scripts/fixtures/make_training_fixture.py.

use bert::safetensors::SafeTensors;
use bert::{BertInput, Forward, LoadOptions, ModelDir, Task};
use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use std::path::Path;

#[test]
fn fifty_steps_match_transformers_losses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/training");
    let md = ModelDir::load(
        &dir.join("init"),
        &LoadOptions {
            task: Some(Task::PreTraining),
            init_missing_head: None,
        },
    )
    .unwrap();
    let model = md.model;
    // Owned copies (the optimizer replaces values; the mapped file stays untouched anyway).
    for (_, v) in model.params.iter() {
        v.set_value(engine::Tensor::from_vec(v.value().to_vec(), &v.shape()).unwrap())
            .unwrap();
    }
    let st = SafeTensors::open(&dir.join("batches.safetensors")).unwrap();
    let want = st.tensor("losses").unwrap().to_vec();
    let ints = |k: &str| -> Vec<i64> {
        st.tensor(k)
            .unwrap()
            .to_vec()
            .iter()
            .map(|&x| x as i64)
            .collect()
    };
    let mut opt = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-6,
        weight_decay: 0.01,
        bias_correction: true,
    });
    let sched = LrSchedule::linear(1e-3, 5, want.len() as u64);
    let mut worst = 0.0f64;
    for (s, &w) in want.iter().enumerate() {
        let shape = st.info(&format!("{s}.input_ids")).unwrap().shape.clone();
        let x = BertInput {
            batch: shape[0],
            seq: shape[1],
            input_ids: ints(&format!("{s}.input_ids")),
            token_type_ids: ints(&format!("{s}.token_type_ids")),
            attention_mask: st.tensor(&format!("{s}.attention_mask")).unwrap().to_vec(),
        };
        let out = model
            .pretraining(
                &x,
                &ints(&format!("{s}.labels")),
                Some(&ints(&format!("{s}.nsp"))),
                Forward::default(),
            )
            .unwrap();
        let loss = out.loss.item() as f64;
        let rel = (loss - w as f64).abs() / (w as f64).abs();
        worst = worst.max(rel);
        assert!(
            rel <= 1e-3,
            "step {}: loss {loss} vs transformers {w} (relative {rel:.2e})",
            s + 1
        );
        model.params.zero_grad();
        out.loss.backward().unwrap();
        clip_grad_norm(&model.params, 1.0).unwrap();
        opt.step(&model.params, sched.lr(s as u64 + 1)).unwrap();
    }
    eprintln!("50 steps: worst relative loss difference {worst:.2e}");
}
