//! The GPU check (feature `cuda`; one named command, `scripts/gpu-check`, run on a machine with
//! an NVIDIA GPU): every CUDA kernel against the CPU engine on fresh random inputs of several
//! sizes, outputs poisoned (NaN) before each launch so an unwritten element fails, every launch
//! synchronised and checked. Relative error ||gpu - cpu|| / ||cpu|| under 1e-5 in f32, 1e-2 in
//! bf16 (TF32 GEMMs: 2e-3, the matrix units' 10-bit operands).
#![cfg(feature = "cuda")]

use engine::cuda::cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};
use engine::cuda::{self as k, blas, gelu::GeluKind, Gpu};
use engine::rng::SplitMix64;
use engine::simd::Isa;
use half::bf16;

fn gpu() -> Gpu {
    let g = Gpu::new(0).unwrap_or_else(|e| panic!("the GPU check needs a CUDA GPU: {e}"));
    g.set_checked(true);
    g
}

/// A fresh seed per run (printed, so a failure can be replayed with GPU_CHECK_SEED).
fn rng(tag: u64) -> SplitMix64 {
    let seed = std::env::var("GPU_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (tag {tag})");
    SplitMix64::new(seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn randn(r: &mut SplitMix64, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.next_normal() * scale).collect()
}

fn up<T: DeviceRepr>(g: &Gpu, v: &[T]) -> CudaSlice<T> {
    g.stream().clone_htod(v).unwrap()
}

fn down<T: DeviceRepr + Default + Clone>(g: &Gpu, b: &CudaSlice<T>) -> Vec<T> {
    g.stream().clone_dtoh(b).unwrap()
}

fn poison(g: &Gpu, n: usize) -> CudaSlice<f32> {
    up(g, &vec![f32::NAN; n])
}

fn poison_bf16(g: &Gpu, n: usize) -> CudaSlice<bf16> {
    up(g, &vec![bf16::NAN; n])
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn from_bf16(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Rounds through bf16 (the inputs a bf16 kernel actually sees).
fn round_bf16(v: &[f32]) -> Vec<f32> {
    from_bf16(&to_bf16(v))
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().position(|v| v.is_nan()) {
        if !want[i].is_nan() {
            panic!(
                "{what}: element {i} is NaN (unwritten?), expected {}",
                want[i]
            );
        }
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        if b.is_nan() {
            continue;
        }
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    let rel = if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    };
    println!("{what:<48} rel {rel:.2e}");
    assert!(rel <= tol, "{what}: relative error {rel:.3e} > {tol:.0e}");
}

const F32_TOL: f64 = 1e-5;
const BF16_TOL: f64 = 1e-2;

const FLAT_SIZES: [usize; 5] = [1, 13, 4099, 65_536, 3_000_017];

#[test]
fn elementwise_and_casts() {
    let g = gpu();
    let mut r = rng(1);
    for &n in &FLAT_SIZES {
        let (a, b) = (randn(&mut r, n, 1.0), randn(&mut r, n, 1.0));
        let (da, db) = (up(&g, &a), up(&g, &b));
        let mut y = poison(&g, n);
        k::elementwise::add(&g, &da, &db, &mut y).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        close(&format!("add_f32 n={n}"), &down(&g, &y), &want, F32_TOL);
        let mut y = poison(&g, n);
        k::elementwise::mul(&g, &da, &db, &mut y).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        close(&format!("mul_f32 n={n}"), &down(&g, &y), &want, F32_TOL);
        let mut y = up(&g, &a);
        k::elementwise::axpby_inplace(&g, &mut y, &db, 0.5, -2.0).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.5 * x - 2.0 * y).collect();
        close(
            &format!("axpby_inplace_f32 n={n}"),
            &down(&g, &y),
            &want,
            F32_TOL,
        );
        // bf16: the engine's own conversion is the reference for the cast, bit for bit.
        let mut hb = poison_bf16(&g, n);
        k::elementwise::cast_f32_bf16(&g, &da, &mut hb).unwrap();
        let got = down(&g, &hb);
        let want = to_bf16(&a);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "cast_f32_bf16 n={n}: not RNE"
        );
        let mut back = poison(&g, n);
        k::elementwise::cast_bf16_f32(&g, &hb, &mut back).unwrap();
        assert_eq!(down(&g, &back), round_bf16(&a), "cast_bf16_f32 n={n}");
        let (ab, bb) = (up(&g, &to_bf16(&a)), up(&g, &to_bf16(&b)));
        let mut y = poison_bf16(&g, n);
        k::elementwise::add(&g, &ab, &bb, &mut y).unwrap();
        let want: Vec<f32> = round_bf16(&a)
            .iter()
            .zip(round_bf16(&b))
            .map(|(x, y)| x + y)
            .collect();
        close(
            &format!("add_bf16 n={n}"),
            &from_bf16(&down(&g, &y)),
            &want,
            BF16_TOL,
        );
    }
    for (rows, cols) in [(1, 4), (7, 768), (513, 3072)] {
        let (x, bias) = (randn(&mut r, rows * cols, 1.0), randn(&mut r, cols, 1.0));
        let mut y = poison(&g, rows * cols);
        k::elementwise::bias_add(&g, &up(&g, &x), &up(&g, &bias), &mut y, cols).unwrap();
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias[i % cols])
            .collect();
        close(
            &format!("bias_add_f32 {rows}x{cols}"),
            &down(&g, &y),
            &want,
            F32_TOL,
        );
    }
    // Contract checks: a misaligned view and a length mismatch are errors, not launches.
    let a = up(&g, &vec![1.0f32; 64]);
    let mut y = poison(&g, 63);
    let e = k::elementwise::add(&g, &a.slice(1..), &a.slice(1..), &mut y).unwrap_err();
    assert!(e.to_string().contains("aligned"), "{e}");
    let e = k::elementwise::add(&g, &a, &a.slice(1..), &mut y).unwrap_err();
    assert!(e.to_string().contains("elements"), "{e}");
}

