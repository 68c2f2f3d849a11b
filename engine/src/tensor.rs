//! `Tensor`: shared, reference-counted storage plus a strided view (shape, strides, offset).
//!
//! Views (reshape of contiguous data, transpose/permute, narrow, broadcast) share the storage
//! and copy nothing; `contiguous()` copies only when the view is not already dense row-major.
//! Storage is tagged with a [`DType`]: compute runs in f32, and bf16/f16 tensors exist for
//! storage and conversion (checkpoints, GPU transfers) through [`Tensor::to_dtype`].

use crate::error::{Error, Result};
use half::{bf16, f16};
use std::sync::Arc;

/// Element types a tensor can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

/// Dense element storage of one dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    /// f32 values read in place from bytes owned elsewhere (a memory-mapped checkpoint).
    MappedF32(MappedF32),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

/// Read-only bytes that outlive every tensor viewing them (e.g. a `memmap2::Mmap`).
pub trait ByteOwner: Send + Sync {
    fn bytes(&self) -> &[u8];
}

/// `len` little-endian f32 values at `byte_offset` of an owner's bytes, viewed without a copy.
#[derive(Clone)]
pub struct MappedF32 {
    owner: Arc<dyn ByteOwner>,
    byte_offset: usize,
    len: usize,
}

impl MappedF32 {
    /// None when the range is out of bounds, not 4-byte aligned in memory, or the target is
    /// big-endian: the caller then copies instead.
    pub fn new(owner: Arc<dyn ByteOwner>, byte_offset: usize, len: usize) -> Option<Self> {
        let bytes = owner.bytes();
        let end = byte_offset.checked_add(len.checked_mul(4)?)?;
        if end > bytes.len() || cfg!(target_endian = "big") {
            return None;
        }
        let ptr = bytes[byte_offset..].as_ptr();
        if ptr.align_offset(std::mem::align_of::<f32>()) != 0 {
            return None;
        }
        Some(MappedF32 {
            owner,
            byte_offset,
            len,
        })
    }
    pub fn as_slice(&self) -> &[f32] {
        let bytes = &self.owner.bytes()[self.byte_offset..self.byte_offset + 4 * self.len];
        // SAFETY: `new` checked that the range is in bounds and 4-byte aligned, every bit
        // pattern is a valid f32, the target is little-endian (the file's byte order), and the
        // bytes are borrowed from `self.owner`, which this struct keeps alive and never mutates.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, self.len) }
    }
}

impl std::fmt::Debug for MappedF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MappedF32({} values at byte {})",
            self.len, self.byte_offset
        )
    }
}

impl PartialEq for MappedF32 {
    fn eq(&self, o: &Self) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) | Storage::MappedF32(_) => DType::F32,
            Storage::BF16(_) => DType::BF16,
            Storage::F16(_) => DType::F16,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::MappedF32(m) => m.len,
            Storage::BF16(v) => v.len(),
            Storage::F16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn get_f32(&self, i: usize) -> f32 {
        match self {
            Storage::F32(v) => v[i],
            Storage::MappedF32(m) => m.as_slice()[i],
            Storage::BF16(v) => v[i].to_f32(),
            Storage::F16(v) => v[i].to_f32(),
        }
    }
}

/// An n-dimensional strided view of shared storage.
#[derive(Clone, Debug)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major (C-order) strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        st[i] = acc;
        acc *= shape[i];
    }
    st
}

/// The shape two shapes broadcast to (numpy rules: align right; sizes equal or one of them 1).
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::Shape {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                    why: format!("dimension {i} of the broadcast has sizes {da} and {db}"),
                })
            }
        };
    }
    Ok(out)
}

impl Tensor {
    // ----- construction -------------------------------------------------------------------

