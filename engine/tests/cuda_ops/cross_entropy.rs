//! Cross-entropy over a vocabulary.

use crate::harness::*;

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
