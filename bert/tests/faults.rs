//! Faults survived, nothing lost (`bert pretrain`, `bert data`, `bert finetune`, output errors):
//!
//! - A checkpoint is one set: aborted at chosen points inside its writer (`BERT_FAULT`) and
//!   killed with SIGKILL at random moments (at least 20 kills that landed), the checkpoint always
//!   loads, and the resumed run ends bit-identical (weights, moments, logged losses) to a run
//!   that was never interrupted; no staging folder or temporary file is left behind.
//! - An existing run or data folder is an error unless `--resume` or `--force`; a failed
//!   `bert data` leaves the old shards; non-finite weights are never saved.
//! - Options out of range, changed resume settings and crafted trainer.json files are errors
//!   naming the option or field; a full disk on stdout is an error, not a panic.

mod common;
use common::{bert, tensors, tiny_config, tiny_config_with, tiny_data, tmp};
use std::path::Path;

/// The pretraining command line of these tests: 24 steps, a checkpoint after every step.
fn pretrain_args<'a>(cfg: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "pretrain",
        "--model-config",
        cfg,
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "24",
        "--batch",
        "8",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
        "--eval-every",
        "8",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
    ];
    a.extend_from_slice(extra);
    a
}

/// (step, loss) of every training line of OUT/metrics.jsonl.
fn logged_losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

/// The checkpoint in `out` loads (model, tokenizer, optimizer moments, trainer state) and its
/// trainer state is a run's; returns its step.
fn check_checkpoint_loads(out: &Path) -> u64 {
    let ck = out.join("checkpoint");
    let md = bert::ModelDir::load(
        &ck,
        &bert::LoadOptions {
            task: Some(bert::Task::PreTraining),
            init_missing_head: None,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", ck.display()));
    let st = bert::safetensors::SafeTensors::open(&ck.join("optimizer.safetensors")).unwrap();
    for (name, _) in md.model.params.iter() {
        st.tensor(&format!("m.{name}")).unwrap();
        st.tensor(&format!("v.{name}")).unwrap();
    }
    bert::train::TrainerState::read(&ck.join("trainer.json"))
        .unwrap()
        .step
}

/// Nothing but the run's own files: no staging folder, no temporary file.
fn no_leftovers(out: &Path) {
    for dir in [out.to_path_buf(), out.join("checkpoint")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                !n.contains(".staged-") && !n.contains(".tmp"),
                "{}: leftover {n}",
                dir.display()
            );
        }
    }
}

/// The same final state as the uninterrupted run `a`: weights, moments, trainer step, losses.
fn same_as(a: &Path, b: &Path, what: &str) {
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let (ta, tb) = (
            tensors(&a.join("checkpoint").join(f)),
            tensors(&b.join("checkpoint").join(f)),
        );
        assert_eq!(ta.len(), tb.len(), "{what}: {f}");
        for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
            assert_eq!(na, nb);
            assert!(
                va == vb,
                "{what}: {f}: {na} differs from the uninterrupted run"
            );
        }
    }
    assert_eq!(check_checkpoint_loads(b), 24, "{what}");
    assert_eq!(logged_losses(a), logged_losses(b), "{what}: metrics.jsonl");
}

