//! Scaled dot-product attention as one coarse op with a hand-derived backward.
//!
//! ```text
//! q (B,H,Sq,D), k (B,H,Sk,D), v (B,H,Sk,Dv); mask additive, broadcastable to (B,H,Sq,Sk)
//! S = scale * q k^T + mask        (B,H,Sq,Sk)
//! P = softmax(S) over keys
//! Pd = dropout(P, p, seed)
//! O = Pd v                        (B,H,Sq,Dv)
//! backward, from dO:
//! dv = Pd^T dO;  dPd = dO v^T;  dP = dropout(dPd) (same mask);
//! dS = P * (dP - rowsum(dP * P));  dq = scale * dS k;  dk = scale * dS^T q
//! ```
//! On the CPU the probabilities are kept for the backward pass (B*H*Sq*Sk floats); the GPU
//! kernel will recompute them from the log-sum-exp instead. q, k, v may be strided views (e.g.
//! heads split out of (B, S, H*D) by a reshape and a permute): the GEMMs read them in place.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// What the forward pass keeps for the backward pass.
#[derive(Clone, Debug)]
pub struct AttentionSaved {
    /// Softmax probabilities before dropout, (B,H,Sq,Sk), contiguous.
    pub probs: Tensor,
    pub scale: f32,
    pub dropout: f32,
    pub seed: u64,
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    let err = |why: String| Error::Shape {
        op: "attention",
        lhs: q.shape().to_vec(),
        rhs: k.shape().to_vec(),
        why,
    };
    if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
        return Err(err(format!(
            "q, k, v must be (B, H, S, D); v is {:?}",
            v.shape()
        )));
    }
    if q.shape()[..2] != k.shape()[..2] || q.shape()[3] != k.shape()[3] {
        return Err(err("q and k must agree on B, H and D".into()));
    }
    if v.shape()[..3] != k.shape()[..3] {
        return Err(err(format!(
            "v {:?} must agree with k on B, H and S",
            v.shape()
        )));
    }
    Ok(())
}

/// Forward pass: returns the output (B,H,Sq,Dv) and what the backward pass needs.
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    dropout: f32,
    seed: u64,
) -> Result<(Tensor, AttentionSaved)> {
    check(q, k, v)?;
    let scores = q.matmul_scaled(&k.t()?, scale, crate::Precision::F32)?;
    let probs = scores.softmax(mask)?;
    let out = if dropout > 0.0 {
        let mut pd = probs.to_vec();
        crate::dropout::dropout_inplace(&mut pd, dropout, seed);
        Tensor::from_vec(pd, probs.shape())?.matmul(v)?
    } else {
        probs.matmul(v)?
    };
    Ok((
        out,
        AttentionSaved {
            probs,
            scale,
            dropout,
            seed,
        },
    ))
}

/// Backward pass: (dq, dk, dv) from dO and the saved state, each contiguous in its input's shape.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    saved: &AttentionSaved,
    dout: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let p = &saved.probs;
    let pd = if saved.dropout > 0.0 {
        let mut d = p.to_vec();
        crate::dropout::dropout_inplace(&mut d, saved.dropout, saved.seed);
        Tensor::from_vec(d, p.shape())?
    } else {
        p.clone()
    };
    let dv = pd.t()?.matmul(dout)?;
    let mut dp = dout.matmul(&v.t()?)?.to_vec();
    crate::dropout::dropout_inplace(&mut dp, saved.dropout, saved.seed);
    let sk = *p.shape().last().unwrap();
    let mut ds = vec![0.0f32; dp.len()];
    crate::softmax::softmax_backward_rows(
        crate::simd::Isa::best(),
        p.as_slice().expect("probs are contiguous"),
        &dp,
        sk,
        &mut ds,
    );
    // The softmax scale rides in the two GEMMs' alpha.
    let ds = Tensor::from_vec(ds, p.shape())?;
    let dq = ds.matmul_scaled(k, saved.scale, crate::Precision::F32)?;
    let dk = ds
        .t()?
        .matmul_scaled(q, saved.scale, crate::Precision::F32)?;
    Ok((dq, dk, dv))
}

