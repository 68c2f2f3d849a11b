//! Encodes every line of a file and reports throughput; optionally writes each line's ids and
//! char offsets as JSON lines (for scripts/check-tokenizer, which compares them with HF).
//! `cargo run --release -p tokenizer --example encode_file -- TOKENIZER FILE [--batch] [--dump OUT]`
//! TOKENIZER is a tokenizer.json or a vocab.txt (uncased). Threads: RAYON_NUM_THREADS.
use tokenizer::BertTokenizer;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: encode_file TOKENIZER FILE [--batch] [--dump OUT]");
        std::process::exit(2);
    }
    let tok = if args[1].ends_with(".json") {
        tokenizer::load_tokenizer_json(&args[1])
    } else {
        BertTokenizer::from_vocab_file(&args[1], false)
    };
    let mut tok = tok.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    // Raw encodings: the comparison and the speed figures are without truncation or padding.
    tok.truncation = None;
    tok.padding = None;
    let text = std::fs::read_to_string(&args[2]).unwrap_or_else(|e| panic!("{}: {e}", args[2]));
    let lines: Vec<&str> = text.lines().collect();
    let batch = args.iter().any(|a| a == "--batch");
    let t = std::time::Instant::now();
    let encs = if batch {
        tok.encode_batch(&lines, true)
    } else {
        lines.iter().map(|l| tok.encode(l, true)).collect()
    };
    let secs = t.elapsed().as_secs_f64();
    let tokens: usize = encs.iter().map(|e| e.len()).sum();
    println!(
        "{} lines, {:.1} MB, {} tokens in {:.3} s: {:.2} MB/s, {:.2} M tokens/s ({}, {} threads)",
        lines.len(),
        text.len() as f64 / 1e6,
        tokens,
        secs,
        text.len() as f64 / 1e6 / secs,
        tokens as f64 / 1e6 / secs,
        if batch { "batch" } else { "one by one" },
        rayon::current_num_threads()
    );
    if let Some(i) = args.iter().position(|a| a == "--dump") {
        use std::io::Write;
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(&args[i + 1]).expect("dump file"));
        for e in &encs {
            let offs: Vec<String> = e
                .char_offsets
                .iter()
                .map(|(a, b)| format!("[{a},{b}]"))
                .collect();
            writeln!(
                out,
                "{{\"ids\":{:?},\"offsets\":[{}]}}",
                e.ids,
                offs.join(",")
            )
            .unwrap();
        }
    }
}
