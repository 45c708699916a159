//! Open Inference Protocol REST bodies: JSON requests with the binary tensor extension, and responses.

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

mod fast;

use crate::backend::Signature;
use crate::tensor::{
    DataRange, DataType, JsonFloatData, JsonFloatSeed, Tensor, TensorData, TensorDecodeError,
    TensorError, element_count,
};

/// Why a request body could not be decoded; always a client error.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("Inference-Header-Content-Length {header} is larger than the body ({body} bytes)")]
    HeaderLength { header: usize, body: usize },
    #[error("input {0:?}: no data: give \"data\" or parameters.binary_data_size")]
    NoData(String),
    #[error(
        "input {0:?}: both \"data\" and parameters.binary_data_size are given; send the tensor one way"
    )]
    DataTwice(String),
    #[error("input {name:?}: binary_data_size {size} runs past the end of the binary section")]
    BinaryOverrun { name: String, size: u64 },
    #[error("{0} bytes of binary data were not claimed by any input")]
    BinaryLeftover(usize),
    #[error("duplicate input {0:?}")]
    DuplicateInput(String),
    #[error("parameter {name:?} must be {expected}")]
    Parameter {
        name: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("{0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct JsonRequest<'a> {
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<JsonInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<JsonOutput>>,
}

struct JsonInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    parameters: Option<Map<String, Value>>,
    data: Option<JsonData<'a>>,
}

/// `data` as parsed. Clients write `datatype` before `data` (tritonclient, KServe's and
/// MLServer's codecs do), so float tensors are decoded in the same pass as the rest of the
/// body; otherwise the raw text is kept and decoded once the datatype is known.
enum JsonData<'a> {
    Floats(JsonFloatData),
    Raw(&'a RawValue),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputField {
    Name,
    Shape,
    Datatype,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonInput<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InputVisitor(std::marker::PhantomData))
    }
}

struct InputVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InputVisitor<'a> {
    type Value = JsonInput<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an input tensor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonInput<'a>, A::Error> {
        fn once<T, E: de::Error>(slot: &Option<T>, field: &'static str) -> Result<(), E> {
            match slot {
                Some(_) => Err(E::duplicate_field(field)),
                None => Ok(()),
            }
        }
        let mut name = None;
        let mut shape = None;
        let mut datatype: Option<String> = None;
        let mut parameters = None;
        let mut data = None;
        while let Some(field) = map.next_key::<InputField>()? {
            match field {
                InputField::Name => {
                    once(&name, "name")?;
                    name = Some(map.next_value()?);
                }
                InputField::Shape => {
                    once(&shape, "shape")?;
                    shape = Some(map.next_value()?);
                }
                InputField::Datatype => {
                    once(&datatype, "datatype")?;
                    datatype = Some(map.next_value()?);
                }
                InputField::Parameters => {
                    once(&parameters, "parameters")?;
                    parameters = Some(map.next_value::<Option<Map<String, Value>>>()?);
                }
                InputField::Data => {
                    once(&data, "data")?;
                    let float = datatype
                        .as_deref()
                        .and_then(|d| DataType::parse(d).ok())
                        .filter(|d| d.is_float());
                    data = Some(match float {
                        Some(dt) => map
                            .next_value_seed(OptionalFloats(dt))?
                            .map(JsonData::Floats),
                        None => map.next_value::<Option<&'a RawValue>>()?.map(JsonData::Raw),
                    });
                }
                InputField::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(JsonInput {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters: parameters.flatten(),
            data: data.flatten(),
        })
    }
}

/// `null` is no data, as for any optional field; anything else is float data.
struct OptionalFloats(DataType);

impl<'de> DeserializeSeed<'de> for OptionalFloats {
    type Value = Option<JsonFloatData>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalFloats {
    type Value = Option<JsonFloatData>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("tensor data")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        JsonFloatSeed(self.0).deserialize(d).map(Some)
    }
}

#[derive(Deserialize)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A requested output and whether it should come back as binary data.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: bool,
    /// `classification`: the top classes instead of the scores (see [`crate::classify`]).
    pub classification: Option<usize>,
}