/// Inference attention: no dropout, nothing kept for a backward pass, and the heads merged in
/// the output. q (B,H,Sq,D), k (B,H,Sk,D), v (B,H,Sk,Dv), any strides (e.g. views of one
/// (B,S,H*D) projection); mask additive, broadcastable to (B,H,Sq,Sk). Returns (B,Sq,H*Dv),
/// the layout the output projection reads, so no permute-and-copy follows.
///
/// One task per (batch, head), in parallel, each the fused kernel of `gemm/attention.rs`:
/// scores, softmax and `P v` for a block of query rows at a time, in L1. No B*H*Sq*Sk tensor is
/// ever allocated, nor one head's Sq x Sk scores.
pub fn attention_inference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    attention_inference_with(q, k, v, mask, scale, crate::Precision::F32)
}

/// [`attention_inference`] with the two products (`q k^T` and `P v`) in `precision`: with
/// bf16, q, k, the probabilities and v are rounded to bf16 as they are packed (f32 sums; the
/// softmax stays in f32), on the bf16 GEMM's tile.
pub fn attention_inference_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    precision: crate::Precision,
) -> Result<Tensor> {
    let head_fn = match precision {
        crate::Precision::F32 => crate::gemm::attention::attention_head,
        crate::Precision::Bf16 => crate::gemm::attention::attention_head_bf16,
    };
    let p = Prepared::new(q, k, v, mask)?;
    let (b, h, sq, sk, d, dv) = p.dims;
    let n = b * sq * h * dv;
    if n == 0 {
        return Tensor::from_vec(Vec::new(), &[b, sq, h * dv]);
    }
    // Every element is written by exactly one head's kernel (zeros where a row has no key), so
    // the buffer is not zeroed first: at MiniLM's 32 x 128 tokens that pass was 6 MiB.
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let isa = crate::simd::Isa::best();
    let heads = Heads::new(q, k, v);
    let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
    let op = out.as_mut_ptr() as usize;
    let task = |bh: usize| {
        let (bi, hi) = (bh / h, bh % h);
        let [qh, kh, vh] = heads.at(bi, hi);
        let mask = p.mask.as_ref().map(|m| {
            let st = m.strides();
            (m.raw_f32(), bi * st[0] + hi * st[1], st[2])
        });
        // SAFETY: every pointer addresses an element of its tensor's storage (the views' own
        // strides times in-range indices); each task writes only its own head's columns of its
        // own batch's rows of `out`, so writes never overlap.
        unsafe {
            let head = crate::gemm::attention::Head {
                q: qh,
                qs: (qs[2], qs[3]),
                k: kh,
                ks: (ks[2], ks[3]),
                v: vh,
                vs: (vs[2], vs[3]),
                o: (op as *mut f32).add(bi * sq * h * dv + hi * dv),
                ors: h * dv,
                sq,
                sk,
                d,
                dv,
                scale,
                mask,
                next: (bh + 1 < b * h).then(|| {
                    let [q, k, v] = heads.at((bh + 1) / h, (bh + 1) % h);
                    (q, k, v)
                }),
            };
            head_fn(isa, head);
        }
    };
    if rayon::current_num_threads() > 1 && b * h > 1 {
        use rayon::prelude::*;
        (0..b * h).into_par_iter().for_each(task);
    } else {
        (0..b * h).for_each(task);
    }
    // SAFETY: the (b, h) tasks wrote all n elements: head hi of batch bi writes columns
    // hi*dv .. (hi+1)*dv of rows bi*sq .. (bi+1)*sq, and together they cover every element.
    unsafe { out.set_len(n) };
    Tensor::from_vec(out, &[b, sq, h * dv])
}

/// Where each (batch, head) of q, k and v starts: the tensors' storage and their strides.
struct Heads {
    base: [usize; 3],
    strides: [(usize, usize); 3],
}

impl Heads {
    fn new(q: &Tensor, k: &Tensor, v: &Tensor) -> Heads {
        let at = |t: &Tensor| {
            (
                t.raw_f32().as_ptr() as usize,
                (t.strides()[0], t.strides()[1]),
            )
        };
        let (q, k, v) = (at(q), at(k), at(v));
        Heads {
            base: [q.0, k.0, v.0],
            strides: [q.1, k.1, v.1],
        }
    }

    /// The first element of head `hi` of batch `bi` in q, k and v (in range for in-range
    /// indices; computed without dereferencing, so the caller's kernel decides what it reads).
    fn at(&self, bi: usize, hi: usize) -> [*const f32; 3] {
        std::array::from_fn(|i| {
            let (sb, sh) = self.strides[i];
            (self.base[i] as *const f32).wrapping_add(bi * sb + hi * sh)
        })
    }
}

