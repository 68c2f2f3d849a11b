//! The safetensors format (github.com/huggingface/safetensors), read and written by hand:
//!
//! ```text
//! u64 little-endian N | N bytes of JSON header | data
//! header: { "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//!           "__metadata__": {"key": "value"} }   offsets are relative to the data start
//! ```
//! Reading memory-maps the file (memmap2): f32 tensors are views of the mapping with no copy
//! when aligned; f16/bf16 are converted to f32. Every header is validated before any data is
//! touched, as the reference implementation does: the header length fits the file, each
//! entry's byte range matches its dtype and shape (with overflow checks), and the ranges tile
//! the data area exactly, in order, without gaps or overlaps. A hostile file therefore gets an
//! error naming the tensor, never a panic or an out-of-bounds read.
//!
//! (As with any memory map, the file must not be truncated by another process while mapped.)

use crate::{BertError, Result};
use engine::tensor::{ByteOwner, MappedF32};
use engine::{DType, Storage, Tensor};
use half::{bf16, f16};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The reference implementation's limit on the header size.
const MAX_HEADER: u64 = 100_000_000;

/// Element types the format names, with their sizes in bytes.
const DTYPES: &[(&str, usize)] = &[
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("F8_E4M3", 1),
    ("F8_E5M2", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("I64", 8),
    ("U64", 8),
    ("F64", 8),
];

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range within the data area.
    pub begin: usize,
    pub end: usize,
}

struct MmapOwner(memmap2::Mmap);
impl ByteOwner for MmapOwner {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}
struct VecOwner(Vec<u8>);
impl ByteOwner for VecOwner {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An open safetensors file.
pub struct SafeTensors {
    source: String,
    bytes: Arc<dyn ByteOwner>,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// Memory-maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| BertError::Io(format!("{}: {e}", path.display())))?;
        // SAFETY: the mapping is read-only and lives inside `MmapOwner`, which every tensor
        // viewing it keeps alive. memmap2's one caveat, another process truncating the file
        // while it is mapped, is documented at the top of this module.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| BertError::Io(format!("{}: cannot map: {e}", path.display())))?;
        Self::parse(Arc::new(MmapOwner(map)), path.display().to_string())
    }

    /// Parses and validates a file already in memory; `source` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, source: &str) -> Result<Self> {
        Self::parse(Arc::new(VecOwner(bytes)), source.to_string())
    }

    fn parse(bytes: Arc<dyn ByteOwner>, source: String) -> Result<Self> {
        let b = bytes.bytes();
        let bad = |why: String| BertError::Checkpoint(format!("{source}: {why}"));
        if b.len() < 8 {
            return Err(bad(format!(
                "{} bytes is too short for a safetensors file (the 8-byte header length is missing)",
                b.len()
            )));
        }
        let n = u64::from_le_bytes(b[..8].try_into().unwrap());
        if n > MAX_HEADER || n > (b.len() - 8) as u64 {
            return Err(bad(format!(
                "header length {n} does not fit a file of {} bytes (or exceeds {MAX_HEADER})",
                b.len()
            )));
        }
        let data_start = 8 + n as usize;
        let header = std::str::from_utf8(&b[8..data_start])
            .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
        let v: Value = serde_json::from_str(header.trim_end_matches(' '))
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("header is not a JSON object".into()))?;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, entry) in obj {
            if name == "__metadata__" {
                let m = entry
                    .as_object()
                    .ok_or_else(|| bad("__metadata__ is not an object".into()))?;
                for (k, v) in m {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("__metadata__ value '{k}' is not a string")))?;
                    metadata.insert(k.clone(), s.to_string());
                }
                continue;
            }
            let info = parse_entry(entry).map_err(|why| bad(format!("tensor '{name}': {why}")))?;
            tensors.insert(name.clone(), info);
        }
        // The byte ranges must tile the data area in order (as the reference reader requires).
        let data_len = b.len() - data_start;
        let mut ranges: Vec<(&String, &TensorInfo)> = tensors.iter().collect();
        ranges.sort_by_key(|(_, t)| (t.begin, t.end));
        let mut at = 0usize;
        for (name, t) in &ranges {
            if t.begin != at {
                return Err(bad(format!(
                    "tensor '{name}' starts at byte {} of the data, expected {at} (gap or overlap)",
                    t.begin
                )));
            }
            at = t.end;
        }
        if at != data_len {
            return Err(bad(format!(
                "the tensors cover {at} bytes of data but the file holds {data_len} after the header"
            )));
        }
        Ok(SafeTensors {
            source,
            bytes,
            data_start,
            tensors,
            metadata,
        })
    }

    /// Names of every tensor, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Tensor `name` as f32 (a view of the mapping when f32 and aligned; f16/bf16 converted).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            BertError::Checkpoint(format!("{}: no tensor named '{name}'", self.source))
        })?;
        let raw = &self.bytes.bytes()[self.data_start + t.begin..self.data_start + t.end];
        let n: usize = t.shape.iter().product();
        let storage = match t.dtype.as_str() {
            "F32" => match MappedF32::new(self.bytes.clone(), self.data_start + t.begin, n) {
                Some(m) => Storage::MappedF32(m),
                None => Storage::F32(
                    raw.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
            },
            "F16" => Storage::F32(
                raw.chunks_exact(2)
                    .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                    .collect(),
            ),
            "BF16" => Storage::F32(
                raw.chunks_exact(2)
                    .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                    .collect(),
            ),
            "F64" => Storage::F32(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            ),
            other => {
                return Err(BertError::Checkpoint(format!(
                "{}: tensor '{name}' has dtype {other}; only F32, F16, BF16 and F64 load as floats",
                self.source
            )))
            }
        };
        Ok(Tensor::from_storage(storage, &t.shape)?)
    }
}

