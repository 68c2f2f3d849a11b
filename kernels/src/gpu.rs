//! A GPU: its context and stream, the families compiled for it (NVRTC runs once per family and
//! architecture per process), and the one place kernels are launched from.

use crate::source::Family;
use crate::{compile, Error};
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Element types the kernels are instantiated for: the suffix of their names and how many fit
/// in a 16-byte pack.
pub trait Elem: DeviceRepr + Copy + Default + Send + Sync + 'static {
    const SUFFIX: &'static str;
    const PACK: usize;
}
impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
    const PACK: usize = 4;
}
impl Elem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
    const PACK: usize = 8;
}

/// One kernel argument, as the driver receives it (a pointer to its bytes).
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer (0 for an optional buffer that is absent).
    Ptr(u64),
    I32(i32),
    I64(i64),
    U64(u64),
    F32(f32),
}

/// PTX per (family, arch), shared by every GPU of the process: NVRTC runs once for each.
type PtxCache = Mutex<HashMap<(Family, &'static str), Arc<String>>>;

fn ptx_cache() -> &'static PtxCache {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The PTX of a family for `arch`, compiled on first use.
pub fn ptx_for(family: Family, arch: &'static str) -> Result<Arc<String>, Error> {
    if let Some(p) = ptx_cache().lock().unwrap().get(&(family, arch)) {
        return Ok(p.clone());
    }
    let ptx = Arc::new(compile::compile(family, arch)?.to_src());
    ptx_cache()
        .lock()
        .unwrap()
        .insert((family, arch), ptx.clone());
    Ok(ptx)
}

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    sms: u32,
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, (CudaFunction, Vec<usize>)>>,
    checked: std::sync::atomic::AtomicBool,
}

impl Gpu {
    /// Opens GPU `ordinal` (its primary context and a stream of its own).
    pub fn new(ordinal: usize) -> Result<Gpu, Error> {
        // SAFETY: only dlopen()s the driver library to see whether it exists.
        let present =
            std::panic::catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() })
                .unwrap_or(false);
        if !present {
            return Err(Error::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let arch = compile::arch_for(major, minor)?;
        let sms = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )? as u32;
        // Everything this crate does runs on this one stream, in order, so cudarc's cross-stream
        // event tracking has nothing to order. Left on (its default once a second stream
        // exists, and `new_stream` makes one), every allocation would create two CUDA events and
        // every kernel argument would cost a cuStreamWaitEvent and a cuEventRecord: several
        // driver calls per buffer per launch, host time that a step of a small model (hundreds
        // of short launches) is bound by.
        // SAFETY: see above: one stream; host reads go through this stream's synchronising
        // copies, and buffers are freed stream-ordered on the stream that allocated them.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        Ok(Gpu {
            ctx,
            stream,
            arch,
            sms,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            checked: false.into(),
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    /// NVRTC's target for this GPU, e.g. "sm_90".
    pub fn arch(&self) -> &'static str {
        self.arch
    }
    /// Streaming multiprocessors (sizes persistent grids).
    pub fn sms(&self) -> u32 {
        self.sms
    }
    pub fn synchronize(&self) -> Result<(), Error> {
        Ok(self.stream.synchronize()?)
    }

    /// Checked mode: synchronise after every launch, so an asynchronous fault is reported by
    /// the launch that caused it (the GPU tests run this way; it costs the overlap).
    pub fn set_checked(&self, on: bool) {
        self.checked.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Compiles (once) and loads every family now, so that later timings exclude NVRTC.
    pub fn warm_up(&self) -> Result<(), Error> {
        for f in Family::ALL {
            self.module(f)?;
        }
        Ok(())
    }

    fn module(&self, family: Family) -> Result<Arc<CudaModule>, Error> {
        if let Some(m) = self.modules.lock().unwrap().get(&family) {
            return Ok(m.clone());
        }
        let ptx = ptx_for(family, self.arch)?;
        let m = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx.as_str()))?;
        self.modules.lock().unwrap().insert(family, m.clone());
        Ok(m)
    }

    /// The loaded kernel `name` of `family`, with its parameters' sizes (from the PTX).
    pub fn function(
        &self,
        family: Family,
        name: &str,
    ) -> Result<(CudaFunction, Vec<usize>), Error> {
        if let Some(f) = self.functions.lock().unwrap().get(name) {
            return Ok(f.clone());
        }
        let params = compile::entry_params(&ptx_for(family, self.arch)?)
            .remove(name)
            .ok_or_else(|| Error::Args {
                kernel: "launch",
                msg: format!("{}.cu has no kernel named {name}", family.name()),
            })?;
        let f = (self.module(family)?.load_function(name)?, params);
        self.functions
            .lock()
            .unwrap()
            .insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Launches `name` with a grid of `grid` blocks of `block` threads. The arguments must match
    /// the kernel's C signature (the launchers in this crate are the only callers that need to).
    pub fn launch(
        &self,
        family: Family,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<(), Error> {
        let (f, params) = self.function(family, name)?;
        // The argument list must match the kernel's signature in count and size: a mismatch
        // here would otherwise be a silent misread of every later parameter.
        let sizes: Vec<usize> = args
            .iter()
            .map(|a| match a {
                Arg::Ptr(_) | Arg::U64(_) | Arg::I64(_) => 8,
                Arg::I32(_) | Arg::F32(_) => 4,
            })
            .collect();
        if sizes != params {
            return Err(Error::Args {
                kernel: "launch",
                msg: format!("{name} takes parameters of {params:?} bytes, given {sizes:?}"),
            });
        }
        // Every value lives in an 8-byte slot; the driver copies the parameter's own size from
        // the slot's start (little-endian: an i32 or f32 sits in the low bytes).
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) | Arg::U64(p) => p,
                Arg::I64(v) => v as u64,
                Arg::I32(v) => v as u32 as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        self.ctx.bind_to_thread()?;
        // SAFETY: `params` points at `slots`, alive until the call returns (the driver copies
        // the values at launch). The launchers checked every buffer's length against the sizes
        // passed, so the kernel stays inside the allocations.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )?;
        }
        if self.checked.load(std::sync::atomic::Ordering::Relaxed) {
            self.stream.synchronize()?;
        }
        Ok(())
    }

    /// A grid-stride launch size for `work` items at `per_block` items per block: enough blocks
    /// to fill every SM several times over, no more than needed.
    pub fn grid_for(&self, work: u64, per_block: u64) -> u32 {
        let want = work.div_ceil(per_block.max(1)).max(1);
        want.min(self.sms as u64 * 32) as u32
    }
}

/// A buffer's device address, for the argument list, and a guard that must outlive the launch.
pub(crate) fn addr<'a, T, B: DevicePtr<T> + ?Sized>(
    gpu: &'a Gpu,
    b: &'a B,
) -> (u64, cudarc::driver::SyncOnDrop<'a>) {
    let (p, g) = b.device_ptr(&gpu.stream);
    (p, g)
}

/// The same for a buffer the kernel writes.
pub(crate) fn addr_mut<'a, T, B: DevicePtrMut<T> + ?Sized>(
    gpu: &'a Gpu,
    b: &'a mut B,
) -> (u64, cudarc::driver::SyncOnDrop<'a>) {
    let (p, g) = b.device_ptr_mut(&gpu.stream);
    (p, g)
}
