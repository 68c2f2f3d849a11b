//! The `bert` binary end to end: `bert tokenize` in each format, pairs, truncation, errors.

use std::io::Write;
use std::process::{Command, Stdio};

fn vocab_file() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bert-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vocab.txt");
    // A tiny vocabulary of our own: ids are line numbers.
    std::fs::write(
        &path,
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n,\n!\nthe\ncat\n##s\nsat\n.\n",
    )
    .unwrap();
    path
}

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails early (a missing file) may exit before reading its input: a broken
    // pipe here is expected then, and its exit status and stderr are what the test checks.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn tokenize_formats_pairs_and_truncation() {
    let v = vocab_file();
    let v = v.to_str().unwrap();
    let (code, out, _) = run(
        &["tokenize", "--tokenizer", v],
        "Hello, world!\nthe cats sat.\n",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "2 5 7 6 8 3\n2 9 10 11 12 13 3\n");
    let (_, out, _) = run(
        &[
            "tokenize",
            "--tokenizer",
            v,
            "--format",
            "tokens",
            "--no-special",
        ],
        "The cats, dog!\n",
    );
    assert_eq!(out, "the cat ##s , [UNK] !\n");
    let (_, out, _) = run(
        &["tokenize", "--tokenizer", v, "--pairs", "--format", "json"],
        "hello\tworld!\n",
    );
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["ids"], serde_json::json!([2, 5, 3, 6, 8, 3]));
    assert_eq!(j["type_ids"], serde_json::json!([0, 0, 0, 1, 1, 1]));
    assert_eq!(j["offsets"][4], serde_json::json!([5, 6]));
    let (_, out, _) = run(
        &["tokenize", "--tokenizer", v, "--max-len", "4"],
        "the cats sat.\n",
    );
    assert_eq!(out, "2 9 10 3\n");
}

#[test]
fn tokenize_errors_name_the_problem() {
    let v = vocab_file();
    let (code, _, err) = run(
        &["tokenize", "--tokenizer", v.to_str().unwrap(), "--pairs"],
        "ok\tfine\nno tab here\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("stdin line 2") && err.contains("tab"), "{err}");
    let (code, _, err) = run(&["tokenize", "--tokenizer", "/no/such/vocab.txt"], "x\n");
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/vocab.txt"), "{err}");
    let bad = v.with_file_name("bad.txt");
    std::fs::write(&bad, "[CLS]\n\n[SEP]\n").unwrap();
    let (code, _, err) = run(&["tokenize", "--tokenizer", bad.to_str().unwrap()], "x\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.txt:2") && err.contains("empty token"),
        "{err}"
    );
}

