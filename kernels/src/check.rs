//! Argument checks shared by the launchers: every mismatch is an [`Error::Args`] naming the
//! kernel and what is wrong, before anything reaches the GPU.

use crate::Error;

pub(crate) fn fail<T>(kernel: &'static str, msg: String) -> Result<T, Error> {
    Err(Error::Args { kernel, msg })
}

pub(crate) fn len(kernel: &'static str, what: &str, got: usize, want: usize) -> Result<(), Error> {
    if got != want {
        return fail(
            kernel,
            format!("{what} has {got} elements, expected {want}"),
        );
    }
    Ok(())
}

/// `n` is a whole number of rows of `cols`; returns the row count.
pub(crate) fn rows(
    kernel: &'static str,
    what: &str,
    n: usize,
    cols: usize,
) -> Result<usize, Error> {
    if cols == 0 || !n.is_multiple_of(cols) {
        return fail(
            kernel,
            format!("{what} has {n} elements, not a multiple of cols = {cols}"),
        );
    }
    Ok(n / cols)
}

/// 16-byte alignment, which the packed kernels' loads need.
pub(crate) fn aligned(kernel: &'static str, what: &str, addr: u64) -> Result<(), Error> {
    if !addr.is_multiple_of(16) {
        return fail(
            kernel,
            format!("{what} at {addr:#x} is not 16-byte aligned (a view starting mid-pack?)"),
        );
    }
    Ok(())
}

pub(crate) fn i32_of(kernel: &'static str, what: &str, v: usize) -> Result<i32, Error> {
    i32::try_from(v).or_else(|_| fail(kernel, format!("{what} = {v} does not fit in i32")))
}

pub(crate) fn prob(kernel: &'static str, p: f32) -> Result<(), Error> {
    if !(0.0..1.0).contains(&p) {
        return fail(
            kernel,
            format!("dropout probability must be in [0, 1), got {p}"),
        );
    }
    Ok(())
}
