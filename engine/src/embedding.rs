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
