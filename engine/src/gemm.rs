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
//! (AVX2: 6 x 16 = 12 ymm accumulators; AVX-512: 12 x 32 = 24 zmm accumulators).
//!
//! Threads: the problem is cut into disjoint blocks of C (along n when it is wide, else along m)
//! and each rayon task runs the whole blocked algorithm on its block with its own packing
//! buffers: no synchronisation at all, at the price of packing the shared operand twice,
//! which is O(mk + kn) against O(mnk) of work.

use crate::cpu::Caches;
use crate::simd::{dispatch, Isa, Simd, SimdKernel};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

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
    run_checked(isa, threads, alpha, a, b, beta, c, tile(isa), run_serial)
}

/// The shared entry of the f32 and bf16 GEMMs: checks the views, skips empty problems, and runs
/// `serial` (a blocked GEMM with register tile `tile`) on disjoint blocks of C across threads.
#[allow(clippy::too_many_arguments)]
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

/// Raw description of one GEMM (or one block of it). Pointers stay valid for the call.
#[derive(Clone, Copy)]
pub(crate) struct Job {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: *const f32,
    pub ars: usize,
    pub acs: usize,
    pub b: *const f32,
    pub brs: usize,
    pub bcs: usize,
    pub c: *mut f32,
    pub crs: usize,
    pub ccs: usize,
}
// SAFETY: a Job is only sent to threads that write disjoint blocks of C (see `split`), and the
// inputs are only read.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// The whole problem `C = alpha A B + beta C` of checked views.
    pub(crate) fn new(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: MatMut) -> Job {
        Job {
            m: c.rows,
            n: c.cols,
            k: a.cols,
            alpha,
            beta,
            a: a.data.as_ptr(),
            ars: a.rs,
            acs: a.cs,
            b: b.data.as_ptr(),
            brs: b.rs,
            bcs: b.cs,
            c: c.data.as_mut_ptr(),
            crs: c.rs,
            ccs: c.cs,
        }
    }

    /// The sub-problem C[i0..i0+m, j0..j0+n].
    pub(crate) fn block(&self, i0: usize, m: usize, j0: usize, n: usize) -> Job {
        // SAFETY (of the pointer arithmetic): i0 < self.m and j0 < self.n, so these stay in the
        // allocations the original bounds check covered.
        unsafe {
            Job {
                m,
                n,
                a: self.a.add(i0 * self.ars),
                b: self.b.add(j0 * self.bcs),
                c: self.c.add(i0 * self.crs + j0 * self.ccs),
                ..*self
            }
        }
    }
}

/// Below this many multiply-adds a GEMM runs on one thread (fork/join costs a few microseconds).
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// Splits the job into disjoint C blocks, one per thread, and runs them.
///
/// # Safety
/// The job's pointers must be valid for every element it addresses, C must not alias A or B.
pub(crate) unsafe fn run_threaded(isa: Isa, threads: usize, job: Job) {
    run_threaded_with(isa, threads, job, tile(isa), run_serial)
}

/// [`run_threaded`] for any serial runner with register tile `(mr, nr)` (the bf16 GEMM reuses it).
pub(crate) unsafe fn run_threaded_with(
    isa: Isa,
    threads: usize,
    job: Job,
    (mr, nr): (usize, usize),
    serial: unsafe fn(Isa, Job),
) {
    let threads = threads.max(1);
    let work = job.m * job.n * job.k.max(1);
    if threads == 1 || work < PARALLEL_MIN_FLOPS {
        serial(isa, job);
        return;
    }
    // Each thread packs all of the operand the cut does not divide: cutting n repeats A's
    // packing (m x k) on every thread, cutting m repeats B's (k x n). So cut m when A is the
    // larger (m > n), as long as both dimensions give every thread two tiles or more; keep
    // each cut a multiple of the tile size. (4096 x 768 x 768 on two threads: 1.2x faster
    // than cutting n.)
    let tiles_m = job.m.div_ceil(mr);
    let tiles_n = job.n.div_ceil(nr);
    let cut_n = if tiles_n < 2 * threads {
        false
    } else if tiles_m < 2 * threads {
        true
    } else {
        job.m <= job.n
    };
    let blocks: Vec<Job> = if cut_n {
        split(tiles_n, threads)
            .map(|(t0, t1)| (t0 * nr, (t1 * nr).min(job.n)))
            .map(|(j0, j1)| job.block(0, job.m, j0, j1 - j0))
            .collect()
    } else {
        split(tiles_m, threads)
            .map(|(t0, t1)| (t0 * mr, (t1 * mr).min(job.m)))
            .map(|(i0, i1)| job.block(i0, i1 - i0, 0, job.n))
            .collect()
    };
    use rayon::prelude::*;
    blocks.into_par_iter().for_each(|b| {
        // SAFETY: blocks address disjoint parts of C and the caller's guarantees cover them.
        unsafe { serial(isa, b) }
    });
}

