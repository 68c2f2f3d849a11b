//! Pretraining data, as the original BERT builds it (google-research/bert,
//! create_pretraining_data.py: `create_instances_from_document`, `truncate_seq_pair`,
//! `create_masked_lm_predictions`), and the binary shards it is stored in.
//!
//! ```text
//! documents (sentences of token ids) --instances--> [CLS] A [SEP] B [SEP], segment ids,
//!   B the true continuation (50%) or a span of a random other document; pairs packed up to
//!   max_seq_len (a random shorter target with probability short_seq_prob); the longer side
//!   trimmed from a random end
//! masking: 15% of the non-special tokens (at most max_predictions, at least 1), whole words
//!   when asked; each chosen one becomes [MASK] 80%, a random token 10%, itself 10%
//! ```
//! Shards hold the original tokens and one static masking; [`Shard::batch`] applies that masking
//! or, for dynamic masking, draws a fresh one from a per-epoch seed.
//!
//! Shard file: a 32-byte header (`b"BERTSHRD"`, version, max_seq_len L, max_predictions P,
//! count, all u32 little-endian) then `count` records of `4 + L + 2P` u32: tokens, length of A
//! (with [CLS] and its [SEP]), is_random_next, masked count, tokens[L] (0-padded), masked
//! positions[P], the masked positions' input ids[P].

use crate::model::BertInput;
use crate::{BertError, Result};
use engine::rng::SplitMix64;
use std::path::Path;

/// How instances are built (the flags of `bert data`).
#[derive(Clone, Debug)]
pub struct DataConfig {
    pub max_seq_len: usize,
    pub dupe_factor: usize,
    pub short_seq_prob: f64,
    pub masked_lm_prob: f64,
    pub max_predictions: usize,
    pub whole_word_mask: bool,
    pub seed: u64,
    /// Share of documents held out (for evaluation), chosen by a hash of the seed and index.
    pub heldout_fraction: f64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            max_seq_len: 128,
            dupe_factor: 1,
            short_seq_prob: 0.1,
            masked_lm_prob: 0.15,
            max_predictions: 20,
            whole_word_mask: false,
            seed: 12345,
            heldout_fraction: 0.02,
        }
    }
}

/// The special ids and vocabulary facts masking needs.
#[derive(Clone, Debug)]
pub struct Specials {
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    pub vocab_size: u32,
    /// For whole-word masking: whether each id is a `##` continuation piece.
    pub is_continuation: Vec<bool>,
}

impl Specials {
    pub fn from_tokenizer(tok: &tokenizer::BertTokenizer) -> Result<Self> {
        let id = |t: &str| {
            tok.vocab
                .id(t)
                .ok_or_else(|| BertError::Input(format!("the vocabulary has no {t} token")))
        };
        Ok(Specials {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
            vocab_size: tok.vocab.len() as u32,
            is_continuation: tok
                .vocab
                .tokens()
                .iter()
                .map(|t| t.starts_with("##"))
                .collect(),
        })
    }
}

/// One pretraining example.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// [CLS] A [SEP] B [SEP], the original ids.
    pub tokens: Vec<u32>,
    /// Length of [CLS] A [SEP]; segment B follows.
    pub len_a: usize,
    pub is_random_next: bool,
    /// Masked positions, ascending, and the id each one is fed instead ([MASK], random, itself).
    pub masked_positions: Vec<usize>,
    pub masked_inputs: Vec<u32>,
}

struct Rng(SplitMix64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.0.next_u64() % (hi - lo + 1) as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.range(0, i);
            v.swap(i, j);
        }
    }
}