#[test]
fn gelu_and_bias_gelu() {
    let g = gpu();
    let mut r = rng(2);
    let isa = Isa::best();
    for (kind, ek) in [
        (GeluKind::Erf, engine::gelu::Gelu::Erf),
        (GeluKind::Tanh, engine::gelu::Gelu::Tanh),
    ] {
        for (rows, cols) in [(1, 8), (33, 768), (2048, 3072)] {
            let n = rows * cols;
            let (x, bias, dy) = (
                randn(&mut r, n, 2.0),
                randn(&mut r, cols, 1.0),
                randn(&mut r, n, 1.0),
            );
            let pre: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[i % cols])
                .collect();
            let mut want_y = pre.clone();
            engine::gelu::gelu_inplace(isa, &mut want_y, ek);
            let mut want_dx = dy.clone();
            engine::gelu::gelu_backward_inplace(isa, &pre, &mut want_dx, ek);
            let (dx_, db, ddy) = (up(&g, &x), up(&g, &bias), up(&g, &dy));
            let mut y = poison(&g, n);
            k::gelu::bias_gelu_fwd(&g, kind, &dx_, &db.as_view(), &mut y, cols).unwrap();
            close(
                &format!("bias_gelu_fwd {kind:?} {rows}x{cols}"),
                &down(&g, &y),
                &want_y,
                F32_TOL,
            );
            let mut dx = poison(&g, n);
            k::gelu::bias_gelu_bwd(&g, kind, &dx_, &db.as_view(), &ddy.as_view(), &mut dx, cols)
                .unwrap();
            close(
                &format!("bias_gelu_bwd {kind:?} {rows}x{cols}"),
                &down(&g, &dx),
                &want_dx,
                F32_TOL,
            );
            // Plain GELU on pre (odd length: the scalar tail).
            let m = n - (n > 1) as usize;
            let dpre = up(&g, &pre[..m]);
            let mut y = poison(&g, m);
            k::gelu::gelu_fwd(&g, kind, &dpre, &mut y).unwrap();
            close(
                &format!("gelu_fwd {kind:?} n={m}"),
                &down(&g, &y),
                &want_y[..m],
                F32_TOL,
            );
            let mut dx = poison(&g, m);
            k::gelu::gelu_bwd(&g, kind, &dpre, &ddy.slice(..m), &mut dx).unwrap();
            close(
                &format!("gelu_bwd {kind:?} n={m}"),
                &down(&g, &dx),
                &want_dx[..m],
                F32_TOL,
            );
            // bf16 storage, f32 math.
            let (xb, bb, dyb) = (round_bf16(&x), round_bf16(&bias), round_bf16(&dy));
            let preb: Vec<f32> = xb
                .iter()
                .enumerate()
                .map(|(i, v)| v + bb[i % cols])
                .collect();
            let mut want_yb = preb.clone();
            engine::gelu::gelu_inplace(isa, &mut want_yb, ek);
            let mut y = poison_bf16(&g, n);
            let bias_b = up(&g, &to_bf16(&bias));
            k::gelu::bias_gelu_fwd(
                &g,
                kind,
                &up(&g, &to_bf16(&x)),
                &bias_b.as_view(),
                &mut y,
                cols,
            )
            .unwrap();
            close(
                &format!("bias_gelu_fwd_bf16 {kind:?} {rows}x{cols}"),
                &from_bf16(&down(&g, &y)),
                &want_yb,
                BF16_TOL,
            );
            let mut want_dxb = dyb.clone();
            engine::gelu::gelu_backward_inplace(isa, &preb, &mut want_dxb, ek);
            let dyb_d = up(&g, &to_bf16(&dy));
            let mut dx = poison_bf16(&g, n);
            k::gelu::bias_gelu_bwd(
                &g,
                kind,
                &up(&g, &to_bf16(&x)),
                &bias_b.as_view(),
                &dyb_d.as_view(),
                &mut dx,
                cols,
            )
            .unwrap();
            close(
                &format!("bias_gelu_bwd_bf16 {kind:?} {rows}x{cols}"),
                &from_bf16(&down(&g, &dx)),
                &want_dxb,
                BF16_TOL,
            );
        }
    }
}

