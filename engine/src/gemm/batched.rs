//! Batched GEMM: many independent products of the same shape (attention's per-head products).

use super::driver::{run_threaded, Job};
use super::{check_args, run_serial, GemmError, MatMut, MatRef};
use crate::simd::Isa;

/// Batched GEMM: for each `i < batch`, `C_i = alpha A_i B_i + beta C_i`, where operand `X_i`
/// starts `i * X.batch_stride` elements into its slice (a stride of 0 broadcasts it).
/// Batches run in parallel when there are enough of them, otherwise each GEMM is threaded.
pub fn gemm_batched(
    batch: usize,
    alpha: f32,
    a: MatRef,
    a_bs: usize,
    b: MatRef,
    b_bs: usize,
    beta: f32,
    c: MatMut,
    c_bs: usize,
) -> Result<(), GemmError> {
    gemm_batched_with(
        Isa::best(),
        rayon::current_num_threads(),
        batch,
        alpha,
        a,
        a_bs,
        b,
        b_bs,
        beta,
        c,
        c_bs,
    )
}

/// [`gemm_batched`] with an explicit ISA and thread count.
pub fn gemm_batched_with(
    isa: Isa,
    threads: usize,
    batch: usize,
    alpha: f32,
    a: MatRef,
    a_bs: usize,
    b: MatRef,
    b_bs: usize,
    beta: f32,
    c: MatMut,
    c_bs: usize,
) -> Result<(), GemmError> {
    if batch == 0 {
        return Ok(());
    }
    // Bounds: the last batch's view must fit; check it through a shifted view.
    let last = batch - 1;
    let shifted = |len: usize, bs: usize| last.checked_mul(bs).filter(|&o| o <= len);
    let (Some(ao), Some(bo), Some(co)) = (
        shifted(a.data.len(), a_bs),
        shifted(b.data.len(), b_bs),
        shifted(c.data.len(), c_bs),
    ) else {
        return Err(GemmError(format!(
            "batch of {batch} with batch strides ({a_bs}, {b_bs}, {c_bs}) reaches past a slice"
        )));
    };
    check_args(&a, &b, &c)?;
    let (ca, cb) = (
        MatRef {
            data: &a.data[ao..],
            ..a
        },
        MatRef {
            data: &b.data[bo..],
            ..b
        },
    );
    let cc = MatMut {
        data: &mut c.data[co..],
        rows: c.rows,
        cols: c.cols,
        rs: c.rs,
        cs: c.cs,
    };
    check_args(&ca, &cb, &cc)?;
    if batch > 1 && c_bs == 0 {
        return Err(GemmError(
            "batched output with batch stride 0 would alias".into(),
        ));
    }
    let (m, n) = (c.rows, c.cols);
    if m == 0 || n == 0 {
        return Ok(());
    }
    if c_bs < m.saturating_sub(1) * c.rs + n.saturating_sub(1) * c.cs + 1 && batch > 1 {
        return Err(GemmError(format!(
            "output batch stride {c_bs} overlaps a ({m}, {n}) output"
        )));
    }
    let base = Job::new(alpha, a, b, beta, c);
    // SAFETY: the first and last batch views were bounds-checked above and the views in
    // between lie between them; outputs of different batches do not overlap (c_bs check).
    unsafe {
        // Captures the whole Job (which is Sync), not its raw-pointer fields one by one.
        let base = &base;
        let job_i = move |i: usize| Job {
            a: base.a.add(i * a_bs),
            b: base.b.add(i * b_bs),
            c: base.c.add(i * c_bs),
            ..*base
        };
        if threads > 1 && batch >= threads {
            use rayon::prelude::*;
            (0..batch)
                .into_par_iter()
                .for_each(|i| run_serial(isa, job_i(i)));
        } else {
            for i in 0..batch {
                run_threaded(isa, threads, job_i(i));
            }
        }
    }
    Ok(())
}
