//! Dropout with a counter-based mask: element i of a call with seed s is kept when
//! `hash(s, i) >= p * 2^24`, so the mask is a pure function of (seed, index). The backward pass
//! regenerates it instead of storing it, and a GPU kernel can produce the same mask.

/// SplitMix64's finaliser on (seed, index): a fixed, well-mixed 64-bit hash.
#[inline(always)]
pub fn hash(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether element `i` survives dropout with probability `p` of being dropped.
#[inline(always)]
pub fn keep(seed: u64, i: u64, p: f32) -> bool {
    ((hash(seed, i) >> 40) as f32) >= p * (1u64 << 24) as f32
}

/// `x[i] = keep(i) ? x[i] / (1 - p) : 0` in place. The same call on a gradient is the backward.
pub fn dropout_inplace(x: &mut [f32], p: f32, seed: u64) {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout: p must be in [0, 1), got {p}"
    );
    if p == 0.0 {
        return;
    }
    let scale = 1.0 / (1.0 - p);
    let apply = |(c, chunk): (usize, &mut [f32])| {
        let base = (c * 4096) as u64;
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if keep(seed, base + j as u64, p) {
                *v * scale
            } else {
                0.0
            };
        }
    };
    use rayon::prelude::*;
    if x.len() >= crate::rows::PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        x.par_chunks_mut(4096).enumerate().for_each(apply);
    } else {
        x.chunks_mut(4096).enumerate().for_each(apply);
    }
}