#[test]
fn layernorm_with_dropout_and_residual() {
    let g = gpu();
    let mut r = rng(3);
    let isa = Isa::best();
    for (rows, cols, p) in [
        (1, 32, 0.0),
        (37, 768, 0.1),
        (4096, 1024, 0.1),
        (300, 100, 0.0),
    ] {
        let n = rows * cols;
        let (x, res, dy) = (
            randn(&mut r, n, 1.0),
            randn(&mut r, n, 1.0),
            randn(&mut r, n, 1.0),
        );
        let gamma: Vec<f32> = (0..cols).map(|_| 1.0 + 0.1 * r.next_normal()).collect();
        let beta = randn(&mut r, cols, 0.1);
        let seed = r.next_u64();
        let mut h = x.clone();
        engine::dropout::dropout_inplace(&mut h, p, seed);
        for (hv, rv) in h.iter_mut().zip(&res) {
            *hv += rv;
        }
        let mut want_y = vec![0.0; n];
        let (mean, rstd) =
            engine::layernorm::layernorm_rows(isa, &h, cols, &gamma, &beta, 1e-12, &mut want_y);
        let mut want_dx = vec![0.0; n];
        let (want_dg, want_db) = engine::layernorm::layernorm_backward_rows(
            isa,
            &h,
            &dy,
            cols,
            &gamma,
            &mean,
            &rstd,
            &mut want_dx,
        );
        let (dgm, dbt) = (up(&g, &gamma), up(&g, &beta));
        let dres = up(&g, &res);
        let (mut dh, mut dyv, mut dm, mut ds) = (
            poison(&g, n),
            poison(&g, n),
            poison(&g, rows),
            poison(&g, rows),
        );
        let dropout = (p > 0.0).then_some((p, seed));
        k::layernorm::layernorm_fwd(
            &g,
            &up(&g, &x),
            Some(&dres.as_view()),
            &dgm,
            &dbt,
            Some(&mut dh.as_view_mut()),
            &mut dyv,
            &mut dm,
            &mut ds,
            cols,
            1e-12,
            dropout,
        )
        .unwrap();
        let tag = format!("{rows}x{cols} p={p}");
        close(
            &format!("layernorm_fwd h {tag}"),
            &down(&g, &dh),
            &h,
            F32_TOL,
        );
        close(
            &format!("layernorm_fwd y {tag}"),
            &down(&g, &dyv),
            &want_y,
            F32_TOL,
        );
        close(
            &format!("layernorm_fwd mean {tag}"),
            &down(&g, &dm),
            &mean,
            F32_TOL,
        );
        close(
            &format!("layernorm_fwd rstd {tag}"),
            &down(&g, &ds),
            &rstd,
            F32_TOL,
        );
        let ddy = up(&g, &dy);
        let mut dx = poison(&g, n);
        k::layernorm::layernorm_bwd(&g, &dh, &ddy, &dgm, &dm, &ds, &mut dx, cols).unwrap();
        close(
            &format!("layernorm_bwd dx {tag}"),
            &down(&g, &dx),
            &want_dx,
            F32_TOL,
        );
        let (mut dg, mut db) = (poison(&g, cols), poison(&g, cols));
        k::layernorm::layernorm_params_bwd(&g, &dh, &ddy, &dm, &ds, &mut dg, &mut db, cols, 0.0)
            .unwrap();
        close(
            &format!("layernorm_params_bwd dgamma {tag}"),
            &down(&g, &dg),
            &want_dg,
            F32_TOL,
        );
        close(
            &format!("layernorm_params_bwd dbeta {tag}"),
            &down(&g, &db),
            &want_db,
            F32_TOL,
        );
        // Accumulating (beta 1) doubles.
        k::layernorm::layernorm_params_bwd(&g, &dh, &ddy, &dm, &ds, &mut dg, &mut db, cols, 1.0)
            .unwrap();
        let twice: Vec<f32> = want_db.iter().map(|v| 2.0 * v).collect();
        close(
            &format!("layernorm_params_bwd accumulate {tag}"),
            &down(&g, &db),
            &twice,
            F32_TOL,
        );
        // bf16 activations.
        let (xb, rb) = (round_bf16(&x), round_bf16(&res));
        let mut hb = xb.clone();
        engine::dropout::dropout_inplace(&mut hb, p, seed);
        for (hv, rv) in hb.iter_mut().zip(&rb) {
            *hv += rv;
        }
        let mut want_yb = vec![0.0; n];
        engine::layernorm::layernorm_rows(isa, &hb, cols, &gamma, &beta, 1e-12, &mut want_yb);
        let resb = up(&g, &to_bf16(&res));
        let mut yb = poison_bf16(&g, n);
        k::layernorm::layernorm_fwd(
            &g,
            &up(&g, &to_bf16(&x)),
            Some(&resb.as_view()),
            &dgm,
            &dbt,
            None,
            &mut yb,
            &mut dm,
            &mut ds,
            cols,
            1e-12,
            dropout,
        )
        .unwrap();
        close(
            &format!("layernorm_fwd_bf16 y {tag}"),
            &from_bf16(&down(&g, &yb)),
            &want_yb,
            BF16_TOL,
        );
    }
}

#[test]
fn softmax_with_key_mask() {
    let g = gpu();
    let mut r = rng(4);
    let isa = Isa::best();
    // (batch, heads, queries, keys)
    for (b, h, q, kk) in [(1, 1, 1, 7), (2, 12, 128, 128), (3, 4, 33, 512)] {
        let rows = b * h * q;
        let n = rows * kk;
        let (x, dy) = (randn(&mut r, n, 3.0), randn(&mut r, n, 1.0));
        let scale = 0.125;
        // Key padding: sequence i keeps its first len_i keys.
        let mut mask = vec![0.0f32; b * kk];
        for s in 0..b {
            let len = 1 + (r.next_u64() as usize) % kk;
            for j in len..kk {
                mask[s * kk + j] = -10000.0;
            }
        }
        let xs: Vec<f32> = x.iter().map(|v| v * scale).collect();
        let offsets: Vec<usize> = (0..rows).map(|row| (row / (h * q)) * kk).collect();
        let mut want = vec![0.0; n];
        engine::softmax::softmax_rows(isa, &xs, kk, Some((&mask, &offsets)), &mut want);
        let dmask = up(&g, &mask);
        let mut y = poison(&g, n);
        k::softmax::softmax_fwd(
            &g,
            &up(&g, &x),
            Some((&dmask.as_view(), h * q)),
            &mut y,
            kk,
            scale,
        )
        .unwrap();
        let tag = format!("{b}x{h}x{q}x{kk}");
        close(&format!("softmax_fwd {tag}"), &down(&g, &y), &want, F32_TOL);
        let mut want_dx = vec![0.0; n];
        engine::softmax::softmax_backward_rows(isa, &want, &dy, kk, &mut want_dx);
        let mut dx = poison(&g, n);
        k::softmax::softmax_bwd(&g, &up(&g, &want), &up(&g, &dy), &mut dx, kk).unwrap();
        close(
            &format!("softmax_bwd {tag}"),
            &down(&g, &dx),
            &want_dx,
            F32_TOL,
        );
        let mut yb = poison_bf16(&g, n);
        let xb = round_bf16(&x);
        let xbs: Vec<f32> = xb.iter().map(|v| v * scale).collect();
        let mut wantb = vec![0.0; n];
        engine::softmax::softmax_rows(isa, &xbs, kk, Some((&mask, &offsets)), &mut wantb);
        k::softmax::softmax_fwd(
            &g,
            &up(&g, &to_bf16(&x)),
            Some((&dmask.as_view(), h * q)),
            &mut yb,
            kk,
            scale,
        )
        .unwrap();
        close(
            &format!("softmax_fwd_bf16 {tag}"),
            &from_bf16(&down(&g, &yb)),
            &wantb,
            BF16_TOL,
        );
    }
}

