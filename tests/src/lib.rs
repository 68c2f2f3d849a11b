//! Helpers the workspace's cross-crate tests share: comparators with a readable failure, seeded
//! inputs, poisoned outputs, scratch folders, and a fixture corpus written from a tiny grammar
//! (no third-party text). The tests themselves are in `tests/tests/`: `pipeline.rs` runs the
//! whole training pipeline through the library and through the `bert` binary; `step.rs` the
//! hand-written pretraining step on every device against the tape.

use std::path::{Path, PathBuf};

pub mod step_fixture;

/// The largest absolute difference (`f64`, NaN if any value is NaN or the lengths differ).
pub fn max_abs_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::NAN;
    }
    got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| {
        let d = (a as f64 - b as f64).abs();
        if d.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(d)
        }
    })
}

/// max |got - want| / max(max |want|, `floor`): the largest error relative to the reference's
/// largest value (the floor keeps tiny references from inflating it). NaN if any value is NaN or
/// the lengths differ.
pub fn rel_max(got: &[f32], want: &[f32], floor: f64) -> f64 {
    let scale = want.iter().fold(floor, |m, &b| m.max((b as f64).abs()));
    max_abs_err(got, want) / scale
}

/// ||got - want|| / max(||want||, tiny): the relative L2 error.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::NAN;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

/// Panics, naming `what`, the worst index and both values, unless every |got - want| <= tol.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0.0f64);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let d = (a as f64 - b as f64).abs();
        if d.is_nan() || d > worst.1 {
            worst = (i, if d.is_nan() { f64::INFINITY } else { d });
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: |got - want| = {:e} at index {} (got {}, want {}), tolerance {tol:e}",
        worst.1,
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

/// `n` values uniform in [-1, 1) from `seed` (SplitMix64), the same on every machine.
pub fn seeded(n: usize, seed: u64) -> Vec<f32> {
    let mut r = engine::rng::SplitMix64::new(seed);
    (0..n)
        .map(|_| ((r.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

/// An output buffer filled with NaN, so that a kernel that skips an element fails the test.
pub fn poisoned(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// A fresh, empty scratch folder under the system's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bert-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const ANIMALS: &[&str] = &[
    "cat", "dog", "horse", "bird", "fish", "mouse", "sheep", "goat", "whale", "snake",
];
const TOOLS: &[&str] = &[
    "knife", "hammer", "saw", "spade", "needle", "brush", "drill", "chisel", "file", "rake",
];
const ADJECTIVES: &[&str] = &[
    "small", "large", "old", "young", "red", "grey", "quick", "quiet",
];
const VERBS: &[&str] = &["sees", "finds", "likes", "moves", "holds", "follows"];

fn pick<'a>(r: &mut engine::rng::SplitMix64, xs: &[&'a str]) -> &'a str {
    xs[(r.next_u64() % xs.len() as u64) as usize]
}

/// One sentence of the fixture grammar about `noun`: "the old cat sees a red knife ."
fn sentence(r: &mut engine::rng::SplitMix64, noun: &str) -> String {
    let other = if r.next_u64().is_multiple_of(2) {
        pick(r, ANIMALS)
    } else {
        pick(r, TOOLS)
    };
    format!(
        "the {} {noun} {} a {} {other} .",
        pick(r, ADJECTIVES),
        pick(r, VERBS),
        pick(r, ADJECTIVES)
    )
}

/// Writes `dir/corpus.txt`: `docs` documents of 4 to 8 sentences, one sentence per line, a blank
/// line between documents, each document about one animal or one tool. Returns its path.
pub fn fixture_corpus(dir: &Path, docs: usize, seed: u64) -> PathBuf {
    let mut r = engine::rng::SplitMix64::new(seed);
    let mut text = String::new();
    for _ in 0..docs {
        let noun = if r.next_u64().is_multiple_of(2) {
            pick(&mut r, ANIMALS)
        } else {
            pick(&mut r, TOOLS)
        };
        for _ in 0..4 + r.next_u64() % 5 {
            text += &sentence(&mut r, noun);
            text.push('\n');
        }
        text.push('\n');
    }
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// Writes `dir/NAME.tsv` with `n` lines `sentence<TAB>animal|tool` (the class of the sentence's
/// subject): a sequence-classification task the fixture grammar makes learnable.
pub fn fixture_tsv(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let mut r = engine::rng::SplitMix64::new(seed);
    let mut text = String::new();
    for _ in 0..n {
        let animal = r.next_u64().is_multiple_of(2);
        let noun = if animal {
            pick(&mut r, ANIMALS)
        } else {
            pick(&mut r, TOOLS)
        };
        text += &format!(
            "{}\t{}\n",
            sentence(&mut r, noun),
            if animal { "animal" } else { "tool" }
        );
    }
    let p = dir.join(format!("{name}.tsv"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The `bert` binary of this build (target/<profile>/bert, built by `cargo test --workspace`
/// for the bert package's own tests), or a panic saying how to build it.
pub fn bert_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/pipeline-HASH -> target/<profile>/bert
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let bin = dir.join(format!("bert{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (or `cargo build -p bert` first)",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparators_catch_what_they_should() {
        assert_eq!(max_abs_err(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert!(max_abs_err(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
        assert!(max_abs_err(&[1.0], &[1.0, 2.0]).is_nan());
        assert!((rel_l2(&[3.0, 4.0], &[3.0, 4.0])).abs() < 1e-12);
        assert!((rel_l2(&[0.0, 0.0], &[3.0, 4.0]) - 1.0).abs() < 1e-12);
        assert_close("same", &[1.0, 2.0], &[1.0, 2.0 + 1e-7], 1e-6);
        let r = std::panic::catch_unwind(|| assert_close("nan", &[f32::NAN], &[1.0], 1.0));
        assert!(r.is_err());
        let a = seeded(1000, 7);
        assert_eq!(a, seeded(1000, 7));
        assert_ne!(a, seeded(1000, 8));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(poisoned(3).iter().all(|x| x.is_nan()));
    }
}