/// `parts` contiguous ranges covering 0..n as evenly as possible (empty ranges dropped).
fn split(n: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let parts = parts.min(n).max(1);
    (0..parts)
        .map(move |p| (p * n / parts, (p + 1) * n / parts))
        .filter(|(a, b)| a < b)
}

/// Register tile (MR, NR) of each ISA's microkernel.
pub(crate) fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (12, 32),
        Isa::Avx2 => (6, 16),
        Isa::Portable => (4, 8),
    }
}

/// Cache blocking: KC (the k extent of one packed block), MC (rows of A per packed block) and
/// NC (columns of B per packed panel), derived from the running CPU's caches by the BLIS
/// analytical model (Low, Igual, Smith, Quintana-Orti, "Analytical modeling is enough for
/// high-performance BLIS", TOMS 2016):
///
/// - L1 holds one B sliver (KC x NR), reused by every A sliver of the block, while A slivers
///   (MR x KC) stream through it. Of the W1 ways, C_A = floor((W1 - 1) / (1 + NR/MR)) go to A
///   (one way is left for C and the rest to B, in proportion NR : MR), and KC fills them:
///   KC = C_A * (L1 bytes per way) / (MR * 4).
/// - L2 holds the packed A block (MC x KC): the ways not needed by one B sliver, less one,
///   MC = (W2 - 1 - ceil(KC*NR*4 / L2 way)) * (L2 bytes per way) / (KC * 4).
/// - L3 (this core's share) holds the B panel (KC x NC) beside the A block, likewise.
///
/// `gemm_table --sweep` times candidate blockings on the running CPU beside the model's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

impl Blocking {
    /// The model's blocking for `isa`'s register tile on CPU caches `c`.
    pub fn model(isa: Isa, c: &Caches) -> Blocking {
        let (mr, nr) = tile(isa);
        let f = std::mem::size_of::<f32>();
        // L1: the B sliver is the one operand reused from L1 (by every A sliver of the
        // block); an A sliver is used once per B sliver and streams. So the B sliver takes
        // all ways but one, the last being left to the streaming A sliver and the C tile.
        let l1 = c.l1d;
        let kc = (l1.ways.saturating_sub(1).max(1) * l1.way_bytes() / (nr * f)).clamp(64, 1024);
        // Multiples of 8 keep the packing's transposes on their vector path.
        let kc = kc - kc % 8;
        // L2: the packed A block takes a quarter; the rest holds the B slivers as they pass
        // from L3, the C tiles, and the lines the L2 prefetchers bring beside each of them.
        let l2 = c.l2;
        let mc = (l2.size / 4 / (kc * f)).clamp(mr, 4096);
        let mc = (mc - mc % mr).max(mr);
        // L3: this core's share, what the A block leaves, holds the B panel (KC x NC),
        // capped at 4096 columns: a wider panel saves only repacking A once per panel.
        let l3 = c.l3;
        let share = (l3.size / l3.shared_by.max(1)).max(l2.size);
        let nc = (share.saturating_sub(mc * kc * f) / 2 / (kc * f)).clamp(nr, 4096);
        let nc = (nc - nc % nr).max(nr);
        Blocking { kc, mc, nc }
    }

    /// `ENGINE_GEMM_BLOCKING=KC,MC,NC`, when set (a warning on stderr when it cannot be read).
    fn from_env() -> Option<Blocking> {
        let v = std::env::var("ENGINE_GEMM_BLOCKING").ok()?;
        let d: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match d[..] {
            [kc, mc, nc] if kc > 0 && mc > 0 && nc > 0 => Some(Blocking { kc, mc, nc }),
            _ => {
                eprintln!("engine: ENGINE_GEMM_BLOCKING={v:?} is not KC,MC,NC (three positive integers); using the model's blocking");
                None
            }
        }
    }

    /// The blocking the GEMM uses for `isa`: the override set by [`set_blocking`], else the
    /// model's for the running CPU.
    pub fn current(isa: Isa) -> Blocking {
        let kc = OVERRIDE[0].load(Ordering::Relaxed);
        if kc > 0 {
            let (mr, nr) = tile(isa);
            return Blocking {
                kc,
                mc: OVERRIDE[1].load(Ordering::Relaxed).next_multiple_of(mr),
                nc: OVERRIDE[2].load(Ordering::Relaxed).next_multiple_of(nr),
            };
        }
        static MODEL: OnceLock<[Blocking; 3]> = OnceLock::new();
        let m = MODEL.get_or_init(|| {
            let c = Caches::get();
            [Isa::Portable, Isa::Avx2, Isa::Avx512].map(|i| {
                let (mr, nr) = tile(i);
                Blocking::from_env()
                    .map(|b| Blocking {
                        kc: b.kc,
                        mc: b.mc.next_multiple_of(mr),
                        nc: b.nc.next_multiple_of(nr),
                    })
                    .unwrap_or_else(|| Blocking::model(i, &c))
            })
        });
        m[match isa {
            Isa::Portable => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
        }]
    }
}

