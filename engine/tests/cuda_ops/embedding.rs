//! BERT embeddings and their gradients; dropout masks against the CPU engine's.

use crate::harness::*;

#[test]
fn bert_embeddings_and_their_gradients() {
    let g = gpu();
    let mut r = rng(6);
    let (vocab, max_pos, types, dim) = (1000, 64, 2, 96);
    let (word, pos, typ) = (
        randn(&mut r, vocab * dim, 1.0),
        randn(&mut r, max_pos * dim, 1.0),
        randn(&mut r, types * dim, 1.0),
    );
    for (batch, seq) in [(1, 1), (4, 64), (32, 16)] {
        let tokens = batch * seq;
        let ids: Vec<i32> = (0..tokens)
            .map(|_| (r.next_u64() % vocab as u64) as i32)
            .collect();
        let tids: Vec<i32> = (0..tokens).map(|t| ((t % seq) >= seq / 2) as i32).collect();
        let mut want = vec![0.0f32; tokens * dim];
        for t in 0..tokens {
            for c in 0..dim {
                want[t * dim + c] = word[ids[t] as usize * dim + c]
                    + pos[(t % seq) * dim + c]
                    + typ[tids[t] as usize * dim + c];
            }
        }
        let (dids, dtids) = (up(&g, &ids), up(&g, &tids));
        let (dw, dp, dt) = (up(&g, &word), up(&g, &pos), up(&g, &typ));
        let mut out = poison(&g, tokens * dim);
        let mut bad = up(&g, &[i32::MAX]);
        k::embedding::bert_embed_fwd(
            &g,
            &dids,
            Some(&dtids.as_view()),
            &dw,
            &dp,
            &dt,
            &mut out,
            seq,
            dim,
            Some(&mut bad.as_view_mut()),
        )
        .unwrap();
        let tag = format!("{batch}x{seq}");
        close(
            &format!("bert_embed_fwd {tag}"),
            &down(&g, &out),
            &want,
            F32_TOL,
        );
        assert_eq!(down(&g, &bad)[0], i32::MAX, "no bad id reported");
        // Gradients: word table (scatter-add) and positions.
        let dy = randn(&mut r, tokens * dim, 1.0);
        let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let want_dw = engine::embedding::embedding_backward(&ids64, &dy, dim, vocab);
        let ddy = up(&g, &dy);
        let mut dwt = up(&g, &vec![0.0f32; vocab * dim]);
        k::embedding::embedding_bwd(&g, &dids, &ddy, &mut dwt, dim).unwrap();
        close(
            &format!("embedding_bwd {tag}"),
            &down(&g, &dwt),
            &want_dw,
            F32_TOL,
        );
        let pos_ids: Vec<i64> = (0..tokens).map(|t| (t % seq) as i64).collect();
        let want_dp = engine::embedding::embedding_backward(&pos_ids, &dy, dim, max_pos);
        let mut dpt = up(&g, &vec![0.0f32; max_pos * dim]);
        k::embedding::position_bwd(&g, &ddy, &mut dpt, seq, dim).unwrap();
        close(
            &format!("position_bwd {tag}"),
            &down(&g, &dpt),
            &want_dp,
            F32_TOL,
        );
    }
    // A bad id: NaN row, its position reported.
    let ids = up(&g, &[3i32, vocab as i32, 5, -1]);
    let (dw, dp, dt) = (up(&g, &word), up(&g, &pos), up(&g, &typ));
    let mut out = poison(&g, 4 * dim);
    let mut bad = up(&g, &[i32::MAX]);
    k::embedding::bert_embed_fwd(
        &g,
        &ids,
        None,
        &dw,
        &dp,
        &dt,
        &mut out,
        4,
        dim,
        Some(&mut bad.as_view_mut()),
    )
    .unwrap();
    assert_eq!(down(&g, &bad)[0], 1);
    let o = down(&g, &out);
    assert!(o[dim..2 * dim].iter().all(|v| v.is_nan()) && o[..dim].iter().all(|v| v.is_finite()));
}

#[test]
fn dropout_mask_equals_the_cpu_engines() {
    let g = gpu();
    let mut r = rng(7);
    for &n in &FLAT_SIZES {
        for p in [0.1f32, 0.5] {
            let x = randn(&mut r, n, 1.0);
            let seed = r.next_u64();
            let mut want = x.clone();
            engine::dropout::dropout_inplace(&mut want, p, seed);
            let mut y = poison(&g, n);
            k::dropout::dropout(&g, &up(&g, &x), &mut y, p, seed).unwrap();
            let got = down(&g, &y);
            let diff = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            println!("dropout n={n} p={p}: {diff} elements differ");
            assert_eq!(
                diff, 0,
                "dropout n={n} p={p}: {diff} of {n} elements differ from the CPU mask"
            );
        }
    }
}