/// The checked inputs of inference attention: (B, H, Sq, Sk, D, Dv) and the mask broadcast to
/// (B,H,Sq,Sk) with contiguous rows.
struct Prepared {
    dims: (usize, usize, usize, usize, usize, usize),
    mask: Option<Tensor>,
}

impl Prepared {
    fn new(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Prepared> {
        check(q, k, v)?;
        for t in [q, k, v] {
            t.require_f32("attention")?;
        }
        let (b, h, sq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let (sk, dv) = (k.shape()[2], v.shape()[3]);
        let mask = match mask {
            Some(m) => {
                m.require_f32("attention")?;
                let full = m.broadcast_to(&[b, h, sq, sk]).map_err(|_| Error::Shape {
                    op: "attention",
                    lhs: vec![b, h, sq, sk],
                    rhs: m.shape().to_vec(),
                    why: "the mask does not broadcast to the scores".into(),
                })?;
                // The softmax reads mask rows contiguously.
                Some(if full.strides()[3] == 1 || sk == 1 {
                    full
                } else {
                    full.contiguous()
                })
            }
            None => None,
        };
        Ok(Prepared {
            dims: (b, h, sq, sk, d, dv),
            mask,
        })
    }
}

/// Inference attention as three passes per head: the Sq x Sk scores by one GEMM into a
/// thread-local buffer, softmaxed into a second, and `P v` by another GEMM into the head's
/// columns of the output. What [`attention_inference`] did before its fused kernel; kept as
/// the baseline the fused kernels are benchmarked against (`attn_table`), in either precision.
pub fn attention_inference_unfused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    precision: crate::Precision,
) -> Result<Tensor> {
    use crate::gemm::{run_serial, Job};
    let gemm = match precision {
        crate::Precision::F32 => run_serial,
        crate::Precision::Bf16 => crate::gemm::bf16::run_serial_bf16,
    };
    use crate::simd::Isa;
    let p = Prepared::new(q, k, v, mask)?;
    let (b, h, sq, sk, d, dv) = p.dims;
    let mask = p.mask;
    let mut out = vec![0.0f32; b * sq * h * dv];
    if out.is_empty() {
        return Tensor::from_vec(out, &[b, sq, h * dv]);
    }
    let isa = Isa::best();
    let heads = Heads::new(q, k, v);
    let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
    let op = out.as_mut_ptr() as usize;
    thread_local! {
        static BUF: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    let task = |bh: usize| {
        let (bi, hi) = (bh / h, bh % h);
        let [qh, kh, vh] = heads.at(bi, hi);
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (sbuf, pbuf) = &mut *buf;
            sbuf.resize(sq * sk, 0.0);
            pbuf.resize(sq * sk, 0.0);
            // SAFETY: every pointer below addresses an element of its tensor's storage (the
            // offsets are the views' own strides times in-range indices); each task writes only
            // its own head's columns of its own batch's rows of `out`, so writes never overlap.
            unsafe {
                let scores = Job {
                    m: sq,
                    n: sk,
                    k: d,
                    alpha: scale,
                    beta: 0.0,
                    a: qh,
                    ars: qs[2],
                    acs: qs[3],
                    b: kh,
                    brs: ks[3],
                    bcs: ks[2],
                    c: sbuf.as_mut_ptr(),
                    crs: sk,
                    ccs: 1,
                };
                gemm(isa, scores);
            }
            let offsets: Vec<usize>;
            let m = match &mask {
                Some(mt) => {
                    let st = mt.strides();
                    offsets = (0..sq)
                        .map(|i| bi * st[0] + hi * st[1] + i * st[2])
                        .collect();
                    Some((mt.raw_f32(), offsets.as_slice()))
                }
                None => None,
            };
            crate::softmax::softmax_rows_serial(isa, sbuf, sk, m, pbuf);
            // SAFETY: as above.
            unsafe {
                let ctx = Job {
                    m: sq,
                    n: dv,
                    k: sk,
                    alpha: 1.0,
                    beta: 0.0,
                    a: pbuf.as_ptr(),
                    ars: sk,
                    acs: 1,
                    b: vh,
                    brs: vs[2],
                    bcs: vs[3],
                    c: (op as *mut f32).add(bi * sq * h * dv + hi * dv),
                    crs: h * dv,
                    ccs: 1,
                };
                gemm(isa, ctx);
            }
        })
    };
    if rayon::current_num_threads() > 1 && b * h > 1 {
        use rayon::prelude::*;
        (0..b * h).into_par_iter().for_each(task);
    } else {
        (0..b * h).for_each(task);
    }
    Tensor::from_vec(out, &[b, sq, h * dv])
}

