//! Typed tensors of the Open Inference Protocol: datatypes, JSON and binary codecs, batching along dim 0.

use half::f16;
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

/// Why a tensor could not be decoded or reshaped; the message is shown to the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error(
        "unknown datatype {0:?}; expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES"
    )]
    UnknownDatatype(String),
    #[error(
        "tensor {name:?}: invalid shape {shape:?} (dimensions must be non-negative, and their product must fit in memory)"
    )]
    BadShape { name: String, shape: Vec<i64> },
    #[error("tensor {name:?}: shape {shape:?} needs {expected} elements but {got} were given")]
    ElementCount {
        name: String,
        shape: Vec<i64>,
        expected: usize,
        got: usize,
    },
    #[error("tensor {name:?}: element {index} is {found}, which is not a valid {datatype}")]
    BadElement {
        name: String,
        index: usize,
        datatype: DataType,
        found: String,
    },
    #[error(
        "tensor {name:?}: binary data of {got} bytes is not a whole number of {datatype} elements or does not match shape {shape:?} ({expected} bytes expected)"
    )]
    BinarySize {
        name: String,
        datatype: DataType,
        shape: Vec<i64>,
        expected: usize,
        got: usize,
    },
    #[error("tensor {name:?}: malformed BYTES binary data (length prefix runs past the end)")]
    BytesFraming { name: String },
    #[error(
        "tensor {name:?}: BYTES element {index} is not valid UTF-8 and cannot be shown as JSON"
    )]
    NotUtf8 { name: String, index: usize },
    #[error("cannot batch tensors {name:?}: {reason}")]
    Batch { name: String, reason: String },
}

/// An Open Inference Protocol datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's spelling, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Result<DataType, TensorError> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| TensorError::UnknownDatatype(s.to_string()))
    }

    /// FP16, FP32 or FP64.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
    }

    /// Bytes per element in the binary encoding; `None` for variable-length BYTES.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of a tensor, flat in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies one expression to the inner vector of every variant.
