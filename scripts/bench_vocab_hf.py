#!/usr/bin/env python3
"""HF `tokenizers`' WordPieceTrainer beside `bert vocab` (scripts/bench-vocab runs this).

  bench_vocab_hf.py train CORPUS SIZE OUTDIR THREADS   trains HF's WordPiece (BERT's normalizer and
                                                     pre-tokenizer, the same special tokens) on the
                                                     lines `bert vocab` trains on; prints seconds
  bench_vocab_hf.py score CORPUS VOCAB.txt           pieces per word on the held-out lines

The held-out slice is `bert vocab`'s: every 50th non-empty line (index % 50 == 49). Both vocabularies
are scored by the same tokenizer (HF's BertWordPieceTokenizer), so the figure compares the
vocabularies, not the tokenizers (ours matches HF's exactly: scripts/check-tokenizer)."""
import collections, os, sys, time


def lines(path, heldout):
    with open(path, encoding="utf-8") as f:
        i = 0
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if (i % 50 == 49) == heldout:
                yield line
            i += 1


def main():
    cmd = sys.argv[1]
    if cmd == "train":
        corpus, size, out, threads = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
        os.environ["RAYON_RS_NUM_CPUS"] = threads
        from tokenizers import BertWordPieceTokenizer
        tok = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
        text = list(lines(corpus, False))
        t = time.perf_counter()
        tok.train_from_iterator(text, vocab_size=size, min_frequency=2, limit_alphabet=1000,
                                special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                wordpieces_prefix="##", show_progress=False)
        secs = time.perf_counter() - t
        os.makedirs(out, exist_ok=True)
        tok.save_model(out)
        print(f"{secs:.2f}")
    elif cmd == "score":
        corpus, vocab = sys.argv[2], sys.argv[3]
        from tokenizers import BertWordPieceTokenizer
        tok = BertWordPieceTokenizer(vocab, lowercase=True)
        pre = tok.pre_tokenizer
        norm = tok.normalizer
        held = list(lines(corpus, True))
        pieces = words = unk = 0
        freq = collections.Counter()
        for enc in tok.encode_batch(held, add_special_tokens=False):
            pieces += len(enc.ids)
            words += len({w for w in enc.word_ids if w is not None})
            unk += sum(1 for t in enc.tokens if t == "[UNK]")
            freq.update(enc.tokens)
        top = " ".join(t for t, _ in freq.most_common(5))
        print(f"{pieces / words:.4f}\t{words}\t{unk}\t{top}")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
