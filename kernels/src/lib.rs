//! CUDA kernels for the BERT stack: CUDA C sources (one file per family under `kernels/cuda/`),
//! compiled at run time by NVRTC for the GPU in use, launched through cudarc, which opens
//! `libcuda`, `libnvrtc` and `libcublas` dynamically: this crate builds and its CPU-side checks
//! run on machines with no GPU and no CUDA install.
//!
//! This crate knows nothing of the engine's `Tensor`: launchers take device buffers and sizes,
//! check them (lengths, shapes, 16-byte alignment) and return [`Error`]s.

pub mod adamw;
pub mod attention;
pub mod blas;
mod check;
pub mod compile;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod gpu;
pub mod layernorm;
pub mod ptxas;
pub mod reduce;
pub mod softmax;
pub mod source;

pub use cudarc;
pub use gpu::{Elem, Gpu};
pub use source::Family;

/// Everything that can go wrong before or during a launch.
#[derive(Debug)]
pub enum Error {
    /// `libcuda` could not be opened: no NVIDIA driver on this machine.
    NoDriver,
    /// `libnvrtc` could not be opened (no CUDA toolkit and no NVRTC wheel on the loader path).
    NoNvrtc,
    /// NVRTC rejected a family's source.
    Compile {
        family: &'static str,
        arch: &'static str,
        log: String,
    },
    /// A compute capability this crate has no NVRTC target for.
    UnsupportedArch { major: i32, minor: i32 },
    /// A launcher's arguments do not fit the kernel's contract.
    Args { kernel: &'static str, msg: String },
    /// A CUDA driver call failed.
    Driver(cudarc::driver::DriverError),
    /// A cuBLAS call failed.
    Blas(cudarc::cublas::result::CublasError),
    /// A cuBLASLt call failed.
    BlasLt(cudarc::cublaslt::result::CublasError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoDriver => write!(f, "no CUDA driver (libcuda.so) on this machine"),
            Error::NoNvrtc => write!(
                f,
                "libnvrtc could not be loaded: install a CUDA toolkit or run scripts/fetch-cuda-tools \
                 and put its lib directory on LD_LIBRARY_PATH"
            ),
            Error::Compile { family, arch, log } => {
                write!(f, "NVRTC failed on {family}.cu for {arch}:\n{log}")
            }
            Error::UnsupportedArch { major, minor } => {
                write!(f, "no NVRTC target for compute capability {major}.{minor}")
            }
            Error::Args { kernel, msg } => write!(f, "{kernel}: {msg}"),
            Error::Driver(e) => write!(f, "CUDA driver: {e:?}"),
            Error::Blas(e) => write!(f, "cuBLAS: {e:?}"),
            Error::BlasLt(e) => write!(f, "cuBLASLt: {e:?}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<cudarc::driver::DriverError> for Error {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Error::Driver(e)
    }
}

impl From<cudarc::cublas::result::CublasError> for Error {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        Error::Blas(e)
    }
}

impl From<cudarc::cublaslt::result::CublasError> for Error {
    fn from(e: cudarc::cublaslt::result::CublasError) -> Self {
        Error::BlasLt(e)
    }
}