/// Chooses masked positions as `create_masked_lm_predictions` does; returns (positions
/// ascending, input id for each).
pub fn mask_tokens(
    tokens: &[u32],
    cfg: &DataConfig,
    sp: &Specials,
    seed: u64,
) -> (Vec<usize>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    // Candidate groups: single tokens, or whole words (a piece plus its ## continuations).
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        if t == sp.cls || t == sp.sep {
            continue;
        }
        let cont = sp.is_continuation.get(t as usize).copied().unwrap_or(false);
        match groups.last_mut() {
            Some(g) if cfg.whole_word_mask && cont && *g.last().unwrap() + 1 == i => g.push(i),
            _ => groups.push(vec![i]),
        }
    }
    rng.shuffle(&mut groups);
    // As the original: the share is of all tokens, [CLS] and [SEP] included.
    let want = cfg
        .max_predictions
        .min(((tokens.len() as f64 * cfg.masked_lm_prob).round() as usize).max(1));
    let mut chosen: Vec<(usize, u32)> = Vec::new();
    for g in groups {
        if chosen.len() >= want {
            break;
        }
        if chosen.len() + g.len() > want {
            continue;
        }
        for i in g {
            let r = rng.uniform();
            let input = if r < 0.8 {
                sp.mask
            } else if r < 0.9 {
                tokens[i]
            } else {
                (rng.0.next_u64() % sp.vocab_size as u64) as u32
            };
            chosen.push((i, input));
        }
    }
    chosen.sort_unstable();
    chosen.into_iter().unzip()
}

