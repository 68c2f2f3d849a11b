//! The CUDA C sources, embedded in the binary. Each family is one `.cu` file under `kernels/cuda/`
//! with `common.cuh` prepended, compiled by NVRTC at run time (see [`crate::compile`]).

/// A kernel family: one CUDA source file, one NVRTC program, one loaded module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Elementwise,
    Gelu,
    Layernorm,
    Softmax,
    CrossEntropy,
    Embedding,
    Dropout,
    Adamw,
    Reduce,
    Attention,
}

/// Prepended to every family: bf16 bits, 16-byte packs, warp/block reductions, the dropout hash.
pub const COMMON: &str = include_str!("../cuda/common.cuh");

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Elementwise,
        Family::Gelu,
        Family::Layernorm,
        Family::Softmax,
        Family::CrossEntropy,
        Family::Embedding,
        Family::Dropout,
        Family::Adamw,
        Family::Reduce,
        Family::Attention,
    ];

    /// The file's stem under `kernels/cuda/`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Elementwise => "elementwise",
            Family::Gelu => "gelu",
            Family::Layernorm => "layernorm",
            Family::Softmax => "softmax",
            Family::CrossEntropy => "cross_entropy",
            Family::Embedding => "embedding",
            Family::Dropout => "dropout",
            Family::Adamw => "adamw",
            Family::Reduce => "reduce",
            Family::Attention => "attention",
        }
    }

    /// The family's own source (without the common prelude).
    pub fn body(self) -> &'static str {
        match self {
            Family::Elementwise => include_str!("../cuda/elementwise.cu"),
            Family::Gelu => include_str!("../cuda/gelu.cu"),
            Family::Layernorm => include_str!("../cuda/layernorm.cu"),
            Family::Softmax => include_str!("../cuda/softmax.cu"),
            Family::CrossEntropy => include_str!("../cuda/cross_entropy.cu"),
            Family::Embedding => include_str!("../cuda/embedding.cu"),
            Family::Dropout => include_str!("../cuda/dropout.cu"),
            Family::Adamw => include_str!("../cuda/adamw.cu"),
            Family::Reduce => include_str!("../cuda/reduce.cu"),
            Family::Attention => include_str!("../cuda/attention.cu"),
        }
    }

    /// The translation unit NVRTC compiles: the prelude, then the family. A `#line` directive
    /// makes compiler messages point into the family's own file.
    pub fn source(self) -> String {
        format!("{COMMON}\n#line 1 \"{}.cu\"\n{}", self.name(), self.body())
    }
}
