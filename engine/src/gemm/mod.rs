//! f32 GEMM: `C = alpha * A B + beta * C`, BLIS-style.
//!
//! ```text
//! A is (m,k), B is (k,n), C is (m,n); each given by a pointer and a row and column stride,
//! so a transposed or strided operand is just other strides: no copy is ever made of it.
//!
//! for jc in 0..n step NC            B panel  (KC x NC) packed once, lives in L3
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] -> Bp       as NR-wide column slivers, k-major, zero-padded
//!     for ic in 0..m step MC         A block  (MC x KC) packed, lives in L2
//!       pack A[ic.., pc..] -> Ap     as MR-tall row slivers, k-major, zero-padded
//!       for jr in 0..nc step NR      one B sliver (KC x NR) stays in L1 ...
//!         for ir in 0..mc step MR    ... while every A sliver streams past it
//!           microkernel: an MR x NR tile of C held in registers for the whole KC loop
//! ```
//! The microkernel broadcasts one A value per row and multiplies it by the NR/LANES vectors of
//! the B sliver: MR x NR/LANES independent FMA chains, enough to hide the FMA latency
//! (AVX2: 6 x 16 = 12 ymm accumulators; AVX-512: 6 x 64 = 24 zmm accumulators).
//!
//! Threads: the problem is cut into disjoint blocks of C (along n when it is wide, else along m)
//! and each rayon task runs the whole blocked algorithm on its block with its own packing
//! buffers: no synchronisation at all, at the price of packing the shared operand twice,
//! which is O(mk + kn) against O(mnk) of work.
//!
//! The files, by role (read them in this order):
//! - `driver.rs`: the [`Tile`](driver::Tile) trait (a microkernel and the packing it reads) and
//!   the one blocked loop nest above, generic over it; the `Job` and the threading.
//! - `blocking.rs`: KC, MC, NC from the CPU's caches ([`Blocking`]).
//! - `pack.rs` and `microkernel.rs`: the f32 tile: packing into slivers, the register-tiled
//!   kernel; the ISA -> tile map (`with_tile`).
//! - `bf16.rs`: the bf16 tiles (native `vdpbf16ps`, the f32 tile over rounded operands, or
//!   emulated pairs) over the same driver, chosen per CPU by `bf16_kernel`.
//! - `prepacked.rs` ([`PackedB`], B packed once), `batched.rs` ([`gemm_batched`]).
//! - `memory.rs`: aligned, huge-page packing buffers and prefetch hints.
//! - `attention.rs`: inference attention fused on the f32 tile (scores, softmax, `P v` per
//!   block of MR query rows, in L1).

pub(crate) mod attention;
pub mod batched;
pub mod bf16;
mod blocking;
pub(crate) mod driver;
pub(crate) mod memory;
pub(crate) mod microkernel;
mod pack;
pub mod prepacked;

pub use batched::{gemm_batched, gemm_batched_with};
pub use blocking::{set_blocking, Blocking};
pub(crate) use driver::Job;
pub use prepacked::{gemm_prepacked, PackedB};

use crate::simd::{dispatch, Isa, Simd, SimdKernel};
use driver::{blocked, run_threaded_with, scale_c, with_buffers};
use microkernel::{with_tile, F32Tile, WithTile};

/// A read-only strided matrix view: element (i, j) is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major (rows, cols) matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose, as a view (swaps the strides).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Whether every element this view can address lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1)
                .checked_mul(self.rs)
                .and_then(|a| {
                    (self.cols - 1)
                        .checked_mul(self.cs)
                        .and_then(|b| a.checked_add(b))
                })
                .is_some_and(|last| last < self.data.len())
    }
}

/// A mutable strided matrix view. Distinct (i, j) must address distinct elements.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    fn as_ref(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// GEMM argument errors (shapes, bounds, aliasing strides).
#[derive(Debug, Clone, PartialEq)]
pub struct GemmError(pub String);

impl std::fmt::Display for GemmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gemm: {}", self.0)
    }
}
impl std::error::Error for GemmError {}

