//! cuBLAS and cuBLASLt GEMMs against the CPU engine.

use crate::harness::*;

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
