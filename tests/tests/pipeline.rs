//! The training pipeline end to end on a fixture corpus (tests/src/lib.rs writes it from a tiny
//! grammar): vocabulary, pretraining shards, 20 pretraining steps, fill-mask, fine-tuning, once
//! through the library and once through the `bert` binary, each stage checked on what it
//! produced: files, counts, losses, that the checkpoint reloads, and that both routes agree.

use bert_tests::{bert_binary, fixture_corpus, fixture_tsv, scratch};
use std::path::Path;
use std::process::Command;

fn pretrain_cfg() -> bert::train::PretrainConfig {
    bert::train::PretrainConfig {
        steps: Some(20),
        batch: 8,
        lr: 1e-3,
        warmup: 0.1,
        eval_every: 10,
        eval_batches: 2,
        checkpoint_every: 100,
        progress: false,
        dropout: Some(0.0),
        ..Default::default()
    }
}

fn data_cfg() -> bert::data::DataConfig {
    bert::data::DataConfig {
        max_seq_len: 32,
        max_predictions: 5,
        ..Default::default()
    }
}

#[test]
fn the_pipeline_through_the_library() {
    let dir = scratch("pipeline-lib");
    let corpus = fixture_corpus(&dir, 300, 1);
    let corpus = vec![corpus.to_string_lossy().into_owned()];
    // Vocabulary: every word of the grammar is one piece, so held-out text is one piece a word.
    let score = bert::vocab::build(
        &corpus,
        &dir.join("vocab"),
        &bert::vocab::VocabOptions {
            size: 200,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(score.words > 100, "{} held-out words", score.words);
    assert!(
        (score.ratio() - 1.0).abs() < 1e-9,
        "{} pieces per word",
        score.ratio()
    );
    let tok = bert::vocab::load_tokenizer(&dir.join("vocab/tokenizer.json")).unwrap();
    for w in ["cat", "hammer", "quiet", "follows", "[MASK]"] {
        assert!(tok.vocab.id(w).is_some(), "{w} is not a piece");
    }
    // Shards.
    let built = bert::data::build(&corpus, &tok, &dir.join("data"), &data_cfg(), false).unwrap();
    assert!(
        built.documents >= 290 && built.train_instances > 100,
        "{built:?}"
    );
    assert!(built.heldout_instances > 0);
    // 20 steps of pretraining: a checkpoint, losses that fell, figures in range.
    let run = dir.join("run");
    let s = bert::train::pretrain("bert-tiny", &dir.join("data"), &run, &pretrain_cfg(), false)
        .unwrap();
    assert_eq!((s.steps, s.total_steps), (20, 20));
    assert!(s.final_loss.is_finite());
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|m| m.get("loss").and_then(|x| x.as_f64()))
        .collect();
    assert_eq!(losses.len(), 20);
    let (first, last) = (
        losses[..5].iter().sum::<f64>(),
        losses[15..].iter().sum::<f64>(),
    );
    assert!(last < first, "loss did not fall: {losses:?}");
    for x in [
        s.eval.mlm_accuracy,
        s.eval.mlm_accuracy_at_mask,
        s.eval.nsp_accuracy,
    ] {
        assert!((0.0..=1.0).contains(&x), "{:?}", s.eval);
    }
    // Fill-mask from the checkpoint: as many candidates as asked, each a vocabulary piece,
    // probabilities descending and summing to at most 1.
    let fm = bert::fill_mask::FillMask::load(&run.join("checkpoint")).unwrap();
    let f = fm.fill("the old [MASK] sees a red knife .", 5).unwrap();
    assert_eq!(f.masks.len(), 1);
    let g = &f.masks[0].guesses;
    assert_eq!(g.len(), 5);
    assert!(g.windows(2).all(|w| w[0].probability >= w[1].probability));
    assert!(g.iter().map(|x| x.probability).sum::<f32>() <= 1.0 + 1e-5);
    assert!(g.iter().all(|x| tok.vocab.id(&x.token) == Some(x.id)));
    assert!(!f.text.contains("[MASK]"), "{}", f.text);
    // Fine-tuning on a TSV task from the checkpoint: a model folder that reloads, figures in range.
    let train = fixture_tsv(&dir, "train", 400, 2);
    let dev = fixture_tsv(&dir, "dev", 100, 3);
    let test = fixture_tsv(&dir, "test", 100, 4);
    let data = bert::finetune::load_dataset(
        bert::finetune::Family::SeqCls,
        None,
        (Some(&train), Some(&dev), Some(&test)),
        &Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(data.label_names().len(), 2);
    let fcfg = bert::finetune::FinetuneConfig {
        steps: Some(30),
        minutes: None,
        lr: 1e-3,
        progress: false,
        ..Default::default()
    };
    let ft = dir.join("ft");
    let r = bert::finetune::run(&run.join("checkpoint"), &data, &ft, &fcfg, false).unwrap();
    assert_eq!(r.steps, 30);
    let t = r.test.expect("a test split was given");
    assert_eq!(t.get("n"), 100.0);
    assert!(
        (0.0..=1.0).contains(&t.get("accuracy")) && (0.0..=1.0).contains(&r.dev.get("accuracy"))
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 30);
    let reloaded =
        bert::checkpoint::ModelDir::load(&ft.join("model"), &Default::default()).unwrap();
    assert_eq!(reloaded.model.config.num_labels, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bert(dir: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(bert_binary())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "bert {}: {e}", args.join(" "));
    (o, e)
}

/// The same stages through the command line, in the README's order and flags; the binary's
/// checkpoint and the library's are the same run (same seeds), so their weights agree.
#[test]
fn the_pipeline_through_the_binary() {
    let dir = scratch("pipeline-bin");
    fixture_corpus(&dir, 300, 1);
    fixture_tsv(&dir, "train", 400, 2);
    fixture_tsv(&dir, "dev", 100, 3);
    let (_, e) = bert(
        &dir,
        &[
            "vocab",
            "--corpus",
            "corpus.txt",
            "--size",
            "200",
            "--out",
            "vocab",
        ],
    );
    assert!(e.contains("1.000 pieces per word"), "{e}");
    let (_, e) = bert(
        &dir,
        &[
            "data",
            "--corpus",
            "corpus.txt",
            "--tokenizer",
            "vocab/tokenizer.json",
            "--out",
            "data",
            "--max-seq-len",
            "32",
            "--max-predictions",
            "5",
        ],
    );
    assert!(e.contains("training and"), "{e}");
    let (_, e) = bert(
        &dir,
        &[
            "pretrain",
            "--model-config",
            "bert-tiny",
            "--data",
            "data",
            "--out",
            "run",
            "--steps",
            "20",
            "--batch",
            "8",
            "--lr",
            "1e-3",
            "--warmup",
            "0.1",
            "--eval-every",
            "10",
            "--dropout",
            "0",
        ],
    );
    assert!(
        e.contains("20 of 20 steps") && e.contains("at [MASK] inputs"),
        "{e}"
    );
    // The library run with the same settings, for the comparison.
    let lib = dir.join("lib");
    let cfg = bert::train::PretrainConfig {
        eval_batches: 20,
        ..pretrain_cfg()
    };
    bert::train::pretrain("bert-tiny", &dir.join("data"), &lib, &cfg, false).unwrap();
    let st = |p: &Path| {
        let st =
            bert::safetensors::SafeTensors::open(&p.join("checkpoint/model.safetensors")).unwrap();
        st.names()
            .map(|n| (n.to_string(), st.tensor(n).unwrap().to_vec()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (st(&dir.join("run")), st(&lib));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(va, vb, "{na}: the binary's and the library's runs differ");
    }
    let (o, _) = bert(
        &dir,
        &[
            "fill-mask",
            "--model",
            "run/checkpoint",
            "the old [MASK] sees a red knife .",
        ],
    );
    assert_eq!(
        o.lines().filter(|l| l.starts_with("  0.")).count(),
        5,
        "{o}"
    );
    let (_, e) = bert(
        &dir,
        &[
            "finetune",
            "--model",
            "run/checkpoint",
            "--train",
            "train.tsv",
            "--dev",
            "dev.tsv",
            "--out",
            "ft",
            "--steps",
            "30",
            "--lr",
            "1e-3",
        ],
    );
    assert!(e.contains("30 steps") && e.contains("dev accuracy"), "{e}");
    assert!(dir.join("ft/model/config.json").exists() && dir.join("ft/summary.json").exists());
    // The fine-tuned model predicts one JSON line per input line, its labels the training file's.
    let texts: String = std::fs::read_to_string(dir.join("dev.tsv"))
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", l.split('\t').next().unwrap()))
        .collect();
    std::fs::write(dir.join("texts.txt"), &texts).unwrap();
    let out = Command::new(bert_binary())
        .args(["predict", "--model", "ft/model", "--top-k", "2"])
        .current_dir(&dir)
        .stdin(std::fs::File::open(dir.join("texts.txt")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preds: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dev_lines = std::fs::read_to_string(dir.join("dev.tsv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(preds.len(), dev_lines);
    assert!(
        preds
            .iter()
            .all(|p| p["top_k"].as_array().unwrap().len() == 2
                && p["label"] == p["top_k"][0]["label"]),
        "{:?}",
        preds[0]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
