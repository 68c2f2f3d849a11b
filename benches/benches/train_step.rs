//! One full training step (forward with dropout, backward, clipping, AdamW) of a BERT encoder
//! layer: hidden 256, 4 heads, intermediate 1024, batch 32 x 128 tokens.
//! Peak memory and tokens/s: `cargo run --release -p benches --bin train_step`.
use benches::LayerStep;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut step = LayerStep::new(256, 4, 32, 128);
    // Check before timing: the loss is finite and the step changes the weights.
    let before = step
        .store
        .get("encoder.layer.0.attention.self.query.weight")
        .unwrap()
        .value()
        .to_vec();
    assert!(step.run().is_finite());
    let after = step
        .store
        .get("encoder.layer.0.attention.self.query.weight")
        .unwrap()
        .value()
        .to_vec();
    assert_ne!(before, after, "AdamW must update the weights");
    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(32 * 128))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    g.bench_function("bert_layer_h256_b32x128", |b| b.iter(|| step.run()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
