//! The per-thread word cache (wordpiece.rs) must never change a result: repeated words, a
//! second tokenizer with another vocabulary on the same thread, and a changed word-length limit
//! all give what a fresh split gives.

use tokenizer::{BertTokenizer, NormalizerConfig, Vocab};

fn tok(words: &[&str]) -> BertTokenizer {
    let mut v = vec!["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    v.extend_from_slice(words);
    BertTokenizer::new(Vocab::from_tokens(&v), NormalizerConfig::default()).unwrap()
}

#[test]
fn cached_words_split_as_fresh_ones() {
    let a = tok(&[
        "un", "##aff", "##able", "the", "cat", "##s", "c", "##a", "##t",
    ]);
    let text = "the unaffable cats the unaffable cat xyz";
    let first = a.encode(text, false);
    let again = a.encode(text, false); // every word now comes from the cache
    assert_eq!(first.ids, again.ids);
    assert_eq!(first.offsets, again.offsets);
    assert_eq!(
        a.tokens(&first),
        [
            "the", "un", "##aff", "##able", "cat", "##s", "the", "un", "##aff", "##able", "cat",
            "[UNK]"
        ]
    );

    // Another vocabulary on the same thread: its own splits, not the first tokenizer's.
    let b = tok(&["the", "ca", "##t", "##s", "unaffable"]);
    let e = b.encode(text, false);
    assert_eq!(
        b.tokens(&e),
        [
            "the",
            "unaffable",
            "ca",
            "##t",
            "##s",
            "the",
            "unaffable",
            "ca",
            "##t",
            "[UNK]"
        ]
    );
    // And back: the first tokenizer's results are unchanged.
    assert_eq!(a.encode(text, false).ids, first.ids);

    // A shorter word limit makes long words [UNK]: the cache must not answer with old splits.
    let mut c = a.clone();
    c.wordpiece.max_input_chars_per_word = 4;
    let e = c.encode(text, false);
    assert_eq!(
        c.tokens(&e),
        ["the", "[UNK]", "cat", "##s", "the", "[UNK]", "cat", "[UNK]"]
    );
}
