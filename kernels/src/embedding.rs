//! Launchers for `cuda/embedding.cu`: BERT's summed embeddings and the tables' gradients.

use crate::gpu::{addr, addr_mut, Arg, Elem, Gpu};
use crate::{check, Error, Family};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

const BLOCK: u32 = 256;

/// `out[t] = word[word_ids[t]] + pos[t % seq_len] + types[type_ids[t]]` (type 0 without
/// type ids); ids `[tokens]` i32, tables `[rows, dim]`, out `[tokens, dim]`, tokens a multiple
/// of seq_len. A bad id writes a NaN row and its token index (the smallest) into `bad[0]`
/// when given (set it to i32::MAX first).
pub fn bert_embed_fwd<T: Elem>(
    gpu: &Gpu,
    word_ids: &impl DevicePtr<i32>,
    type_ids: Option<&CudaView<'_, i32>>,
    word: &impl DevicePtr<T>,
    pos: &impl DevicePtr<T>,
    types: &impl DevicePtr<T>,
    out: &mut impl DevicePtrMut<T>,
    seq_len: usize,
    dim: usize,
    bad: Option<&mut CudaViewMut<'_, i32>>,
) -> Result<(), Error> {
    bert_embed_fwd_at(
        gpu, word_ids, type_ids, None, word, pos, types, out, seq_len, dim, bad,
    )
}