#[test]
fn cross_entropy_over_a_vocabulary() {
    let g = gpu();
    let mut r = rng(5);
    let isa = Isa::best();
    for (rows, classes) in [(1, 3), (77, 30522), (2560, 8192)] {
        let n = rows * classes;
        let logits = randn(&mut r, n, 2.0);
        let targets: Vec<i64> = (0..rows)
            .map(|i| {
                if i % 5 == 3 {
                    -100
                } else {
                    (r.next_u64() % classes as u64) as i64
                }
            })
            .collect();
        let (mean, lse, counted) =
            engine::cross_entropy::cross_entropy_rows(isa, &logits, classes, &targets, -100)
                .unwrap();
        let scale = 1.0 / counted.max(1) as f32;
        let mut want_d = vec![0.0; n];
        engine::cross_entropy::cross_entropy_backward_rows(
            isa,
            &logits,
            classes,
            &lse,
            &targets,
            -100,
            scale,
            &mut want_d,
        );
        let t32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
        let (dl, dt) = (up(&g, &logits), up(&g, &t32));
        let (mut loss, mut dlse) = (poison(&g, rows), poison(&g, rows));
        k::cross_entropy::cross_entropy_fwd(&g, &dl, &dt, &mut loss, &mut dlse, classes, -100)
            .unwrap();
        let tag = format!("{rows}x{classes}");
        // lse is only defined by the CPU for counted rows: compare those.
        let got_lse = down(&g, &dlse);
        let (gl, wl): (Vec<f32>, Vec<f32>) = (0..rows)
            .filter(|&i| targets[i] != -100)
            .map(|i| (got_lse[i], lse[i]))
            .unzip();
        close(&format!("cross_entropy_fwd lse {tag}"), &gl, &wl, F32_TOL);
        let got_mean = down(&g, &loss).iter().map(|&v| v as f64).sum::<f64>() as f32 * scale;
        close(
            &format!("cross_entropy_fwd mean loss {tag}"),
            &[got_mean],
            &[mean],
            F32_TOL,
        );
        let mut d = poison(&g, n);
        k::cross_entropy::cross_entropy_bwd(&g, &dl, &dlse, &dt, &mut d, classes, -100, scale)
            .unwrap();
        close(
            &format!("cross_entropy_bwd {tag}"),
            &down(&g, &d),
            &want_d,
            F32_TOL,
        );
        let mut inplace = up(&g, &logits);
        let (mut loss2, mut lse2) = (poison(&g, rows), poison(&g, rows));
        k::cross_entropy::cross_entropy_fused_inplace(
            &g,
            &mut inplace,
            &dt,
            &mut loss2,
            &mut lse2,
            classes,
            -100,
            scale,
        )
        .unwrap();
        close(
            &format!("cross_entropy_fused dlogits {tag}"),
            &down(&g, &inplace),
            &want_d,
            F32_TOL,
        );
        close(
            &format!("cross_entropy_fused loss {tag}"),
            &down(&g, &loss2),
            &down(&g, &loss),
            F32_TOL,
        );
    }
    // A target out of range is a NaN loss, not a silent number.
    let (dl, dt) = (up(&g, &[0.0f32, 1.0, 2.0]), up(&g, &[7i32]));
    let (mut loss, mut lse) = (poison(&g, 1), poison(&g, 1));
    k::cross_entropy::cross_entropy_fwd(&g, &dl, &dt, &mut loss, &mut lse, 3, -100).unwrap();
    assert!(down(&g, &loss)[0].is_nan());
}

#[test]
fn bert_embeddings_and_their_gradients() {
    let g = gpu();
    let mut r = rng(6);
    let (vocab, max_pos, types, dim) = (1000, 64, 2, 96);
    let (word, pos, typ) = (
        randn(&mut r, vocab * dim, 1.0),
        randn(&mut r, max_pos * dim, 1.0),
        randn(&mut r, types * dim, 1.0),
    );
    for (batch, seq) in [(1, 1), (4, 64), (32, 16)] {
        let tokens = batch * seq;
        let ids: Vec<i32> = (0..tokens)
            .map(|_| (r.next_u64() % vocab as u64) as i32)
            .collect();
        let tids: Vec<i32> = (0..tokens).map(|t| ((t % seq) >= seq / 2) as i32).collect();
        let mut want = vec![0.0f32; tokens * dim];
        for t in 0..tokens {
            for c in 0..dim {
                want[t * dim + c] = word[ids[t] as usize * dim + c]
                    + pos[(t % seq) * dim + c]
                    + typ[tids[t] as usize * dim + c];
            }
        }
        let (dids, dtids) = (up(&g, &ids), up(&g, &tids));
        let (dw, dp, dt) = (up(&g, &word), up(&g, &pos), up(&g, &typ));
        let mut out = poison(&g, tokens * dim);
        let mut bad = up(&g, &[i32::MAX]);
        k::embedding::bert_embed_fwd(
            &g,
            &dids,
            Some(&dtids.as_view()),
            &dw,
            &dp,
            &dt,
            &mut out,
            seq,
            dim,
            Some(&mut bad.as_view_mut()),
        )
        .unwrap();
        let tag = format!("{batch}x{seq}");
        close(
            &format!("bert_embed_fwd {tag}"),
            &down(&g, &out),
            &want,
            F32_TOL,
        );
        assert_eq!(down(&g, &bad)[0], i32::MAX, "no bad id reported");
        // Gradients: word table (scatter-add) and positions.
        let dy = randn(&mut r, tokens * dim, 1.0);
        let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let want_dw = engine::embedding::embedding_backward(&ids64, &dy, dim, vocab);
        let ddy = up(&g, &dy);
        let mut dwt = up(&g, &vec![0.0f32; vocab * dim]);
        k::embedding::embedding_bwd(&g, &dids, &ddy, &mut dwt, dim).unwrap();
        close(
            &format!("embedding_bwd {tag}"),
            &down(&g, &dwt),
            &want_dw,
            F32_TOL,
        );
        let pos_ids: Vec<i64> = (0..tokens).map(|t| (t % seq) as i64).collect();
        let want_dp = engine::embedding::embedding_backward(&pos_ids, &dy, dim, max_pos);
        let mut dpt = up(&g, &vec![0.0f32; max_pos * dim]);
        k::embedding::position_bwd(&g, &ddy, &mut dpt, seq, dim).unwrap();
        close(
            &format!("position_bwd {tag}"),
            &down(&g, &dpt),
            &want_dp,
            F32_TOL,
        );
    }
    // A bad id: NaN row, its position reported.
    let ids = up(&g, &[3i32, vocab as i32, 5, -1]);
    let (dw, dp, dt) = (up(&g, &word), up(&g, &pos), up(&g, &typ));
    let mut out = poison(&g, 4 * dim);
    let mut bad = up(&g, &[i32::MAX]);
    k::embedding::bert_embed_fwd(
        &g,
        &ids,
        None,
        &dw,
        &dp,
        &dt,
        &mut out,
        4,
        dim,
        Some(&mut bad.as_view_mut()),
    )
    .unwrap();
    assert_eq!(down(&g, &bad)[0], 1);
    let o = down(&g, &out);
    assert!(o[dim..2 * dim].iter().all(|v| v.is_nan()) && o[..dim].iter().all(|v| v.is_finite()));
}

