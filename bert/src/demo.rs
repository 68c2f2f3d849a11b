//! The end-to-end training demo (`bert demo --corpus DIR`, `scripts/demo`): a vocabulary, pretraining
//! shards, pretraining, fill-mask, fine-tuning of each task family pretrained against from
//! scratch, and a report (OUT/report.md with plots). [`Recipe`] is what it pretrains; [`run`] runs it all.

use std::io::Write;
use std::path::Path;

/// `println!` that returns the error (a full disk, a closed pipe) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { writeln!(std::io::stdout().lock(), $($t)*) };
}

/// One pretraining phase: its data (sequence length, masked positions) and batch, and its share
/// of the pretraining budget. Each phase after the first starts from the previous one's weights
/// (`--init-from`), with a fresh schedule, as BERT's short-then-long phases did.
#[derive(Clone, Debug)]
pub struct Phase {
    pub max_seq_len: usize,
    pub max_predictions: usize,
    pub batch: usize,
    pub share: f64,
}

/// What the demo pretrains, where, and how: the recipe. The CPU's was chosen by measured
/// ablations on two cores (README, "Pretraining recipes"; scripts/pretrain-recipes).
#[derive(Clone, Debug)]
pub struct Recipe {
    pub device: crate::train::TrainDevice,
    pub config: String,
    pub lr: f32,
    pub warmup: f64,
    /// The share of each phase's steps the rate decays over (`bert pretrain --decay`).
    pub decay: f64,
    /// Hidden and attention dropout (None: the preset's 0.1).
    pub dropout: Option<f32>,
    pub phases: Vec<Phase>,
    pub eval_every: u64,
}

impl Recipe {
    /// Two CPU cores, minutes: the smallest BERT without dropout, first on sequences of 16
    /// tokens (60% of the budget), then of 32, at a moderate peak rate held until the last 20%
    /// of each phase. Measured (README): higher rates and longer sequences learn to copy the
    /// input and the unigram frequencies, and nothing from context, in the first minutes.
    pub fn cpu(device: crate::train::TrainDevice) -> Self {
        Recipe {
            device,
            config: "bert-tiny".into(),
            lr: 5e-4,
            warmup: 0.1,
            decay: 0.2,
            dropout: Some(0.0),
            phases: vec![
                Phase {
                    max_seq_len: 16,
                    max_predictions: 3,
                    batch: 64,
                    share: 0.6,
                },
                Phase {
                    max_seq_len: 32,
                    max_predictions: 5,
                    batch: 32,
                    share: 0.4,
                },
            ],
            eval_every: 100,
        }
    }

    /// A GPU: BERT-Small, batch 128 of 128 tokens.
    pub fn gpu(device: crate::train::TrainDevice) -> Self {
        Recipe {
            device,
            config: "bert-small".into(),
            lr: 5e-4,
            warmup: 0.1,
            decay: 1.0,
            dropout: None,
            phases: vec![Phase {
                max_seq_len: 128,
                max_predictions: 20,
                batch: 128,
                share: 1.0,
            }],
            eval_every: 25,
        }
    }
}

/// The demo's first part: the engine's instruction sets, then (given a model directory such as
/// all-MiniLM-L6-v2) sentence embeddings of five texts and their cosine similarities.
pub fn embedding_showcase(
    model: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    use engine::simd::Isa;
    writeln!(
        out,
        "  tensor engine: CPU kernels {:?} (using {:?}); bf16 GEMM {}",
        Isa::available(),
        Isa::best(),
        engine::gemm::bf16::bf16_mode(Isa::best())
    )?;
    let Some(dir) = model else {
        writeln!(out, "  (give --model DIR, or run scripts/demo, for sentence embeddings with all-MiniLM-L6-v2)")?;
        return Ok(());
    };
    let t = std::time::Instant::now();
    let (model, tok) = crate::embed::load_for_embedding(dir)?;
    writeln!(
        out,
        "  loaded {}: {} layers, hidden {}, {:.1} M parameters, in {:.2} s",
        dir.display(),
        model.config.num_hidden_layers,
        model.config.hidden_size,
        model.params.numel() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    )?;
    let texts = [
        "A man is playing a guitar.",
        "Someone plays an instrument on stage.",
        "The cat sleeps on the warm windowsill.",
        "A kitten is napping in the sun.",
        "Interest rates rose by half a point.",
    ];
    let t = std::time::Instant::now();
    let v = crate::embed::embed_texts(&model, &tok, &texts, crate::embed::Pooling::Mean, true)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let h = model.config.hidden_size;
    writeln!(
        out,
        "  sentence embeddings (mean pooling, normalized) of {} texts in {ms:.0} ms; cosine similarities:",
        texts.len()
    )?;
    for (i, a) in texts.iter().enumerate() {
        let row: Vec<String> = (0..texts.len())
            .map(|j| {
                format!(
                    "{:5.2}",
                    crate::embed::cosine(&v[i * h..(i + 1) * h], &v[j * h..(j + 1) * h])
                )
            })
            .collect();
        writeln!(out, "    [{i}] {} {a}", row.join(" "))?;
    }
    writeln!(
        out,
        "  more: bert embed | similarity | info | tokenize | vocab (bert --help); README.md"
    )?;
    Ok(())
}