/// Overrides the blocking of every later f32 GEMM in the process (`None`: back to the model).
/// For tuning sweeps and tests; MC and NC are rounded up to the ISA's tile.
pub fn set_blocking(b: Option<Blocking>) {
    let b = b.unwrap_or(Blocking {
        kc: 0,
        mc: 0,
        nc: 0,
    });
    OVERRIDE[1].store(b.mc.max(1), Ordering::Relaxed);
    OVERRIDE[2].store(b.nc.max(1), Ordering::Relaxed);
    OVERRIDE[0].store(b.kc, Ordering::Relaxed);
}

static OVERRIDE: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// The k extent of each KC block for a product of depth `k`: KC from the blocking, rounded to
/// a whole number of blocks of equal depth (a multiple of 8), so that no short block is left
/// over: k = 768 with KC = 352 runs two blocks of 384 rather than 352 + 352 + 64, a third pass
/// over C for a twelfth of the work (1.3x slower at 4096 x 768 x 768). Blocks grow by at most
/// half (a quotient rounded to the nearest) and shrink by less than a third.
fn kc_block(k: usize, kc: usize) -> usize {
    let blocks = ((2 * k + kc) / (2 * kc)).max(1);
    k.div_ceil(blocks).next_multiple_of(8).max(8)
}

/// Rows per A block: at most `mc`, and balanced, so that m = 256 is one block of 256 rather
/// than 240 + 16, and m = 512 two of 258 (multiples of MR) rather than 240 + 240 + 32.
fn mc_block(m: usize, mr: usize, mc: usize) -> usize {
    let blocks = m.div_ceil(mc).max(1);
    m.div_ceil(blocks)
        .next_multiple_of(mr)
        .min(mc.next_multiple_of(mr))
}

/// Single-threaded blocked GEMM on `job`.
pub(crate) unsafe fn run_serial(isa: Isa, job: Job) {
    struct K<'a> {
        job: Job,
        blk: Blocking,
        ap: &'a mut [f32],
        bp: &'a mut [f32],
    }
    impl SimdKernel for K<'_> {
        type Output = ();
        // Must inline into the `#[target_feature]` trampoline, or the intrinsics below would be
        // compiled as calls (see simd.rs). The same holds for every kernel in the engine.
        #[inline(always)]
        fn run<S: Simd>(self, s: S) {
            let (job, blk) = (self.job, self.blk);
            // SAFETY: forwarded from run_serial's contract; buffers sized by run_serial.
            unsafe {
                // Keep in sync with `tile`.
                match S::ISA {
                    Isa::Avx512 => blocked::<S, 12, 2>(s, job, blk, self.ap, self.bp),
                    Isa::Avx2 => blocked::<S, 6, 2>(s, job, blk, self.ap, self.bp),
                    Isa::Portable => blocked::<S, 4, 1>(s, job, blk, self.ap, self.bp),
                }
            }
        }
    }
    if job.k == 0 {
        scale_c(job, job.beta);
        return;
    }
    let (mr, nr) = tile(isa);
    let blk = Blocking::current(isa);
    let blk = Blocking {
        kc: kc_block(job.k, blk.kc),
        ..blk
    };
    let kc = blk.kc.min(job.k);
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let bp = bbuf.get(kc * blk.nc.min(job.n).next_multiple_of(nr));
        let ap = abuf.get(kc * mc_block(job.m, mr, blk.mc).min(job.m).next_multiple_of(mr));
        dispatch(isa, K { job, blk, ap, bp })
    })
}

thread_local! {
    /// Per-thread packing buffers, reused across calls (no allocation on the hot path).
    static PACK: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::new((AlignedBuf::new(), AlignedBuf::new()));
}

/// A growable f32 buffer whose start is 64-byte aligned; buffers of 1 MiB or more are
/// 2 MiB-aligned and, on Linux, asked to be backed by transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`). A packed B panel (KC x NC, up to 4 MiB) on 4 KiB pages spans
/// more pages than the L1 DTLB holds, and where its pages land decides which L2 sets it
/// conflicts in, so that run-to-run speed varied by 10-15% on the same binary; on huge pages
/// both go away.
pub(crate) struct AlignedBuf {
    ptr: std::ptr::NonNull<f32>,
    /// Capacity in floats (0: nothing allocated).
    cap: usize,
    align: usize,
}

