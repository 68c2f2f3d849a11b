//! Parity with PyTorch: HuggingFace's BertLayer with fixed weights (fixture written by
//! scripts/fixtures/make_bert_layer_fixture.py, evaluated in float64 on the same f32 values)
//! against our EncoderLayer on the autograd tape: output, loss, the gradient of every
//! parameter and of the input, each within 1e-4 relative error (max |ours - ref| / max |ref|).

use bert::layer::{EncoderLayer, LayerConfig};
use bert::Activation;
use engine::{Gelu, ParamStore, Tensor, Var};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// max |ours - ref| / max |ref|. A reference that is zero up to rounding (max |ref| < 1e-9)
/// is a gradient that vanishes identically: the key bias's, since adding q.b to every score of a
/// row leaves its softmax unchanged. There a relative error is meaningless; what is checked is
/// that ours is zero up to f32 rounding too: max |ours - ref| <= 1e-6 maps to 1e-4 here.
fn rel_err(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    if bert_tests::max_abs_err(reference, &vec![0.0; reference.len()]) < 1e-9 {
        return bert_tests::max_abs_err(ours, reference) * 1e-4 / 1e-6;
    }
    bert_tests::rel_max(ours, reference, 0.0)
}

#[test]
fn bert_layer_matches_pytorch_forward_and_backward() {
    let text = include_str!("fixtures/bert_layer.json");
    let f: Value = serde_json::from_str(text).expect("fixture parses");
    let c = &f["config"];
    let config = LayerConfig {
        hidden: c["hidden"].as_u64().unwrap() as usize,
        heads: c["heads"].as_u64().unwrap() as usize,
        intermediate: c["intermediate"].as_u64().unwrap() as usize,
        layer_norm_eps: c["layer_norm_eps"].as_f64().unwrap() as f32,
        act: Activation::Gelu(Gelu::Erf),
        dropout: 0.0,
        attention_dropout: 0.0,
    };
    let (b, s, h) = (
        f["batch"].as_u64().unwrap() as usize,
        f["seq"].as_u64().unwrap() as usize,
        config.hidden,
    );
    let mut store = ParamStore::new();
    for (name, p) in f["params"].as_object().unwrap() {
        let shape: Vec<usize> = p["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        store
            .insert(name, Tensor::from_vec(floats(&p["data"]), &shape).unwrap())
            .unwrap();
    }
    let layer = EncoderLayer::from_store(&store, "", config).unwrap();
    let x = Var::param(Tensor::from_vec(floats(&f["input"]), &[b, s, h]).unwrap());
    let mask = Tensor::from_vec(floats(&f["mask"]), &[b, 1, 1, s]).unwrap();
    let r = Var::constant(Tensor::from_vec(floats(&f["r"]), &[b, s, h]).unwrap());
    let out = layer.forward(&x, Some(&mask), None).unwrap();
    let loss = out.mul(&r).unwrap().sum_all().unwrap();
    let mut report = vec![(
        "output".to_string(),
        rel_err(&out.value().to_vec(), &floats(&f["output"])),
    )];
    let want_loss = f["loss"].as_f64().unwrap();
    report.push((
        "loss".into(),
        (loss.item() as f64 - want_loss).abs() / want_loss.abs(),
    ));
    loss.backward().unwrap();
    report.push((
        "input grad".into(),
        rel_err(&x.grad().unwrap().to_vec(), &floats(&f["input_grad"])),
    ));
    for (name, g) in f["grads"].as_object().unwrap() {
        let ours = store
            .get(name)
            .unwrap()
            .grad()
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        report.push((format!("grad {name}"), rel_err(&ours.to_vec(), &floats(g))));
    }
    for (what, err) in &report {
        println!("{what:45} relative error {err:.2e}");
    }
    let worst = report
        .iter()
        .cloned()
        .fold(("".to_string(), 0.0), |a, b| if b.1 > a.1 { b } else { a });
    assert!(worst.1 < 1e-4, "worst: {} at {:.2e}", worst.0, worst.1);
    assert_eq!(
        report.len(),
        3 + 16,
        "output, loss, input grad and all 16 parameter gradients"
    );
}