pub(crate) fn check_args<TA, TB>(
    a: &MatRef<TA>,
    b: &MatRef<TB>,
    c: &MatMut,
) -> Result<(), GemmError> {
    if a.cols != b.rows || a.rows != c.rows || b.cols != c.cols {
        return Err(GemmError(format!(
            "A is ({}, {}), B is ({}, {}), C is ({}, {}): need A (m,k), B (k,n), C (m,n)",
            a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
        )));
    }
    if !a.in_bounds() || !b.in_bounds() || !c.as_ref().in_bounds() {
        return Err(GemmError(
            "a view's strides reach past the end of its slice".into(),
        ));
    }
    if c.rows > 1 && c.cols > 1 && (c.rs == 0 || c.cs == 0 || (c.rs < c.cols && c.cs < c.rows)) {
        // Not a full aliasing check, but rejects the layouts where rows or columns overlap
        // (a broadcast output, or strides that interleave); row- and column-major always pass.
        let row_major_like = c.cs >= 1 && c.rs >= c.cols * c.cs;
        let col_major_like = c.rs >= 1 && c.cs >= c.rows * c.rs;
        if !row_major_like && !col_major_like {
            return Err(GemmError(format!(
                "output strides ({}, {}) make elements alias",
                c.rs, c.cs
            )));
        }
    }
    Ok(())
}

/// `C = alpha * A B + beta * C` on all rayon threads of the current pool.
/// When `beta == 0`, C is not read (it may hold NaN). Errors on mismatched shapes or bounds.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Result<(), GemmError> {
    gemm_with(
        Isa::best(),
        rayon::current_num_threads(),
        alpha,
        a,
        b,
        beta,
        c,
    )
}

/// [`gemm`] with an explicit ISA and thread count (tests use it to cover every path).
pub fn gemm_with(
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    run_checked(
        isa,
        threads,
        alpha,
        a,
        b,
        beta,
        c,
        microkernel::tile(isa),
        run_serial,
    )
}

/// The shared entry of the f32 and bf16 GEMMs: checks the views, skips empty problems, and runs
/// `serial` (a blocked GEMM with register tile `tile`) on disjoint blocks of C across threads.
pub(crate) fn run_checked(
    isa: Isa,
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
    tile: (usize, usize),
    serial: unsafe fn(Isa, Job),
) -> Result<(), GemmError> {
    check_args(&a, &b, &c)?;
    if c.rows == 0 || c.cols == 0 {
        return Ok(());
    }
    let job = Job::new(alpha, a, b, beta, c);
    // SAFETY: check_args proved every (i, j) the job addresses is inside the slices, and the
    // output layout does not alias; `c` is borrowed mutably for the whole call.
    unsafe { run_threaded_with(isa, threads, job, tile, serial) };
    Ok(())
}

/// Single-threaded f32 GEMM on `job`: the model's blocking (KC balanced over k), the ISA's
/// f32 tile, the one driver.
///
/// # Safety
/// The job's pointers must be valid for every element it addresses, C must not alias A or B.
pub(crate) unsafe fn run_serial(isa: Isa, job: Job) {
    // SAFETY: the caller upholds this function's safety contract, which covers every
    // operation of the body.
    unsafe {
        struct K<'a> {
            job: Job,
            blk: Blocking,
            ap: &'a mut [f32],
            bp: &'a mut [f32],
        }
        impl SimdKernel for K<'_> {
            type Output = ();
            // Must inline into the `#[target_feature]` trampoline, or the intrinsics below would be
            // compiled as calls (see simd/mod.rs). The same holds for every kernel in the engine.
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                with_tile(s, self)
            }
        }
        impl WithTile for K<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd, const MR: usize, const NV: usize>(self, s: S) {
                // SAFETY: forwarded from run_serial's contract; buffers sized by with_buffers.
                unsafe {
                    blocked(
                        F32Tile::<S, MR, NV>(s),
                        self.job,
                        self.blk,
                        self.ap,
                        self.bp,
                    )
                }
            }
        }
        if job.k == 0 {
            scale_c(job, job.beta);
            return;
        }
        let blk = Blocking::current(isa).for_depth(job.k, microkernel::tile(isa).0);
        with_buffers(&job, blk, microkernel::tile(isa), 1, |ap, bp| {
            dispatch(isa, K { job, blk, ap, bp })
        })
    }
}