    /// A tensor owning `data`, laid out row-major in `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Self::from_storage(Storage::F32(data), shape)
    }

    /// A tensor over dense storage of any dtype.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != storage.len() {
            return Err(Error::Arg {
                op: "from_vec",
                shape: shape.to_vec(),
                why: format!(
                    "shape holds {n} elements but the data has {}",
                    storage.len()
                ),
            });
        }
        Ok(Tensor {
            storage: Arc::new(storage),
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        })
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(vec![value; n], shape).expect("sizes agree")
    }
    pub fn zeros(shape: &[usize]) -> Tensor {
        Self::full(shape, 0.0)
    }
    pub fn ones(shape: &[usize]) -> Tensor {
        Self::full(shape, 1.0)
    }
    /// A 0-dimensional tensor.
    pub fn scalar(v: f32) -> Tensor {
        Self::full(&[], v)
    }
    /// Uniform values in [lo, hi) from a seeded SplitMix64 stream: the same on every machine.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v = (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect();
        Tensor::from_vec(v, shape).expect("sizes agree")
    }
    /// Normal values with the given mean and standard deviation (Box-Muller on SplitMix64).
    pub fn randn(shape: &[usize], mean: f32, std: f32, seed: u64) -> Tensor {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v = (0..n).map(|_| mean + std * rng.next_normal()).collect();
        Tensor::from_vec(v, shape).expect("sizes agree")
    }

    // ----- inspection ---------------------------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Whether two tensors view the same storage allocation.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
    /// Dense row-major (strides of size-1 dimensions are ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for i in (0..self.rank()).rev() {
            if self.shape[i] != 1 && self.strides[i] != acc {
                return false;
            }
            acc *= self.shape[i];
        }
        true
    }
    /// Size of dimension `d`; negative counts from the end.
    pub fn dim(&self, d: isize) -> Result<usize> {
        Ok(self.shape[self.norm_dim("dim", d)?])
    }
    pub(crate) fn norm_dim(&self, op: &'static str, d: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let i = if d < 0 { d + r } else { d };
        if i < 0 || i >= r {
            return Err(Error::Dim {
                op,
                dim: d.unsigned_abs(),
                shape: self.shape.clone(),
            });
        }
        Ok(i as usize)
    }
    pub(crate) fn require_f32(&self, op: &'static str) -> Result<()> {
        if self.dtype() != DType::F32 {
            return Err(Error::DType {
                op,
                want: DType::F32,
                got: self.dtype(),
            });
        }
        Ok(())
    }

    /// The f32 slice this view addresses, starting at its offset, when the dtype is f32.
    /// All of an f32 storage, from element 0 (not from this view's offset).
    fn storage_f32(&self) -> &[f32] {
        match &*self.storage {
            Storage::F32(v) => v,
            Storage::MappedF32(m) => m.as_slice(),
            _ => panic!("storage_f32 on a {:?} tensor", self.dtype()),
        }
    }

    pub(crate) fn raw_f32(&self) -> &[f32] {
        match &*self.storage {
            Storage::F32(v) => &v[self.offset.min(v.len())..],
            Storage::MappedF32(m) => {
                let v = m.as_slice();
                &v[self.offset.min(v.len())..]
            }
            _ => panic!(
                "raw_f32 on a {:?} tensor (callers check require_f32)",
                self.dtype()
            ),
        }
    }

    /// The elements of a contiguous f32 tensor, as a slice; None if it is a strided view or not f32.
    pub fn as_slice(&self) -> Option<&[f32]> {
        if self.dtype() == DType::F32 && self.is_contiguous() {
            Some(&self.raw_f32()[..self.numel()])
        } else {
            None
        }
    }

    /// All elements in row-major order, converted to f32.
    pub fn to_vec(&self) -> Vec<f32> {
        if let Some(s) = self.as_slice() {
            return copy_par(s);
        }
        if matches!(&*self.storage, Storage::F32(_) | Storage::MappedF32(_)) {
            return gather_par(self.storage_f32(), &self.shape, &self.strides, self.offset);
        }
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_offset(|o| out.push(self.storage.get_f32(o)));
        out
    }

    /// Calls `f` with the storage offset of every element, in row-major order.
    fn for_each_offset(&self, mut f: impl FnMut(usize)) {
        let n = self.numel();
        if n == 0 {
            return;
        }
        let r = self.rank();
        let mut idx = vec![0usize; r];
        let mut off = self.offset;
        for _ in 0..n {
            f(off);
            for d in (0..r).rev() {
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                off -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }

    // ----- views (no copy) ----------------------------------------------------------------

    /// The same elements in a new shape. A view when the tensor is contiguous, else a copy.
    /// One dimension may be given as `usize::MAX` to be inferred.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = self.numel();
        let mut shape = shape.to_vec();
        let known: usize = shape.iter().filter(|&&d| d != usize::MAX).product();
        let inferred = shape.iter().filter(|&&d| d == usize::MAX).count();
        if inferred > 1 || (inferred == 1 && (known == 0 || !n.is_multiple_of(known))) {
            return Err(Error::Arg {
                op: "reshape",
                shape: self.shape.clone(),
                why: format!("cannot infer a dimension of {shape:?}"),
            });
        }
        if inferred == 1 {
            let pos = shape.iter().position(|&d| d == usize::MAX).unwrap();
            shape[pos] = n / known;
        }
        if shape.iter().product::<usize>() != n {
            return Err(Error::Shape {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape,
                why: "element counts differ".into(),
            });
        }
        let base = if self.is_contiguous() {
            self.clone()
        } else {
            self.contiguous()
        };
        Ok(Tensor {
            strides: contiguous_strides(&shape),
            shape,
            ..base
        })
    }

    /// Reorders the dimensions: output dimension i is input dimension `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::Arg {
                op: "permute",
                shape: self.shape.clone(),
                why: format!("{perm:?} is not a permutation of 0..{r}"),
            });
        }
        Ok(Tensor {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            ..self.clone()
        })
    }

    /// Swaps dimensions `a` and `b` (negative counts from the end).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (
            self.norm_dim("transpose", a)?,
            self.norm_dim("transpose", b)?,
        );
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// The transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::Arg {
                op: "t",
                shape: self.shape.clone(),
                why: "needs at least 2 dimensions".into(),
            });
        }
        self.transpose(-2, -1)
    }

    /// `len` entries of dimension `dim` starting at `start`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.norm_dim("narrow", dim)?;
        if start.checked_add(len).is_none_or(|e| e > self.shape[d]) {
            return Err(Error::Arg {
                op: "narrow",
                shape: self.shape.clone(),
                why: format!(
                    "range {start}..{} past the end of dimension {d} (size {})",
                    start.saturating_add(len),
                    self.shape[d]
                ),
            });
        }
        let mut t = self.clone();
        t.shape[d] = len;
        if len > 0 {
            t.offset += start * self.strides[d];
        }
        Ok(t)
    }

    /// Index `i` of dimension `dim`, removing that dimension.
    pub fn select(&self, dim: isize, i: usize) -> Result<Tensor> {
        let d = self.norm_dim("select", dim)?;
        let mut t = self.narrow(dim, i, 1)?;
        t.shape.remove(d);
        t.strides.remove(d);
        Ok(t)
    }

    /// Inserts a dimension of size 1 at `dim` (0..=rank).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::Dim {
                op: "unsqueeze",
                dim,
                shape: self.shape.clone(),
            });
        }
        let mut t = self.clone();
        t.shape.insert(dim, 1);
        t.strides.insert(dim, 0);
        Ok(t)
    }

    /// Expands size-1 (or missing leading) dimensions to `shape` with stride 0: no copy.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let target = broadcast_shapes("broadcast_to", &self.shape, shape)?;
        if target != shape {
            return Err(Error::Shape {
                op: "broadcast_to",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                why: "cannot expand to the target".into(),
            });
        }
        let extra = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            strides[extra + i] = if self.shape[i] == 1 {
                0
            } else {
                self.strides[i]
            };
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            strides,
            ..self.clone()
        })
    }

    /// A dense row-major copy, or the tensor itself when it already is one.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() && self.offset == 0 && self.storage.len() == self.numel() {
            return self.clone();
        }
        let storage = match &*self.storage {
            Storage::F32(_) | Storage::MappedF32(_) => {
                let v = self.storage_f32();
                if self.is_contiguous() {
                    Storage::F32(copy_par(&v[self.offset..self.offset + self.numel()]))
                } else {
                    Storage::F32(gather_par(v, &self.shape, &self.strides, self.offset))
                }
            }
            Storage::BF16(v) => {
                let mut out = Vec::with_capacity(self.numel());
                self.for_each_offset(|o| out.push(v[o]));
                Storage::BF16(out)
            }
            Storage::F16(v) => {
                let mut out = Vec::with_capacity(self.numel());
                self.for_each_offset(|o| out.push(v[o]));
                Storage::F16(out)
            }
        };
        Tensor::from_storage(storage, &self.shape).expect("sizes agree")
    }

    /// A copy in another dtype (round-to-nearest-even to bf16/f16), contiguous.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.contiguous();
        }
        let v = self.to_vec();
        let storage = match dtype {
            DType::F32 => Storage::F32(v),
            DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        };
        Tensor::from_storage(storage, &self.shape).expect("sizes agree")
    }
}