macro_rules! each_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn empty(dt: DataType) -> TensorData {
        match dt {
            DataType::Bool => TensorData::Bool(Vec::new()),
            DataType::Uint8 => TensorData::Uint8(Vec::new()),
            DataType::Uint16 => TensorData::Uint16(Vec::new()),
            DataType::Uint32 => TensorData::Uint32(Vec::new()),
            DataType::Uint64 => TensorData::Uint64(Vec::new()),
            DataType::Int8 => TensorData::Int8(Vec::new()),
            DataType::Int16 => TensorData::Int16(Vec::new()),
            DataType::Int32 => TensorData::Int32(Vec::new()),
            DataType::Int64 => TensorData::Int64(Vec::new()),
            DataType::Fp16 => TensorData::Fp16(Vec::new()),
            DataType::Fp32 => TensorData::Fp32(Vec::new()),
            DataType::Fp64 => TensorData::Fp64(Vec::new()),
            DataType::Bytes => TensorData::Bytes(Vec::new()),
        }
    }

    /// Appends `other` (same datatype, checked by the caller).
    fn extend_from(&mut self, other: &TensorData) -> bool {
        match (self, other) {
            (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
            (TensorData::Uint8(a), TensorData::Uint8(b)) => a.extend_from_slice(b),
            (TensorData::Uint16(a), TensorData::Uint16(b)) => a.extend_from_slice(b),
            (TensorData::Uint32(a), TensorData::Uint32(b)) => a.extend_from_slice(b),
            (TensorData::Uint64(a), TensorData::Uint64(b)) => a.extend_from_slice(b),
            (TensorData::Int8(a), TensorData::Int8(b)) => a.extend_from_slice(b),
            (TensorData::Int16(a), TensorData::Int16(b)) => a.extend_from_slice(b),
            (TensorData::Int32(a), TensorData::Int32(b)) => a.extend_from_slice(b),
            (TensorData::Int64(a), TensorData::Int64(b)) => a.extend_from_slice(b),
            (TensorData::Fp16(a), TensorData::Fp16(b)) => a.extend_from_slice(b),
            (TensorData::Fp32(a), TensorData::Fp32(b)) => a.extend_from_slice(b),
            (TensorData::Fp64(a), TensorData::Fp64(b)) => a.extend_from_slice(b),
            (TensorData::Bytes(a), TensorData::Bytes(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }

    fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::Bool(v) => TensorData::Bool(v[start..end].to_vec()),
            TensorData::Uint8(v) => TensorData::Uint8(v[start..end].to_vec()),
            TensorData::Uint16(v) => TensorData::Uint16(v[start..end].to_vec()),
            TensorData::Uint32(v) => TensorData::Uint32(v[start..end].to_vec()),
            TensorData::Uint64(v) => TensorData::Uint64(v[start..end].to_vec()),
            TensorData::Int8(v) => TensorData::Int8(v[start..end].to_vec()),
            TensorData::Int16(v) => TensorData::Int16(v[start..end].to_vec()),
            TensorData::Int32(v) => TensorData::Int32(v[start..end].to_vec()),
            TensorData::Int64(v) => TensorData::Int64(v[start..end].to_vec()),
            TensorData::Fp16(v) => TensorData::Fp16(v[start..end].to_vec()),
            TensorData::Fp32(v) => TensorData::Fp32(v[start..end].to_vec()),
            TensorData::Fp64(v) => TensorData::Fp64(v[start..end].to_vec()),
            TensorData::Bytes(v) => TensorData::Bytes(v[start..end].to_vec()),
        }
    }

    /// Little-endian binary encoding (BYTES: 4-byte length prefix per element), appended to `out`.
    pub fn write_binary(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            TensorData::Uint8(v) => out.extend_from_slice(v),
            TensorData::Int8(v) => out.extend(v.iter().map(|&x| x as u8)),
            TensorData::Uint16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Uint64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Bytes(v) => v.iter().for_each(|x| {
                out.extend_from_slice(&(x.len() as u32).to_le_bytes());
                out.extend_from_slice(x);
            }),
        }
    }

    /// Decodes the little-endian binary encoding of `count` elements (any count for BYTES).
    pub fn from_binary(
        name: &str,
        dt: DataType,
        shape: &[i64],
        count: usize,
        raw: &[u8],
    ) -> Result<TensorData, TensorError> {
        if let Some(size) = dt.size()
            && count.checked_mul(size) != Some(raw.len())
        {
            return Err(TensorError::BinarySize {
                name: name.to_string(),
                datatype: dt,
                shape: shape.to_vec(),
                expected: count.saturating_mul(size),
                got: raw.len(),
            });
        }
        fn chunks<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            raw.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        Ok(match dt {
            DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
            DataType::Uint8 => TensorData::Uint8(raw.to_vec()),
            DataType::Int8 => TensorData::Int8(raw.iter().map(|&b| b as i8).collect()),
            DataType::Uint16 => TensorData::Uint16(chunks(raw, u16::from_le_bytes)),
            DataType::Uint32 => TensorData::Uint32(chunks(raw, u32::from_le_bytes)),
            DataType::Uint64 => TensorData::Uint64(chunks(raw, u64::from_le_bytes)),
            DataType::Int16 => TensorData::Int16(chunks(raw, i16::from_le_bytes)),
            DataType::Int32 => TensorData::Int32(chunks(raw, i32::from_le_bytes)),
            DataType::Int64 => TensorData::Int64(chunks(raw, i64::from_le_bytes)),
            DataType::Fp16 => TensorData::Fp16(chunks(raw, f16::from_le_bytes)),
            DataType::Fp32 => TensorData::Fp32(chunks(raw, f32::from_le_bytes)),
            DataType::Fp64 => TensorData::Fp64(chunks(raw, f64::from_le_bytes)),
            DataType::Bytes => {
                let mut out = Vec::new();
                let mut rest = raw;
                while !rest.is_empty() {
                    let framing = || TensorError::BytesFraming {
                        name: name.to_string(),
                    };
                    let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(framing)?;
                    let len = u32::from_le_bytes(*len) as usize;
                    if tail.len() < len {
                        return Err(framing());
                    }
                    out.push(tail[..len].to_vec());
                    rest = &tail[len..];
                }
                if out.len() != count {
                    return Err(TensorError::ElementCount {
                        name: name.to_string(),
                        shape: shape.to_vec(),
                        expected: count,
                        got: out.len(),
                    });
                }
                TensorData::Bytes(out)
            }
        })
    }

    /// Decodes JSON `data` given as text. Float tensors (what models take) are parsed straight
    /// into the typed buffer by [`JsonFloatSeed`]; other datatypes go through a `Value` tree and
    /// [`TensorData::from_json`].
    pub fn from_json_text(
        name: &str,
        dt: DataType,
        text: &str,
    ) -> Result<TensorData, TensorDecodeError> {
        use serde::de::DeserializeSeed;
        if dt.is_float() {
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed = JsonFloatSeed(dt)
                .deserialize(&mut de)
                .and_then(|d| de.end().map(|()| d))
                .map_err(TensorDecodeError::Json)?;
            return Ok(parsed.into_data(name)?);
        }
        let value: Value = serde_json::from_str(text).map_err(TensorDecodeError::Json)?;
        Ok(Self::from_json(name, dt, &value)?)
    }

    /// Decodes JSON `data` (flat or nested row-major arrays) of the given datatype.
    pub fn from_json(name: &str, dt: DataType, data: &Value) -> Result<TensorData, TensorError> {
        let mut flat = Vec::new();
        flatten(data, &mut flat);
        let bad = |index: usize, v: &Value| TensorError::BadElement {
            name: name.to_string(),
            index,
            datatype: dt,
            found: short(v),
        };
        fn ints<T: TryFrom<i64> + TryFrom<u64>>(
            flat: &[&Value],
            bad: &dyn Fn(usize, &Value) -> TensorError,
        ) -> Result<Vec<T>, TensorError> {
            flat.iter()
                .enumerate()
                .map(|(i, v)| {
                    let n = match v {
                        Value::Number(n) => n,
                        _ => return Err(bad(i, v)),
                    };
                    if let Some(x) = n.as_i64() {
                        T::try_from(x).map_err(|_| bad(i, v))
                    } else if let Some(x) = n.as_u64() {
                        T::try_from(x).map_err(|_| bad(i, v))
                    } else {
                        Err(bad(i, v))
                    }
                })
                .collect()
        }
        let floats = |flat: &[&Value]| -> Result<Vec<f64>, TensorError> {
            flat.iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Number(n) => n.as_f64().ok_or_else(|| bad(i, v)),
                    Value::String(s) => special_float(s).ok_or_else(|| bad(i, v)),
                    _ => Err(bad(i, v)),
                })
                .collect()
        };
        Ok(match dt {
            DataType::Bool => TensorData::Bool(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Bool(b) => Ok(*b),
                        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
                        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
                        _ => Err(bad(i, v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => TensorData::Uint8(ints(&flat, &bad)?),
            DataType::Uint16 => TensorData::Uint16(ints(&flat, &bad)?),
            DataType::Uint32 => TensorData::Uint32(ints(&flat, &bad)?),
            DataType::Uint64 => TensorData::Uint64(ints(&flat, &bad)?),
            DataType::Int8 => TensorData::Int8(ints(&flat, &bad)?),
            DataType::Int16 => TensorData::Int16(ints(&flat, &bad)?),
            DataType::Int32 => TensorData::Int32(ints(&flat, &bad)?),
            DataType::Int64 => TensorData::Int64(ints(&flat, &bad)?),
            DataType::Fp16 => {
                TensorData::Fp16(floats(&flat)?.into_iter().map(f16::from_f64).collect())
            }
            DataType::Fp32 => {
                TensorData::Fp32(floats(&flat)?.into_iter().map(|x| x as f32).collect())
            }
            DataType::Fp64 => TensorData::Fp64(floats(&flat)?),
            DataType::Bytes => TensorData::Bytes(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s.as_bytes().to_vec()),
                        _ => Err(bad(i, v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The first BYTES element an ONNX string tensor cannot hold, and why: one that is not UTF-8,
    /// or one with a NUL byte (ONNX Runtime takes strings as C strings).
    pub fn first_non_string(&self) -> Option<(usize, &'static str)> {
        match self {
            TensorData::Bytes(v) => v.iter().enumerate().find_map(|(i, b)| {
                if std::str::from_utf8(b).is_err() {
                    Some((i, "is not UTF-8 text"))
                } else if b.contains(&0) {
                    Some((i, "contains a NUL byte"))
                } else {
                    None
                }
            }),
            _ => None,
        }
    }

    /// The first BYTES element that is not UTF-8 text (none for other datatypes).
    pub fn first_non_text(&self) -> Option<usize> {
        match self {
            TensorData::Bytes(v) => v.iter().position(|b| std::str::from_utf8(b).is_err()),
            _ => None,
        }
    }

    /// Checks that BYTES elements can be written as JSON strings.
    pub fn check_json_encodable(&self, name: &str) -> Result<(), TensorError> {
        if let Some(index) = self.first_non_text() {
            return Err(TensorError::NotUtf8 {
                name: name.to_string(),
                index,
            });
        }
        Ok(())
    }
}

/// Why JSON tensor data could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum TensorDecodeError {
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Decodes the `data` of an FP16/FP32/FP64 tensor while the JSON is parsed: no copy of the
/// text and no `Value` tree, which is most of the cost of a large JSON request. It accepts what
/// [`TensorData::from_json`] accepts for floats (numbers, nested arrays, "NaN" and the
/// infinities as strings) and reports the same errors.
pub struct JsonFloatSeed(pub DataType);

/// What [`JsonFloatSeed`] read. A bad element does not stop the parse (the rest is skipped), so
/// the error can name the tensor even when its name comes later in the object.
#[derive(Debug)]
pub struct JsonFloatData {
    data: TensorData,
    datatype: DataType,
    /// Index and JSON text of the first element that is not a float.
    bad: Option<(usize, String)>,
    next: usize,
    /// Array lengths per depth, from the first array met at each depth (-1 while it is read):
    /// the shape of the nest when it is rectangular.
    shape: Vec<i64>,
    /// The depth of the first element; every element must sit at that depth.
    leaf_depth: Option<usize>,
    ragged: bool,
}

impl JsonFloatData {
    /// The nest's shape when it is a rectangular array of arrays (`None` for a bare value or
    /// ragged rows); V2 requests state their shape and check the element count instead.
    pub fn rectangular_shape(&self) -> Option<&[i64]> {
        (!self.ragged && !self.shape.is_empty()).then_some(self.shape.as_slice())
    }

    /// An empty buffer for `dt` (FP16, FP32 or FP64; anything else reads as FP32).
    pub(crate) fn new(dt: DataType) -> JsonFloatData {
        JsonFloatData {
            data: TensorData::empty(if dt.is_float() { dt } else { DataType::Fp32 }),
            datatype: dt,
            bad: None,
            next: 0,
            shape: Vec::new(),
            leaf_depth: None,
            ragged: false,
        }
    }

    /// Room for `n` more elements.
    pub(crate) fn reserve(&mut self, n: usize) {
        each_variant!(&mut self.data, v => v.reserve(n))
    }

    /// An array starts at `depth`.
    pub(crate) fn open_array(&mut self, depth: usize) {
        if self.leaf_depth.is_some_and(|l| depth >= l) {
            self.ragged = true;
        }
        if self.shape.len() == depth {
            self.shape.push(-1);
        }
    }

    /// The array at `depth` ended after `n` elements.
    pub(crate) fn close_array(&mut self, depth: usize, n: i64) {
        match self.shape.get_mut(depth) {
            Some(len) if *len == -1 => *len = n,
            Some(len) if *len == n => {}
            _ => self.ragged = true,
        }
    }

    fn element_at(&mut self, depth: usize) {
        match self.leaf_depth {
            None if self.shape.len() == depth => self.leaf_depth = Some(depth),
            Some(d) if d == depth => {}
            _ => self.ragged = true,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, depth: usize, x: f64) {
        self.element_at(depth);
        if self.bad.is_none() {
            match &mut self.data {
                TensorData::Fp16(v) => v.push(f16::from_f64(x)),
                TensorData::Fp32(v) => v.push(x as f32),
                TensorData::Fp64(v) => v.push(x),
                // JsonFloatSeed only builds float buffers.
                _ => {}
            }
        }
        self.next += 1;
    }

    fn reject(&mut self, depth: usize, found: &Value) {
        self.element_at(depth);
        if self.bad.is_none() {
            self.bad = Some((self.next, short(found)));
        }
        self.next += 1;
    }

    /// The decoded elements, or the error [`TensorData::from_json`] would give.
    pub fn into_data(self, name: &str) -> Result<TensorData, TensorError> {
        match self.bad {
            None => Ok(self.data),
            Some((index, found)) => Err(TensorError::BadElement {
                name: name.to_string(),
                index,
                datatype: self.datatype,
                found,
            }),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonFloatSeed {
    type Value = JsonFloatData;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<JsonFloatData, D::Error> {
        let mut out = JsonFloatData::new(self.0);
        d.deserialize_any(FloatElements(&mut out, 0))?;
        Ok(out)
    }
}

/// Visits one JSON value of float `data` at a nesting depth: a number, a special string, or an
/// array of these.
struct FloatElements<'s>(&'s mut JsonFloatData, usize);

impl<'de> serde::de::DeserializeSeed<'de> for FloatElements<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FloatElements<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers or arrays of numbers")
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(self.1, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(self.1, v as f64);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(self.1, v as f64);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        match special_float(v) {
            Some(x) => self.0.push(self.1, x),
            None => self.0.reject(self.1, &Value::String(v.to_string())),
        }
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.reject(self.1, &Value::Bool(v));
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.reject(self.1, &Value::Null);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, depth) = (self.0, self.1);
        out.open_array(depth);
        let mut n = 0i64;
        while seq
            .next_element_seed(FloatElements(&mut *out, depth + 1))?
            .is_some()
        {
            n += 1;
        }
        out.close_array(depth, n);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        use serde::Deserialize;
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        self.0.reject(self.1, &v);
        Ok(())
    }
}

/// The strings JSON float data may use for what JSON numbers cannot say: JavaScript's and
/// Python's spellings (`NaN`, `Infinity`), RapidJSON's (`Inf`) and NumPy's (`nan`, `inf`).
fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let cut = (0..=40).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// Serializes the flat element list with each type's own JSON form (f32 stays shortest-f32, not widened).
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        DataRange(self, 0..self.len()).serialize(ser)
    }
}

/// Some of a tensor's elements (by flat index), serialized as [`TensorData`] serializes all.
pub struct DataRange<'a>(pub &'a TensorData, pub std::ops::Range<usize>);

impl Serialize for DataRange<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let r = self.1.clone();
        let mut seq = ser.serialize_seq(Some(r.len()))?;
        match self.0 {
            TensorData::Bool(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint8(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint16(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint32(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Uint64(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int8(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int16(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int32(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Int64(v) => v[r].iter().try_for_each(|x| seq.serialize_element(x))?,
            TensorData::Fp16(v) => v[r]
                .iter()
                .try_for_each(|x| float_element(&mut seq, x.to_f32()))?,
            TensorData::Fp32(v) => v[r].iter().try_for_each(|&x| float_element(&mut seq, x))?,
            TensorData::Fp64(v) => v[r].iter().try_for_each(|&x| float_element(&mut seq, x))?,
            TensorData::Bytes(v) => v[r]
                .iter()
                .try_for_each(|x| seq.serialize_element(&String::from_utf8_lossy(x)))?,
        }
        seq.end()
    }
}

/// A float element. JSON has no number for NaN and the infinities (serde_json writes `null`,
/// which loses the sign of an infinity); they go out as the strings the decoders take back.
fn float_element<S, T>(seq: &mut S, x: T) -> Result<(), S::Error>
where
    S: serde::ser::SerializeSeq,
    T: Serialize + Copy + Into<f64>,
{
    let wide: f64 = x.into();
    if wide.is_finite() {
        seq.serialize_element(&x)
    } else if wide.is_nan() {
        seq.serialize_element("NaN")
    } else if wide > 0.0 {
        seq.serialize_element("Infinity")
    } else {
        seq.serialize_element("-Infinity")
    }
}

/// A named tensor with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor after checking that the shape is valid and matches the element count.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<i64>,
        data: TensorData,
    ) -> Result<Tensor, TensorError> {
        let name = name.into();
        let expected = element_count(&name, &shape)?;
        if expected != data.len() {
            return Err(TensorError::ElementCount {
                name,
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor { name, shape, data })
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Rows along the first dimension (1 for scalars).
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |&d| d.max(0) as usize)
    }
}

/// Number of elements a shape holds, rejecting negative dims and overflow.
pub fn element_count(name: &str, shape: &[i64]) -> Result<usize, TensorError> {
    let bad = || TensorError::BadShape {
        name: name.to_string(),
        shape: shape.to_vec(),
    };
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).map_err(|_| bad())?;
        acc.checked_mul(d).ok_or_else(bad)
    })
}

/// Concatenates same-named tensors from several requests along dimension 0.
pub fn concat_rows(parts: &[&Tensor]) -> Result<Tensor, TensorError> {
    let first = parts.first().ok_or_else(|| TensorError::Batch {
        name: String::new(),
        reason: "no tensors".into(),
    })?;
    if first.shape.is_empty() {
        return Err(TensorError::Batch {
            name: first.name.clone(),
            reason: "scalar tensors have no batch dimension".into(),
        });
    }
    let mut data = TensorData::empty(first.datatype());
    let mut rows = 0i64;
    for p in parts {
        if p.shape.len() != first.shape.len() || p.shape[1..] != first.shape[1..] {
            return Err(TensorError::Batch {
                name: first.name.clone(),
                reason: format!(
                    "shape {:?} differs from {:?} past dim 0",
                    p.shape, first.shape
                ),
            });
        }
        if !data.extend_from(&p.data) {
            return Err(TensorError::Batch {
                name: first.name.clone(),
                reason: "datatypes differ".into(),
            });
        }
        rows += p.shape[0];
    }
    let mut shape = first.shape.clone();
    shape[0] = rows;
    Ok(Tensor {
        name: first.name.clone(),
        shape,
        data,
    })
}

/// Splits a batched tensor back into pieces of the given row counts.
pub fn split_rows(t: &Tensor, rows: &[usize]) -> Result<Vec<Tensor>, TensorError> {
    let total: usize = rows.iter().sum();
    if t.shape.is_empty() || t.shape[0] as usize != total || t.shape[0] < 0 {
        return Err(TensorError::Batch {
            name: t.name.clone(),
            reason: format!("output shape {:?} does not have {total} rows", t.shape),
        });
    }
    let row_len = element_count(&t.name, &t.shape[1..])?;
    let mut out = Vec::with_capacity(rows.len());
    let mut start = 0;
    for &r in rows {
        let end = start + r * row_len;
        let mut shape = t.shape.clone();
        shape[0] = r as i64;
        out.push(Tensor {
            name: t.name.clone(),
            shape,
            data: t.data.slice(start, end),
        });
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_fast_path_matches_the_value_path() {
        for (dt, text) in [
            (DataType::Fp32, "[[1, 2.5], [-3e2, 4]]"),
            (DataType::Fp64, "[1, 2.5, -300, 4, 18446744073709551615]"),
            (DataType::Fp32, "[\"NaN\", 1]"),
            (DataType::Int64, "[[1, 2], [3, 4]]"),
            (DataType::Fp64, "7"),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let slow = TensorData::from_json("x", dt, &value).unwrap();
            let fast = TensorData::from_json_text("x", dt, text).unwrap();
            // NaN != NaN: compare the debug forms.
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
        }
        let err = TensorData::from_json_text("x", DataType::Fp32, "[1, true]").unwrap_err();
        assert!(err.to_string().contains("element 1 is true"), "{err}");
        let err = TensorData::from_json_text("x", DataType::Fp32, "[1, ").unwrap_err();
        assert!(matches!(err, TensorDecodeError::Json(_)), "{err}");
    }

    /// NaN and the infinities leave as the strings they can be sent as, and come back the same.
    #[test]
    fn non_finite_floats_round_trip_through_json() {
        for data in [
            TensorData::Fp16(vec![f16::NAN, f16::INFINITY, f16::NEG_INFINITY, f16::ONE]),
            TensorData::Fp32(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.5]),
            TensorData::Fp64(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5]),
        ] {
            let text = serde_json::to_string(&data).unwrap();
            assert!(
                text.starts_with(r#"["NaN","Infinity","-Infinity",1"#),
                "{text}"
            );
            let back =
                TensorData::from_json("x", data.datatype(), &serde_json::from_str(&text).unwrap())
                    .unwrap();
            assert_eq!(format!("{back:?}"), format!("{data:?}"));
        }
    }

    #[test]
    fn json_nested_and_flat_decode_alike() {
        let a = TensorData::from_json("x", DataType::Fp32, &json!([[1, 2.5], [3, 4]])).unwrap();
        let b = TensorData::from_json("x", DataType::Fp32, &json!([1, 2.5, 3, 4])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_rejects_out_of_range_and_wrong_kind() {
        let e = TensorData::from_json("x", DataType::Uint8, &json!([1, 256])).unwrap_err();
        assert!(matches!(e, TensorError::BadElement { index: 1, .. }), "{e}");
        assert!(TensorData::from_json("x", DataType::Int32, &json!([1.5])).is_err());
        assert!(TensorData::from_json("x", DataType::Bool, &json!(["yes"])).is_err());
        assert!(TensorData::from_json("x", DataType::Bytes, &json!([1])).is_err());
        assert!(TensorData::from_json("x", DataType::Int64, &json!([-1])).is_ok());
        assert!(TensorData::from_json("x", DataType::Uint64, &json!([-1])).is_err());
    }

    #[test]
    fn binary_round_trips_every_datatype() {
        let samples = vec![
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![9, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-3, 3]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![i64::MIN, 5]),
            TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]),
            TensorData::Fp32(vec![1.25, -0.5]),
            TensorData::Fp64(vec![1e300, -0.5]),
            TensorData::Bytes(vec![b"ab".to_vec(), vec![]]),
        ];
        for d in samples {
            let mut raw = Vec::new();
            d.write_binary(&mut raw);
            let back = TensorData::from_binary("x", d.datatype(), &[2], 2, &raw).unwrap();
            assert_eq!(back, d);
        }
    }

    #[test]
    fn binary_size_mismatch_is_an_error() {
        let e = TensorData::from_binary("x", DataType::Fp32, &[2], 2, &[0; 7]).unwrap_err();
        assert!(matches!(
            e,
            TensorError::BinarySize {
                expected: 8,
                got: 7,
                ..
            }
        ));
        let e =
            TensorData::from_binary("x", DataType::Bytes, &[1], 1, &[5, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(e, TensorError::BytesFraming { .. }));
    }

    #[test]
    fn tensor_checks_element_count_and_shape() {
        assert!(Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![0.0; 4])).is_ok());
        assert!(matches!(
            Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 4])),
            Err(TensorError::ElementCount {
                expected: 6,
                got: 4,
                ..
            })
        ));
        assert!(matches!(
            Tensor::new("x", vec![-1, 4], TensorData::Fp32(vec![])),
            Err(TensorError::BadShape { .. })
        ));
        assert!(element_count("x", &[i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn concat_then_split_restores_the_parts() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Int64(vec![1, 2])).unwrap();
        let b = Tensor::new("x", vec![3, 2], TensorData::Int64(vec![3, 4, 5, 6, 7, 8])).unwrap();
        let joined = concat_rows(&[&a, &b]).unwrap();
        assert_eq!(joined.shape, vec![4, 2]);
        let parts = split_rows(&joined, &[1, 3]).unwrap();
        assert_eq!(parts, vec![a, b]);
    }

    #[test]
    fn concat_rejects_mismatched_trailing_dims() {
        let a = Tensor::new("x", vec![1, 2], TensorData::Int64(vec![1, 2])).unwrap();
        let b = Tensor::new("x", vec![1, 3], TensorData::Int64(vec![1, 2, 3])).unwrap();
        assert!(concat_rows(&[&a, &b]).is_err());
    }

    #[test]
    fn fp32_serializes_shortest() {
        let s = serde_json::to_string(&TensorData::Fp32(vec![0.1, 2.0])).unwrap();
        assert_eq!(s, "[0.1,2.0]");
    }
}