/// The shape of [`fused_qkv_forward`]: `batch` sequences, `heads` of `head_dim`. Padded
/// (`packed` false): every sequence has `seq` rows (tokens `b*seq ..`), keys at or past
/// `lens[b]` masked (BERT's key padding mask). Packed: sequence b has `lens[b]` rows, back to
/// back with no padding, and `seq` is the longest length. Either way the dropout mask of
/// element (b, h, i, j) is that of index `((b*H + h)*seq + i)*seq + j`, the GPU kernels' too.
#[derive(Clone, Copy, Debug)]
pub struct FusedDims<'a> {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub lens: &'a [usize],
    pub packed: bool,
}

impl FusedDims<'_> {
    /// Tokens in the QKV and output buffers.
    pub fn tokens(&self) -> usize {
        if self.packed {
            self.lens.iter().sum()
        } else {
            self.batch * self.seq
        }
    }
    /// (first token, rows) of every sequence.
    fn spans(&self) -> Vec<(usize, usize)> {
        let mut at = 0;
        self.lens
            .iter()
            .map(|&l| {
                let rows = if self.packed { l } else { self.seq };
                let span = (at, rows);
                at += rows;
                span
            })
            .collect()
    }
}

/// Per-thread scratch of the fused training kernels: three S x S blocks, a mask row, offsets.
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    mask: Vec<f32>,
    zeros: Vec<usize>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch { a: Vec::new(), b: Vec::new(), c: Vec::new(), mask: Vec::new(), zeros: Vec::new() })
    };
}

/// `dst = dropout(src)` for an n x n block kept contiguously whose row i sits at index
/// `base + i * stride` of the (B, H, stride, stride) tensor the mask is defined over (one pass,
/// no copy first).
fn dropout_rows_from(
    dst: &mut [f32],
    src: &[f32],
    n: usize,
    base: u64,
    stride: usize,
    p: f32,
    seed: u64,
) {
    if p == 0.0 {
        dst.copy_from_slice(src);
        return;
    }
    if n == 0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    for (i, (d, s)) in dst.chunks_mut(n).zip(src.chunks(n)).enumerate() {
        crate::dropout::apply_from(d, s, base + (i * stride) as u64, seed, p, scale);
    }
}

/// [`dropout_rows_from`] into `dst` and the same mask on `g` in place (blocks laid out alike),
/// each mask element computed once for both. Nothing to do (and `dst` untouched) when p == 0.
#[allow(clippy::too_many_arguments)]
fn dropout_rows_pair(
    dst: &mut [f32],
    src: &[f32],
    g: &mut [f32],
    n: usize,
    base: u64,
    stride: usize,
    p: f32,
    seed: u64,
) {
    if p == 0.0 || n == 0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    let rows = dst.chunks_mut(n).zip(src.chunks(n)).zip(g.chunks_mut(n));
    for (i, ((d, s), g)) in rows.enumerate() {
        crate::dropout::apply_pair(d, s, g, base + (i * stride) as u64, seed, p, scale);
    }
}

fn check_fused(qkv: usize, d: &FusedDims) -> Result<()> {
    let (b, s, h, hd) = (d.batch, d.seq, d.heads, d.head_dim);
    if d.lens.len() != b || d.lens.iter().any(|&l| l > s) || qkv != d.tokens() * 3 * h * hd {
        return Err(Error::Arg {
            op: "attention",
            shape: vec![b, s, 3, h, hd],
            why: format!(
                "a fused QKV buffer of {qkv} values with lengths {:?} ({}) does not fit",
                d.lens,
                if d.packed { "packed" } else { "padded" }
            ),
        });
    }
    Ok(())
}