/// A decoded inference request, protocol-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Empty means "all outputs".
    pub outputs: Vec<RequestedOutput>,
    /// `binary_data_output` request parameter: outputs not listed default to binary.
    pub binary_default: bool,
    pub parameters: Map<String, Value>,
}

impl InferRequest {
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|o| o.name.clone()).collect()
    }

    /// The outputs asked for as classes, with their class counts.
    pub fn classifications(&self) -> Vec<(String, usize)> {
        self.outputs
            .iter()
            .filter_map(|o| Some((o.name.clone(), o.classification?)))
            .collect()
    }

    fn wants_binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map_or(self.binary_default, |o| o.binary || self.binary_default)
    }
}

fn bool_param(params: &Option<Map<String, Value>>, key: &str) -> Result<bool, ProtocolError> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ProtocolError::Parameter {
            name: key.to_string(),
            expected: "true or false",
        }),
    }
}

/// Decodes a REST infer body; `header_len` is the `Inference-Header-Content-Length` header.
pub fn decode_infer(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, ProtocolError> {
    let (json, binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(ProtocolError::HeaderLength {
                header: n,
                body: body.len(),
            });
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    if let Some(req) = fast::read_request(json) {
        return finish_request(req, Source::plain(json), binary);
    }
    match serde_json::from_slice(json) {
        Ok(req) => finish_request(req, Source::plain(json), binary),
        Err(e) if e.is_syntax() => match crate::json_scan::quote_non_finite(json) {
            // Bare NaN/Infinity, as Python's json writes them: read them as their strings.
            Some(quoted) => {
                let source = Source {
                    text: &quoted.text,
                    original: json,
                    quoted: Some(&quoted),
                };
                let req = serde_json::from_slice(&quoted.text)
                    .map_err(|e| request_json_error(&e, source))?;
                finish_request(req, source, binary)
            }
            None => Err(request_json_error(&e, Source::plain(json))),
        },
        Err(e) => Err(request_json_error(&e, Source::plain(json))),
    }
}

/// The JSON text serde read, and the client's text it came from (the same, unless bare
/// non-finite literals were quoted), so that errors point into what the client sent.
#[derive(Clone, Copy)]
struct Source<'a> {
    text: &'a [u8],
    original: &'a [u8],
    quoted: Option<&'a crate::json_scan::Quoted>,
}

impl<'a> Source<'a> {
    fn plain(json: &'a [u8]) -> Source<'a> {
        Source {
            text: json,
            original: json,
            quoted: None,
        }
    }

    /// serde's message for an error in `part` (the whole text, or a slice of it read on its
    /// own), with the line and column in the client's body: serde counts from the start of
    /// what it was given.
    fn describe(&self, e: &serde_json::Error, part: &[u8]) -> String {
        let msg = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let Some(bare) = msg.strip_suffix(&suffix) else {
            return msg;
        };
        let Some(part_start) = (part.as_ptr() as usize)
            .checked_sub(self.text.as_ptr() as usize)
            .filter(|&o| o + part.len() <= self.text.len())
        else {
            return msg;
        };
        // serde's column counts the bytes read on the line, the offending one included.
        let line_start = part
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(e.line().saturating_sub(2))
            .filter(|_| e.line() > 1)
            .map_or(0, |(i, _)| i + 1);
        let pos = part_start + line_start + e.column().saturating_sub(1);
        let pos = self.quoted.map_or(pos, |q| q.original(pos));
        let before = &self.original[..pos.min(self.original.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        format!("{bare} at line {line} column {column}")
    }
}

/// serde's words for a body it could not read as a request, with what the client likely meant.
fn request_json_error(e: &serde_json::Error, source: Source) -> ProtocolError {
    let first = source.text.iter().find(|b| !b.is_ascii_whitespace());
    if e.is_data() && first != Some(&b'{') {
        return ProtocolError::Json(
            "the body must be a JSON object: {\"inputs\": [{\"name\", \"shape\", \"datatype\", \"data\"}, ...]}"
                .into(),
        );
    }
    let mut msg = source.describe(e, source.text);
    if e.is_data() {
        // Valid JSON, the wrong fields: "missing field `shape`" and the like.
        return ProtocolError::Request(msg);
    }
    if e.is_syntax() && msg.starts_with("trailing characters") {
        msg.push_str(
            " (a body with binary tensor data after its JSON needs the Inference-Header-Content-Length header)",
        );
    }
    ProtocolError::Json(msg)
}

/// Checks and converts a parsed request; `binary` is the section after the JSON header.
fn finish_request(
    req: JsonRequest,
    source: Source,
    mut binary: &[u8],
) -> Result<InferRequest, ProtocolError> {
    let mut inputs: Vec<Tensor> = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        if inputs.iter().any(|t| t.name == input.name) {
            return Err(ProtocolError::DuplicateInput(input.name));
        }
        let dt = DataType::parse(&input.datatype)?;
        let count = element_count(&input.name, &input.shape)?;
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| ProtocolError::Parameter {
                name: "binary_data_size".into(),
                expected: "a byte count (a whole number, 0 or more)",
            })?),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => return Err(ProtocolError::DataTwice(input.name)),
            (Some(size), None) => {
                let n = usize::try_from(size)
                    .ok()
                    .filter(|&n| n <= binary.len())
                    .ok_or_else(|| ProtocolError::BinaryOverrun {
                        name: input.name.clone(),
                        size,
                    })?;
                let (chunk, rest) = binary.split_at(n);
                binary = rest;
                TensorData::from_binary(&input.name, dt, &input.shape, count, chunk)?
            }
            (None, Some(JsonData::Floats(floats))) => floats.into_data(&input.name)?,
            (None, Some(JsonData::Raw(data))) => {
                TensorData::from_json_text(&input.name, dt, data.get()).map_err(|e| match e {
                    TensorDecodeError::Json(e) => {
                        ProtocolError::Json(source.describe(&e, data.get().as_bytes()))
                    }
                    TensorDecodeError::Tensor(e) => ProtocolError::Tensor(e),
                })?
            }
            (None, None) => return Err(ProtocolError::NoData(input.name)),
        };
        inputs.push(Tensor::new(input.name, input.shape, data)?);
    }
    if !binary.is_empty() {
        return Err(ProtocolError::BinaryLeftover(binary.len()));
    }
    let binary_default = bool_param(&req.parameters, "binary_data_output")?;
    let outputs = req
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let classification = match o.parameters.as_ref().and_then(|p| p.get("classification")) {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .map(i128::from)
                        .or(v.as_u64().map(i128::from))
                        .and_then(crate::classify::class_count)
                        .ok_or_else(|| ProtocolError::Parameter {
                            name: "classification".into(),
                            expected: "a class count above 0",
                        })?,
                ),
            };
            Ok(RequestedOutput {
                binary: bool_param(&o.parameters, "binary_data")?,
                name: o.name,
                classification,
            })
        })
        .collect::<Result<_, ProtocolError>>()?;
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs,
        binary_default,
        parameters: req.parameters.unwrap_or_default(),
    })
}