// SAFETY: the buffer is owned memory like a Vec's; it holds plain floats.
unsafe impl Send for AlignedBuf {}

const HUGE_PAGE: usize = 2 << 20;

impl AlignedBuf {
    pub(crate) fn new() -> Self {
        AlignedBuf {
            ptr: std::ptr::NonNull::dangling(),
            cap: 0,
            align: 64,
        }
    }
    /// A 64-byte-aligned slice of at least `n` floats (contents unspecified, initialised).
    pub(crate) fn get(&mut self, n: usize) -> &mut [f32] {
        if self.cap < n {
            self.release();
            let bytes = (n * 4).max(64);
            let (align, bytes) = if bytes >= 1 << 20 {
                (HUGE_PAGE, bytes.next_multiple_of(HUGE_PAGE))
            } else {
                (64, bytes.next_multiple_of(64))
            };
            let layout = std::alloc::Layout::from_size_align(bytes, align).expect("buffer layout");
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
            let Some(ptr) = std::ptr::NonNull::new(p) else {
                std::alloc::handle_alloc_error(layout)
            };
            #[cfg(target_os = "linux")]
            if align == HUGE_PAGE {
                // SAFETY: the range is this allocation, 2 MiB-aligned and a multiple of 2 MiB;
                // the advice only changes how it is backed (a failure leaves 4 KiB pages).
                unsafe {
                    libc::madvise(p as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
                }
            }
            self.ptr = ptr;
            self.cap = bytes / 4;
            self.align = align;
        }
        // SAFETY: `cap >= n` floats, zero-initialised at allocation and only ever written with
        // floats since; borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n) }
    }
    fn release(&mut self) {
        if self.cap > 0 {
            let layout = std::alloc::Layout::from_size_align(self.cap * 4, self.align).unwrap();
            // SAFETY: allocated in `get` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout) };
            self.cap = 0;
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// The blocked loops for one ISA and tile shape MR x (NV * LANES). `ap` and `bp` are packing
/// buffers of at least `min(KC,k) * round_up(min(mc_block,m), MR)` and `min(KC,k) * round_up(min(NC,n), NR)`.
#[inline(always)]
unsafe fn blocked<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    job: Job,
    blk: Blocking,
    ap: &mut [f32],
    bp: &mut [f32],
) {
    let nr = NV * S::LANES;
    let Job {
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = job;
    for jc in (0..n).step_by(blk.nc) {
        let nc = blk.nc.min(n - jc);
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            // When all of M fits one MC block, the packed B panel would be used by a single
            // block: pack each B sliver just before its microkernel calls instead, into an
            // L1-sized buffer, rather than writing a KC x NC panel out to L3 and reading it back
            // (for M = 128 that round trip costs about a tenth of the run).
            let mcb = mc_block(m, MR, blk.mc);
            let fused = m <= mcb;
            if !fused {
                pack_b::<S, NV>(
                    s,
                    bp,
                    job.b.add(pc * job.brs + jc * job.bcs),
                    job.brs,
                    job.bcs,
                    kc,
                    nc,
                );
            }
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            for ic in (0..m).step_by(mcb) {
                let mc = mcb.min(m - ic);
                pack_a::<S>(
                    s,
                    ap,
                    job.a.add(ic * job.ars + pc * job.acs),
                    job.ars,
                    job.acs,
                    mc,
                    kc,
                    MR,
                );
                for jr in (0..nc).step_by(nr) {
                    let nr_eff = nr.min(nc - jr);
                    let bsliver = if fused {
                        let src = job.b.add(pc * job.brs + (jc + jr) * job.bcs);
                        pack_b::<S, NV>(s, bp, src, job.brs, job.bcs, kc, nr_eff);
                        bp.as_ptr()
                    } else {
                        bp.as_ptr().add(jr * kc)
                    };
                    let cblock = job.c.add(ic * job.crs + (jc + jr) * job.ccs);
                    a_slivers::<S, MR, NV>(
                        s, &job, ap, mc, kc, bsliver, cblock, alpha, beta_eff, nr_eff,
                    );
                }
            }
        }
    }
}

/// The innermost loop both drivers share: every MR-row sliver of the packed A block (`mc`
/// rows) against one packed B sliver, into the C block at `c` (its first row, this sliver's
/// first column).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn a_slivers<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    job: &Job,
    ap: &[f32],
    mc: usize,
    kc: usize,
    bsliver: *const f32,
    c: *mut f32,
    alpha: f32,
    beta: f32,
    nr_eff: usize,
) {
    for ir in (0..mc).step_by(MR) {
        let h = MR.min(mc - ir);
        let a = ap.as_ptr().add(ir * kc);
        let c = c.add(ir * job.crs);
        let (rs, cs) = (job.crs, job.ccs);
        // A last sliver of fewer rows (m = 128 with MR = 12 leaves 8) runs a shorter tile
        // over the same packed sliver (stride MR), rather than multiplying zero rows.
        let b = bsliver;
        if MR == 12 && h <= 4 {
            microkernel::<S, 4, NV, MR>(s, kc, a, b, c, rs, cs, alpha, beta, h, nr_eff)
        } else if MR == 12 && h <= 8 {
            microkernel::<S, 8, NV, MR>(s, kc, a, b, c, rs, cs, alpha, beta, h, nr_eff)
        } else if MR == 6 && h <= 2 {
            microkernel::<S, 2, NV, MR>(s, kc, a, b, c, rs, cs, alpha, beta, h, nr_eff)
        } else if MR == 6 && h <= 4 {
            microkernel::<S, 4, NV, MR>(s, kc, a, b, c, rs, cs, alpha, beta, h, nr_eff)
        } else {
            microkernel::<S, MR, NV, MR>(s, kc, a, b, c, rs, cs, alpha, beta, h, nr_eff)
        }
    }
}

/// `C *= beta` (the k = 0 case), with `beta == 0` writing zeros without reading.
pub(crate) unsafe fn scale_c(job: Job, beta: f32) {
    for i in 0..job.m {
        for j in 0..job.n {
            let p = job.c.add(i * job.crs + j * job.ccs);
            *p = if beta == 0.0 { 0.0 } else { beta * *p };
        }
    }
}

/// Packs B[0..kc, 0..nc] (strides rs, cs) into slivers of `NV * LANES` columns: sliver s holds
/// `kc` rows of nr floats, `dst[s*kc*nr + p*nr + j] = B[p, s*nr + j]`, zero past column nc.
#[inline(always)]
unsafe fn pack_b<S: Simd, const NV: usize>(
    s: S,
    dst: &mut [f32],
    b: *const f32,
    rs: usize,
    cs: usize,
    kc: usize,
    nc: usize,
) {
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
    // The last, partial sliver: scalar, zero-padded.
    if full * nr < nc {
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

/// Packs A[0..mc, 0..kc] (strides rs, cs) into slivers of `mr` rows: sliver s holds `kc`
/// columns of `mr` floats, `dst[s*kc*mr + p*mr + i] = A[s*mr + i, p]`, zero past row mc.
#[inline(always)]
unsafe fn pack_a<S: Simd>(
    s: S,
    dst: &mut [f32],
    a: *const f32,
    rs: usize,
    cs: usize,
    mc: usize,
    kc: usize,
    mr: usize,
) {
    let d = dst.as_mut_ptr();
    for (si, i0) in (0..mc).step_by(mr).enumerate() {
        let h = mr.min(mc - i0);
        let sl = d.add(si * kc * mr);
        if rs == 1 {
            // Column-major (transposed) A: each sliver column is a contiguous copy. Full slivers
            // copy a fixed-size run (inlined moves; a run-time length would call memcpy for
            // every 24 bytes).
            #[inline(always)]
            unsafe fn copy_n<const N: usize>(src: *const f32, dst: *mut f32, kc: usize, cs: usize) {
                for p in 0..kc {
                    let v = (src.add(p * cs) as *const [f32; N]).read_unaligned();
                    (dst.add(p * N) as *mut [f32; N]).write_unaligned(v);
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

/// The register-tiled inner kernel: C[0..mr_eff, 0..nr_eff] = alpha * Ap Bp + beta * C.
///
/// `a` is a sliver packed AS rows tall (kc x AS, k-major; AS >= MR, the tile uses its first MR
/// rows), `b` an NR-column sliver (kc x NR, k-major).
/// The MR x NV accumulators are locals of a fixed-size array, which LLVM keeps in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn microkernel<S: Simd, const MR: usize, const NV: usize, const AS: usize>(
    s: S,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    alpha: f32,
    beta: f32,
    mr_eff: usize,
    nr_eff: usize,
) {
    let l = S::LANES;
    let nr = NV * l;
    // The C tile is needed only after the k loop. Ask for it into L2 now, which hides a miss
    // to L3 or memory, and into L1 only for the last `C_LEAD` steps: fetched into L1 now, its
    // lines would be evicted again by the B sliver's before they are used when C's row stride
    // is a multiple of 4 KiB (all the tile's rows then fall in one or two L1 sets).
    for i in 0..mr_eff {
        prefetch_l2(c.add(i * rsc));
        prefetch_l2(c.add(i * rsc + (nr_eff - 1) * csc));
    }
    const C_LEAD: usize = 16;
    let acc = [[s.zero(); NV]; MR];
    let lead = kc.min(C_LEAD);
    // The tile goes through k_steps by value (returned, not borrowed): behind a `&mut` that
    // crosses two loops LLVM stored every accumulator after each FMA (2.5x slower).
    let (acc, ap, bp) = k_steps::<S, MR, NV, AS>(s, acc, a, b, kc - lead);
    for i in 0..mr_eff {
        prefetch(c.add(i * rsc));
        prefetch(c.add(i * rsc + (nr_eff - 1) * csc));
    }
    let (acc, _, _) = k_steps::<S, MR, NV, AS>(s, acc, ap, bp, lead);
    let va = s.splat(alpha);
    if nr_eff == nr && csc == 1 {
        // Full-width tile, contiguous rows: vector read-modify-write of C's first mr_eff rows.
        let vb = s.splat(beta);
        for (i, row) in acc.iter().enumerate().take(mr_eff) {
            let cr = c.add(i * rsc);
            for (v, &acc_v) in row.iter().enumerate() {
                let out = if beta == 0.0 {
                    s.mul(va, acc_v)
                } else {
                    s.fma(vb, s.load(cr.add(v * l)), s.mul(va, acc_v))
                };
                s.store(cr.add(v * l), out);
            }
        }
    } else {
        // Edge tile or strided C: spill the tile, then update element by element.
        let mut tmp = [0.0f32; 12 * 32];
        for (i, row) in acc.iter().enumerate() {
            for (v, &acc_v) in row.iter().enumerate() {
                s.store(tmp.as_mut_ptr().add(i * nr + v * l), s.mul(va, acc_v));
            }
        }
        for i in 0..mr_eff {
            for j in 0..nr_eff {
                let p = c.add(i * rsc + j * csc);
                let t = tmp[i * nr + j];
                *p = if beta == 0.0 { t } else { beta * *p + t };
            }
        }
    }
}

/// `steps` rank-1 updates of the register tile from packed slivers `ap` and `bp`; returns the
/// tile and the pointers past them.
#[inline(always)]
unsafe fn k_steps<S: Simd, const MR: usize, const NV: usize, const AS: usize>(
    s: S,
    mut acc: [[S::F; NV]; MR],
    a: *const f32,
    b: *const f32,
    steps: usize,
) -> ([[S::F; NV]; MR], *const f32, *const f32) {
    let nr = NV * S::LANES;
    let (mut ap, mut bp) = (a, b);
    // Unrolled by 4: fewer loop-counter instructions between the FMAs.
    for _ in 0..steps / 4 {
        rank1::<S, MR, NV>(s, &mut acc, ap, bp);
        rank1::<S, MR, NV>(s, &mut acc, ap.add(AS), bp.add(nr));
        rank1::<S, MR, NV>(s, &mut acc, ap.add(2 * AS), bp.add(2 * nr));
        rank1::<S, MR, NV>(s, &mut acc, ap.add(3 * AS), bp.add(3 * nr));
        ap = ap.add(4 * AS);
        bp = bp.add(4 * nr);
    }
    for _ in 0..steps % 4 {
        rank1::<S, MR, NV>(s, &mut acc, ap, bp);
        ap = ap.add(AS);
        bp = bp.add(nr);
    }
    (acc, ap, bp)
}

/// One rank-1 update of the register tile: NV loads of B, MR broadcasts of A, MR * NV FMAs.
/// (A function, not a closure: closures are not `#[inline(always)]` and would lose the ISA.)
#[inline(always)]
unsafe fn rank1<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    acc: &mut [[S::F; NV]; MR],
    ap: *const f32,
    bp: *const f32,
) {
    let mut bv = [s.zero(); NV];
    for (v, bvv) in bv.iter_mut().enumerate() {
        *bvv = s.load(bp.add(v * S::LANES));
    }
    for (i, row) in acc.iter_mut().enumerate() {
        let ai = s.splat(*ap.add(i));
        for v in 0..NV {
            row[v] = s.fma(ai, bv[v], row[v]);
        }
    }
}

/// A prefetch hint for the cache line holding `p` into L1 (no-op off x86-64).
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A prefetch hint bringing the line holding `p` into L2 only (no-op off x86-64).
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ std::arch::x86_64::_MM_HINT_T1 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_hint<const HINT: i32>(p: *const f32) {
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8) }
}

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
#[allow(clippy::too_many_arguments)]
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

/// B packed once, for a GEMM run many times against the same B (a weight matrix at inference):
/// exactly the slivers the blocked loop would pack on every call, for every KC block, so those
/// calls skip packing B. For M = 128 rows (one sequence of BERT) packing B is about a sixth of
/// a Linear layer's time.
///
/// Layout: KC block `pc` (starting at row pc of B) holds `ceil(n / NR)` slivers of kc x NR
/// floats, `data[pc * npad + s * kc * NR + p * NR + j] = B[pc + p, s * NR + j]` (zero past n),
/// where npad = ceil(n / NR) * NR.
pub struct PackedB {
    isa: Isa,
    /// The KC it was packed with (the blocking in force then; later calls follow it).
    kc: usize,
    k: usize,
    n: usize,
    /// The packed floats start 64-byte aligned at `v[off]`.
    v: Vec<f32>,
    off: usize,
}

impl PackedB {
    /// Packs `b` (k x n, any strides) for `isa`'s microkernel.
    pub fn new(isa: Isa, b: MatRef) -> Result<PackedB, GemmError> {
        if !b.in_bounds() {
            return Err(GemmError(format!(
                "B ({} x {}, strides {} {}) reaches past its {} elements",
                b.rows,
                b.cols,
                b.rs,
                b.cs,
                b.data.len()
            )));
        }
        let (k, n) = (b.rows, b.cols);
        let nr = tile(isa).1;
        let kc = kc_block(k, Blocking::current(isa).kc);
        let npad = n.next_multiple_of(nr);
        let len = k * npad;
        let mut v = vec![0.0f32; len + 16];
        let off = v.as_ptr().align_offset(64).min(16);
        struct Pack<'a> {
            b: MatRef<'a>,
            dst: &'a mut [f32],
            npad: usize,
            kc: usize,
        }
        impl SimdKernel for Pack<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                let (k, n) = (self.b.rows, self.b.cols);
                for pc in (0..k).step_by(self.kc) {
                    let kc = self.kc.min(k - pc);
                    let dst = &mut self.dst[pc * self.npad..];
                    // SAFETY: `new` checked B's bounds; dst holds k * npad floats.
                    unsafe {
                        let src = self.b.data.as_ptr().add(pc * self.b.rs);
                        match S::ISA {
                            Isa::Avx512 => pack_b::<S, 2>(s, dst, src, self.b.rs, self.b.cs, kc, n),
                            Isa::Avx2 => pack_b::<S, 2>(s, dst, src, self.b.rs, self.b.cs, kc, n),
                            Isa::Portable => {
                                pack_b::<S, 1>(s, dst, src, self.b.rs, self.b.cs, kc, n)
                            }
                        }
                    }
                }
            }
        }
        if len > 0 {
            dispatch(
                isa,
                Pack {
                    b,
                    dst: &mut v[off..off + len],
                    npad,
                    kc,
                },
            );
        }
        Ok(PackedB {
            isa,
            kc,
            k,
            n,
            v,
            off,
        })
    }
    pub fn rows(&self) -> usize {
        self.k
    }
    pub fn cols(&self) -> usize {
        self.n
    }
    pub fn isa(&self) -> Isa {
        self.isa
    }
    fn data(&self) -> *const f32 {
        self.v[self.off..].as_ptr()
    }
}

/// `C = alpha * A B + beta * C` with B prepacked (see [`PackedB`]), on `threads` threads.
pub fn gemm_prepacked(
    threads: usize,
    alpha: f32,
    a: MatRef,
    b: &PackedB,
    beta: f32,
    c: MatMut,
) -> Result<(), GemmError> {
    let (k, n) = (b.k, b.n);
    if a.cols != k || c.rows != a.rows || c.cols != n {
        return Err(GemmError(format!(
            "A is {} x {}, packed B {k} x {n}, C {} x {}",
            a.rows, a.cols, c.rows, c.cols
        )));
    }
    // The checks of an ordinary GEMM, with a stand-in B of the right shape (never read).
    let stand_in = [0.0f32; 1];
    check_args(
        &a,
        &MatRef {
            data: &stand_in,
            rows: k,
            cols: n,
            rs: 0,
            cs: 0,
        },
        &c,
    )?;
    if c.rows == 0 || c.cols == 0 {
        return Ok(());
    }
    let isa = b.isa;
    let (mr, nr) = tile(isa);
    // KC is the one B was packed with; MC follows the blocking in force now.
    let blocking = Blocking {
        kc: b.kc,
        ..Blocking::current(isa)
    };
    let bp = b.data() as usize;
    let job = Job::new(alpha, a, MatRef::row_major(&stand_in, 1, 1), beta, c);
    if k == 0 {
        // SAFETY: the job addresses C, checked above.
        unsafe { scale_c(job, beta) };
        return Ok(());
    }
    let run = move |i0: usize, m: usize, j0: usize, nn: usize| {
        let blk = job.block(i0, m, j0, nn);
        struct K<'a> {
            job: Job,
            blocking: Blocking,
            ap: &'a mut [f32],
            bp: *const f32,
            npad: usize,
            j0: usize,
        }
        impl SimdKernel for K<'_> {
            type Output = ();
            #[inline(always)]
            fn run<S: Simd>(self, s: S) {
                // SAFETY: forwarded from the checks above; blocks of C are disjoint.
                unsafe {
                    match S::ISA {
                        Isa::Avx512 => blocked_prepacked::<S, 12, 2>(
                            s,
                            self.job,
                            self.blocking,
                            self.ap,
                            self.bp,
                            self.npad,
                            self.j0,
                        ),
                        Isa::Avx2 => blocked_prepacked::<S, 6, 2>(
                            s,
                            self.job,
                            self.blocking,
                            self.ap,
                            self.bp,
                            self.npad,
                            self.j0,
                        ),
                        Isa::Portable => blocked_prepacked::<S, 4, 1>(
                            s,
                            self.job,
                            self.blocking,
                            self.ap,
                            self.bp,
                            self.npad,
                            self.j0,
                        ),
                    }
                }
            }
        }
        // The A packing buffer is taken here, outside the SIMD code: a closure inside it
        // (`PACK.with(|..| ..)`) would be compiled without the ISA's target features.
        PACK.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let ap = bufs
                .0
                .get(blocking.kc.min(k) * mc_block(m, mr, blocking.mc).min(m).next_multiple_of(mr));
            dispatch(
                isa,
                K {
                    job: blk,
                    blocking,
                    ap,
                    bp: bp as *const f32,
                    npad: n.next_multiple_of(nr),
                    j0,
                },
            )
        });
    };
    let threads = threads.max(1);
    if threads == 1 || job.m * job.n * k < PARALLEL_MIN_FLOPS {
        run(0, job.m, 0, n);
        return Ok(());
    }
    let (tiles_m, tiles_n) = (job.m.div_ceil(mr), n.div_ceil(nr));
    // Each thread reads all of the operand the cut does not divide: cutting n shares A (m x k),
    // cutting m shares the packed B (k x n). Share the smaller one (B is never packed here).
    let cut_n = if job.m > n {
        tiles_m < 2 * threads
    } else {
        tiles_n >= 2 * threads || tiles_n >= tiles_m
    };
    let blocks: Vec<(usize, usize, usize, usize)> = if cut_n {
        split(tiles_n, threads)
            .map(|(t0, t1)| (0, job.m, t0 * nr, (t1 * nr).min(n) - t0 * nr))
            .collect()
    } else {
        split(tiles_m, threads)
            .map(|(t0, t1)| (t0 * mr, (t1 * mr).min(job.m) - t0 * mr, 0, n))
            .collect()
    };
    use rayon::prelude::*;
    blocks
        .into_par_iter()
        .for_each(|(i0, m, j0, nn)| run(i0, m, j0, nn));
    Ok(())
}