#[test]
fn dropout_mask_equals_the_cpu_engines() {
    let g = gpu();
    let mut r = rng(7);
    for &n in &FLAT_SIZES {
        for p in [0.1f32, 0.5] {
            let x = randn(&mut r, n, 1.0);
            let seed = r.next_u64();
            let mut want = x.clone();
            engine::dropout::dropout_inplace(&mut want, p, seed);
            let mut y = poison(&g, n);
            k::dropout::dropout(&g, &up(&g, &x), &mut y, p, seed).unwrap();
            let got = down(&g, &y);
            let diff = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            println!("dropout n={n} p={p}: {diff} elements differ");
            assert_eq!(
                diff, 0,
                "dropout n={n} p={p}: {diff} of {n} elements differ from the CPU mask"
            );
        }
    }
}

#[test]
fn reductions() {
    let g = gpu();
    let mut r = rng(8);
    for (rows, cols) in [(1, 1), (3, 768), (16384, 768), (1000, 30522)] {
        let x = randn(&mut r, rows * cols, 1.0);
        let mut want = vec![0.0f64; cols];
        for (i, v) in x.iter().enumerate() {
            want[i % cols] += *v as f64;
        }
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let mut out = poison(&g, cols);
        k::reduce::column_sum(&g, &up(&g, &x), &mut out, cols, 0.0).unwrap();
        close(
            &format!("column_sum {rows}x{cols}"),
            &down(&g, &out),
            &want,
            F32_TOL,
        );
        let total: f64 = x.iter().map(|&v| v as f64).sum();
        let sq: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        let mut s = poison(&g, 1);
        k::reduce::sum(&g, &up(&g, &x), &mut s, 1.0, true).unwrap();
        close(
            &format!("sum of squares n={}", rows * cols),
            &down(&g, &s),
            &[sq as f32],
            F32_TOL,
        );
        k::reduce::sum(&g, &up(&g, &x), &mut s, 0.5, false).unwrap();
        let got = down(&g, &s)[0] as f64;
        // A sum of n unit normals is ~sqrt(n): compare against that scale, not the (tiny) sum.
        let err = (got - 0.5 * total).abs() / ((rows * cols) as f64).sqrt();
        println!("sum n={} abs err / sqrt(n) {err:.2e}", rows * cols);
        assert!(err < 1e-5, "sum: {got} vs {}", 0.5 * total);
    }
}

/// Row arg-max against the CPU device's, f32 and bf16: random rows of every width up to the
/// vocabulary's, plus rows with ties (the first wins), NaNs (never win), all -inf (gives 0).
#[test]
fn argmax_rows_matches_the_cpu() {
    use engine::device::Device;
    let g = gpu();
    let mut r = rng(12);
    for (rows, cols) in [(1, 1), (5, 2), (7, 255), (33, 1000), (64, 30522)] {
        let mut x = randn(&mut r, rows * cols, 1.0);
        if cols >= 4 {
            x[cols + 1] = 9.0; // row 1: a tie between columns 1 and 3
            x[cols + 3] = 9.0;
            x[2 * cols] = f32::NAN; // row 2: NaN first, then the true maximum
            x[2 * cols + 2] = 50.0;
            for v in &mut x[3 * cols..4 * cols] {
                *v = f32::NEG_INFINITY; // row 3: nothing above -inf
            }
        }
        let want = engine::device::Cpu.argmax_rows(&x, rows, cols).unwrap();
        let mut out = up(&g, &vec![-7i32; rows]);
        k::reduce::argmax_rows(&g, &up(&g, &x), &mut out, cols).unwrap();
        let got: Vec<i64> = down(&g, &out).into_iter().map(i64::from).collect();
        assert_eq!(got, want, "argmax_rows f32 {rows}x{cols}");
        // bf16 rounding can create ties the f32 data did not have: compare with the CPU on
        // the rounded values.
        let xb = round_bf16(&x);
        let want = engine::device::Cpu.argmax_rows(&xb, rows, cols).unwrap();
        k::reduce::argmax_rows(&g, &up(&g, &to_bf16(&x)), &mut out, cols).unwrap();
        let got: Vec<i64> = down(&g, &out).into_iter().map(i64::from).collect();
        assert_eq!(got, want, "argmax_rows bf16 {rows}x{cols}");
        println!("argmax_rows {rows}x{cols}: f32 and bf16 equal the CPU's");
    }
}