#[derive(Serialize)]
struct JsonResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<JsonOutputTensor<'a>>,
}

#[derive(Serialize)]
struct JsonOutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

/// An encoded REST response body and, when binary outputs follow the JSON, the JSON's length.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

/// Encodes outputs as JSON, moving those that asked for it into the binary section.
pub fn encode_infer(
    model: &str,
    version: &str,
    req: &InferRequest,
    outputs: &[Tensor],
) -> Result<EncodedResponse, ProtocolError> {
    let mut binary = Vec::new();
    let mut json_outputs = Vec::with_capacity(outputs.len());
    for t in outputs {
        if req.wants_binary(&t.name) {
            let start = binary.len();
            t.data.write_binary(&mut binary);
            json_outputs.push(JsonOutputTensor {
                name: &t.name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                parameters: Some(serde_json::json!({ "binary_data_size": binary.len() - start })),
                data: None,
            });
        } else {
            t.data.check_json_encodable(&t.name)?;
            json_outputs.push(JsonOutputTensor {
                name: &t.name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                parameters: None,
                data: Some(&t.data),
            });
        }
    }
    let resp = JsonResponse {
        model_name: model,
        model_version: version,
        id: req.id.as_deref(),
        outputs: json_outputs,
    };
    let mut body = serde_json::to_vec(&resp).map_err(|e| ProtocolError::Json(e.to_string()))?;
    if binary.is_empty() && !outputs.iter().any(|t| req.wants_binary(&t.name)) {
        return Ok(EncodedResponse {
            body,
            header_len: None,
        });
    }
    let header_len = body.len();
    body.extend_from_slice(&binary);
    Ok(EncodedResponse {
        body,
        header_len: Some(header_len),
    })
}