/// Training attention over a fused projection, the CPU's counterpart of the GPU kernel: `qkv`
/// `(tokens, 3*H*D)` laid out `(tokens, 3, H, D)`; returns the context `(tokens, H*D)` (heads
/// merged, the layout the output projection reads) and the probabilities before dropout (what
/// the backward needs), as `(B, H, seq, seq)` blocks whose first n x n (n = the sequence's rows)
/// hold row i at offset `i * seq`. One task per (sequence, head) on all threads; Q, K and V are
/// read in place by the GEMM's strides, the scores live in a per-thread block, and P V is
/// written straight into the head's columns.
pub fn fused_qkv_forward(
    qkv: &[f32],
    d: &FusedDims,
    scale: f32,
    p: f32,
    seed: u64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    use crate::gemm::{run_serial, Job};
    use crate::simd::Isa;
    check_fused(qkv.len(), d)?;
    let (b, s, h, hd) = (d.batch, d.seq, d.heads, d.head_dim);
    let (row, hdim) = (3 * h * hd, h * hd);
    let mut out = vec![0.0f32; d.tokens() * hdim];
    let mut probs = vec![0.0f32; b * h * s * s];
    if out.is_empty() || s == 0 {
        return Ok((out, probs));
    }
    let isa = Isa::best();
    let spans = d.spans();
    let (qp, op) = (qkv.as_ptr() as usize, out.as_mut_ptr() as usize);
    let task = |(bh, pblock): (usize, &mut [f32])| {
        let (bi, hi) = (bh / h, bh % h);
        let (start, n) = spans[bi];
        if n == 0 {
            return;
        }
        let base = (start * row) as isize;
        let drop_base = (bh * s * s) as u64;
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.a.resize(n * n, 0.0);
            sc.b.resize(n * n, 0.0);
            sc.c.resize(n * n, 0.0);
            // SAFETY: Q, K, V of this (sequence, head) lie inside qkv (checked length); the
            // output block (rows of sequence bi, columns of head hi) belongs to this task alone.
            unsafe {
                let q = (qp as *const f32).offset(base).add(hi * hd);
                run_serial(
                    isa,
                    Job {
                        m: n,
                        n,
                        k: hd,
                        alpha: scale,
                        beta: 0.0,
                        a: q,
                        ars: row,
                        acs: 1,
                        b: q.add(hdim),
                        brs: 1,
                        bcs: row,
                        c: sc.a.as_mut_ptr(),
                        crs: n,
                        ccs: 1,
                    },
                );
            }
            let len = d.lens[bi];
            let mask = if len < n {
                sc.mask.clear();
                sc.mask.resize(n, 0.0);
                sc.mask[len..].fill(f32::MIN);
                sc.zeros.clear();
                sc.zeros.resize(n, 0);
                Some((sc.mask.as_slice(), sc.zeros.as_slice()))
            } else {
                None
            };
            // The probabilities go straight into the saved block when its rows are contiguous
            // (n == s: every sequence of a full-length batch), through the scratch otherwise.
            let probs: &[f32] = if n == s {
                crate::softmax::softmax_rows_serial(isa, &sc.a, n, mask, &mut pblock[..n * n]);
                &pblock[..n * n]
            } else {
                crate::softmax::softmax_rows_serial(isa, &sc.a, n, mask, &mut sc.c);
                for (i, r) in sc.c.chunks(n).enumerate() {
                    pblock[i * s..i * s + n].copy_from_slice(r);
                }
                &sc.c
            };
            if p > 0.0 {
                dropout_rows_from(&mut sc.b, probs, n, drop_base, s, p, seed);
            }
            let pd = if p > 0.0 { &sc.b } else { probs };
            // SAFETY: as above.
            unsafe {
                let v = (qp as *const f32).offset(base).add(2 * hdim + hi * hd);
                run_serial(
                    isa,
                    Job {
                        m: n,
                        n: hd,
                        k: n,
                        alpha: 1.0,
                        beta: 0.0,
                        a: pd.as_ptr(),
                        ars: n,
                        acs: 1,
                        b: v,
                        brs: row,
                        bcs: 1,
                        c: (op as *mut f32).add(start * hdim + hi * hd),
                        crs: hdim,
                        ccs: 1,
                    },
                );
            }
        })
    };
    use rayon::prelude::*;
    if rayon::current_num_threads() > 1 && b * h > 1 {
        probs.par_chunks_mut(s * s).enumerate().for_each(task);
    } else {
        probs.chunks_mut(s * s).enumerate().for_each(task);
    }
    Ok((out, probs))
}

