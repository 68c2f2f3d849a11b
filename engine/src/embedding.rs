//! Embedding gather: `out[t, :] = table[ids[t], :]` for a (vocab, dim) table.

/// Gathers rows of `table` (vocab, dim). Errors with (position, id) of the first bad id.
pub fn embedding_gather(
    table: &[f32],
    dim: usize,
    ids: &[i64],
    out: &mut [f32],
) -> Result<(), (usize, i64)> {
    let vocab = table.len().checked_div(dim).unwrap_or(0);
    assert_eq!(out.len(), ids.len() * dim);
    if let Some((at, &id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id < 0 || id as usize >= vocab)
    {
        return Err((at, id));
    }
    let copy = |(o, &id): (&mut [f32], &i64)| {
        o.copy_from_slice(&table[id as usize * dim..(id as usize + 1) * dim])
    };
    if out.len() >= crate::rows::PAR_MIN_ELEMS * 4 && rayon::current_num_threads() > 1 && dim > 0 {
        use rayon::prelude::*;
        out.par_chunks_mut(dim).zip(ids.par_iter()).for_each(copy);
    } else if dim > 0 {
        out.chunks_mut(dim).zip(ids.iter()).for_each(copy);
    }
    Ok(())
}

/// Backward of the gather: `dtable[ids[t], :] += dy[t, :]` (scatter-add) into a zeroed
/// (vocab, dim) table. Ids were validated by the forward pass. Columns are split across
/// threads, so repeated ids never race.
pub fn embedding_backward(ids: &[i64], dy: &[f32], dim: usize, vocab: usize) -> Vec<f32> {
    let mut dt = vec![0.0f32; vocab * dim];
    if dim == 0 {
        return dt;
    }
    let threads = rayon::current_num_threads();
    if threads == 1 || dy.len() < crate::rows::PAR_MIN_ELEMS {
        for (t, &id) in ids.iter().enumerate() {
            let row = &mut dt[id as usize * dim..(id as usize + 1) * dim];
            row.iter_mut()
                .zip(&dy[t * dim..(t + 1) * dim])
                .for_each(|(a, b)| *a += b);
        }
        return dt;
    }
    // Each thread owns a band of columns of every row.
    let band = dim.div_ceil(threads);
    let ptr = crate::layernorm::SyncPtr(dt.as_mut_ptr());
    use rayon::prelude::*;
    (0..dim.div_ceil(band)).into_par_iter().for_each(|b| {
        let (j0, j1) = (b * band, ((b + 1) * band).min(dim));
        for (t, &id) in ids.iter().enumerate() {
            for j in j0..j1 {
                // SAFETY: band b writes only columns j0..j1; bands are disjoint; id < vocab.
                unsafe { *ptr.get().add(id as usize * dim + j) += dy[t * dim + j] };
            }
        }
    });
    dt
}