fn parse_entry(entry: &Value) -> std::result::Result<TensorInfo, String> {
    let o = entry.as_object().ok_or("entry is not an object")?;
    let dtype = o
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing string field 'dtype'")?;
    let size = DTYPES
        .iter()
        .find(|d| d.0 == dtype)
        .ok_or_else(|| format!("unknown dtype '{dtype}'"))?
        .1;
    let shape: Vec<usize> = o
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing array field 'shape'")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize))
        .collect::<Option<_>>()
        .ok_or("shape holds something other than non-negative integers")?;
    let offs = o
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("missing array field 'data_offsets'")?;
    let (begin, end) = match offs.as_slice() {
        [a, b] => (
            a.as_u64().ok_or("data_offsets are not integers")? as usize,
            b.as_u64().ok_or("data_offsets are not integers")? as usize,
        ),
        _ => return Err("data_offsets must hold two integers".into()),
    };
    if begin > end {
        return Err(format!("data_offsets [{begin}, {end}] run backwards"));
    }
    let bytes = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if bytes != end - begin {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {bytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        ));
    }
    Ok(TensorInfo {
        dtype: dtype.to_string(),
        shape,
        begin,
        end,
    })
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
    }
}

/// The bytes of a contiguous tensor in its own dtype, little-endian.
fn tensor_bytes(t: &Tensor, out: &mut dyn Write) -> std::io::Result<()> {
    let t = t.contiguous();
    let mut buf = Vec::with_capacity(t.numel() * t.dtype().size_in_bytes());
    match t.storage() {
        Storage::F32(_) | Storage::MappedF32(_) => {
            for x in t.as_slice().expect("contiguous f32") {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        Storage::BF16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        Storage::F16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
    }
    out.write_all(&buf)
}

/// Writes `tensors` (in the order given; names must be unique) with `metadata`, atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut at = 0usize;
    for (name, t) in tensors {
        let n = t.numel() * t.dtype().size_in_bytes();
        let entry = serde_json::json!({
            "dtype": dtype_name(t.dtype()),
            "shape": t.shape(),
            "data_offsets": [at, at + n],
        });
        if header.insert(name.clone(), entry).is_some() {
            return Err(BertError::Checkpoint(format!(
                "{}: tensor name '{name}' given twice",
                path.display()
            )));
        }
        at += n;
    }
    let mut h = Value::Object(header).to_string().into_bytes();
    // Pad with spaces so the data starts 8-byte aligned (f32 views need 4).
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    crate::io::write_atomic_with(path, |w| {
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
        for (_, t) in tensors {
            tensor_bytes(t, w)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let id = format!("{:?}", std::thread::current().id())
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let dir = std::env::temp_dir().join(format!("st-sample-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let a = Tensor::from_vec(vec![1.0, -2.0, 3.5, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let b = Tensor::from_vec(vec![0.5, 0.25], &[2])
            .unwrap()
            .to_dtype(DType::BF16);
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), "pt".into());
        write(&p, &[("a".into(), a), ("b".into(), b)], &meta).unwrap();
        std::fs::read(&p).unwrap()
    }

    #[test]
    fn round_trip_with_views_and_conversion() {
        let bytes = sample();
        let st = SafeTensors::from_bytes(bytes, "mem").unwrap();
        assert_eq!(st.names().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(st.metadata["format"], "pt");
        let a = st.tensor("a").unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.to_vec(), vec![1.0, -2.0, 3.5, 4.0, 5.0, 6.0]);
        // Aligned f32 data is viewed in place (the Vec's heap block is at least 8-aligned).
        assert!(matches!(a.storage(), Storage::MappedF32(_)));
        assert_eq!(st.tensor("b").unwrap().to_vec(), vec![0.5, 0.25]);
        assert!(st.tensor("c").unwrap_err().to_string().contains("'c'"));
    }

    #[test]
    fn corrupt_headers_name_what_is_wrong() {
        let good = sample();
        let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&good[8..8 + n]).unwrap().to_string();
        let with_header = |h: &str| {
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&good[8 + n..]);
            v
        };
        let cases = [
            (header.replace("[2,3]", "[3,3]"), "'a'"),
            (header.replace("\"F32\"", "\"F33\""), "F33"),
            (header.replace("[0,24]", "[4,28]"), "gap or overlap"),
            ("[1,2]".to_string(), "not a JSON object"),
        ];
        for (h, want) in cases {
            let e = SafeTensors::from_bytes(with_header(&h), "f.safetensors")
                .err()
                .unwrap_or_else(|| panic!("{h} was accepted"))
                .to_string();
            assert!(e.contains(want) && e.contains("f.safetensors"), "{e}");
        }
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(SafeTensors::from_bytes(huge, "f").is_err());
        assert!(SafeTensors::from_bytes(good[..good.len() - 1].to_vec(), "f").is_err());
        assert!(SafeTensors::from_bytes(vec![1, 2, 3], "f").is_err());
    }
}