#[test]
fn vocab_refuses_a_corpus_without_text() {
    let v = vocab_file();
    let empty = v.with_file_name("blank-corpus.txt");
    std::fs::write(&empty, "\n  \n\n").unwrap();
    let out = v.with_file_name("vocab-out");
    let (code, _, err) = run(
        &[
            "vocab",
            "--corpus",
            empty.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("blank-corpus.txt") && err.contains("no text"),
        "{err}"
    );
    assert!(!out.join("vocab.txt").exists());
}

/// The tiny random BertModel fixture plus a 99-token vocabulary of our own, as a model folder.
fn tiny_model_dir() -> std::path::PathBuf {
    tiny_class_dir("BertModel")
}

fn tiny_class_dir(class: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(class);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("bert-cli-model-{}-{class}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut vocab: Vec<String> = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", ".",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    while vocab.len() < 99 {
        vocab.push(format!("w{}", vocab.len()));
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    dir
}

#[test]
fn embed_similarity_and_info() {
    let dir = tiny_model_dir();
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(
        &["embed", "--model", d, "--normalize", "--batch", "2"],
        "the cat sat on the mat.\nthe mat\nw42 w43 w44\n",
    );
    assert_eq!(code, 0, "{err}");
    // The summary on stderr counts texts and tokens (with [CLS] and [SEP]).
    assert!(err.contains("bert embed: 3 texts, "), "{err}");
    let rows: Vec<Vec<f32>> = out
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.len(), 32);
        let n: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
    // Batching does not change a text's embedding, and the output keeps the input's order
    // (embed batches texts by length: here [0, 2] then [1]).
    for (i, text) in ["the cat sat on the mat.", "the mat", "w42 w43 w44"]
        .iter()
        .enumerate()
    {
        let (_, alone, _) = run(
            &["embed", "--model", d, "--normalize", "--batch", "1"],
            &format!("{text}\n"),
        );
        let a: Vec<f32> = alone
            .trim()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(a.len(), 32);
        for (x, y) in a.iter().zip(&rows[i]) {
            assert!((x - y).abs() < 1e-6, "line {i}: {x} vs {y}");
        }
    }
    let (code, out, _) = run(
        &[
            "embed",
            "--model",
            d,
            "--format",
            "json",
            "--pooling",
            "cls",
        ],
        "the cat\n",
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["embedding"].as_array().unwrap().len(), 32);
    let (code, out, err) = run(&["similarity", "--model", d, "the cat", "the cat"], "");
    assert_eq!((code, out.trim()), (0, "1.000000"), "{err}");
    let (code, out, _) = run(&["info", "--model", d], "");
    assert_eq!(code, 0);
    assert!(
        out.contains("BertModel") && out.contains("2 layers, hidden 32"),
        "{out}"
    );
    assert!(out.contains("tokenizer:    99 tokens"), "{out}");
    // The device code path (the encoder as the GPU runs it, here on the CPU) gives the same
    // embeddings for every pooling; an unknown device is refused.
    for pooling in ["mean", "cls", "second-to-last"] {
        let args = |dev: &'static str| {
            vec![
                "embed",
                "--model",
                d,
                "--pooling",
                pooling,
                "--batch",
                "2",
                "--device",
                dev,
            ]
        };
        let texts = "the cat sat on the mat.\nthe mat\nw42 w43 w44\n";
        let (c1, a, e1) = run(&args("cpu"), texts);
        let (c2, b, e2) = run(&args("cpu-step"), texts);
        assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
        let parse =
            |s: &str| -> Vec<f32> { s.split_whitespace().map(|x| x.parse().unwrap()).collect() };
        let (a, b) = (parse(&a), parse(&b));
        assert_eq!(a.len(), 3 * 32, "{pooling}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{pooling}: {x} vs {y}");
        }
    }
    let (code, _, err) = run(&["embed", "--model", d, "--device", "tpu"], "x\n");
    assert_ne!(code, 0);
    assert!(err.contains("unknown device 'tpu'"), "{err}");
    // A CPU-only build says how to get the GPU path instead of failing obscurely.
    if !cfg!(feature = "cuda") {
        for dev in ["cuda", "cuda-bf16"] {
            let (code, _, err) = run(&["embed", "--model", d, "--device", dev], "x\n");
            assert_eq!(code, 1);
            assert!(err.contains("build with `--features cuda`"), "{err}");
        }
    }
    let (code, _, err) = run(&["embed", "--model", "/no/such/dir"], "x\n");
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/dir"), "{err}");
    let (code, _, err) = run(&["embed", "--model", d, "--pooling", "max"], "x\n");
    assert_ne!(code, 0);
    assert!(err.contains("max"), "{err}");
    // A batch of 0 is refused by name rather than quietly read as 1.
    let (code, _, err) = run(&["embed", "--model", d, "--batch", "0"], "x\n");
    assert_ne!(code, 0);
    assert!(
        err.contains("--batch") && err.contains("at least 1"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fill_mask_ranks_tokens_and_fills_the_sentence() {
    let dir = tiny_class_dir("BertForMaskedLM");
    let d = dir.to_str().unwrap();
    let (code, out, err) = run(
        &[
            "fill-mask",
            "--model",
            d,
            "the [MASK] sat on the mat.",
            "--top-k",
            "4",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let probs: Vec<f64> = lines[..4]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]), "{out}");
    assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-6);
    let top = lines[0].split_whitespace().nth(1).unwrap();
    assert_eq!(lines[4], format!("the {top} sat on the mat."), "{out}");
    let (code, _, err) = run(&["fill-mask", "--model", d, "no mask here"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no [MASK]"), "{err}");
    // A bare encoder has no MLM head: a clear error naming the missing tensor.
    let base = tiny_class_dir("BertModel");
    let (code, _, err) = run(
        &["fill-mask", "--model", base.to_str().unwrap(), "the [MASK]"],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("missing tensor 'cls.predictions"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(base).unwrap();
}
