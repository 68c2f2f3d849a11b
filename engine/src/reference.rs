//! Naive f64 references for every kernel: the definitions the fast code is tested against.
//!
//! Written for clarity, not speed: plain loops over row-major slices, accumulation in f64.

/// `C = alpha * op(A) op(B) + beta * C`, A is (m,k), B is (k,n), C is (m,n), all row-major.
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &[f64],
    b: &[f64],
    beta: f64,
    c: &mut [f64],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = alpha * s
                + if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * n + j]
                };
        }
    }
}

/// Softmax of each row of x (rows, cols), after adding `mask` (cols) when given.
pub fn softmax(x: &[f64], rows: usize, cols: usize, mask: Option<&[f64]>) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let row: Vec<f64> = (0..cols)
            .map(|c| x[r * cols + c] + mask.map_or(0.0, |m| m[c]))
            .collect();
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for c in 0..cols {
            out[r * cols + c] = (row[c] - max).exp() / sum;
        }
    }
    out
}

/// Layer normalisation over each row: `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn layernorm(
    x: &[f64],
    rows: usize,
    cols: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            out[r * cols + c] = (row[c] - mean) * rstd * gamma[c] + beta[c];
        }
    }
    out
}

/// GELU, erf form: `x/2 (1 + erf(x/sqrt 2))` (BERT's `gelu`).
pub fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// GELU, tanh form: `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (`gelu_new`).
pub fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// Mean cross-entropy of `logits` (rows, classes) against `targets`, skipping `ignore`.
/// Returns (mean loss, number of counted rows). A batch with no counted row has loss 0.
pub fn cross_entropy(
    logits: &[f64],
    rows: usize,
    classes: usize,
    targets: &[i64],
    ignore: i64,
) -> (f64, usize) {
    let mut total = 0.0;
    let mut count = 0;
    for r in 0..rows {
        if targets[r] == ignore {
            continue;
        }
        let row = &logits[r * classes..(r + 1) * classes];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        total += lse - row[targets[r] as usize];
        count += 1;
    }
    (
        if count == 0 {
            0.0
        } else {
            total / count as f64
        },
        count,
    )
}

/// The error function to full f64 precision: Taylor series for |x| < 3, continued fraction
/// for erfc beyond.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let y = if ax < 3.0 {
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut k = ax;
        for n in (1..80).rev() {
            k = ax + (n as f64 / 2.0) / k;
        }
        1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * k)
    };
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_known_values() {
        // Values from tables (A&S 7.1) to 1e-9 and the limits.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520499877813),
            (1.0, 0.842700792950),
            (2.0, 0.995322265019),
            (3.5, 0.999999256901),
        ] {
            assert!((super::erf(x) - want).abs() < 1e-11, "erf({x})");
            assert!((super::erf(-x) + want).abs() < 1e-11);
        }
        assert_eq!(super::erf(10.0), 1.0);
    }
}
