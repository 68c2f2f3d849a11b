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
    let scores = q.matmul(&k.t()?)?.affine(scale, 0.0)?;
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
    let ds = Tensor::from_vec(ds, p.shape())?.affine(saved.scale, 0.0)?;
    let dq = ds.matmul(k)?;
    let dk = ds.t()?.matmul(q)?;
    Ok((dq, dk, dv))
}