/// The training demo: corpus -> vocabulary -> shards -> pretraining -> fill-mask -> fine-tuning
/// of each task family (sequence classification, token classification, question answering),
/// pretrained and from scratch, same budget -> OUT/report.md with plots. `corpus_dir` holds
/// corpus.txt and wordnet/ (scripts/fetch-corpus), `brown` the Brown corpus
/// (scripts/fetch-brown); `minutes` is split 60% pretraining, 40% for the six fine-tuning runs.
/// Progress goes to stdout (errors writing it are returned).
pub fn run(
    corpus_dir: &str,
    brown: &str,
    out: &str,
    minutes: f64,
    vocab_size: usize,
    dm: &Recipe,
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::report::{line_chart, Series};
    let t0 = std::time::Instant::now();
    let corpus = format!("{corpus_dir}/corpus.txt");
    let wordnet = format!("{corpus_dir}/wordnet");
    std::fs::create_dir_all(out).map_err(|e| format!("{out}: {e}"))?;
    let step = |s: &str| outln!("\n== {s} ({:.0} s)", t0.elapsed().as_secs_f64());
    step("1/6 WordPiece vocabulary")?;
    let vdir = format!("{out}/vocab");
    let vocab_score = crate::vocab::build(
        std::slice::from_ref(&corpus),
        Path::new(&vdir),
        &crate::vocab::VocabOptions {
            size: vocab_size,
            ..Default::default()
        },
    )?;
    step("2/6 pretraining data")?;
    let tok = crate::vocab::load_tokenizer(&Path::new(&vdir).join("tokenizer.json"))?;
    let last = dm
        .phases
        .len()
        .checked_sub(1)
        .ok_or("a recipe needs a phase")?;
    // One data folder per phase; the last phase's is OUT/data, its run OUT/pretrain.
    let name = |i: usize, what: &str| {
        if i == last {
            format!("{out}/{what}")
        } else {
            format!("{out}/{what}-s{}", dm.phases[i].max_seq_len)
        }
    };
    for (i, ph) in dm.phases.iter().enumerate() {
        let dcfg = crate::data::DataConfig {
            max_seq_len: ph.max_seq_len,
            max_predictions: ph.max_predictions,
            ..Default::default()
        };
        crate::data::build(
            std::slice::from_ref(&corpus),
            &tok,
            Path::new(&name(i, "data")),
            &dcfg,
            true,
        )?;
    }
    let pt_minutes = minutes * (1.0 - FINETUNE_SHARE);
    let mut phase_runs = Vec::new();
    for (i, ph) in dm.phases.iter().enumerate() {
        step(&format!(
            "3/6 pretraining {} on {:?}, phase {} of {}: sequences of {} tokens, batch {}",
            dm.config,
            dm.device,
            i + 1,
            dm.phases.len(),
            ph.max_seq_len,
            ph.batch
        ))?;
        let pcfg = crate::train::PretrainConfig {
            steps: None,
            minutes: Some(pt_minutes * ph.share),
            batch: ph.batch,
            device: dm.device,
            lr: dm.lr,
            warmup: dm.warmup,
            decay: dm.decay,
            dropout: dm.dropout,
            eval_every: dm.eval_every,
            // About 320 held-out sequences per evaluation, whatever the batch size.
            eval_batches: 320usize.div_ceil(ph.batch).max(1),
            checkpoint_every: 1000,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            // The demo's folder is its own: a second demo replaces the first one's runs.
            force: true,
            init_from: (i > 0).then(|| Path::new(&name(i - 1, "pretrain")).join("checkpoint")),
            ..Default::default()
        };
        let pdir = name(i, "pretrain");
        let ps = crate::train::pretrain(
            &dm.config,
            Path::new(&name(i, "data")),
            Path::new(&pdir),
            &pcfg,
            false,
        )?;
        outln!(
            "pretrained {} steps in {:.0} s ({:.0} tokens/s); held-out MLM accuracy {:.3} (most frequent token {:.3}); at [MASK] inputs, from context alone, {:.3} (most frequent token {:.3}); NSP accuracy {:.3} (the more frequent label {:.3})",
            ps.steps, ps.seconds, ps.tokens_per_second, ps.eval.mlm_accuracy, ps.eval.majority_accuracy,
            ps.eval.mlm_accuracy_at_mask, ps.eval.majority_accuracy_at_mask, ps.eval.nsp_accuracy,
            ps.eval.nsp_majority_accuracy
        )?;
        phase_runs.push((ph.clone(), pdir, ps));
    }
    let (_, pdir, ps) = phase_runs.last().cloned().expect("a phase ran");
    step("4/6 fill-mask")?;
    let ckpt = format!("{pdir}/checkpoint");
    let fm = crate::fill_mask::FillMask::load(Path::new(&ckpt))?;
    let mut fills = String::new();
    for text in [
        "The [MASK] is the largest animal that lives in the sea.",
        "A small bird that [MASK] in the spring.",
        "The function returns a [MASK] of the list.",
        "To cut with a [MASK].",
    ] {
        let r = fm.fill(text, 3)?.to_text();
        outln!("{text}\n{r}")?;
        fills += &format!("`{text}`\n\n```\n{r}```\n\n");
    }
    step("5/6 fine-tuning, three task families: pretrained, then from scratch")?;
    let dirs = crate::finetune::DataDirs {
        wordnet: wordnet.clone().into(),
        brown: brown.into(),
    };
    let mut families = Vec::new();
    for (b, max_len) in [
        (crate::finetune::Builtin::WordnetSupersense, 64),
        (crate::finetune::Builtin::BrownPos, 64),
        (crate::finetune::Builtin::WordnetQa, 128),
    ] {
        let data =
            crate::finetune::load_dataset(b.family(), Some(b), (None, None, None), &dirs, None)?;
        let fcfg = crate::finetune::FinetuneConfig {
            steps: None,
            minutes: Some(minutes * FINETUNE_SHARE / 6.0),
            // A short budget: a higher rate than BERT's usual 2e-5..1e-4, the same for both
            // runs (WordNet supersenses on the 2-minute demo's checkpoint, 480 steps: test
            // accuracy 0.151 pretrained, 0.278 from scratch at 3e-4; 0.272 and 0.406 at 1e-3).
            lr: 1e-3,
            max_len: Some(max_len),
            doc_stride: 32,
            eval_max: 1000,
            final_max: 2000,
            evals: 8,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            force: true,
            ..Default::default()
        };
        // The pretrained run has the time budget; the scratch run then takes as many steps (same
        // batches, same schedule), so the two differ only in their initial weights.
        let mut runs: Vec<crate::finetune::FinetuneReport> = Vec::new();
        for scratch in [false, true] {
            let dir = format!(
                "{out}/finetune-{}-{}",
                b.name(),
                if scratch { "scratch" } else { "pretrained" }
            );
            let c = match runs.first() {
                Some(r) => crate::finetune::FinetuneConfig {
                    steps: Some(r.steps),
                    minutes: None,
                    ..fcfg.clone()
                },
                None => fcfg.clone(),
            };
            runs.push(crate::finetune::run(
                Path::new(&ckpt),
                &data,
                Path::new(&dir),
                &c,
                scratch,
            )?);
        }
        let scr = runs.pop().expect("two runs");
        let pre = runs.pop().expect("two runs");
        families.push((b, data.describe(), pre, scr));
    }
    step("6/6 report")?;
    crate::report::write_pretrain_plots(
        Path::new(&format!("{pdir}/metrics.jsonl")),
        Path::new(out),
    )?;
    let curve = |r: &crate::finetune::FinetuneReport| {
        r.curve
            .iter()
            .map(|&(s, a)| (s as f64, if a > 1.0 { a / 100.0 } else { a }))
            .collect::<Vec<_>>()
    };
    let mut ft_section = String::new();
    let mut ft_line = Vec::new();
    for (b, desc, pre, scr) in &families {
        let names: Vec<String> = families_figures(*b).iter().map(|s| s.to_string()).collect();
        let svg = format!("finetune_{}.svg", b.name());
        std::fs::write(
            format!("{out}/{svg}"),
            line_chart(
                &format!("{}: dev {}", b.name(), pre.dev.primary),
                "step",
                &pre.dev.primary,
                &[
                    Series {
                        name: "pretrained",
                        points: curve(pre),
                    },
                    Series {
                        name: "from scratch",
                        points: curve(scr),
                    },
                ],
            ),
        )?;
        let test = |r: &crate::finetune::FinetuneReport| r.test.clone().unwrap_or_default();
        let (tp, ts) = (test(pre), test(scr));
        ft_section += &format!(
            "### {} ({desc})\n\nTest set ({} examples):\n\n| initialisation | steps | {} | dev {} |\n|---|---|{}---|\n",
            b.name(),
            tp.get("n").max(tp.get("total")).max(0.0),
            names.join(" | "),
            pre.dev.primary,
            "---|".repeat(names.len())
        );
        for (label, r, t) in [("pretrained", pre, &tp), ("from scratch", scr, &ts)] {
            ft_section += &format!(
                "| {label} | {} | {} | {:.4} |\n",
                r.steps,
                names
                    .iter()
                    .map(|k| format!("{:.4}", t.get(k)))
                    .collect::<Vec<_>>()
                    .join(" | "),
                r.dev.primary_value()
            );
        }
        ft_section += &format!("\n![{}]({svg})\n\n", b.name());
        ft_line.push(format!(
            "{} test {} {:.4} pretrained vs {:.4} from scratch",
            b.name(),
            names[0],
            tp.get(&names[0]),
            ts.get(&names[0])
        ));
    }
    let model_desc = match crate::BertConfig::preset(&dm.config, vocab_size) {
        Ok(c) => format!(
            "{}: {} layers, hidden {}, {} heads, on {:?}",
            dm.config, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, dm.device
        ),
        Err(_) => format!("{}, on {:?}", dm.config, dm.device),
    };
    let phases: Vec<String> = dm
        .phases
        .iter()
        .map(|p| {
            format!(
                "{:.0}% of the budget on sequences of up to {} tokens (at most {} masked), batch {}",
                100.0 * p.share,
                p.max_seq_len,
                p.max_predictions,
                p.batch
            )
        })
        .collect();
    let recipe = format!(
        "{}; each phase after the first starts from the previous one's weights; peak learning rate {}, warmup {} of the steps, held, then linear decay over the last {} of them; dropout {}",
        phases.join(", then "),
        dm.lr,
        dm.warmup,
        dm.decay,
        dm.dropout.map_or("0.1 (the preset's)".to_string(), |p| p.to_string())
    );
    let vocab_line = format!(
        "Vocabulary: {} pieces by `bert vocab` (Google's top-down WordPiece learner); on the {} held-out words of every 50th corpus line, {:.3} pieces per word (most frequent: {}).",
        vocab_size,
        vocab_score.words,
        vocab_score.ratio(),
        vocab_score
            .top
            .iter()
            .map(|(t, f)| format!("`{t}` {:.1}%", 100.0 * f))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut curve_table = String::new();
    for (i, (ph, dir, _)) in phase_runs.iter().enumerate() {
        curve_table += &format!(
            "Phase {} (sequences of up to {} tokens, its own held-out set):\n\n{}\n",
            i + 1,
            ph.max_seq_len,
            learning_curve_table(Path::new(&format!("{dir}/metrics.jsonl")))?
        );
    }
    let report = format!(
        "# bert demo report\n\n\
         Corpus: `{corpus}` (Debian's dict-gcide without its WordNet senses, dict-foldoc, python3.11-doc and perl-doc).\n\
         Budget: {minutes} minutes for pretraining and fine-tuning; whole run {:.0} s on {} threads.\n\n\
         {vocab_line}\n\n\
         ## Pretraining ({model_desc})\n\n\
         Recipe: {recipe}.\n\n\
         | steps | seconds | tokens/s | last loss | held-out MLM accuracy | most-frequent-token accuracy | MLM accuracy at [MASK] inputs | most frequent token there | NSP accuracy | more frequent NSP label |\n\
         |---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n\n\
         The masked positions show `[MASK]` (80%), the token itself (10%) or a random token (10%): a model that copies its \
         input scores about 0.1 on all of them without using any context, so the column at `[MASK]` inputs is the one that \
         says whether it learned from context.\n\n\
         Learning curve (held-out, every evaluation or a sample of them):\n\n{curve_table}\n\
         ![accuracy](pretrain_accuracy.svg)\n\n![loss](pretrain_loss.svg)\n\n\
         ## Fill-mask with the pretrained model\n\n{fills}\
         ## Fine-tuning: three task families, pretrained against from scratch\n\n\
         Each family on its built-in data set, the pretrained encoder with a fresh head against the same architecture \
         from random initialisation: the pretrained run for {:.0} seconds, the one from scratch for as many steps; same \
         batches, rate, schedule and seed.\n\n{ft_section}",
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads(),
        ps.steps, ps.seconds, ps.tokens_per_second, ps.final_loss, ps.eval.mlm_accuracy, ps.eval.majority_accuracy,
        ps.eval.mlm_accuracy_at_mask, ps.eval.majority_accuracy_at_mask, ps.eval.nsp_accuracy,
        ps.eval.nsp_majority_accuracy,
        minutes * FINETUNE_SHARE / 6.0 * 60.0,
    );
    crate::io::write_atomic(&Path::new(out).join("report.md"), report.as_bytes())?;
    outln!(
        "\nbert demo: done in {:.0} s. Held-out MLM accuracy {:.3} vs {:.3} for the most frequent token ({:.3} vs {:.3} at [MASK] inputs); {}. Report: {out}/report.md",
        t0.elapsed().as_secs_f64(), ps.eval.mlm_accuracy, ps.eval.majority_accuracy,
        ps.eval.mlm_accuracy_at_mask, ps.eval.majority_accuracy_at_mask, ft_line.join("; ")
    )?;
    Ok(())
}

/// The share of the demo's budget that fine-tuning takes (six runs: three families, pretrained
/// and from scratch); pretraining takes the rest.
pub const FINETUNE_SHARE: f64 = 0.4;

/// The test figures the demo's report shows for a built-in data set, the first the headline.
fn families_figures(b: crate::finetune::Builtin) -> &'static [&'static str] {
    match b {
        crate::finetune::Builtin::WordnetSupersense => &["accuracy", "macro_f1"],
        crate::finetune::Builtin::BrownPos => &["accuracy"],
        crate::finetune::Builtin::WordnetQa => &["f1", "exact", "HasAns_f1", "NoAns_exact"],
    }
}

/// The held-out evaluations of a pretraining run's metrics.jsonl as a markdown table against
/// wall-clock (at most 12 rows, evenly spaced, the last one always).
pub fn learning_curve_table(metrics: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let evals: Vec<serde_json::Value> = crate::report::read_metrics(metrics)?
        .into_iter()
        .filter(|m| m.get("eval_mlm_accuracy").is_some())
        .collect();
    let mut t = String::from(
        "| minutes | step | MLM accuracy | most frequent token | at [MASK] inputs | most frequent there | NSP accuracy | more frequent NSP label | MLM loss |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let n = evals.len();
    let every = n.div_ceil(12).max(1);
    for (i, m) in evals.iter().enumerate() {
        if i % every != every - 1 && i + 1 != n {
            continue;
        }
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        t += &format!(
            "| {:.1} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            f("seconds") / 60.0,
            m["step"],
            f("eval_mlm_accuracy"),
            f("majority_accuracy"),
            f("eval_mlm_accuracy_at_mask"),
            f("majority_accuracy_at_mask"),
            f("eval_nsp_accuracy"),
            f("nsp_majority_accuracy"),
            f("eval_mlm_loss")
        );
    }
    Ok(t)
}
