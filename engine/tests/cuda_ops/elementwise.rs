//! Elementwise ops, casts, GELU and bias-GELU.

use crate::harness::*;

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