#[test]
fn multi_tensor_adamw_with_clipping_matches_the_cpu_optimizer() {
    let g = gpu();
    let mut r = rng(9);
    let shapes: [(&str, Vec<usize>); 3] = [
        ("w", vec![300, 70]),
        ("x.bias", vec![70]),
        ("emb", vec![5000, 16]),
    ];
    let mut store = engine::ParamStore::new();
    let mut tensors = Vec::new();
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let p = randn(&mut r, n, 0.5);
        store
            .insert(name, engine::Tensor::from_vec(p.clone(), shape).unwrap())
            .unwrap();
        tensors.push(k::adamw::AdamTensor {
            param: up(&g, &p),
            grad: up(&g, &vec![0.0f32; n]),
            copy: (*name == "emb").then(|| up(&g, &vec![bf16::ZERO; n])),
            decay: if engine::optim::decays(name) {
                0.01
            } else {
                0.0
            },
        });
    }
    let cfg = engine::optim::AdamWConfig {
        weight_decay: 0.01,
        bias_correction: true,
        ..Default::default()
    };
    let mut cpu = engine::optim::AdamW::new(cfg.clone());
    let mut opt = k::adamw::MultiAdamW::new(&g, tensors).unwrap();
    let lr = 1e-3;
    for step in 1..=3u64 {
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let gr = randn(&mut r, n, 3.0);
            store
                .get(name)
                .unwrap()
                .set_grad(Some(engine::Tensor::from_vec(gr.clone(), shape).unwrap()));
            g.stream()
                .memcpy_htod(&gr, &mut opt.tensors[i].grad)
                .unwrap();
        }
        let want_norm = engine::optim::clip_grad_norm(&store, 1.0).unwrap();
        cpu.step(&store, lr).unwrap();
        let ns = down(&g, opt.clip_grad_norm(&g, 1.0).unwrap());
        close(
            &format!("grad norm step {step}"),
            &ns[..1],
            &[want_norm],
            F32_TOL,
        );
        let t = step as i32;
        let h = k::adamw::AdamStep {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            bc1: 1.0 - cfg.beta1.powi(t),
            bc2: 1.0 - cfg.beta2.powi(t),
        };
        opt.step(&g, h, true).unwrap();
        for (i, (name, _)) in shapes.iter().enumerate() {
            let want = store.get(name).unwrap().value().to_vec();
            close(
                &format!("adamw {name} step {step}"),
                &down(&g, &opt.tensors[i].param),
                &want,
                F32_TOL,
            );
            if let Some(c) = &opt.tensors[i].copy {
                assert_eq!(
                    from_bf16(&down(&g, c)),
                    round_bf16(&down(&g, &opt.tensors[i].param)),
                    "bf16 copy of {name}"
                );
            }
        }
    }
}

#[test]
fn cublas_gemms_against_the_cpu_engine() {
    let g = gpu();
    let b = blas::Blas::new(&g).unwrap();
    let mut r = rng(10);
    for (m, n, kk, ta, tb, batch) in [
        (1, 1, 1, false, false, 1),
        (128, 768, 768, false, true, 1),
        (300, 257, 129, true, false, 1),
        (128, 128, 64, false, true, 24),
    ] {
        let a = randn(&mut r, batch * m * kk, 1.0);
        let bm = randn(&mut r, batch * kk * n, 1.0);
        let at = |x: &[f32], rows: usize, cols: usize, t: bool| -> engine::Tensor {
            let s = if t {
                [batch, cols, rows]
            } else {
                [batch, rows, cols]
            };
            let tsr = engine::Tensor::from_vec(x.to_vec(), &s).unwrap();
            if t {
                tsr.transpose(1, 2).unwrap()
            } else {
                tsr
            }
        };
        let want = at(&a, m, kk, ta)
            .matmul(&at(&bm, kk, n, tb))
            .unwrap()
            .contiguous()
            .to_vec();
        let mut s = blas::GemmShape::new(m, n, kk).batched(batch);
        s.trans_a = ta;
        s.trans_b = tb;
        let tag = format!("{batch}x{m}x{n}x{kk} ta={ta} tb={tb}");
        let (da, db) = (up(&g, &a), up(&g, &bm));
        for (math, tol) in [(blas::Math::F32, F32_TOL), (blas::Math::Tf32, 2e-3)] {
            let mut c = poison(&g, batch * m * n);
            b.gemm::<f32, f32>(&g, s, math, 1.0, &da, &db, 0.0, &mut c)
                .unwrap();
            close(&format!("gemm {math:?} {tag}"), &down(&g, &c), &want, tol);
        }
        let wantb = at(&round_bf16(&a), m, kk, ta)
            .matmul(&at(&round_bf16(&bm), kk, n, tb))
            .unwrap()
            .contiguous()
            .to_vec();
        let mut c = poison(&g, batch * m * n);
        b.gemm::<bf16, f32>(
            &g,
            s,
            blas::Math::F32,
            1.0,
            &up(&g, &to_bf16(&a)),
            &up(&g, &to_bf16(&bm)),
            0.0,
            &mut c,
        )
        .unwrap();
        close(
            &format!("gemm bf16->f32 {tag}"),
            &down(&g, &c),
            &wantb,
            1e-5,
        );
        let mut cb = poison_bf16(&g, batch * m * n);
        b.gemm::<bf16, bf16>(
            &g,
            s,
            blas::Math::F32,
            1.0,
            &up(&g, &to_bf16(&a)),
            &up(&g, &to_bf16(&bm)),
            0.0,
            &mut cb,
        )
        .unwrap();
        close(
            &format!("gemm bf16->bf16 {tag}"),
            &from_bf16(&down(&g, &cb)),
            &wantb,
            BF16_TOL,
        );
    }
    // A Linear layer with cuBLASLt's bias + GELU (tanh) epilogue.
    let (rows, inp, out) = (256, 384, 1536);
    let (x, w, bias) = (
        randn(&mut r, rows * inp, 1.0),
        randn(&mut r, out * inp, 0.05),
        randn(&mut r, out, 0.5),
    );
    let xt = engine::Tensor::from_vec(x.clone(), &[rows, inp]).unwrap();
    let wt = engine::Tensor::from_vec(w.clone(), &[out, inp]).unwrap();
    let mut want = xt.matmul(&wt.t().unwrap()).unwrap().contiguous().to_vec();
    for (i, v) in want.iter_mut().enumerate() {
        *v += bias[i % out];
    }
    engine::gelu::gelu_inplace(Isa::best(), &mut want, engine::gelu::Gelu::Tanh);
    let (dx, dw, db) = (up(&g, &x), up(&g, &w), up(&g, &bias));
    let mut y = poison(&g, rows * out);
    b.linear(
        &g,
        &dx.as_view(),
        &dw.as_view(),
        Some(&db.as_view()),
        true,
        &mut y.as_view_mut(),
        rows,
        inp,
        out,
    )
    .unwrap();
    close(
        "cuBLASLt linear + bias + gelu_tanh (tf32)",
        &down(&g, &y),
        &want,
        2e-3,
    );
    let _ = y.device_ptr(g.stream());
}

