//! Shared helpers for the benchmarks: deterministic inputs, timing, and the output checks that
//! every benchmark runs against a reference before it times anything.

pub mod peak;

/// Deterministic pseudo-random floats in [-1, 1) (SplitMix64), so runs are comparable.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Best-of-`reps` wall time in seconds of `f`, after one warm-up call, with at least
/// `min_secs` of total measuring (more repetitions for fast calls).
pub fn best_time(min_secs: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = std::time::Instant::now();
    let mut best = f64::MAX;
    let mut n = 0;
    while n < reps || start.elapsed().as_secs_f64() < min_secs {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        n += 1;
        if n > 10_000 {
            break;
        }
    }
    best
}

/// Times several contenders round-robin: each round calls every function once, and each
/// contender's best time over all rounds is returned. Interleaving matters on a shared machine:
/// slow phases (a neighbour's burst) then hit every contender alike instead of one of them.
pub fn race(min_secs: f64, min_rounds: usize, fns: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    for f in fns.iter_mut() {
        f();
    }
    let mut best = vec![f64::MAX; fns.len()];
    let start = std::time::Instant::now();
    let mut round = 0;
    while round < min_rounds || (start.elapsed().as_secs_f64() < min_secs && round < 100_000) {
        for (i, f) in fns.iter_mut().enumerate() {
            let t = std::time::Instant::now();
            f();
            best[i] = best[i].min(t.elapsed().as_secs_f64());
        }
        round += 1;
    }
    best
}

/// Max |x - y| / (1 + |y|) over two slices: the check used before timing a GEMM.
pub fn max_rel_err(x: &[f32], y: &[f32]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(&a, &b)| ((a - b).abs() / (1.0 + b.abs())) as f64)
        .fold(0.0, f64::max)
}

/// A rayon pool with exactly `n` threads.
pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("rayon pool")
}

/// `out.copy_from_slice(x)`, split over the current rayon pool: the memory roofline the
/// memory-bound kernels are compared with.
pub fn parallel_copy(x: &[f32], out: &mut [f32]) {
    use rayon::prelude::*;
    let chunk = x.len().div_ceil(rayon::current_num_threads()).max(1);
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(o, i)| o.copy_from_slice(i));
}

/// The process's peak resident memory in MiB (VmHWM), where /proc exists.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One training step of a BERT encoder layer on the autograd tape, as the train-step benchmarks
/// run it: forward with dropout, loss = mean(out * r), backward, clipping, AdamW.
pub struct LayerStep {
    pub store: engine::ParamStore,
    pub layer: bert::layer::EncoderLayer,
    pub x: engine::Var,
    pub r: engine::Var,
    pub mask: engine::Tensor,
    pub opt: engine::optim::AdamW,
    pub step: u64,
}

