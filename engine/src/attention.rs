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
/// One task per (batch, head), in parallel: the Sq x Sk scores go to a thread-local buffer
/// (L2-sized for BERT's lengths), are softmaxed there, and `P v` is written straight into the
/// head's columns of the output. No B*H*Sq*Sk tensor is ever allocated.
pub fn attention_inference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    use crate::gemm::{run_serial, Job};
    use crate::simd::Isa;
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
    let mut out = vec![0.0f32; b * sq * h * dv];
    if out.is_empty() {
        return Tensor::from_vec(out, &[b, sq, h * dv]);
    }
    let isa = Isa::best();
    let (qs, ks, vs) = (q.strides(), k.strides(), v.strides());
    let (qp, kp, vp) = (
        q.raw_f32().as_ptr() as usize,
        k.raw_f32().as_ptr() as usize,
        v.raw_f32().as_ptr() as usize,
    );
    let op = out.as_mut_ptr() as usize;
    thread_local! {
        static BUF: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    let task = |bh: usize| {
        let (bi, hi) = (bh / h, bh % h);
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
                    a: (qp as *const f32).add(bi * qs[0] + hi * qs[1]),
                    ars: qs[2],
                    acs: qs[3],
                    b: (kp as *const f32).add(bi * ks[0] + hi * ks[1]),
                    brs: ks[3],
                    bcs: ks[2],
                    c: sbuf.as_mut_ptr(),
                    crs: sk,
                    ccs: 1,
                };
                run_serial(isa, scores);
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
                    b: (vp as *const f32).add(bi * vs[0] + hi * vs[1]),
                    brs: vs[2],
                    bcs: vs[3],
                    c: (op as *mut f32).add(bi * sq * h * dv + hi * dv),
                    crs: h * dv,
                    ccs: 1,
                };
                run_serial(isa, ctx);
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
