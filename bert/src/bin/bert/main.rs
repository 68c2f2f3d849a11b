//! The `bert` command line: arguments ([`args`]) handed to the library. Each subcommand is
//! one library call (`bert::demo`, `bert::embed`, `bert::train`, ...); this file holds no
//! logic of its own beyond printing what those calls return.

mod args;

use args::{Cli, Command};
use clap::Parser;
use std::io::Write;

/// `println!` that returns the error (a full disk, a closed pipe) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { writeln!(std::io::stdout().lock(), $($t)*) };
}

/// The global rayon pool's size, when `--threads` gives one.
fn set_threads(threads: Option<usize>) {
    if let Some(t) = threads {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
}

fn terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// glibc hands freed blocks above 128 KB back to the kernel (munmap) and trims the heap's top;
/// training frees and re-allocates the same activation and gradient sizes every step, so every
/// step paid again for fresh zeroed pages (12% of a one-thread BERT-Mini step). Serve blocks up
/// to 1 GiB from the heap and never trim it: the setting the PyTorch comparisons in
/// scripts/bench-* also get (MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_). A trim threshold
/// of 1 GiB was not enough: a MiniLM QA step at 384 tokens frees more than 1 GiB at the heap's
/// top, and whether glibc then trimmed and re-faulted it every step depended on where the last
/// long-lived block happened to land (2.5x the page faults, 10% of the step, after an unrelated
/// change of the GEMM's buffer sizes). A user's own MALLOC_* environment settings win.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    let set = |var: &str| std::env::var_os(var).is_some();
    // SAFETY: mallopt only changes glibc's allocation thresholds; called before any thread starts.
    unsafe {
        if !set("MALLOC_MMAP_THRESHOLD_") {
            mallopt(M_MMAP_THRESHOLD, 1 << 30);
        }
        if !set("MALLOC_TRIM_THRESHOLD_") {
            // -1: never trim (mallopt(3)).
            mallopt(M_TRIM_THRESHOLD, -1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let default = Command::Demo {
        model: None,
        corpus: None,
        out: "demo-output".into(),
        brown: ".cache/brown".into(),
        minutes: 10.0,
        vocab_size: 8192,
        threads: None,
        device: bert::train::TrainDevice::Cpu,
        model_config: None,
        batch: None,
    };
    let result = match cli.command.unwrap_or(default) {
        Command::Demo {
            model,
            corpus,
            out,
            brown,
            minutes,
            vocab_size,
            threads,
            device,
            model_config,
            batch,
        } => {
            set_threads(threads);
            let gpu = matches!(
                device,
                bert::train::TrainDevice::Cuda | bert::train::TrainDevice::CudaBf16
            );
            let mut dm = if gpu {
                bert::demo::Recipe::gpu(device)
            } else {
                bert::demo::Recipe::cpu(device)
            };
            if let Some(c) = model_config {
                dm.config = c;
            }
            if let Some(b) = batch {
                for p in &mut dm.phases {
                    p.batch = b;
                }
            }
            let showcase = bert::demo::embedding_showcase(
                model.as_deref().map(std::path::Path::new),
                &mut std::io::stdout().lock(),
            );
            showcase.and_then(|_| match corpus {
                Some(c) => bert::demo::run(&c, &brown, &out, minutes, vocab_size, &dm),
                None => Ok(()),
            })
        }
        Command::Embed {
            model,
            pooling,
            normalize,
            batch,
            format,
            device,
            bf16,
        } => {
            let opts = bert::embed::StreamOptions {
                pooling: bert::embed::Pooling::parse(&pooling).expect("clap checked the value"),
                normalize,
                batch,
                format: format.into(),
                device,
                precision: if bf16 {
                    engine::Precision::Bf16
                } else {
                    engine::Precision::F32
                },
                progress: terminal(),
            };
            let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
            bert::embed::embed_stream(
                std::path::Path::new(&model),
                &opts,
                stdin.lock(),
                stdout.lock(),
            )
            .map(|s| {
                eprintln!(
                    "bert embed: {} texts, {} tokens in {:.1} s ({:.0} tokens/s)",
                    s.texts,
                    s.tokens,
                    s.seconds,
                    s.tokens as f64 / s.seconds.max(1e-9)
                )
            })
        }
        Command::Similarity { model, a, b } => {
            bert::embed::load_for_embedding(std::path::Path::new(&model)).and_then(|(m, tok)| {
                let h = m.config.hidden_size;
                let v = bert::embed::embed_texts(
                    &m,
                    &tok,
                    &[&a, &b],
                    bert::embed::Pooling::Mean,
                    false,
                )?;
                outln!("{:.6}", bert::embed::cosine(&v[..h], &v[h..]))?;
                Ok(())
            })
        }
        Command::Info { model } => bert::ModelDir::describe(std::path::Path::new(&model))
            .map_err(Into::into)
            .and_then(|s| Ok(std::io::stdout().lock().write_all(s.as_bytes())?)),
        Command::FillMask { model, text, top_k } => {
            bert::fill_mask::FillMask::load(std::path::Path::new(&model))
                .and_then(|fm| fm.fill(&text, top_k))
                .map_err(Into::into)
                .and_then(|f| Ok(std::io::stdout().lock().write_all(f.to_text().as_bytes())?))
        }
        Command::Finetune {
            model,
            task,
            train,
            dev,
            test,
            out,
            steps,
            minutes,
            batch,
            lr,
            warmup,
            max_len,
            doc_stride,
            n_best,
            max_answer_len,
            null_threshold,
            evals,
            eval_max,
            regression,
            classification,
            seed,
            scratch,
            wordnet,
            brown,
            threads,
            device,
            padded,
            force,
        } => {
            set_threads(threads);
            let cfg = bert::finetune::FinetuneConfig {
                steps: if minutes.is_some() {
                    None
                } else {
                    Some(steps.unwrap_or(1000))
                },
                minutes,
                batch,
                lr,
                warmup,
                max_len,
                doc_stride,
                n_best,
                max_answer_len,
                null_threshold,
                evals,
                eval_max,
                seed,
                progress: terminal(),
                force,
                device,
                padded,
                ..Default::default()
            };
            let p = |s: &Option<String>| s.as_ref().map(std::path::PathBuf::from);
            let dirs = bert::finetune::DataDirs {
                wordnet: wordnet.into(),
                brown: brown.into(),
            };
            let kind = (regression || classification).then_some(regression);
            bert::finetune::Family::parse(&task)
                .and_then(|(family, builtin)| {
                    bert::finetune::load_dataset(
                        family,
                        builtin,
                        (
                            p(&train).as_deref(),
                            p(&dev).as_deref(),
                            p(&test).as_deref(),
                        ),
                        &dirs,
                        kind,
                    )
                })
                .and_then(|data| {
                    bert::finetune::run(
                        std::path::Path::new(&model),
                        &data,
                        std::path::Path::new(&out),
                        &cfg,
                        scratch,
                    )
                })
                .map(|_| ())
                .map_err(Into::into)
        }
        Command::Predict {
            model,
            top_k,
            device,
            threads,
        } => {
            set_threads(threads);
            bert::predict::run(
                std::path::Path::new(&model),
                device,
                top_k,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            )
            .map(|_| ())
            .map_err(Into::into)
        }
        Command::Pretrain {
            model_config,
            data,
            out,
            steps,
            minutes,
            batch,
            accum,
            lr,
            warmup,
            decay,
            init_from,
            seed,
            threads,
            eval_every,
            checkpoint_every,
            static_masking,
            resume,
            force,
            stop_after,
            device,
            padded,
            dropout,
        } => {
            set_threads(threads);
            let cfg = bert::train::PretrainConfig {
                // None with neither: 1000 steps for a new run, the checkpoint's for --resume.
                steps: steps.filter(|_| minutes.is_none()),
                minutes,
                batch,
                accum,
                lr,
                warmup,
                decay,
                seed,
                eval_every,
                checkpoint_every,
                dynamic_masking: !static_masking,
                progress: terminal(),
                stop_after,
                device,
                packed: !padded,
                dropout,
                force,
                init_from: init_from.map(std::path::PathBuf::from),
                ..Default::default()
            };
            // With --resume or --init-from and no --model-config, the checkpoint's architecture
            // ("" skips the check).
            let mc = model_config.unwrap_or_else(|| {
                if resume || cfg.init_from.is_some() {
                    String::new()
                } else {
                    "bert-mini".into()
                }
            });
            bert::train::pretrain(
                &mc,
                std::path::Path::new(&data),
                std::path::Path::new(&out),
                &cfg,
                resume,
            )
            .map(|s| eprintln!("bert pretrain: {s} -> {out}/checkpoint"))
            .map_err(Into::into)
        }
        Command::Data {
            corpus,
            tokenizer,
            out,
            max_seq_len,
            dupe_factor,
            short_seq_prob,
            masked_lm_prob,
            max_predictions,
            whole_word_mask,
            heldout,
            seed,
            force,
        } => bert::vocab::load_tokenizer(std::path::Path::new(&tokenizer)).and_then(|tok| {
            let cfg = bert::data::DataConfig {
                max_seq_len,
                dupe_factor,
                short_seq_prob,
                masked_lm_prob,
                max_predictions,
                whole_word_mask,
                seed,
                heldout_fraction: heldout,
            };
            bert::data::build(&corpus, &tok, std::path::Path::new(&out), &cfg, force)?;
            Ok(())
        }),
        Command::Tokenize {
            tokenizer,
            cased,
            no_special,
            pairs,
            format,
            max_len,
        } => {
            let opts = bert::tokenize::TokenizeOptions {
                cased,
                special: !no_special,
                pairs,
                format: format.into(),
                max_len,
            };
            let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
            bert::tokenize::tokenize_stream(&tokenizer, &opts, stdin.lock(), stdout.lock())
        }
        Command::Vocab {
            corpus,
            size,
            out,
            cased,
            min_frequency,
            limit_alphabet,
            algorithm,
        } => bert::vocab::build(
            &corpus,
            std::path::Path::new(&out),
            &bert::vocab::VocabOptions {
                size,
                cased,
                min_frequency,
                limit_alphabet,
                algorithm,
            },
        )
        .map(|_| ()),
    };
    if let Err(e) = result {
        // A reader that stopped early (`bert tokenize ... | head`) is not an error.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return;
        }
        eprintln!("bert: {e}");
        std::process::exit(1);
    }
}
