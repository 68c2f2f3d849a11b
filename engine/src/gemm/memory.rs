//! Memory for the GEMM: aligned packing buffers (on huge pages when large) and prefetch hints.

use std::cell::RefCell;

thread_local! {
    /// Per-thread packing buffers (A block, B panel), reused across calls and by every GEMM
    /// of the engine (no allocation on the hot path).
    pub(crate) static PACK: RefCell<(AlignedBuf, AlignedBuf)> = RefCell::new((AlignedBuf::new(), AlignedBuf::new()));
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
