//! A GGUF reader: header, metadata and tensor index, every count, offset and size validated
//! before use, and dequantization of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K to f32.

mod quant;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn_peft_core::format::NamedTensor;

pub use quant::GgmlType;

/// What can be wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid GGUF file (or lie about their sizes).
    #[error("{path}: invalid GGUF at byte {offset}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where the problem was found.
        offset: usize,
        /// What was wrong.
        message: String,
    },
    /// A tensor or key the caller needs is absent.
    #[error("{path}: no {what} '{name}'")]
    Missing {
        /// The file.
        path: PathBuf,
        /// "tensor" or "metadata key".
        what: &'static str,
        /// The name looked for.
        name: String,
    },
    /// A tensor type this reader cannot dequantize.
    #[error("{path}: tensor '{name}' has unsupported type {kind}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its ggml type.
        kind: String,
    },
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// An array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::Float(v) => Some(v),
            GgufValue::Uint(v) => Some(v as f64),
            GgufValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lies in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (row length) first.
    pub dims: Vec<u64>,
    /// The storage type.
    pub kind: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (outermost first): GGUF's dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (`usize::MAX` when the dimensions' product overflows).
    pub fn len(&self) -> usize {
        self.dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX)
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed GGUF file, its bytes kept in memory.
///
/// ```no_run
/// let file = burn_peft_models::Gguf::open("model.gguf".as_ref()).unwrap();
/// println!("{:?}", file.metadata_str("general.architecture"));
/// let embedding = file.tensor("token_embd.weight").unwrap();
/// ```
#[derive(Debug)]
pub struct Gguf {
    path: PathBuf,
    bytes: Vec<u8>,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor index, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    data_start: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// Nesting limit for arrays of arrays.
const MAX_DEPTH: usize = 4;

impl<'a> Cursor<'a> {
    fn err(&self, message: impl Into<String>) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            offset: self.pos,
            message: message.into(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err(format!("needs {n} bytes, {} left", self.remaining())));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count that must fit in what is left, given each item takes at least `min_size` bytes.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, GgufError> {
        let n = self.u64()?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_size.max(1))
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            self.err(format!(
                "{what} count {n} cannot fit in the {} bytes left",
                self.remaining()
            ))
        })
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.count(1, "string length")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<GgufValue, GgufError> {
        Ok(match kind {
            0 => GgufValue::Uint(self.array::<1>()?[0] as u64),
            1 => GgufValue::Int(self.array::<1>()?[0] as i8 as i64),
            2 => GgufValue::Uint(u16::from_le_bytes(self.array()?) as u64),
            3 => GgufValue::Int(i16::from_le_bytes(self.array()?) as i64),
            4 => GgufValue::Uint(self.u32()? as u64),
            5 => GgufValue::Int(i32::from_le_bytes(self.array()?) as i64),
            6 => GgufValue::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => match self.array::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("bool byte {b}"))),
            },
            8 => GgufValue::Str(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err("arrays nested too deep"));
                }
                let inner = self.u32()?;
                let min = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(self.err(format!("unknown value type {other}"))),
                };
                let n = self.count(min, "array")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.err(format!("unknown value type {other}"))),
        })
    }
}

impl Gguf {
    /// Reads and validates a GGUF file.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Parses GGUF bytes; `path` names the source in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            path,
        };
        if c.take(4).ok() != Some(b"GGUF".as_slice()) {
            return Err(c.err("no GGUF magic"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("unsupported GGUF version {version}")));
        }
        // A tensor info takes at least 8 (name) + 4 + 8 (one dim) + 4 + 8 bytes.
        let n_tensors = c.count(32, "tensor")?;
        // A key/value takes at least 8 (key) + 4 (type) + 1 bytes.
        let n_kv = c.count(13, "metadata")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let kind = c.u32()?;
            let value = c.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if !(1..=4).contains(&n_dims) {
                return Err(c.err(format!("tensor '{name}' has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let kind = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
                .ok_or_else(|| c.err("general.alignment is not a power of two"))?
                as usize,
        };
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let data_len = bytes.len().saturating_sub(data_start);
        for t in &tensors {
            let count = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0);
            let size = count.and_then(|n| t.kind.byte_size(n));
            let end = size.and_then(|s| t.offset.checked_add(s));
            let ok = end.is_some_and(|e| e <= data_len as u64) && t.offset % alignment as u64 == 0;
            if !ok && t.kind.block().is_some() {
                return Err(GgufError::Invalid {
                    path: path.to_path_buf(),
                    offset: data_start,
                    message: format!(
                        "tensor '{}' ({:?}, dims {:?}, offset {}) does not fit the {data_len}-byte data section",
                        t.name, t.kind, t.dims, t.offset
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            tensors,
            data_start,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::Missing {
            path: self.path.clone(),
            what: "metadata key",
            name: key.to_string(),
        })
    }

    /// A string metadata value.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(GgufValue::as_str)
    }

    /// The index entry of a tensor.
    pub fn info(&self, name: &str) -> Result<&GgufTensorInfo, GgufError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::Missing {
                path: self.path.clone(),
                what: "tensor",
                name: name.to_string(),
            })
    }

    /// A tensor dequantized to f32, shape in PyTorch order.
    pub fn tensor(&self, name: &str) -> Result<NamedTensor, GgufError> {
        let info = self.info(name)?;
        let n = info.len();
        let size = info
            .kind
            .byte_size(n as u64)
            .ok_or_else(|| GgufError::Unsupported {
                path: self.path.clone(),
                name: name.to_string(),
                kind: format!("{:?}", info.kind),
            })? as usize;
        let start = self.data_start + info.offset as usize;
        let raw = &self.bytes[start..start + size];
        let data = quant::dequantize(info.kind, raw, n).ok_or_else(|| GgufError::Unsupported {
            path: self.path.clone(),
            name: name.to_string(),
            kind: format!("{:?}", info.kind),
        })?;
        Ok(NamedTensor {
            shape: info.shape(),
            data,
        })
    }
}