/// The keys a simple-style body may carry its rows under.
pub const ROW_KEYS: [&str; 3] = ["instances", "inputs", "features"];

/// The rows of a simple-style body and the key they came under: exactly one of [`ROW_KEYS`].
pub fn simple_rows(body: &Value) -> Result<(&'static str, &Value), ProtocolError> {
    let found: Vec<(&'static str, &Value)> = ROW_KEYS
        .iter()
        .filter_map(|&k| Some((k, body.get(k)?)))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(ProtocolError::Request(
            "expected {\"instances\": [[...], ...]} or {\"features\": [...]}".into(),
        )),
        several => Err(ProtocolError::Request(format!(
            "the body gives rows under {}; give them once",
            several
                .iter()
                .map(|(k, _)| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(" and ")
        ))),
    }
}

/// Builds the single input tensor of a "simple style" request (`/predict`, KServe V1) from row
/// data given under `key`, using the model's only input for name and datatype.
pub fn rows_to_input(sig: &Signature, key: &str, rows: &Value) -> Result<Tensor, ProtocolError> {
    let spec = match sig.inputs.as_slice() {
        [one] => one,
        many => {
            return Err(ProtocolError::Shape(format!(
                "the model has {} inputs; use the V2 protocol (/v2/models/<model>/infer) to name them",
                many.len()
            )));
        }
    };
    let mut shape = Vec::new();
    let mut cur = rows;
    while let Value::Array(items) = cur {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    if shape.is_empty() {
        return Err(ProtocolError::Shape(format!("{key} must be a JSON array")));
    }
    if shape[0] == 0 {
        return Err(ProtocolError::Shape(format!(
            "{key} is empty: send at least one row"
        )));
    }
    // A single flat feature vector is one row.
    if shape.len() + 1 == spec.shape.len() {
        shape.insert(0, 1);
    }
    let data = TensorData::from_json(&spec.name, spec.datatype, rows)?;
    let t = Tensor::new(spec.name.clone(), shape.clone(), data).map_err(|_| {
        ProtocolError::Shape(format!(
            "{key} are not rectangular: expected rows shaped like {:?}",
            &shape[1..]
        ))
    })?;
    Ok(t)
}

/// An output as simple-style answers give it: the flat list for a tensor of rank 0 or 1,
/// otherwise one flat array per row. Written straight from the buffer, no `Value` in between.
pub struct TensorRows<'a>(pub &'a Tensor);

impl Serialize for TensorRows<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let t = self.0;
        if t.shape.len() <= 1 {
            return t.data.serialize(ser);
        }
        // Rows are equal slices of the flat buffer (none when the first dimension is 0).
        let row_len = t.data.len().checked_div(t.rows()).unwrap_or(0);
        let mut seq = ser.serialize_seq(Some(t.rows()))?;
        for row in 0..t.rows() {
            seq.serialize_element(&DataRange(&t.data, row * row_len..(row + 1) * row_len))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TensorSpec;
    use serde_json::json;

    /// `TensorRows` nests each element's own JSON form (what serde_json writes for the value
    /// alone: shortest f32 for FP32, not widened) in rows, for every datatype and rank. The
    /// `Value` route it replaced went through text and back and could print FP32 values with
    /// f64 noise (1.0035122e-16 as 1.0035122000000001e-16) and move FP64 ones by an ulp.
    #[test]
    fn tensor_rows_nest_each_elements_own_form() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..2_000 {
            let rank = rng.random_range(0..4);
            let shape: Vec<i64> = (0..rank).map(|_| rng.random_range(0..4)).collect();
            let n = shape.iter().product::<i64>() as usize;
            let f = |rng: &mut rand::rngs::StdRng| {
                let x: f64 = rng.random::<f64>() * 10f64.powi(rng.random_range(-40..40));
                [x, -x, f64::NAN, f64::INFINITY, 0.1, -0.0][rng.random_range(0..6)]
            };
            let data = match rng.random_range(0..8) {
                0 => TensorData::Bool((0..n).map(|_| rng.random()).collect()),
                1 => TensorData::Uint64((0..n).map(|_| rng.random()).collect()),
                2 => TensorData::Int64((0..n).map(|_| rng.random()).collect()),
                3 => TensorData::Int8((0..n).map(|_| rng.random()).collect()),
                4 => TensorData::Fp16((0..n).map(|_| half::f16::from_f64(f(&mut rng))).collect()),
                5 => TensorData::Fp32((0..n).map(|_| f(&mut rng) as f32).collect()),
                6 => TensorData::Fp64((0..n).map(|_| f(&mut rng)).collect()),
                _ => TensorData::Bytes(
                    (0..n)
                        .map(|i| format!("s\"{i}\u{e9}").into_bytes())
                        .collect(),
                ),
            };
            let t = Tensor::new("y", shape, data).unwrap();
            fn texts<T: Serialize>(v: &[T]) -> Vec<String> {
                v.iter()
                    .map(|x| serde_json::to_string(x).unwrap())
                    .collect()
            }
            // Numbers JSON cannot write go out as the strings the decoders accept.
            fn floats<T: Serialize + Copy + Into<f64>>(v: &[T]) -> Vec<String> {
                v.iter()
                    .map(|&x| match x.into() {
                        w if w.is_nan() => r#""NaN""#.to_string(),
                        f64::INFINITY => r#""Infinity""#.to_string(),
                        f64::NEG_INFINITY => r#""-Infinity""#.to_string(),
                        _ => serde_json::to_string(&x).unwrap(),
                    })
                    .collect()
            }
            let elements = match &t.data {
                TensorData::Bool(v) => texts(v),
                TensorData::Uint64(v) => texts(v),
                TensorData::Int64(v) => texts(v),
                TensorData::Int8(v) => texts(v),
                TensorData::Fp16(v) => floats(&v.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
                TensorData::Fp32(v) => floats(v),
                TensorData::Fp64(v) => floats(v),
                TensorData::Bytes(v) => texts(
                    &v.iter()
                        .map(|b| String::from_utf8(b.clone()).unwrap())
                        .collect::<Vec<_>>(),
                ),
                other => unreachable!("{other:?}"),
            };
            let want = if t.shape.len() <= 1 {
                format!("[{}]", elements.join(","))
            } else {
                let row = elements.len().checked_div(t.rows()).unwrap_or(0);
                let rows: Vec<String> = (0..t.rows())
                    .map(|r| format!("[{}]", elements[r * row..(r + 1) * row].join(",")))
                    .collect();
                format!("[{}]", rows.join(","))
            };
            assert_eq!(
                serde_json::to_string(&TensorRows(&t)).unwrap(),
                want,
                "{t:?}"
            );
        }
    }

    #[test]
    fn decodes_json_inputs_and_outputs() {
        let body = json!({
            "id": "r1",
            "parameters": {"binary_data_output": false},
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}],
            "outputs": [{"name": "label"}, {"name": "p", "parameters": {"binary_data": true}}]
        });
        let r = decode_infer(body.to_string().as_bytes(), None).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].shape, vec![2, 2]);
        assert!(!r.wants_binary("label"));
        assert!(r.wants_binary("p"));
    }

    #[test]
    fn float_data_decodes_alike_in_either_field_order() {
        // datatype before data: decoded in the same pass; after: from the kept raw text.
        let data = r#"[[1, 2.5, "NaN"], [-3e2, "-inf", 18446744073709551615]]"#;
        for dt in ["FP16", "FP32", "FP64"] {
            let first = format!(
                r#"{{"inputs": [{{"name": "x", "shape": [2, 3], "datatype": "{dt}", "data": {data}}}]}}"#
            );
            let last = format!(
                r#"{{"inputs": [{{"data": {data}, "shape": [2, 3], "name": "x", "datatype": "{dt}"}}]}}"#
            );
            let a = decode_infer(first.as_bytes(), None).unwrap();
            let b = decode_infer(last.as_bytes(), None).unwrap();
            // NaN != NaN: compare the debug forms.
            assert_eq!(format!("{:?}", a.inputs), format!("{:?}", b.inputs), "{dt}");
        }
        for body in [
            r#"{"inputs": [{"datatype": "FP32", "data": [1, [2, true]], "shape": [3], "name": "late"}]}"#,
            r#"{"inputs": [{"data": [1, [2, true]], "datatype": "FP32", "shape": [3], "name": "late"}]}"#,
        ] {
            let e = decode_infer(body.as_bytes(), None).unwrap_err().to_string();
            assert!(
                e.contains("\"late\"") && e.contains("element 2 is true"),
                "{body}: {e}"
            );
        }
        let cases = [
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": null}]}"#,
                "no data",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "data": [2]}]}"#,
                "duplicate field `data`",
            ),
            (
                r#"{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}"#,
                "missing field `shape`",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [{"a": 1}]}]}"#,
                "element 0 is {\"a\":1}",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1}]}"#,
                "malformed JSON",
            ),
        ];
        for (body, want) in cases {
            let e = decode_infer(body.as_bytes(), None).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        // Unknown fields of an input are ignored, as before.
        let body = r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "extra": {"k": [1]}, "data": [7]}]}"#;
        let r = decode_infer(body.as_bytes(), None).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![7.0]));
    }

    #[test]
    fn decodes_binary_extension() {
        let header = json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
            {"name": "b", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}}
        ]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&1i32.to_le_bytes());
        body.extend_from_slice(&(-2i32).to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        let r = decode_infer(&body, Some(header.len())).unwrap();
        assert_eq!(r.inputs[0].data, TensorData::Int32(vec![1, -2]));
        assert_eq!(r.inputs[1].data, TensorData::Bytes(vec![b"abc".to_vec()]));
        assert!(matches!(
            decode_infer(&body, Some(body.len() + 1)),
            Err(ProtocolError::HeaderLength { .. })
        ));
        let mut extra = body.clone();
        extra.push(0);
        assert!(matches!(
            decode_infer(&extra, Some(header.len())),
            Err(ProtocolError::BinaryLeftover(1))
        ));
        // Data given both ways is refused rather than one of them ignored.
        let both = json!({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [5],
            "parameters": {"binary_data_size": 4}}]})
        .to_string();
        let mut body = both.clone().into_bytes();
        body.extend_from_slice(&1i32.to_le_bytes());
        assert!(matches!(
            decode_infer(&body, Some(both.len())),
            Err(ProtocolError::DataTwice(name)) if name == "a"
        ));
    }

    #[test]
    fn bare_non_finite_literals_are_read_and_errors_point_into_the_clients_body() {
        let body = r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [NaN, -Infinity, 1]}]}"#;
        let r = decode_infer(body.as_bytes(), None).unwrap();
        match &r.inputs[0].data {
            TensorData::Fp32(v) => {
                assert!(
                    v[0].is_nan() && v[1] == f32::NEG_INFINITY && v[2] == 1.0,
                    "{v:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A real error after the literals: its column is the one in the body as sent.
        let body = r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [NaN, Inf, 1}]}"#;
        let e = decode_infer(body.as_bytes(), None).unwrap_err().to_string();
        let column = body.find("1}").unwrap() + 2;
        assert!(e.ends_with(&format!(" at line 1 column {column}")), "{e}");
    }

    #[test]
    fn errors_in_raw_data_give_the_position_in_the_body() {
        // BYTES data is read on its own after the body; its errors still point into the body.
        for body in [
            r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "BYTES", "data": ["a", "\ud800", "c"]}]}"#,
            "{\"inputs\": [\n {\"name\": \"x\", \"shape\": [3], \"datatype\": \"BYTES\",\n  \"data\": [\"a\", \"\\ud800\", \"c\"]}]}",
        ] {
            let e = decode_infer(body.as_bytes(), None).unwrap_err().to_string();
            let at = body.find("\\ud800").unwrap();
            let line_start = body[..at].rfind('\n').map_or(0, |i| i + 1);
            let line = body[..at].matches('\n').count() + 1;
            // serde stops on the character after the six-character escape.
            let column = at - line_start + 7;
            assert!(
                e.ends_with(&format!(" at line {line} column {column}")),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn rejects_bad_requests_with_reasons() {
        let cases = [
            (
                r#"{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}"#,
                "3 elements",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}"#,
                "unknown datatype",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}"#,
                "no data",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [-2], "datatype": "FP32", "data": []}]}"#,
                "invalid shape",
            ),
            (r#"{"inputs": "#, "malformed JSON"),
            ("null", "the body must be a JSON object"),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": -5}}]}"#,
                "must be a byte count",
            ),
            ("[]", "the body must be a JSON object"),
            (
                r#"{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}"#,
                "invalid request: missing field `shape`",
            ),
            (
                r#"{"inputs": []}  binary bytes"#,
                "needs the Inference-Header-Content-Length header",
            ),
            (
                r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
                "duplicate",
            ),
        ];
        for (body, want) in cases {
            let e = decode_infer(body.as_bytes(), None).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn encodes_json_and_binary_outputs() {
        let req = InferRequest {
            id: None,
            inputs: vec![],
            outputs: vec![RequestedOutput {
                name: "b".into(),
                binary: true,
                classification: None,
            }],
            binary_default: false,
            parameters: Map::new(),
        };
        let outs = vec![
            Tensor::new("a", vec![2], TensorData::Int64(vec![1, 2])).unwrap(),
            Tensor::new("b", vec![1], TensorData::Fp32(vec![1.5])).unwrap(),
        ];
        let enc = encode_infer("m", "1", &req, &outs).unwrap();
        let n = enc.header_len.unwrap();
        let head: Value = serde_json::from_slice(&enc.body[..n]).unwrap();
        assert_eq!(head["outputs"][0]["data"], json!([1, 2]));
        assert_eq!(
            head["outputs"][1]["parameters"]["binary_data_size"],
            json!(4)
        );
        assert_eq!(&enc.body[n..], &1.5f32.to_le_bytes());
    }

    #[test]
    fn simple_rows() {
        let sig = Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![],
        };
        let t = rows_to_input(&sig, "instances", &json!([[1, 2], [3, 4], [5, 6]])).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        let t = rows_to_input(&sig, "instances", &json!([1, 2])).unwrap();
        assert_eq!(t.shape, vec![1, 2]);
        assert!(rows_to_input(&sig, "instances", &json!([[1, 2], [3]])).is_err());
        assert!(rows_to_input(&sig, "instances", &json!(5)).is_err());
        let t = Tensor::new("p", vec![2, 2], TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        assert_eq!(
            serde_json::to_string(&TensorRows(&t)).unwrap(),
            "[[1.0,2.0],[3.0,4.0]]"
        );
        let t = Tensor::new("p", vec![1], TensorData::Fp32(vec![0.1])).unwrap();
        assert_eq!(serde_json::to_string(&TensorRows(&t)).unwrap(), "[0.1]");
    }

    #[test]
    fn random_bodies_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let seeds: [&[u8]; 5] = [
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#,
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":5}}]}"#,
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"BOOL","data":[true,false]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#,
            // Bare non-finite literals (the quoting fallback) and raw BYTES data (positions).
            b"{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"FP64\",\"data\":[NaN,\n-Infinity,Inf]}]}",
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"BYTES","data":["a\u00e9","\ud83d\ude00"]}],"outputs":[{"name":"y","parameters":{"classification":2}}]}"#,
        ];
        for i in 0..20_000 {
            let mut body = seeds[i % seeds.len()].to_vec();
            for _ in 0..rng.random_range(1..6) {
                let pos = rng.random_range(0..body.len());
                match rng.random_range(0..3) {
                    0 => body[pos] = rng.random(),
                    1 => {
                        body.remove(pos);
                    }
                    _ => body.insert(pos, rng.random()),
                }
                if body.is_empty() {
                    body.push(b'{');
                }
            }
            let header = if rng.random_bool(0.5) {
                Some(rng.random_range(0..body.len() + 8))
            } else {
                None
            };
            if let Ok(req) = decode_infer(&body, header) {
                let _ = encode_infer("m", "1", &req, &req.inputs);
            }
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let sig = Signature {
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                }],
                outputs: vec![],
            };
            let _ = rows_to_input(&sig, "instances", &v);
        }
    }
}
