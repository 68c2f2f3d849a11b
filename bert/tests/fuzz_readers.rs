//! Every file reader under random mutation: each returns Ok or an error, never panics, never
//! hangs; what it accepts is usable (a shard's every record and batch reads). The readers:
//! config.json, tokenizer.json, vocab.txt, `bert data` shards, trainer.json and fine-tuning
//! TSV, CoNLL and SQuAD JSON (safetensors: bert/tests/checkpoints.rs). Cases per reader: `FUZZ_CASES` (default 256;
//! CI fixes the seed with PROPTEST_RNG_SEED, a longer run by hand: `FUZZ_CASES=20000 cargo test
//! -p bert --test fuzz_readers`).

mod common;
use proptest::prelude::*;
use std::path::PathBuf;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Random edits of `base`: byte overwrites, insertions, deletions, a truncation.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Cut(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        // Structural bytes more often than random ones.
        2 => (any::<usize>(), proptest::collection::vec(prop_oneof![
            Just(b'"'), Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b','), Just(b':'),
            Just(b'\t'), Just(b'\n'), Just(b'-'), Just(b'9'), Just(b'0'), Just(b'e'), any::<u8>()
        ], 1..6)).prop_map(|(i, b)| Edit::Insert(i, b)),
        2 => (any::<usize>(), 1usize..12).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => any::<usize>().prop_map(Edit::Cut),
    ];
    proptest::collection::vec(one, 1..8)
}

fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = base.to_vec();
    for e in edits {
        if b.is_empty() {
            break;
        }
        match e {
            Edit::Set(i, v) => {
                let i = i % b.len();
                b[i] = *v;
            }
            Edit::Insert(i, v) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = i % b.len();
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Cut(i) => b.truncate(i % b.len()),
        }
    }
    b
}

/// A file of this test process for the readers that take a path.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("bert-fuzz-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The valid inputs the mutations start from, written once.
struct Bases {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    vocab: Vec<u8>,
    shard: Vec<u8>,
    trainer: Vec<u8>,
    tsv: Vec<u8>,
    conll: Vec<u8>,
    squad: Vec<u8>,
}

fn bases() -> &'static Bases {
    static B: std::sync::OnceLock<Bases> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let dir = common::tmp("fuzz-bases");
        common::tiny_data(&dir);
        let cfg = bert::BertConfig::preset("bert-tiny", 60).unwrap();
        Bases {
            config: serde_json::to_string_pretty(&cfg.to_json())
                .unwrap()
                .into_bytes(),
            tokenizer: std::fs::read(dir.join("tokenizer.json")).unwrap(),
            vocab: std::fs::read(dir.join("vocab.txt")).unwrap(),
            shard: std::fs::read(dir.join("heldout.bin")).unwrap(),
            trainer: br#"{"step": 3, "total_steps": 8, "seconds": 1.5, "seed": 42, "batch": 8, "lr": 0.003,
  "args": {"steps": 8, "minutes": null, "batch": 8, "accum": 2, "lr": 0.003, "warmup": 2.0}}"#
                .to_vec(),
            tsv: b"text\tlabel\nthe red cat\tred\nthe blue sky\tblue\n\na pair\tof texts\tred\n".to_vec(),
            conll: b"-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\nPeter\tB-PER\nBlackburn\tI-PER\n"
                .to_vec(),
            squad: br#"{"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "w1 w2 w3, w4!",
  "qas": [{"id": "a", "question": "w1?", "answers": [{"text": "w2 w3", "answer_start": 3}], "is_impossible": false},
          {"id": "b", "question": "w4 w4?", "answers": [], "is_impossible": true}]}]}]}"#
                .to_vec(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn config_json(e in edits()) {
        let b = apply(&bases().config, &e);
        if let Ok(c) = bert::BertConfig::from_json_str(&String::from_utf8_lossy(&b), "fuzz") {
            // Accepted: it is a valid configuration.
            prop_assert!(c.validate().is_ok());
        }
    }

    #[test]
    fn tokenizer_json(e in edits()) {
        let b = apply(&bases().tokenizer, &e);
        if let Ok(t) = tokenizer::parse_tokenizer_json(&String::from_utf8_lossy(&b), "fuzz") {
            let enc = t.encode("w1 w2 unknown, w3!", true);
            prop_assert!(enc.ids.iter().all(|&i| (i as usize) < t.vocab.len()));
        }
    }

    #[test]
    fn vocab_txt(e in edits()) {
        let b = apply(&bases().vocab, &e);
        let p = file("vocab.txt", &b);
        if let Ok(t) = tokenizer::BertTokenizer::from_vocab_file(&p.display().to_string(), false) {
            let enc = t.encode("w1 w2 unknown w3", true);
            prop_assert!(enc.ids.iter().all(|&i| (i as usize) < t.vocab.len()));
        }
    }

    #[test]
    fn shard(e in edits(), header in proptest::option::of((0usize..8, any::<u32>()))) {
        let mut b = apply(&bases().shard, &e);
        // Header fields rewritten too (counts, lengths), where overflow would hide.
        if let Some((f, v)) = header {
            if b.len() >= 32 {
                b[8 + 4 * (f % 6)..12 + 4 * (f % 6)].copy_from_slice(&v.to_le_bytes());
            }
        }
        let p = file("shard.bin", &b);
        if let Ok(s) = bert::data::Shard::open(&p, 60) {
            for i in 0..s.len() {
                let x = s.get(i);
                prop_assert!(x.tokens.len() <= s.max_seq_len);
            }
        }
    }

    #[test]
    fn trainer_json(e in edits()) {
        let b = apply(&bases().trainer, &e);
        if let Ok(t) = bert::train::TrainerState::parse(&String::from_utf8_lossy(&b), "fuzz") {
            prop_assert!(t.step <= t.total_steps && t.total_steps > 0);
        }
    }

    #[test]
    fn tsv(e in edits()) {
        let b = apply(&bases().tsv, &e);
        let p = file("data.tsv", &b);
        let mut labels = Vec::new();
        if let Ok(ex) = bert::finetune::read_tsv(&p, &mut labels) {
            prop_assert!(ex.iter().all(|x| x.label < labels.len()));
        }
    }

    #[test]
    fn conll(e in edits()) {
        let b = apply(&bases().conll, &e);
        let p = file("data.conll", &b);
        let mut tags = Vec::new();
        if let Ok(s) = bert::finetune::tokencls::read_conll(&p, &mut tags, true) {
            prop_assert!(s.iter().all(|x| !x.words.is_empty() && x.words.len() == x.tags.len()
                && x.tags.iter().all(|&t| t < tags.len())));
        }
    }

    #[test]
    fn squad_json(e in edits()) {
        let b = apply(&bases().squad, &e);
        let p = file("squad.json", &b);
        if let Ok((ex, _, _)) = bert::finetune::qa::read_squad(&p) {
            // Accepted answers lie inside their context, and the examples make windows.
            for x in &ex {
                let n = x.context.chars().count();
                prop_assert!(x.answers.iter().all(|(t, s)| s + t.chars().count() <= n));
            }
            let mut t = tokenizer::parse_tokenizer_json(
                &String::from_utf8_lossy(&bases().tokenizer), "fuzz").unwrap();
            t.truncation = Some(tokenizer::Truncation {
                max_length: 16,
                strategy: tokenizer::TruncationStrategy::OnlySecond,
                stride: 4,
                left: false,
            });
            for x in &ex {
                if let Ok(w) = bert::finetune::qa::windows(std::slice::from_ref(x), &t) {
                    prop_assert!(w.iter().all(|w| w.feature.ids.len() <= 16));
                }
            }
        }
    }
}