#[test]
fn checkpoints_survive_aborts_inside_the_writer_and_random_kills() {
    let data = tmp("faults-data");
    tiny_data(&data);
    let cfg = tiny_config(&data);
    let (d, c) = (data.to_str().unwrap(), cfg.as_str());
    let a = tmp("faults-a");
    let t0 = std::time::Instant::now();
    let (code, _, err) = bert(&pretrain_args(c, d, a.to_str().unwrap(), &[]), &[]);
    assert_eq!(code, 0, "{err}");
    let run_secs = t0.elapsed().as_secs_f64();
    eprintln!("faults: the uninterrupted run took {run_secs:.2} s");
    assert_eq!(logged_losses(&a).len(), 24);

    // 1. Aborts at chosen points of the writer: a checkpoint's files are written through
    // `file-written` hits (8 per checkpoint with the plots), then `staged-synced`, then the switch
    // (`staged-switched`, before the old folder is removed).
    for fault in [
        "file-written@3",
        "file-written@13",
        "file-written@14",
        "staged-synced@1",
        "staged-synced@5",
        "staged-switched@2",
        "staged-switched@9",
    ] {
        let b = tmp("faults-b");
        let bs = b.to_str().unwrap();
        let (code, _, err) = bert(&pretrain_args(c, d, bs, &[]), &[("BERT_FAULT", fault)]);
        assert_ne!(code, 0, "{fault}: the run was to abort\n{err}");
        assert!(err.contains("BERT_FAULT: aborting"), "{fault}: {err}");
        if b.join("checkpoint").exists() {
            check_checkpoint_loads(&b);
        }
        let (code, _, err) = bert(&pretrain_args(c, d, bs, &["--resume"]), &[]);
        assert_eq!(code, 0, "{fault}: resume failed\n{err}");
        same_as(&a, &b, fault);
        no_leftovers(&b);
    }

    // 2. SIGKILL at random moments until the run completes; at least 20 kills must land on a
    // running process. Each one: the checkpoint (if any yet) loads.
    let b = tmp("faults-kill");
    let bs = b.to_str().unwrap();
    let mut rng = engine::rng::SplitMix64::new(20261203);
    let (mut kills, mut attempts) = (0, 0);
    loop {
        attempts += 1;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bert"))
            .args(pretrain_args(c, d, bs, &["--resume"]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if kills < 24 && attempts < 200 {
            // A moment within the whole run's length (a resumed run is shorter: some land
            // after it ended, and count as no kill).
            let ms = rng.next_u64() % ((run_secs * 1000.0) as u64).max(5);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        if b.join("checkpoint").exists() {
            check_checkpoint_loads(&b);
        }
        if status.success() {
            if kills >= 20 || attempts >= 200 {
                break;
            }
            // Finished before enough kills landed: the same again from the start.
            same_as(&a, &b, &format!("after {kills} kills"));
            std::fs::remove_dir_all(&b).unwrap();
        }
    }
    assert!(kills >= 20, "only {kills} kills landed in {attempts} runs");
    same_as(&a, &b, &format!("after {kills} kills"));
    no_leftovers(&b);
    eprintln!("faults: {kills} SIGKILLs landed in {attempts} runs; the resumed run matches");
    for p in [data, a, b] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[test]
fn existing_runs_and_data_are_kept_unless_asked() {
    let data = tmp("keep-data");
    tiny_data(&data);
    let cfg = tiny_config(&data);
    let (d, c) = (data.to_str().unwrap(), cfg.as_str());
    let out = tmp("keep-run");
    let o = out.to_str().unwrap();
    let short = ["--steps", "3", "--checkpoint-every", "1"];
    let args = |extra: &[&'static str]| {
        let mut a = vec!["pretrain", "--model-config", c, "--data", d, "--out", o];
        if !extra.contains(&"--batch") {
            a.extend_from_slice(&["--batch", "8"]);
        }
        a.extend_from_slice(&short);
        a.extend_from_slice(extra);
        a
    };
    let (code, _, err) = bert(&args(&[]), &[]);
    assert_eq!(code, 0, "{err}");
    let before = std::fs::read(out.join("checkpoint/model.safetensors")).unwrap();
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    // The same OUT again without --resume or --force: an error, and nothing changed.
    let (code, _, err) = bert(&args(&[]), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("holds a run") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("checkpoint/model.safetensors")).unwrap(),
        before
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
    // --force starts afresh: metrics of one run, not appended.
    let (code, _, err) = bert(&args(&["--force", "--seed", "9"]), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(logged_losses(&out).len(), 3);
    assert_ne!(
        std::fs::read(out.join("checkpoint/model.safetensors")).unwrap(),
        before
    );

    // Resume settings compared with the run's: a changed --batch is named.
    let (code, _, err) = bert(&args(&["--resume", "--seed", "9", "--batch", "16"]), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--batch") && err.contains("trainer.json"),
        "{err}"
    );
    let big = tiny_config_with(&out, 64);
    let (code, _, err) = bert(
        &[
            "pretrain",
            "--model-config",
            &big,
            "--data",
            d,
            "--out",
            o,
            "--batch",
            "8",
            "--steps",
            "3",
            "--seed",
            "9",
            "--resume",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("max_position_embeddings 64"), "{err}");
    // A trainer.json without total_steps is refused, naming the file and field.
    let tj = out.join("checkpoint/trainer.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    state.as_object_mut().unwrap().remove("total_steps");
    std::fs::write(&tj, state.to_string()).unwrap();
    let (code, _, err) = bert(&args(&["--resume", "--seed", "9"]), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("trainer.json") && err.contains("total_steps"),
        "{err}"
    );

    // bert data into a folder that holds shards: an error, and the shards are kept; with
    // --force on a corpus that makes no instance: an error, and the shards are still kept.
    let corpus = out.join("one-line.txt");
    std::fs::write(&corpus, "Just one line.\n").unwrap();
    let shard = std::fs::read(data.join("train.bin")).unwrap();
    let tokj = data.join("tokenizer.json");
    let dargs = |force: bool| {
        let mut a = vec![
            "data".to_string(),
            "--corpus".into(),
            corpus.display().to_string(),
            "--tokenizer".into(),
            tokj.display().to_string(),
            "--out".into(),
            d.to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let run_data = |force: bool| {
        let a = dargs(force);
        bert(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let (code, _, err) = run_data(false);
    assert_eq!(code, 1);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    let (code, _, err) = run_data(true);
    assert_eq!(code, 1);
    assert!(err.contains("no training instance"), "{err}");
    assert_eq!(std::fs::read(data.join("train.bin")).unwrap(), shard);
    for p in [data, out] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[test]
fn non_finite_weights_are_never_saved() {
    // Position rows past the sequences' 32 tokens are never used: a NaN there leaves the loss
    // finite, so only the save-time check can catch it.
    let data = tmp("nan-data");
    tiny_data(&data);
    let cfg = tiny_config_with(&data, 40);
    let (d, c) = (data.to_str().unwrap(), cfg.as_str());
    let out = tmp("nan-run");
    let o = out.to_str().unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "pretrain",
            "--model-config",
            c,
            "--data",
            d,
            "--out",
            o,
            "--batch",
            "8",
            "--steps",
            "4",
            "--checkpoint-every",
            "1",
        ];
        a.extend_from_slice(extra);
        a
    };
    let (code, _, err) = bert(&args(&["--stop-after", "2"]), &[]);
    assert_eq!(code, 0, "{err}");
    let wpath = out.join("checkpoint/model.safetensors");
    let st = bert::safetensors::SafeTensors::open(&wpath).unwrap();
    let names: Vec<String> = st.names().map(str::to_string).collect();
    let mut t: Vec<(String, engine::Tensor)> = names
        .into_iter()
        .map(|n| {
            let x = st.tensor(&n).unwrap();
            let owned = engine::Tensor::from_vec(x.to_vec(), x.shape()).unwrap();
            (n, owned)
        })
        .collect();
    drop(st);
    let name = "bert.embeddings.position_embeddings.weight";
    let (_, pos) = t.iter_mut().find(|(n, _)| n == name).unwrap();
    let mut v = pos.to_vec();
    v[35 * 32 + 3] = f32::NAN;
    *pos = engine::Tensor::from_vec(v, pos.shape()).unwrap();
    bert::safetensors::write(&wpath, &t, &Default::default()).unwrap();
    let poisoned = std::fs::read(&wpath).unwrap();
    let (code, _, err) = bert(&args(&["--resume"]), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("non-finite") && err.contains(name) && err.contains("step 3"),
        "{err}"
    );
    // The load warned, and the checkpoint on disk is still the step-2 one.
    assert!(err.contains("warning") && err.contains(name), "{err}");
    assert_eq!(std::fs::read(&wpath).unwrap(), poisoned);
    assert_eq!(check_checkpoint_loads(&out), 2);
    for p in [data, out] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[test]
fn options_out_of_range_are_named() {
    let data = tmp("opts-data");
    tiny_data(&data);
    let cfg = tiny_config(&data);
    let (d, c) = (data.to_str().unwrap(), cfg.as_str());
    let out = tmp("opts-run");
    let o = out.to_str().unwrap();
    for (extra, want) in [
        (&["--lr=-1"][..], "--lr -1"),
        (&["--lr", "nan"], "--lr NaN"),
        (&["--warmup", "nan"], "--warmup NaN"),
        (&["--minutes=-1"], "--minutes -1"),
        (&["--steps", "0"], "--steps 0"),
        (&["--eval-every", "0"], "--eval-every"),
        (&["--dropout", "1.5"], "--dropout 1.5"),
        (&["--batch", "100000"], "GiB"),
    ] {
        let mut a = vec!["pretrain", "--model-config", c, "--data", d, "--out", o];
        if !extra
            .iter()
            .any(|x| x.starts_with("--steps") || x.starts_with("--minutes"))
        {
            a.extend_from_slice(&["--steps", "2"]);
        }
        a.extend_from_slice(extra);
        let (code, _, err) = bert(&a, &[]);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: wanted {want:?} in {err}");
        assert!(
            !out.join("checkpoint").exists(),
            "{extra:?} wrote a checkpoint"
        );
    }
    let corpus = data.join("corpus.txt");
    std::fs::write(&corpus, "a b\nc d\n\ne f\ng h\n").unwrap();
    let tokj = data.join("tokenizer.json");
    let (cs, ts) = (corpus.to_str().unwrap(), tokj.to_str().unwrap());
    let new = out.join("data");
    let n = new.to_str().unwrap();
    for (extra, want) in [
        (
            &["--max-predictions", "4000000000"][..],
            "--max-predictions 4000000000",
        ),
        (
            &["--max-seq-len", "64", "--max-predictions", "65"],
            "1..=64",
        ),
        (&["--max-seq-len", "1"], "--max-seq-len 1"),
        (&["--masked-lm-prob", "1.5"], "--masked-lm-prob 1.5"),
    ] {
        let mut a = vec!["data", "--corpus", cs, "--tokenizer", ts, "--out", n];
        a.extend_from_slice(extra);
        let (code, _, err) = bert(&a, &[]);
        assert_eq!(code, 1, "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: wanted {want:?} in {err}");
        assert!(!new.exists());
    }
    for p in [data, out] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[test]
fn a_full_disk_on_stdout_is_an_error_and_a_closed_pipe_is_quiet() {
    let data = tmp("stdout-data");
    tiny_data(&data);
    let vocab = data.join("vocab.txt");
    let v = vocab.to_str().unwrap();
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bert"))
            .args(["tokenize", "--tokenizer", v])
            .stdin(std::process::Stdio::piped())
            .stdout(full)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"w1 w2\n")?;
                c.wait_with_output()
            })
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("No space left"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A reader that stops early: the writer ends quietly (no message, no panic).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bert"))
        .args(["tokenize", "--tokenizer", v])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all("w1 w2 w3\n".repeat(100_000).as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(data);
}