/// Trims the longer of two segments until they fit, from a random end (`truncate_seq_pair`).
/// The same random choices as removing one token at a time, but counted first and cut once:
/// linear in the segments' length (a token-by-token `remove(0)` was quadratic on a long line).
fn truncate_pair(a: &mut Vec<u32>, b: &mut Vec<u32>, max: usize, rng: &mut Rng) {
    // (tokens cut from the front, tokens cut from the back) of each segment.
    let (mut ca, mut cb) = ((0usize, 0usize), (0usize, 0usize));
    let (mut la, mut lb) = (a.len(), b.len());
    while la + lb > max {
        let (c, l) = if la > lb {
            (&mut ca, &mut la)
        } else {
            (&mut cb, &mut lb)
        };
        if rng.uniform() < 0.5 {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        *l -= 1;
    }
    for (t, (front, back)) in [(a, ca), (b, cb)] {
        t.truncate(t.len() - back);
        t.drain(..front);
    }
}

/// Instances from every document, `dupe_factor` times (each time with other random choices),
/// shuffled. `docs[d][s]` is the ids of sentence s of document d.
pub fn create_instances(docs: &[Vec<Vec<u32>>], cfg: &DataConfig, sp: &Specials) -> Vec<Instance> {
    let mut rng = Rng::new(cfg.seed);
    let mut out = Vec::new();
    let max_tokens = cfg.max_seq_len.saturating_sub(3).max(2);
    for _ in 0..cfg.dupe_factor {
        for d in 0..docs.len() {
            instances_from_document(docs, d, max_tokens, cfg, sp, &mut rng, &mut out);
        }
    }
    rng.shuffle(&mut out);
    out
}

fn instances_from_document(
    docs: &[Vec<Vec<u32>>],
    d: usize,
    max_tokens: usize,
    cfg: &DataConfig,
    sp: &Specials,
    rng: &mut Rng,
    out: &mut Vec<Instance>,
) {
    let doc = &docs[d];
    let target = if rng.uniform() < cfg.short_seq_prob {
        rng.range(2, max_tokens)
    } else {
        max_tokens
    };
    let mut chunk: Vec<&Vec<u32>> = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while i < doc.len() {
        chunk.push(&doc[i]);
        len += doc[i].len();
        if i == doc.len() - 1 || len >= target {
            if !chunk.is_empty() {
                let a_end = if chunk.len() >= 2 {
                    rng.range(1, chunk.len() - 1)
                } else {
                    1
                };
                let mut a: Vec<u32> = chunk[..a_end]
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let mut b: Vec<u32> = Vec::new();
                let random_next = chunk.len() == 1 || rng.uniform() < 0.5;
                let mut is_random = false;
                if random_next && docs.len() > 1 {
                    is_random = true;
                    let b_target = target.saturating_sub(a.len()).max(1);
                    // Ten tries at another document, as the original does.
                    let mut r = d;
                    for _ in 0..10 {
                        r = rng.range(0, docs.len() - 1);
                        if r != d {
                            break;
                        }
                    }
                    let rdoc = &docs[r];
                    if !rdoc.is_empty() {
                        let start = rng.range(0, rdoc.len() - 1);
                        for s in &rdoc[start..] {
                            b.extend_from_slice(s);
                            if b.len() >= b_target {
                                break;
                            }
                        }
                    }
                    // The unused segments go back to be used later.
                    i -= chunk.len() - a_end;
                } else {
                    b = chunk[a_end..]
                        .iter()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                }
                truncate_pair(&mut a, &mut b, max_tokens, rng);
                if !a.is_empty() && !b.is_empty() {
                    let mut tokens = Vec::with_capacity(a.len() + b.len() + 3);
                    tokens.push(sp.cls);
                    tokens.extend_from_slice(&a);
                    tokens.push(sp.sep);
                    let len_a = tokens.len();
                    tokens.extend_from_slice(&b);
                    tokens.push(sp.sep);
                    let (masked_positions, masked_inputs) =
                        mask_tokens(&tokens, cfg, sp, rng.0.next_u64());
                    out.push(Instance {
                        tokens,
                        len_a,
                        is_random_next: is_random,
                        masked_positions,
                        masked_inputs,
                    });
                }
            }
            chunk.clear();
            len = 0;
        }
        i += 1;
    }
}

const MAGIC: &[u8; 8] = b"BERTSHRD";
const VERSION: u32 = 1;
/// The longest sequence a shard may hold (a sanity bound on its header, far above BERT's 512).
pub const MAX_SEQ_LEN: usize = 1 << 16;

/// Writes instances as a shard (atomically).
pub fn write_shard(
    path: &Path,
    instances: &[Instance],
    max_seq_len: usize,
    max_pred: usize,
) -> Result<()> {
    let rec = 4 + max_seq_len + 2 * max_pred;
    crate::io::write_atomic_with(path, |w| {
        w.write_all(MAGIC)?;
        for v in [
            VERSION,
            max_seq_len as u32,
            max_pred as u32,
            instances.len() as u32,
            0,
            0,
        ] {
            w.write_all(&v.to_le_bytes())?;
        }
        let mut r = vec![0u32; rec];
        for x in instances {
            if x.tokens.len() > max_seq_len || x.masked_positions.len() > max_pred {
                return Err(std::io::Error::other(format!(
                    "an instance of {} tokens and {} predictions does not fit {max_seq_len} / {max_pred}",
                    x.tokens.len(),
                    x.masked_positions.len()
                )));
            }
            r.fill(0);
            r[0] = x.tokens.len() as u32;
            r[1] = x.len_a as u32;
            r[2] = x.is_random_next as u32;
            r[3] = x.masked_positions.len() as u32;
            r[4..4 + x.tokens.len()].copy_from_slice(&x.tokens);
            for (j, (&p, &m)) in x.masked_positions.iter().zip(&x.masked_inputs).enumerate() {
                r[4 + max_seq_len + j] = p as u32;
                r[4 + max_seq_len + max_pred + j] = m;
            }
            let bytes: Vec<u8> = r.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// A memory-mapped shard.
pub struct Shard {
    map: memmap2::Mmap,
    pub max_seq_len: usize,
    pub max_predictions: usize,
    len: usize,
    source: String,
}

impl Shard {
    /// Maps and validates `path` (header, size, every record's counts and ids against `vocab_size`).
    pub fn open(path: &Path, vocab_size: u32) -> Result<Self> {
        let source = path.display().to_string();
        let bad = |why: String| BertError::Input(format!("{source}: {why}"));
        let f = std::fs::File::open(path).map_err(|e| BertError::Io(format!("{source}: {e}")))?;
        // SAFETY: read-only mapping owned by the Shard; the file is ours and not modified while
        // training reads it (a truncation by another process is memmap's one caveat).
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|e| BertError::Io(format!("{source}: {e}")))?;
        if map.len() < 32 || &map[..8] != MAGIC {
            return Err(bad("not a shard (bad magic or too short)".into()));
        }
        let u =
            |i: usize| u32::from_le_bytes(map[8 + 4 * i..12 + 4 * i].try_into().unwrap()) as usize;
        if u(0) != VERSION as usize {
            return Err(bad(format!(
                "shard version {} (this build reads {VERSION})",
                u(0)
            )));
        }
        let (l, p, n) = (u(1), u(2), u(3));
        if !(3..=MAX_SEQ_LEN).contains(&l) || p > l {
            return Err(bad(format!(
                "header: max_seq_len {l} must be in 3..={MAX_SEQ_LEN} and max_predictions {p} at most max_seq_len"
            )));
        }
        let rec = 4 + l + 2 * p;
        // Checked: a crafted count near 2^32 must not wrap the expected size into a match.
        let want = n.checked_mul(rec * 4).and_then(|b| b.checked_add(32));
        if want != Some(map.len()) {
            return Err(bad(format!(
                "{} bytes do not hold {n} records of {rec} values after the header",
                map.len()
            )));
        }
        let s = Shard {
            map,
            max_seq_len: l,
            max_predictions: p,
            len: n,
            source: source.clone(),
        };
        for i in 0..n {
            let r = s.record(i);
            let (nt, na, nm) = (r[0] as usize, r[1] as usize, r[3] as usize);
            if nt > l || na > nt || nm > p || r[2] > 1 {
                return Err(bad(format!("record {i} has inconsistent counts")));
            }
            if r[4..4 + nt]
                .iter()
                .chain(&r[4 + l + p..4 + l + p + nm])
                .any(|&t| t >= vocab_size)
            {
                return Err(bad(format!(
                    "record {i} holds an id outside the vocabulary of {vocab_size}"
                )));
            }
            if r[4 + l..4 + l + nm].iter().any(|&q| q as usize >= nt) {
                return Err(bad(format!("record {i} masks a position past its tokens")));
            }
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn source(&self) -> &str {
        &self.source
    }

    fn record(&self, i: usize) -> Vec<u32> {
        let rec = 4 + self.max_seq_len + 2 * self.max_predictions;
        let at = 32 + i * rec * 4;
        self.map[at..at + rec * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Instance `i` as stored.
    pub fn get(&self, i: usize) -> Instance {
        let r = self.record(i);
        let (l, p) = (self.max_seq_len, self.max_predictions);
        let (nt, nm) = (r[0] as usize, r[3] as usize);
        Instance {
            tokens: r[4..4 + nt].to_vec(),
            len_a: r[1] as usize,
            is_random_next: r[2] == 1,
            masked_positions: r[4 + l..4 + l + nm].iter().map(|&x| x as usize).collect(),
            masked_inputs: r[4 + l + p..4 + l + p + nm].to_vec(),
        }
    }

    /// A training batch of instances `ids`, padded to the longest: the model input, MLM labels
    /// (B*S, -100 where nothing is predicted) and NSP labels (0 = B follows A, 1 = random).
    /// `remask`: Some((config, specials, seed)) draws a fresh masking (dynamic masking).
    pub fn batch(
        &self,
        ids: &[usize],
        pad_id: u32,
        remask: Option<(&DataConfig, &Specials, u64)>,
    ) -> (BertInput, Vec<i64>, Vec<i64>) {
        let insts: Vec<Instance> = ids.iter().map(|&i| self.get(i)).collect();
        let seq = insts.iter().map(|x| x.tokens.len()).max().unwrap_or(0);
        let b = insts.len();
        let mut x = BertInput {
            batch: b,
            seq,
            input_ids: vec![pad_id as i64; b * seq],
            token_type_ids: vec![0; b * seq],
            attention_mask: vec![0.0; b * seq],
        };
        let mut labels = vec![-100i64; b * seq];
        let mut nsp = Vec::with_capacity(b);
        for (k, (inst, &id)) in insts.iter().zip(ids).enumerate() {
            let (pos, inp) = match remask {
                Some((cfg, sp, seed)) => mask_tokens(
                    &inst.tokens,
                    cfg,
                    sp,
                    seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                None => (inst.masked_positions.clone(), inst.masked_inputs.clone()),
            };
            for (j, &t) in inst.tokens.iter().enumerate() {
                x.input_ids[k * seq + j] = t as i64;
                x.token_type_ids[k * seq + j] = (j >= inst.len_a) as i64;
                x.attention_mask[k * seq + j] = 1.0;
            }
            for (&p, &m) in pos.iter().zip(&inp) {
                labels[k * seq + p] = inst.tokens[p] as i64;
                x.input_ids[k * seq + p] = m as i64;
            }
            nsp.push(inst.is_random_next as i64);
        }
        (x, labels, nsp)
    }
}

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct BuildSummary {
    pub documents: usize,
    pub tokens: usize,
    pub train_instances: usize,
    pub heldout_instances: usize,
}

impl DataConfig {
    /// Every option in its range, the limit in the message.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(BertError::Input(why));
        if !(8..=4096).contains(&self.max_seq_len) {
            return bad(format!(
                "--max-seq-len {} is outside 8..=4096",
                self.max_seq_len
            ));
        }
        if self.max_predictions == 0 || self.max_predictions > self.max_seq_len {
            return bad(format!(
                "--max-predictions {} must be in 1..={} (--max-seq-len)",
                self.max_predictions, self.max_seq_len
            ));
        }
        if !(1..=100).contains(&self.dupe_factor) {
            return bad(format!(
                "--dupe-factor {} is outside 1..=100",
                self.dupe_factor
            ));
        }
        if !(self.masked_lm_prob > 0.0 && self.masked_lm_prob < 1.0) {
            return bad(format!(
                "--masked-lm-prob {} must be in (0, 1)",
                self.masked_lm_prob
            ));
        }
        if !(0.0..=1.0).contains(&self.short_seq_prob) {
            return bad(format!(
                "--short-seq-prob {} must be in [0, 1]",
                self.short_seq_prob
            ));
        }
        if !(0.0..1.0).contains(&self.heldout_fraction) {
            return bad(format!(
                "--heldout {} must be in [0, 1)",
                self.heldout_fraction
            ));
        }
        Ok(())
    }
}

/// `bert data`: tokenizes `corpus` (one sentence per line, blank lines between documents),
/// splits documents into training and held-out by a seeded hash, builds instances and writes
/// `out/{train.bin, heldout.bin, data.json, tokenizer.json, vocab.txt}`. The folder is built
/// aside and switched in whole on success ([`crate::io::StagedDir`]); an `out` that holds files
/// is an error unless `force`, and a corpus that yields no training instance writes nothing.
pub fn build(
    corpus: &[String],
    tok: &tokenizer::BertTokenizer,
    out: &Path,
    cfg: &DataConfig,
    force: bool,
) -> Result<BuildSummary> {
    cfg.validate()?;
    let start = std::time::Instant::now();
    let busy = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if busy && !force {
        return Err(BertError::Input(format!(
            "{} is not empty: pass --force to replace it (its files are replaced only once the new data is complete)",
            out.display()
        )));
    }
    if out.exists() && !out.is_dir() {
        return Err(BertError::Input(format!("{}: not a folder", out.display())));
    }
    let sp = Specials::from_tokenizer(tok)?;
    let docs = read_documents(corpus)?;
    if docs.is_empty() {
        return Err(BertError::Input(format!(
            "{}: no documents (one sentence per line, blank lines between documents)",
            corpus.join(", ")
        )));
    }
    let n_sent: usize = docs.iter().map(Vec::len).sum();
    eprintln!(
        "bert data: {} documents, {n_sent} sentences; tokenizing ...",
        docs.len()
    );
    let mut train = Vec::new();
    let mut held = Vec::new();
    let mut n_tokens = 0usize;
    for (d, doc) in docs.iter().enumerate() {
        let refs: Vec<&str> = doc.iter().map(String::as_str).collect();
        let ids: Vec<Vec<u32>> = tok
            .encode_batch(&refs, false)
            .into_iter()
            .map(|e| e.ids)
            .filter(|v| !v.is_empty())
            .collect();
        n_tokens += ids.iter().map(Vec::len).sum::<usize>();
        if is_heldout(d, cfg) {
            held.push(ids);
        } else {
            train.push(ids);
        }
    }
    eprintln!(
        "bert data: {n_tokens} tokens ({:.1} s); building instances ...",
        start.elapsed().as_secs_f64()
    );
    let train_inst = create_instances(&train, cfg, &sp);
    let held_cfg = DataConfig {
        dupe_factor: 1,
        seed: cfg.seed ^ 0x4E1D,
        ..cfg.clone()
    };
    let held_inst = create_instances(&held, &held_cfg, &sp);
    if train_inst.is_empty() {
        return Err(BertError::Input(format!(
            "{}: {} documents of {n_tokens} tokens make no training instance (an instance needs a document of two or more sentences); nothing written",
            corpus.join(", "),
            train.len()
        )));
    }
    if held_inst.is_empty() && cfg.heldout_fraction > 0.0 {
        eprintln!(
            "bert data: warning: no held-out instances (the corpus has {} documents; a held-out share of {} took {}): pretraining will report no held-out accuracy",
            docs.len(),
            cfg.heldout_fraction,
            held.len()
        );
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| BertError::Io(format!("{}: {e}", parent.display())))?;
    }
    let staged = crate::io::StagedDir::new(out)?;
    let dir = staged.path();
    write_shard(
        &dir.join("train.bin"),
        &train_inst,
        cfg.max_seq_len,
        cfg.max_predictions,
    )?;
    write_shard(
        &dir.join("heldout.bin"),
        &held_inst,
        cfg.max_seq_len,
        cfg.max_predictions,
    )?;
    crate::io::write_atomic(
        &dir.join("tokenizer.json"),
        tokenizer::tokenizer_json(tok).as_bytes(),
    )?;
    crate::io::write_atomic(&dir.join("vocab.txt"), tok.vocab.to_vocab_txt().as_bytes())?;
    let meta = serde_json::json!({
        "corpus": corpus, "documents": docs.len(), "sentences": n_sent, "tokens": n_tokens,
        "train_documents": train.len(), "heldout_documents": held.len(),
        "train_instances": train_inst.len(), "heldout_instances": held_inst.len(),
        "max_seq_len": cfg.max_seq_len, "dupe_factor": cfg.dupe_factor, "short_seq_prob": cfg.short_seq_prob,
        "masked_lm_prob": cfg.masked_lm_prob, "max_predictions": cfg.max_predictions,
        "whole_word_mask": cfg.whole_word_mask, "seed": cfg.seed, "vocab_size": tok.vocab.len(),
    });
    crate::io::write_atomic(
        &dir.join("data.json"),
        serde_json::to_string_pretty(&meta).unwrap().as_bytes(),
    )?;
    staged.commit()?;
    eprintln!(
        "bert data: {} training and {} held-out instances -> {}/train.bin, heldout.bin ({:.1} s)",
        train_inst.len(),
        held_inst.len(),
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(BuildSummary {
        documents: docs.len(),
        tokens: n_tokens,
        train_instances: train_inst.len(),
        heldout_instances: held_inst.len(),
    })
}

/// Reads documents: one sentence per line, blank lines between documents.
pub fn read_documents(paths: &[String]) -> Result<Vec<Vec<String>>> {
    let mut docs = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).map_err(|e| BertError::Io(format!("{p}: {e}")))?;
        let mut cur: Vec<String> = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() {
                if !cur.is_empty() {
                    docs.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(l.to_string());
            }
        }
        if !cur.is_empty() {
            docs.push(cur);
        }
    }
    Ok(docs)
}

/// Whether document `d` is held out, by a hash of (seed, d): the same split on every run.
pub fn is_heldout(d: usize, cfg: &DataConfig) -> bool {
    let mut r =
        SplitMix64::new(cfg.seed ^ 0xD0C5_u64 ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    ((r.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < cfg.heldout_fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Specials {
        // ids: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK], 5..50 words, 50..60 ## pieces
        Specials {
            cls: 2,
            sep: 3,
            mask: 4,
            vocab_size: 60,
            is_continuation: (0..60).map(|i| i >= 50).collect(),
        }
    }

    fn docs(seed: u64) -> Vec<Vec<Vec<u32>>> {
        let mut r = Rng::new(seed);
        (0..20)
            .map(|_| {
                (0..r.range(1, 12))
                    .map(|_| (0..r.range(3, 25)).map(|_| r.range(5, 59) as u32).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn instances_follow_the_original_recipe() {
        let cfg = DataConfig {
            max_seq_len: 64,
            dupe_factor: 3,
            ..Default::default()
        };
        let sp = specials();
        let d = docs(1);
        let inst = create_instances(&d, &cfg, &sp);
        assert!(inst.len() > 50, "{}", inst.len());
        let mut random = 0;
        for x in &inst {
            assert!(x.tokens.len() <= 64);
            assert_eq!(x.tokens[0], 2);
            assert_eq!(x.tokens[x.len_a - 1], 3);
            assert_eq!(*x.tokens.last().unwrap(), 3);
            assert_eq!(x.tokens.iter().filter(|&&t| t == 3).count(), 2);
            let want = 20.min(((x.tokens.len() as f64 * 0.15).round() as usize).max(1));
            assert_eq!(x.masked_positions.len(), want);
            assert!(x.masked_positions.windows(2).all(|w| w[0] < w[1]));
            for &p in &x.masked_positions {
                assert!(
                    x.tokens[p] != 2 && x.tokens[p] != 3,
                    "a special token was masked"
                );
            }
            random += x.is_random_next as usize;
        }
        let frac = random as f64 / inst.len() as f64;
        assert!((0.35..0.75).contains(&frac), "random-next share {frac}");
        // Deterministic.
        assert_eq!(inst, create_instances(&d, &cfg, &sp));
        // Masked inputs: about 80% [MASK].
        let (m, n) = inst.iter().fold((0, 0), |(m, n), x| {
            (
                m + x.masked_inputs.iter().filter(|&&t| t == 4).count(),
                n + x.masked_inputs.len(),
            )
        });
        let share = m as f64 / n as f64;
        assert!((0.72..0.88).contains(&share), "[MASK] share {share}");
    }

    #[test]
    fn whole_word_masking_takes_whole_words() {
        let cfg = DataConfig {
            whole_word_mask: true,
            masked_lm_prob: 0.3,
            ..Default::default()
        };
        let sp = specials();
        // word (5) + two continuations (50, 51), repeated.
        let mut tokens = vec![2];
        for _ in 0..10 {
            tokens.extend([5, 50, 51]);
        }
        tokens.push(3);
        for seed in 0..20 {
            let (pos, _) = mask_tokens(&tokens, &cfg, &sp, seed);
            for &p in &pos {
                let start = p - (p - 1) % 3;
                assert!((start..start + 3).all(|q| pos.contains(&q)), "{pos:?}");
            }
        }
    }

    #[test]
    fn shards_round_trip_and_reject_bad_files() {
        let cfg = DataConfig {
            max_seq_len: 48,
            ..Default::default()
        };
        let sp = specials();
        let inst = create_instances(&docs(2), &cfg, &sp);
        let p = std::env::temp_dir().join(format!("shard-{}.bin", std::process::id()));
        write_shard(&p, &inst, 48, 20).unwrap();
        let s = Shard::open(&p, 60).unwrap();
        assert_eq!(s.len(), inst.len());
        for (i, x) in inst.iter().enumerate() {
            assert_eq!(&s.get(i), x);
        }
        let (x, labels, nsp) = s.batch(&[0, 1, 2], 0, None);
        assert_eq!(x.batch, 3);
        assert_eq!(nsp.len(), 3);
        let n_labels = labels.iter().filter(|&&l| l != -100).count();
        assert_eq!(
            n_labels,
            (0..3)
                .map(|i| inst[i].masked_positions.len())
                .sum::<usize>()
        );
        // Dynamic masking gives another masking, deterministically.
        let (x2, l2, _) = s.batch(&[0, 1, 2], 0, Some((&cfg, &sp, 7)));
        let (_, l3, _) = s.batch(&[0, 1, 2], 0, Some((&cfg, &sp, 7)));
        assert_eq!(l2, l3);
        assert_ne!((x2.input_ids, l2), (x.input_ids, labels));
        // A vocabulary too small for the ids, a truncated file, garbage.
        assert!(Shard::open(&p, 10)
            .err()
            .unwrap()
            .to_string()
            .contains("outside the vocabulary"));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(Shard::open(&p, 60)
            .err()
            .unwrap()
            .to_string()
            .contains("do not hold"));
        std::fs::write(&p, b"hello").unwrap();
        assert!(Shard::open(&p, 60).is_err());
        // A crafted 32-byte header whose expected size wraps to 32 bytes in 64-bit arithmetic
        // (max_seq_len 2^31 - 4, no predictions, 2^31 records of 2^33 bytes): refused, where
        // an unchecked size test passed it and the first record read panicked.
        let mut h = MAGIC.to_vec();
        for v in [VERSION, (1 << 31) - 4, 0, 1 << 31, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, &h).unwrap();
        let e = Shard::open(&p, 60).err().unwrap().to_string();
        assert!(e.contains("header: max_seq_len"), "{e}");
        // More predictions than positions: refused.
        let mut h = MAGIC.to_vec();
        for v in [VERSION, 8, 9, 0, 0, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, &h).unwrap();
        assert!(Shard::open(&p, 60).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    /// Pair truncation cuts in one pass what token-by-token removal cut (the same random
    /// ends), and a million-token line is cut at once (the old `remove(0)` loop was quadratic).
    #[test]
    fn truncation_is_the_token_by_token_result_in_linear_time() {
        fn naive(a: &mut Vec<u32>, b: &mut Vec<u32>, max: usize, rng: &mut Rng) {
            while a.len() + b.len() > max {
                let t = if a.len() > b.len() { &mut *a } else { &mut *b };
                if rng.uniform() < 0.5 {
                    t.remove(0);
                } else {
                    t.pop();
                }
            }
        }
        for seed in 0..200u64 {
            let (la, lb, max) = (
                (seed * 7 % 50) as u32,
                (seed * 13 % 40) as u32,
                (seed % 30) as usize,
            );
            let (mut a1, mut b1): (Vec<u32>, Vec<u32>) =
                ((0..la).collect(), (100..100 + lb).collect());
            let (mut a2, mut b2) = (a1.clone(), b1.clone());
            naive(&mut a1, &mut b1, max, &mut Rng::new(seed));
            truncate_pair(&mut a2, &mut b2, max, &mut Rng::new(seed));
            assert_eq!((a1, b1), (a2, b2), "seed {seed}");
        }
        let mut a: Vec<u32> = (0..1_000_000).collect();
        let mut b = vec![7u32; 10];
        // Half a million front removals of a 4 MB vector: hours token by token, a moment here.
        truncate_pair(&mut a, &mut b, 128, &mut Rng::new(1));
        assert_eq!(a.len() + b.len(), 128);
    }
}