/// (B, H, S, D) tensor of part `which` (0 q, 1 k, 2 v) of a packed [B*S, 3, H, D] buffer.
fn unpack_qkv(qkv: &[f32], b: usize, s: usize, h: usize, d: usize, which: usize) -> engine::Tensor {
    let mut out = vec![0.0f32; b * h * s * d];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * s + si) * 3 + which) * h * d + hi * d;
                let dst = ((bi * h + hi) * s + si) * d;
                out[dst..dst + d].copy_from_slice(&qkv[src..src + d]);
            }
        }
    }
    engine::Tensor::from_vec(out, &[b, h, s, d]).unwrap()
}

/// The inverse for one (B, H, S, D) tensor into [B*S, (parts), H, D] at part `which`.
fn pack_bhsd(t: &engine::Tensor, parts: usize, which: usize, out: &mut [f32]) {
    let (b, h, s, d) = (t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]);
    let v = t.contiguous().to_vec();
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * h + hi) * s + si) * d;
                let dst = ((bi * s + si) * parts + which) * h * d + hi * d;
                out[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
    }
}

/// CPU attention (the engine's op) on a packed QKV buffer with key lengths; returns
/// (O [B*S, H, D], dQKV [B*S, 3, H, D]).
#[allow(clippy::too_many_arguments)]
fn cpu_attention(
    qkv: &[f32],
    dout: &[f32],
    b: usize,
    s: usize,
    h: usize,
    d: usize,
    lens: &[usize],
    p: f32,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let (q, kk, v) = (
        unpack_qkv(qkv, b, s, h, d, 0),
        unpack_qkv(qkv, b, s, h, d, 1),
        unpack_qkv(qkv, b, s, h, d, 2),
    );
    let mut mask = vec![0.0f32; b * s];
    for (bi, &l) in lens.iter().enumerate() {
        for j in l..s {
            mask[bi * s + j] = -10000.0;
        }
    }
    let mask = engine::Tensor::from_vec(mask, &[b, 1, 1, s]).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    let (o, saved) =
        engine::attention::attention_forward(&q, &kk, &v, Some(&mask), scale, p, seed).unwrap();
    let mut o_packed = vec![0.0; b * s * h * d];
    pack_bhsd(&o, 1, 0, &mut o_packed);
    // dout arrives as [B*S, H, D]: unpack it as a one-part buffer.
    let mut dbhsd = vec![0.0f32; b * h * s * d];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = (bi * s + si) * h * d + hi * d;
                let dst = ((bi * h + hi) * s + si) * d;
                dbhsd[dst..dst + d].copy_from_slice(&dout[src..src + d]);
            }
        }
    }
    let dt = engine::Tensor::from_vec(dbhsd, &[b, h, s, d]).unwrap();
    let (dq, dk, dv) = engine::attention::attention_backward(&q, &kk, &v, &saved, &dt).unwrap();
    let mut g = vec![0.0; b * s * 3 * h * d];
    pack_bhsd(&dq, 3, 0, &mut g);
    pack_bhsd(&dk, 3, 1, &mut g);
    pack_bhsd(&dv, 3, 2, &mut g);
    (o_packed, g)
}