/// Backward of [`fused_qkv_forward`]: from the probabilities it returned and `dout`
/// `(tokens, H*D)`, writes `dqkv` `(tokens, 3*H*D)` (every element). Per (sequence, head), as
/// the GPU does it: `dV = Pd^T dO`, `dPd = dO V^T`, `dP = dropout(dPd)`,
/// `dS = P (dP - rowsum(dP P))`, `dQ = scale dS K`, `dK = scale dS^T Q`.
pub fn fused_qkv_backward(
    qkv: &[f32],
    probs: &[f32],
    dout: &[f32],
    d: &FusedDims,
    scale: f32,
    p: f32,
    seed: u64,
) -> Result<Vec<f32>> {
    use crate::gemm::{run_serial, Job};
    use crate::simd::Isa;
    check_fused(qkv.len(), d)?;
    let (b, s, h, hd) = (d.batch, d.seq, d.heads, d.head_dim);
    let (row, hdim) = (3 * h * hd, h * hd);
    if probs.len() != b * h * s * s || dout.len() != d.tokens() * hdim {
        return Err(Error::Arg {
            op: "attention backward",
            shape: vec![probs.len(), dout.len()],
            why: format!(
                "probabilities and dout must be (B,H,S,S) and (tokens,H*D) for {} tokens of {b} sequences, {h} heads of {hd}",
                d.tokens()
            ),
        });
    }
    let mut dqkv = vec![0.0f32; qkv.len()];
    if dqkv.is_empty() || s == 0 {
        return Ok(dqkv);
    }
    let isa = Isa::best();
    let spans = d.spans();
    let (qp, dop, gp) = (
        qkv.as_ptr() as usize,
        dout.as_ptr() as usize,
        dqkv.as_mut_ptr() as usize,
    );
    let task = |bh: usize| {
        let (bi, hi) = (bh / h, bh % h);
        let (start, n) = spans[bi];
        if n == 0 {
            return;
        }
        let pblock = &probs[bh * s * s..(bh + 1) * s * s];
        let base = start * row;
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.a.resize(n * n, 0.0);
            sc.b.resize(n * n, 0.0);
            sc.c.resize(n * n, 0.0);
            // P, contiguous: the saved block itself when n == s, else a copy in sc.mask; then
            // Pd (sc.a).
            let pc: &[f32] = if n == s {
                &pblock[..n * n]
            } else {
                sc.mask.resize(n * n, 0.0);
                for (i, r) in sc.mask.chunks_mut(n).enumerate() {
                    r.copy_from_slice(&pblock[i * s..i * s + n]);
                }
                &sc.mask
            };
            // SAFETY: every read lies inside qkv / dout (checked lengths); every write goes to
            // this (sequence, head)'s Q, K or V columns of dqkv, which no other task touches.
            unsafe {
                let q = (qp as *const f32).add(base + hi * hd);
                let (k, v) = (q.add(hdim), q.add(2 * hdim));
                let dq = (gp as *mut f32).add(base + hi * hd);
                let (dk, dv) = (dq.add(hdim), dq.add(2 * hdim));
                let dob = (dop as *const f32).add(start * hdim + hi * hd);
                let job = |m, nn, kk, alpha, a, ars, acs, bm, brs, bcs, c, crs| Job {
                    m,
                    n: nn,
                    k: kk,
                    alpha,
                    beta: 0.0,
                    a,
                    ars,
                    acs,
                    b: bm,
                    brs,
                    bcs,
                    c,
                    crs,
                    ccs: 1,
                };
                // dPd = dO V^T; then Pd = dropout(P) (sc.a) and dP = dropout(dPd) (sc.b, in
                // place), one mask for both.
                run_serial(
                    isa,
                    job(n, n, hd, 1.0, dob, hdim, 1, v, 1, row, sc.b.as_mut_ptr(), n),
                );
                let drop_base = (bh * s * s) as u64;
                dropout_rows_pair(&mut sc.a, pc, &mut sc.b, n, drop_base, s, p, seed);
                let pd: &[f32] = if p > 0.0 { &sc.a } else { pc };
                // dV = Pd^T dO
                run_serial(
                    isa,
                    job(n, hd, n, 1.0, pd.as_ptr(), 1, n, dob, hdim, 1, dv, row),
                );
                crate::softmax::softmax_backward_rows(isa, pc, &sc.b, n, &mut sc.c);
                let ds = sc.c.as_ptr();
                // dQ = scale dS K;  dK = scale dS^T Q
                run_serial(isa, job(n, hd, n, scale, ds, n, 1, k, row, 1, dq, row));
                run_serial(isa, job(n, hd, n, scale, ds, 1, n, q, row, 1, dk, row));
            }
        })
    };
    use rayon::prelude::*;
    if rayon::current_num_threads() > 1 && b * h > 1 {
        (0..b * h).into_par_iter().for_each(task);
    } else {
        (0..b * h).for_each(task);
    }
    Ok(dqkv)
}
