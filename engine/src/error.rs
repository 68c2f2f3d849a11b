//! Engine errors. Every shape error names the op and the shapes involved.

use crate::DType;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    Shape {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        why: String,
    },
    /// A dimension index past the rank.
    Dim {
        op: &'static str,
        dim: usize,
        shape: Vec<usize>,
    },
    /// An argument out of range (a slice past the end, a reshape to the wrong size...).
    Arg {
        op: &'static str,
        shape: Vec<usize>,
        why: String,
    },
    /// An op that needs another dtype.
    DType {
        op: &'static str,
        want: DType,
        got: DType,
    },
    /// An index (token id, class label) out of range.
    Index {
        op: &'static str,
        index: i64,
        size: usize,
        at: usize,
    },
    /// A NaN or infinity where training needs finite numbers (a loss, a parameter's gradient).
    NonFinite { what: String, step: u64 },
    /// A graph whose saved tensors a previous `backward` already consumed.
    GraphConsumed,
    /// A failure on a device (a CUDA call, a kernel launcher's argument check): the message
    /// names the call or kernel.
    Device(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NonFinite { what, step } => {
                write!(
                    f,
                    "step {step}: {what} is not finite (NaN or infinity); not training through it"
                )
            }
            Error::Device(m) => write!(f, "device: {m}"),
            Error::GraphConsumed => {
                write!(f, "backward: this graph was already consumed by a previous backward (build it again)")
            }
            Error::Shape { op, lhs, rhs, why } => {
                write!(f, "{op}: shapes {lhs:?} and {rhs:?} do not fit: {why}")
            }
            Error::Dim { op, dim, shape } => {
                write!(
                    f,
                    "{op}: dimension {dim} out of range for a tensor of shape {shape:?} (rank {})",
                    shape.len()
                )
            }
            Error::Arg { op, shape, why } => {
                write!(f, "{op}: on a tensor of shape {shape:?}: {why}")
            }
            Error::DType { op, want, got } => {
                write!(f, "{op}: needs a {want:?} tensor, got {got:?}")
            }
            Error::Index {
                op,
                index,
                size,
                at,
            } => {
                write!(
                    f,
                    "{op}: index {index} at position {at} is out of range for size {size}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::gemm::GemmError> for Error {
    fn from(e: crate::gemm::GemmError) -> Self {
        Error::Arg {
            op: "gemm",
            shape: vec![],
            why: e.0,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