/// [`bert_embed_fwd`] with each token's position given (`pos_ids` `[tokens]` i32; a packed
/// batch, where a position is the token's place in its own sequence), or `t % seq_len` when
/// None. A position outside the table is a bad id (NaN row, reported in `bad`).
pub fn bert_embed_fwd_at<T: Elem>(
    gpu: &Gpu,
    word_ids: &impl DevicePtr<i32>,
    type_ids: Option<&CudaView<'_, i32>>,
    pos_ids: Option<&CudaView<'_, i32>>,
    word: &impl DevicePtr<T>,
    pos: &impl DevicePtr<T>,
    types: &impl DevicePtr<T>,
    out: &mut impl DevicePtrMut<T>,
    seq_len: usize,
    dim: usize,
    bad: Option<&mut CudaViewMut<'_, i32>>,
) -> Result<(), Error> {
    let k = "bert_embed_fwd";
    let tokens = word_ids.len();
    check::len(k, "out", out.len(), tokens * dim)?;
    let vocab = check::rows(k, "word table", word.len(), dim)?;
    let max_pos = check::rows(k, "position table", pos.len(), dim)?;
    let n_types = check::rows(k, "type table", types.len(), dim)?;
    let (pp, _gp) = match pos_ids {
        Some(p) => {
            check::len(k, "pos_ids", p.len(), tokens)?;
            let (a, g) = addr(gpu, p);
            (a, Some(g))
        }
        None => {
            if seq_len == 0 || tokens % seq_len != 0 || seq_len > max_pos {
                return check::fail(k, format!("{tokens} tokens are not whole sequences of {seq_len} (at most {max_pos} positions)"));
            }
            (0, None)
        }
    };
    let (pt, _gt) = match type_ids {
        Some(t) => {
            check::len(k, "type_ids", t.len(), tokens)?;
            let (p, g) = addr(gpu, t);
            (p, Some(g))
        }
        None => (0, None),
    };
    let (pbad, _gb) = match bad {
        Some(b) => {
            check::len(k, "bad", b.len(), 1)?;
            let (p, g) = addr_mut(gpu, b);
            (p, Some(g))
        }
        None => (0, None),
    };
    let (p0, _g1) = addr(gpu, word_ids);
    let (p1, _g2) = addr(gpu, word);
    let (p2, _g3) = addr(gpu, pos);
    let (p3, _g4) = addr(gpu, types);
    let (p4, _g5) = addr_mut(gpu, out);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(pt),
        Arg::Ptr(pp),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::Ptr(p3),
        Arg::Ptr(p4),
        Arg::I32(check::i32_of(k, "tokens", tokens)?),
        Arg::I32(check::i32_of(k, "seq_len", seq_len.max(1))?),
        Arg::I32(check::i32_of(k, "dim", dim)?),
        Arg::I32(check::i32_of(k, "vocab", vocab)?),
        Arg::I32(check::i32_of(k, "types", n_types)?),
        Arg::I32(check::i32_of(k, "max_pos", max_pos)?),
        Arg::Ptr(pbad),
    ];
    let grid = gpu.grid_for((tokens * dim) as u64, BLOCK as u64 * 4);
    gpu.launch(
        Family::Embedding,
        &format!("{k}_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

/// `dtable[ids[t]] += dy[t]` (atomics: repeated ids add in no fixed order); ids `[tokens]`,
/// dy `[tokens, dim]`, dtable `[vocab, dim]`. Ids must be valid (the forward checked them).
pub fn embedding_bwd(
    gpu: &Gpu,
    ids: &impl DevicePtr<i32>,
    dy: &impl DevicePtr<f32>,
    dtable: &mut impl DevicePtrMut<f32>,
    dim: usize,
) -> Result<(), Error> {
    let k = "embedding_bwd";
    let tokens = ids.len();
    check::len(k, "dy", dy.len(), tokens * dim)?;
    check::rows(k, "dtable", dtable.len(), dim)?;
    let (p0, _g1) = addr(gpu, ids);
    let (p1, _g2) = addr(gpu, dy);
    let (p2, _g3) = addr_mut(gpu, dtable);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::I32(check::i32_of(k, "tokens", tokens)?),
        Arg::I32(check::i32_of(k, "dim", dim)?),
    ];
    let grid = gpu.grid_for((tokens * dim) as u64, BLOCK as u64 * 4);
    gpu.launch(
        Family::Embedding,
        "embedding_bwd_f32",
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

/// `dpos[s] += sum over sequences of dy[b, s]`; dy `[tokens, dim]`, dpos `[max_pos, dim]`
/// (rows past seq_len untouched). Deterministic.
pub fn position_bwd(
    gpu: &Gpu,
    dy: &impl DevicePtr<f32>,
    dpos: &mut impl DevicePtrMut<f32>,
    seq_len: usize,
    dim: usize,
) -> Result<(), Error> {
    let k = "position_bwd";
    let tokens = check::rows(k, "dy", dy.len(), dim)?;
    let max_pos = check::rows(k, "dpos", dpos.len(), dim)?;
    if seq_len == 0 || tokens % seq_len != 0 || seq_len > max_pos {
        return check::fail(k, format!("{tokens} tokens are not whole sequences of {seq_len} (at most {max_pos} positions)"));
    }
    let (p0, _g1) = addr(gpu, dy);
    let (p1, _g2) = addr_mut(gpu, dpos);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::I32(check::i32_of(k, "tokens", tokens)?),
        Arg::I32(check::i32_of(k, "seq_len", seq_len)?),
        Arg::I32(check::i32_of(k, "dim", dim)?),
    ];
    let grid = gpu.grid_for((seq_len * dim) as u64, BLOCK as u64);
    gpu.launch(
        Family::Embedding,
        "position_bwd_f32",
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}

/// `y[i] = x[rows[i]]`; x `[_, cols]`, rows `[n]` i32 (valid: the caller checked them against
/// x's row count), y `[n, cols]`. The backward is [`embedding_bwd`] with `rows` as the ids.
pub fn gather_rows<T: Elem>(
    gpu: &Gpu,
    x: &impl DevicePtr<T>,
    rows: &impl DevicePtr<i32>,
    y: &mut impl DevicePtrMut<T>,
    cols: usize,
) -> Result<(), Error> {
    let k = "gather_rows";
    let n = rows.len();
    check::len(k, "y", y.len(), n * cols)?;
    check::rows(k, "x", x.len(), cols)?;
    let (p0, _g1) = addr(gpu, x);
    let (p1, _g2) = addr(gpu, rows);
    let (p2, _g3) = addr_mut(gpu, y);
    let args = [
        Arg::Ptr(p0),
        Arg::Ptr(p1),
        Arg::Ptr(p2),
        Arg::I32(check::i32_of(k, "rows", n)?),
        Arg::I32(check::i32_of(k, "cols", cols)?),
    ];
    let grid = gpu.grid_for((n * cols) as u64, BLOCK as u64);
    gpu.launch(
        Family::Embedding,
        &format!("gather_rows_{}", T::SUFFIX),
        (grid, 1, 1),
        BLOCK,
        &args,
    )
}
