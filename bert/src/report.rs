//! Plots for reports: line charts as standalone SVG (no plotting dependency; a chart is a few
//! polylines, axes and labels).

/// One named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// An SVG line chart of `series` with a title and axis labels.
pub fn line_chart(title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (640.0, 360.0, 64.0, 16.0, 32.0, 48.0);
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        s += &format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            w - r,
            sy(fy),
            sy(fy),
            l - 4.0,
            sy(fy) + 4.0,
            fmt(fy),
            sx(fx),
            h - b + 16.0,
            fmt(fx)
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{}</text>\n",
        (l + w - r) / 2.0,
        h - 8.0,
        esc(xlabel),
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        esc(ylabel)
    );
    for (i, ser) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let p: Vec<String> = ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            p.join(" ")
        );
        s += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            l + 10.0,
            t + 8.0 + 16.0 * i as f64,
            l + 26.0,
            t + 12.0 + 16.0 * i as f64,
            esc(ser.name)
        );
    }
    s + "</svg>\n"
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A moving average over `k` points (smooths a per-step loss curve).
pub fn smooth(points: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    let k = k.max(1);
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(k - 1);
            let w = &points[lo..=i];
            (
                points[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

/// The (step, value) points of `key` in a metrics.jsonl file's records (records without it skipped).
pub fn metric_series(records: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|m| Some((m["step"].as_f64()?, m.get(key)?.as_f64()?)))
        .collect()
}

/// The (minutes, value) points of `key`, from the records' `seconds` (wall-clock since the run
/// began; records without either are skipped): a learning curve against time.
pub fn metric_series_by_time(records: &[serde_json::Value], key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|m| Some((m["seconds"].as_f64()? / 60.0, m.get(key)?.as_f64()?)))
        .collect()
}

/// Reads a metrics.jsonl file (lines that do not parse, e.g. one cut short, are skipped).
pub fn read_metrics(path: &std::path::Path) -> crate::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::BertError::Io(format!("{}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Pretraining curves from `bert pretrain`'s metrics.jsonl: `dir/pretrain_loss.svg` (training
/// loss, smoothed, and held-out MLM loss, by step) and `dir/pretrain_accuracy.svg` (held-out MLM
/// accuracy beside the most-frequent-token baseline, NSP accuracy, by minute), each written
/// atomically.
pub fn write_pretrain_plots(metrics: &std::path::Path, dir: &std::path::Path) -> crate::Result<()> {
    let m = read_metrics(metrics)?;
    let loss = line_chart(
        "Pretraining loss (MLM + NSP)",
        "step",
        "loss",
        &[
            Series {
                name: "training loss (moving average of 10 steps)",
                points: smooth(&metric_series(&m, "loss"), 10),
            },
            Series {
                name: "held-out MLM loss",
                points: metric_series(&m, "eval_mlm_loss"),
            },
        ],
    );
    let acc = line_chart(
        "Held-out accuracy during pretraining, against wall-clock",
        "minutes",
        "accuracy",
        &[
            Series {
                name: "MLM accuracy",
                points: metric_series_by_time(&m, "eval_mlm_accuracy"),
            },
            Series {
                name: "most frequent token",
                points: metric_series_by_time(&m, "majority_accuracy"),
            },
            Series {
                name: "MLM accuracy at [MASK] inputs",
                points: metric_series_by_time(&m, "eval_mlm_accuracy_at_mask"),
            },
            Series {
                name: "NSP accuracy",
                points: metric_series_by_time(&m, "eval_nsp_accuracy"),
            },
            Series {
                name: "NSP: the more frequent label",
                points: metric_series_by_time(&m, "nsp_majority_accuracy"),
            },
        ],
    );
    crate::io::write_atomic(&dir.join("pretrain_loss.svg"), loss.as_bytes())?;
    crate::io::write_atomic(&dir.join("pretrain_accuracy.svg"), acc.as_bytes())
}

/// Fine-tuning curves from `bert finetune`'s metrics.jsonl: `dir/finetune.svg` (training loss,
/// smoothed, and dev accuracy and macro-F1 at each evaluation), written atomically.
pub fn write_finetune_plot(metrics: &std::path::Path, dir: &std::path::Path) -> crate::Result<()> {
    let m = read_metrics(metrics)?;
    // The training loss, and every numeric dev figure the run logged (`dev_*`) that is a share
    // (accuracy, F1 in [0, 1], correlations); SQuAD's percentages are drawn as shares.
    let mut keys: Vec<String> = Vec::new();
    for r in &m {
        if let Some(o) = r.as_object() {
            for (k, v) in o {
                if k.starts_with("dev_") && v.is_number() && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    keys.retain(|k| {
        !(k.ends_with("_n")
            || k.ends_with("total")
            || k.ends_with("words")
            || k.ends_with("mse")
            || k.contains("HasAns")
            || k.contains("NoAns"))
    });
    keys.truncate(3);
    let mut named = vec![(
        "training loss (moving average of 10 steps)".to_string(),
        smooth(&metric_series(&m, "loss"), 10),
    )];
    for k in keys {
        let pts = metric_series(&m, &k);
        let pct = pts.iter().any(|p| p.1 > 1.0);
        named.push((
            format!("dev {}{}", &k[4..], if pct { " / 100" } else { "" }),
            pts.into_iter()
                .map(|(x, y)| (x, if pct { y / 100.0 } else { y }))
                .collect(),
        ));
    }
    let series: Vec<Series> = named
        .iter()
        .map(|(n, p)| Series {
            name: n,
            points: p.clone(),
        })
        .collect();
    let chart = line_chart("Fine-tuning", "step", "loss / score", &series);
    crate::io::write_atomic(&dir.join("finetune.svg"), chart.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_svg_with_every_series() {
        let s = line_chart(
            "loss <by step>",
            "step",
            "loss",
            &[
                Series {
                    name: "train",
                    points: vec![(1.0, 5.0), (2.0, 4.0), (3.0, 3.5)],
                },
                Series {
                    name: "dev",
                    points: vec![(1.0, f64::NAN), (3.0, 3.9)],
                },
            ],
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("loss &lt;by step&gt;"));
        assert_eq!(smooth(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2)[2].1, 4.0);
    }
}