/// The blocked loops of [`blocked`] over a prepacked B; `j0` (a multiple of NR) is the first
/// column of this block of C within the packed B.
#[inline(always)]
unsafe fn blocked_prepacked<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    job: Job,
    blk: Blocking,
    ap: &mut [f32],
    bp: *const f32,
    npad: usize,
    j0: usize,
) {
    let nr = NV * S::LANES;
    let Job {
        m,
        n,
        k,
        alpha,
        beta,
        ..
    } = job;
    let mcb = mc_block(m, MR, blk.mc);
    for pc in (0..k).step_by(blk.kc) {
        let kc = blk.kc.min(k - pc);
        let beta_eff = if pc == 0 { beta } else { 1.0 };
        let panel = bp.add(pc * npad);
        for ic in (0..m).step_by(mcb) {
            let mc = mcb.min(m - ic);
            pack_a::<S>(
                s,
                ap,
                job.a.add(ic * job.ars + pc * job.acs),
                job.ars,
                job.acs,
                mc,
                kc,
                MR,
            );
            for jr in (0..n).step_by(nr) {
                let nr_eff = nr.min(n - jr);
                let bsliver = panel.add((j0 + jr) / nr * kc * nr);
                let cblock = job.c.add(ic * job.crs + jr * job.ccs);
                a_slivers::<S, MR, NV>(
                    s, &job, ap, mc, kc, bsliver, cblock, alpha, beta_eff, nr_eff,
                );
            }
        }
    }
}