#[test]
fn fused_attention_against_the_cpu_engine() {
    let g = gpu();
    let mut r = rng(11);
    use k::attention::{attention_bwd, attention_fwd, AttnBatch, AttnShape};
    for (b, s, h, d, p) in [
        (2, 7, 1, 32, 0.0f32),
        (3, 128, 4, 64, 0.1),
        (2, 80, 2, 128, 0.1),
        (4, 130, 2, 64, 0.0),
    ] {
        let lens: Vec<usize> = (0..b)
            .map(|i| {
                if i == 0 {
                    s
                } else {
                    1 + (r.next_u64() as usize) % s
                }
            })
            .collect();
        let tokens = b * s;
        let (qkv, dout) = (
            randn(&mut r, tokens * 3 * h * d, 1.0),
            randn(&mut r, tokens * h * d, 1.0),
        );
        let seed = r.next_u64();
        let (want_o, want_g) = cpu_attention(&qkv, &dout, b, s, h, d, &lens, p, seed);
        let batch = AttnBatch::padded(&g, s, &lens).unwrap();
        let shape = AttnShape {
            heads: h,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
        };
        let drop = (p > 0.0).then_some((p, seed));
        let tag = format!("B{b} S{s} H{h} D{d} p={p} lens {lens:?}");
        let (dqkv_in, ddout) = (up(&g, &qkv), up(&g, &dout));
        let mut o = poison(&g, tokens * h * d);
        let mut lse = poison(&g, tokens * h);
        attention_fwd(
            &g,
            &batch,
            shape,
            &dqkv_in.as_view(),
            &mut o.as_view_mut(),
            &mut lse,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd f32 {tag}"),
            &down(&g, &o),
            &want_o,
            F32_TOL,
        );
        let mut grad = poison(&g, tokens * 3 * h * d);
        attention_bwd(
            &g,
            &batch,
            shape,
            &dqkv_in.as_view(),
            &o.as_view(),
            &lse,
            &ddout.as_view(),
            &mut grad.as_view_mut(),
            drop,
        )
        .unwrap();
        close(
            &format!("attention bwd f32 dqkv {tag}"),
            &down(&g, &grad),
            &want_g,
            F32_TOL,
        );
        // bf16 storage: the CPU reference on the rounded inputs.
        let (want_ob, want_gb) = cpu_attention(
            &round_bf16(&qkv),
            &round_bf16(&dout),
            b,
            s,
            h,
            d,
            &lens,
            p,
            seed,
        );
        let (qb, db) = (up(&g, &to_bf16(&qkv)), up(&g, &to_bf16(&dout)));
        let mut ob = poison_bf16(&g, tokens * h * d);
        let mut lse_ref = poison(&g, tokens * h);
        k::attention::attention_fwd_with(
            &g,
            k::attention::AttnKernel::Reference,
            &batch,
            shape,
            &qb.as_view(),
            &mut ob.as_view_mut(),
            &mut lse_ref,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd bf16 reference {tag}"),
            &from_bf16(&down(&g, &ob)),
            &want_ob,
            BF16_TOL,
        );
        // The tensor-core kernel (the default for bf16): against the CPU and the reference LSE.
        let mut ob = poison_bf16(&g, tokens * h * d);
        attention_fwd(
            &g,
            &batch,
            shape,
            &qb.as_view(),
            &mut ob.as_view_mut(),
            &mut lse,
            drop,
        )
        .unwrap();
        close(
            &format!("attention fwd bf16 tensor cores {tag}"),
            &from_bf16(&down(&g, &ob)),
            &want_ob,
            BF16_TOL,
        );
        close(
            &format!("attention lse tensor cores vs reference {tag}"),
            &down(&g, &lse),
            &down(&g, &lse_ref),
            1e-3,
        );
        // The default bf16 backward (tensor cores for head dims 32 and 64), then the reference.
        for which in [
            k::attention::AttnKernel::TensorCores,
            k::attention::AttnKernel::Reference,
        ] {
            if which == k::attention::AttnKernel::TensorCores && d > 64 {
                continue;
            }
            let mut gb = poison_bf16(&g, tokens * 3 * h * d);
            k::attention::attention_bwd_with(
                &g,
                which,
                &batch,
                shape,
                &qb.as_view(),
                &ob.as_view(),
                &lse,
                &db.as_view(),
                &mut gb.as_view_mut(),
                drop,
            )
            .unwrap();
            close(
                &format!("attention bwd bf16 {which:?} dqkv {tag}"),
                &from_bf16(&down(&g, &gb)),
                &want_gb,
                BF16_TOL,
            );
        }
    }
    // Packed variable-length sequences (no padding tokens): each against the CPU on its own.
    let (h, d) = (3, 64);
    let lens = [5usize, 128, 77, 1, 200];
    let tokens: usize = lens.iter().sum();
    let (qkv, dout) = (
        randn(&mut r, tokens * 3 * h * d, 1.0),
        randn(&mut r, tokens * h * d, 1.0),
    );
    let batch = AttnBatch::packed(&g, &lens).unwrap();
    let shape = AttnShape {
        heads: h,
        head_dim: d,
        scale: 0.125,
    };
    let dq_in = up(&g, &qkv);
    let mut o = poison(&g, tokens * h * d);
    let mut lse = poison(&g, tokens * h);
    attention_fwd(
        &g,
        &batch,
        shape,
        &dq_in.as_view(),
        &mut o.as_view_mut(),
        &mut lse,
        None,
    )
    .unwrap();
    let mut grad = poison(&g, tokens * 3 * h * d);
    attention_bwd(
        &g,
        &batch,
        shape,
        &dq_in.as_view(),
        &o.as_view(),
        &lse,
        &up(&g, &dout).as_view(),
        &mut grad.as_view_mut(),
        None,
    )
    .unwrap();
    let (got_o, got_g) = (down(&g, &o), down(&g, &grad));
    let mut at = 0;
    for &l in &lens {
        let q_part = &qkv[at * 3 * h * d..(at + l) * 3 * h * d];
        let d_part = &dout[at * h * d..(at + l) * h * d];
        let (want_o, want_g) = cpu_attention(q_part, d_part, 1, l, h, d, &[l], 0.0, 0);
        close(
            &format!("attention packed fwd len {l}"),
            &got_o[at * h * d..(at + l) * h * d],
            &want_o,
            F32_TOL,
        );
        close(
            &format!("attention packed bwd len {l}"),
            &got_g[at * 3 * h * d..(at + l) * 3 * h * d],
            &want_g,
            F32_TOL,
        );
        at += l;
    }
    // Contract checks.
    assert!(AttnBatch::padded(&g, 8, &[9]).is_err());
    let e = attention_fwd(
        &g,
        &batch,
        AttnShape {
            heads: h,
            head_dim: 48,
            scale: 1.0,
        },
        &dq_in.as_view(),
        &mut o.as_view_mut(),
        &mut lse,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("head_dim"), "{e}");
}
