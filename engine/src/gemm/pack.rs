//! Packing f32 operands into the slivers the microkernel reads: B into NR-column slivers,
//! A into MR-row slivers, both k-major and zero-padded (see the loop nest in `mod.rs`).

use crate::simd::Simd;

/// `kc` rows of nr floats, `dst[s*kc*nr + p*nr + j] = B[p, s*nr + j]`, zero past column nc.
#[inline(always)]
pub(crate) unsafe fn pack_b<S: Simd, const NV: usize>(
    s: S,
    dst: &mut [f32],
    b: *const f32,
    rs: usize,
    cs: usize,
    kc: usize,
    nc: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let l = S::LANES;
        let nr = NV * l;
        let d = dst.as_mut_ptr();
        let full = nc / nr;
        if cs == 1 {
            // Row-major B: read each row of the panel once, front to back (prefetcher-friendly),
            // and drop NR-float pieces of it into the slivers with vector copies.
            for p in 0..kc {
                let src = b.add(p * rs);
                for si in 0..full {
                    let o = d.add(si * kc * nr + p * nr);
                    for v in 0..NV {
                        s.store(o.add(v * l), s.load(src.add(si * nr + v * l)));
                    }
                }
            }
        } else {
            // Transposed B (rs == 1, e.g. `x @ W^T` with W stored (out, in)): 8 source columns x
            // 8 k at a time, transposed in registers. Other strides, and the k tail: scalar.
            let p_vec = if rs == 1 && nr.is_multiple_of(8) {
                kc - kc % 8
            } else {
                0
            };
            for si in 0..full {
                let sl = d.add(si * kc * nr);
                for g in (0..nr).step_by(8) {
                    if p_vec == 0 {
                        break;
                    }
                    let src = b.add((si * nr + g) * cs);
                    for p0 in (0..p_vec).step_by(8) {
                        s.pack_transposed_x8::<8>(src.add(p0), cs, sl.add(p0 * nr + g), nr);
                    }
                }
                for j in 0..nr {
                    let src = b.add((si * nr + j) * cs);
                    for p in p_vec..kc {
                        *sl.add(p * nr + j) = *src.add(p * rs);
                    }
                }
            }
        }
        // The last, partial sliver, zero-padded: row-major B with vector loads of the columns
        // it has (a head of 32 in attention's `P v` is all of B), other strides scalar.
        if full * nr < nc && cs == 1 {
            let j0 = full * nr;
            let sl = d.add(full * kc * nr);
            for p in 0..kc {
                let src = b.add(p * rs + j0);
                for v in 0..NV {
                    let have = (nc - j0).saturating_sub(v * l).min(l);
                    let x = if have == l {
                        s.load(src.add(v * l))
                    } else if have > 0 {
                        s.load_partial(src.add(v * l), have, 0.0)
                    } else {
                        s.zero()
                    };
                    s.store(sl.add(p * nr + v * l), x);
                }
            }
        } else if full * nr < nc {
            let j0 = full * nr;
            let sl = d.add(full * kc * nr);
            for p in 0..kc {
                for j in 0..nr {
                    *sl.add(p * nr + j) = if j0 + j < nc {
                        *b.add(p * rs + (j0 + j) * cs)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs A[0..mc, 0..kc] (strides rs, cs) into slivers of `mr` rows: sliver s holds `kc`
/// columns of `mr` floats, `dst[s*kc*mr + p*mr + i] = A[s*mr + i, p]`, zero past row mc.
#[inline(always)]
pub(crate) unsafe fn pack_a<S: Simd>(
    s: S,
    dst: &mut [f32],
    a: *const f32,
    rs: usize,
    cs: usize,
    mc: usize,
    kc: usize,
    mr: usize,
) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        let d = dst.as_mut_ptr();
        for (si, i0) in (0..mc).step_by(mr).enumerate() {
            let h = mr.min(mc - i0);
            let sl = d.add(si * kc * mr);
            if rs == 1 {
                // Column-major (transposed) A: each sliver column is a contiguous copy. Full slivers
                // copy a fixed-size run (inlined moves; a run-time length would call memcpy for
                // every 24 bytes).
                #[inline(always)]
                unsafe fn copy_n<const N: usize>(
                    src: *const f32,
                    dst: *mut f32,
                    kc: usize,
                    cs: usize,
                ) {
                    // SAFETY: the caller upholds this function's safety contract, which covers every
                    // operation of the body.
                    unsafe {
                        for p in 0..kc {
                            let v = (src.add(p * cs) as *const [f32; N]).read_unaligned();
                            (dst.add(p * N) as *mut [f32; N]).write_unaligned(v);
                        }
                    }
                }
                match (h == mr, mr) {
                    (true, 6) => copy_n::<6>(a.add(i0), sl, kc, cs),
                    (true, 12) => copy_n::<12>(a.add(i0), sl, kc, cs),
                    (true, 4) => copy_n::<4>(a.add(i0), sl, kc, cs),
                    _ => {
                        for p in 0..kc {
                            std::ptr::copy_nonoverlapping(a.add(i0 + p * cs), sl.add(p * mr), h);
                            std::ptr::write_bytes(sl.add(p * mr + h), 0, mr - h);
                        }
                    }
                }
                continue;
            }
            let mut p0 = 0;
            if cs == 1 && h == mr && mr.is_multiple_of(6) {
                // Row-major A, full sliver: 6-row x 8-column blocks transposed in registers.
                while p0 + 8 <= kc {
                    for g in (0..mr).step_by(6) {
                        s.pack_transposed_x8::<6>(
                            a.add((i0 + g) * rs + p0),
                            rs,
                            sl.add(p0 * mr + g),
                            mr,
                        );
                    }
                    p0 += 8;
                }
            }
            for i in 0..mr {
                if i < h {
                    let src = a.add((i0 + i) * rs);
                    for p in p0..kc {
                        *sl.add(p * mr + i) = *src.add(p * cs);
                    }
                } else {
                    for p in p0..kc {
                        *sl.add(p * mr + i) = 0.0;
                    }
                }
            }
        }
    }
}
