//! LayerNorm (with dropout and residual) and softmax with a key mask.

use crate::harness::*;

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