/// Copies large buffers on every thread (the copy's page faults too), small ones in place.
/// Training copies activations and gradients between layouts; done on one core, those copies
/// were a fifth of a two-thread step.
pub fn copy_par(src: &[f32]) -> Vec<f32> {
    if src.len() < crate::rows::PAR_MIN_ELEMS * 4 || rayon::current_num_threads() == 1 {
        return src.to_vec();
    }
    use rayon::prelude::*;
    let mut out = vec![0.0f32; src.len()];
    let chunk = src.len().div_ceil(rayon::current_num_threads() * 4);
    out.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(o, i)| o.copy_from_slice(i));
    out
}

/// The elements of a strided view (`shape`, `strides`, `offset` into `v`) in row-major order,
/// split across threads by ranges of the output when large.
pub fn gather_par(v: &[f32], shape: &[usize], strides: &[usize], offset: usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fill = |start: usize, out: &mut [f32]| {
        if out.is_empty() {
            return;
        }
        // The multi-index of `start`, then an odometer.
        let r = shape.len();
        let mut idx = vec![0usize; r];
        let (mut rem, mut off) = (start, offset);
        for d in (0..r).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
            off += idx[d] * strides[d];
        }
        let inner = if r > 0 { shape[r - 1] } else { 1 };
        let inner_stride = if r > 0 { strides[r - 1] } else { 0 };
        let mut i = 0;
        while i < out.len() {
            // A run along the last axis.
            let run = (inner - idx.last().copied().unwrap_or(0)).min(out.len() - i);
            if inner_stride == 1 {
                out[i..i + run].copy_from_slice(&v[off..off + run]);
            } else {
                for (j, o) in out[i..i + run].iter_mut().enumerate() {
                    *o = v[off + j * inner_stride];
                }
            }
            i += run;
            if r == 0 {
                break;
            }
            off += run * inner_stride;
            idx[r - 1] += run;
            for d in (0..r).rev() {
                if idx[d] < shape[d] || d == 0 {
                    break;
                }
                off -= strides[d] * shape[d];
                idx[d] = 0;
                idx[d - 1] += 1;
                off += strides[d - 1];
            }
        }
    };
    let mut out = vec![0.0f32; n];
    if n >= crate::rows::PAR_MIN_ELEMS * 4 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let chunk = n.div_ceil(rayon::current_num_threads() * 4);
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, o)| fill(c * chunk, o));
    } else {
        fill(0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arange(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape).unwrap()
    }

    #[test]
    fn views_share_storage_and_index_correctly() {
        let t = arange(&[2, 3, 4]);
        let p = t.permute(&[2, 0, 1]).unwrap();
        assert!(p.shares_storage(&t));
        assert_eq!(p.shape(), &[4, 2, 3]);
        // p[k, i, j] = t[i, j, k] = 12 i + 4 j + k
        let v = p.to_vec();
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    assert_eq!(v[k * 6 + i * 3 + j], (12 * i + 4 * j + k) as f32);
                }
            }
        }
        let n = t.narrow(2, 1, 2).unwrap();
        assert_eq!(
            n.to_vec(),
            vec![1., 2., 5., 6., 9., 10., 13., 14., 17., 18., 21., 22.]
        );
        assert!(!n.is_contiguous());
        let b = Tensor::from_vec(vec![1., 2., 3.], &[3, 1])
            .unwrap()
            .broadcast_to(&[2, 3, 4])
            .unwrap();
        assert_eq!(b.strides(), &[0, 1, 0]);
        assert_eq!(b.to_vec()[..8], [1., 1., 1., 1., 2., 2., 2., 2.]);
        let s = t.select(1, 2).unwrap();
        assert_eq!(s.shape(), &[2, 4]);
        assert_eq!(s.to_vec(), vec![8., 9., 10., 11., 20., 21., 22., 23.]);
    }

    #[test]
    fn reshape_views_contiguous_and_copies_strided() {
        let t = arange(&[4, 6]);
        let r = t.reshape(&[2, usize::MAX, 3]).unwrap();
        assert_eq!(r.shape(), &[2, 4, 3]);
        assert!(r.shares_storage(&t));
        let tt = t.t().unwrap().reshape(&[24]).unwrap();
        assert!(!tt.shares_storage(&t));
        assert_eq!(tt.to_vec()[..4], [0., 6., 12., 18.]);
        assert!(matches!(t.reshape(&[5, 5]), Err(Error::Shape { .. })));
        let err = t.reshape(&[5, 5]).unwrap_err().to_string();
        assert!(err.contains("[4, 6]") && err.contains("[5, 5]"), "{err}");
    }

    #[test]
    fn errors_name_op_and_shapes() {
        let t = arange(&[2, 3]);
        assert!(t
            .narrow(1, 2, 2)
            .unwrap_err()
            .to_string()
            .contains("narrow"));
        assert!(t.permute(&[0, 0]).is_err());
        assert!(t
            .transpose(0, 2)
            .unwrap_err()
            .to_string()
            .contains("rank 2"));
        let e = broadcast_shapes("add", &[2, 3], &[4, 3])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("add:") && e.contains("[2, 3]") && e.contains("[4, 3]"),
            "{e}"
        );
        assert!(Tensor::from_vec(vec![1.0; 5], &[2, 3]).is_err());
    }

    #[test]
    fn dtype_round_trips() {
        let t = Tensor::from_vec(vec![1.0, -2.5, 3.140625, 1e-3], &[2, 2]).unwrap();
        let b = t.to_dtype(DType::BF16);
        assert_eq!(b.dtype(), DType::BF16);
        assert_eq!(b.to_vec()[..3], [1.0, -2.5, 3.140625]);
        let h = t.t().unwrap().to_dtype(DType::F16);
        assert_eq!(h.to_dtype(DType::F32).to_vec()[..2], [1.0, 3.140625]);
        assert!(((b.to_vec()[3] - 1e-3) / 1e-3).abs() < 4e-3);
    }
}
