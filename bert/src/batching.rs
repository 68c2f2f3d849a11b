//! Batching tokenized texts by length for inference: the texts are run in batches of similar
//! token counts (longest first), so that a batch pads each text to about its own length rather
//! than to the longest of all, and the results come back in the input's order. `bert embed`
//! and fine-tuning's predictions share it. (sentence-transformers sorts by characters; on the
//! demo corpus, where code and URLs make many tokens per character, batches sorted that way
//! padded to 1.59x the real tokens, sorted by tokens 1.08x.)

use tokenizer::Encoding;

/// Runs `run` on `encs` in batches of at most `batch` encodings in order of decreasing token
/// count; `run` returns one row of `width` values per encoding of its batch. Returns the rows in
/// the order of `encs`, concatenated. A batch's rows must not depend on which texts share it
/// (true of the encoder: padding is masked), so the output does not depend on `batch`.
pub fn by_length<E>(
    mut encs: Vec<Encoding>,
    batch: usize,
    width: usize,
    mut run: impl FnMut(&[Encoding]) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    let mut order: Vec<usize> = (0..encs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(encs[i].ids.len()));
    let mut out = vec![0.0f32; encs.len() * width];
    for chunk in order.chunks(batch.max(1)) {
        let group: Vec<Encoding> = chunk
            .iter()
            .map(|&i| std::mem::take(&mut encs[i]))
            .collect();
        let rows = run(&group)?;
        assert_eq!(
            rows.len(),
            group.len() * width,
            "a batch of {} gave {} values, not {} per row",
            group.len(),
            rows.len(),
            width
        );
        for (&i, row) in chunk.iter().zip(rows.chunks(width)) {
            out[i * width..(i + 1) * width].copy_from_slice(row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoding {
        Encoding {
            ids: vec![7; n],
            ..Default::default()
        }
    }

    /// Batches run longest first, each at most `batch` long, and each row lands at its input's
    /// place.
    #[test]
    fn rows_come_back_in_input_order() {
        let lens = [3usize, 9, 1, 5, 9, 2, 4];
        for batch in [1usize, 2, 3, 7, 100] {
            let encs: Vec<Encoding> = lens.iter().map(|&n| enc(n)).collect();
            let mut seen = Vec::new();
            let out = by_length(encs, batch, 2, |g| {
                assert!(g.len() <= batch);
                seen.extend(g.iter().map(|e| e.ids.len()));
                Ok::<_, ()>(
                    g.iter()
                        .flat_map(|e| [e.ids.len() as f32, -(e.ids.len() as f32)])
                        .collect(),
                )
            })
            .unwrap();
            let want: Vec<f32> = lens.iter().flat_map(|&n| [n as f32, -(n as f32)]).collect();
            assert_eq!(out, want, "batch {batch}");
            assert!(seen.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
        }
        assert_eq!(by_length(vec![], 4, 3, |_| Ok::<_, ()>(vec![])), Ok(vec![]));
        assert_eq!(by_length(vec![enc(2)], 4, 1, |_| Err("bad")), Err("bad"));
    }
}