impl LayerStep {
    /// hidden, heads, intermediate = 4 * hidden; batch x seq tokens; the last quarter of every
    /// other sequence is padding.
    pub fn new(hidden: usize, heads: usize, batch: usize, seq: usize) -> Self {
        use engine::{Tensor, Var};
        let config = bert::layer::LayerConfig {
            hidden,
            heads,
            intermediate: 4 * hidden,
            layer_norm_eps: 1e-12,
            act: bert::Activation::Gelu(engine::Gelu::Erf),
            dropout: 0.1,
            attention_dropout: 0.1,
        };
        let mut store = engine::ParamStore::new();
        let layer = bert::layer::EncoderLayer::new(&mut store, "encoder.layer.0.", config, 1)
            .expect("layer");
        let x = Var::constant(Tensor::randn(&[batch, seq, hidden], 0.0, 1.0, 2));
        let r = Var::constant(Tensor::randn(&[batch, seq, hidden], 0.0, 1.0, 3));
        let mask: Vec<f32> = (0..batch * seq)
            .map(|i| {
                if (i / seq) % 2 == 1 && i % seq >= seq * 3 / 4 {
                    -10000.0
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, &[batch, 1, 1, seq]).expect("mask");
        let opt = engine::optim::AdamW::new(engine::optim::AdamWConfig::default());
        LayerStep {
            store,
            layer,
            x,
            r,
            mask,
            opt,
            step: 0,
        }
    }

    /// Runs one step and returns the loss.
    pub fn run(&mut self) -> f32 {
        self.step += 1;
        self.store.zero_grad();
        let out = self
            .layer
            .forward(&self.x, Some(&self.mask), Some(self.step))
            .expect("forward");
        let n = out.value().numel() as f32;
        let loss = out
            .mul(&self.r)
            .expect("mul")
            .sum_all()
            .expect("sum")
            .affine(1.0 / n, 0.0)
            .expect("scale");
        let l = loss.item();
        loss.backward().expect("backward");
        engine::optim::clip_grad_norm(&self.store, 1.0).expect("clip");
        self.opt.step(&self.store, 1e-4).expect("adamw");
        l
    }
}

/// Checks `C = A B` on 64 sampled entries against an f64 dot product: A (m, k) row-major,
/// B (k, n) at strides (brs, bcs) in `b`, C (m, n) row-major. Tolerance scales with sqrt(k).
pub fn check_gemm_sampled(
    c: &[f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (brs, bcs): (usize, usize),
    tol: f64,
) {
    for t in 0..64 {
        let (i, j) = ((t * 7919) % m, (t * 104_729) % n);
        let want: f64 = (0..k)
            .map(|q| a[i * k + q] as f64 * b[q * brs + j * bcs] as f64)
            .sum();
        let got = c[i * n + j] as f64;
        assert!(
            (got - want).abs() < tol * (k as f64).sqrt() * (1.0 + want.abs()),
            "GEMM wrong at ({i},{j}) of {m}x{k}x{n}: {got} vs {want}"
        );
    }
}

/// A synthetic pretraining batch for `c`: random ids, types 0 then 1, 15% of the valid positions
/// (not the first) masked, random NSP labels; `padded`: 10% of the sequences shorter (8..S).
pub fn synthetic(
    c: &bert::BertConfig,
    b: usize,
    s: usize,
    padded: bool,
    seed: u64,
) -> bert::step::StepBatch {
    let mut r = engine::rng::SplitMix64::new(seed);
    let mut lens = Vec::with_capacity(b);
    for _ in 0..b {
        let short = padded && r.next_u64().is_multiple_of(10);
        lens.push(if short {
            8 + (r.next_u64() as usize % (s - 8))
        } else {
            s
        });
    }
    let n = b * s;
    let (mut ids, mut types, mut labels) = (vec![0i64; n], vec![0i64; n], vec![-100i64; n]);
    for (bi, &len) in lens.iter().enumerate() {
        for j in 0..len {
            let i = bi * s + j;
            ids[i] = 5 + (r.next_u64() % (c.vocab_size as u64 - 5)) as i64;
            types[i] = (j >= len / 2) as i64;
            if j > 0 && r.next_u64() % 100 < 15 {
                labels[i] = ids[i];
                ids[i] = 4;
            }
        }
    }
    bert::step::StepBatch {
        batch: b,
        seq: s,
        input_ids: ids,
        token_type_ids: types,
        lens,
        mlm_labels: labels,
        nsp_labels: (0..b).map(|_| (r.next_u64() % 2) as i64).collect(),
        packed: false,
    }
}

/// FLOPs of one training step on `x` as computed (padding tokens included when padded): 6 per
/// weight per token for the Linear layers, 12 L rows^2 H per sequence for attention, the MLM
/// head at the masked rows, NSP.
pub fn model_flops(c: &bert::BertConfig, x: &bert::step::StepBatch) -> f64 {
    let (l, h, i, v) = (
        c.num_hidden_layers as f64,
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.vocab_size as f64,
    );
    // Tokens computed on, and each sequence's rows (all S when padded, its length when packed).
    let t = x.mlm_labels.len() as f64;
    let masked = x.mlm_labels.iter().filter(|&&m| m != -100).count() as f64;
    let linear = 6.0 * t * l * (4.0 * h * h + 2.0 * h * i);
    let rows2: f64 = x
        .lens
        .iter()
        .map(|&n| {
            if x.packed {
                (n * n) as f64
            } else {
                (x.seq * x.seq) as f64
            }
        })
        .sum();
    let attention = 12.0 * l * rows2 * h;
    let heads = 6.0 * masked * (h * h + v * h) + 6.0 * x.batch as f64 * (h * h + 2.0 * h);
    linear + attention + heads
}
