//! Reductions and row arg-max.

use crate::harness::*;

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
