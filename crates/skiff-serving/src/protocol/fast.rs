//! V2 JSON infer requests read by [`crate::json_scan::Scanner`]: the fast path of
//! [`super::decode_infer`] for requests whose inputs carry float data.
//!
//! It takes inputs whose float `datatype` comes before their `data` (as tritonclient, KServe's
//! and MLServer's codecs write them) and reads every other value through serde from its raw slice.
//! Anything else (data before datatype, integer or BYTES data, duplicate fields, whatever the
//! scanner does not take) returns `None`, and the body goes to serde. `fast_and_general_paths_agree`
//! checks that whatever is read here, serde reads to the same request, bit for bit.

use serde::de::IgnoredAny;

use super::{JsonData, JsonInput, JsonOutput, JsonRequest};
use crate::json_scan::Scanner;
use crate::tensor::{DataType, JsonFloatData, element_count};

/// Reads `json` as an infer request, or `None` when the general path must.
pub(super) fn read_request(json: &[u8]) -> Option<JsonRequest<'_>> {
    let mut s = Scanner::new(json);
    let req = request(&mut s)?;
    s.end()?;
    Some(req)
}

/// Sets a field that may appear once; a repeat sends the body to serde (which names it).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

fn request<'a>(s: &mut Scanner<'a>) -> Option<JsonRequest<'a>> {
    let (mut id, mut parameters, mut inputs, mut outputs) = (None, None, None, None);
    s.object(|s, key| match key {
        b"id" => once(&mut id, s.serde::<Option<String>>()?),
        b"parameters" => once(&mut parameters, s.serde()?),
        b"inputs" => {
            let mut list = Vec::new();
            s.array(|s| {
                list.push(input(s)?);
                Some(())
            })?;
            once(&mut inputs, list)
        }
        b"outputs" => once(&mut outputs, s.serde::<Option<Vec<JsonOutput>>>()?),
        _ => s.serde::<IgnoredAny>().map(drop),
    })?;
    Some(JsonRequest {
        id: id.flatten(),
        parameters: parameters.flatten(),
        inputs: inputs?,
        outputs: outputs.flatten(),
    })
}

fn input<'a>(s: &mut Scanner<'a>) -> Option<JsonInput<'a>> {
    let mut name = None;
    let mut shape: Option<Vec<i64>> = None;
    let mut datatype: Option<String> = None;
    let mut parameters = None;
    let mut data = None;
    s.object(|s, key| match key {
        b"name" => once(&mut name, s.serde::<String>()?),
        b"shape" => once(&mut shape, s.serde()?),
        b"datatype" => once(&mut datatype, s.serde()?),
        b"parameters" => once(&mut parameters, s.serde()?),
        b"data" => {
            // Only float data whose datatype came first is read here.
            let dt = DataType::parse(datatype.as_deref()?)
                .ok()
                .filter(|d| d.is_float())?;
            let mut out = JsonFloatData::new(dt);
            // Every element takes at least two bytes ("1,"), which bounds a lying shape.
            let stated = shape.as_deref().and_then(|sh| element_count("", sh).ok());
            out.reserve(stated.unwrap_or(0).min(s.remaining() / 2));
            s.float_data(&mut out)?;
            once(&mut data, out)
        }
        _ => s.serde::<IgnoredAny>().map(drop),
    })?;
    Some(JsonInput {
        name: name?,
        shape: shape?,
        datatype: datatype?,
        parameters: parameters.flatten(),
        data: data.map(JsonData::Floats),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_scan::tests::number;
    use crate::protocol::{Source, finish_request};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn ws(rng: &mut StdRng) -> &'static str {
        [" ", "", "", "\n  ", "\t", "\r\n"][rng.random_range(0..6)]
    }

    /// A request in the forms clients send, with fields in random order, and whether the fast
    /// path must take it (float datatypes named before their data, no edge-case numbers).
    fn body(rng: &mut StdRng) -> (String, bool) {
        let mut eligible = true;
        let mut inputs = Vec::new();
        for k in 0..rng.random_range(1..3) {
            let rows = rng.random_range(1..4);
            let cols = rng.random_range(1..5);
            let nested = rng.random_bool(0.3);
            let mut data = String::from("[");
            for r in 0..rows {
                if nested {
                    data += if r > 0 { ",[" } else { "[" };
                }
                for c in 0..cols {
                    if c > 0 || (r > 0 && !nested) {
                        data += ",";
                        data += ws(rng);
                    }
                    let edges = rng.random_bool(0.02);
                    eligible &= !edges;
                    data += &number(rng, edges);
                }
                if nested {
                    data += "]";
                }
            }
            data += "]";
            let dt = ["FP32", "FP32", "FP64", "FP16", "INT64"][rng.random_range(0..5)];
            let mut fields = vec![
                format!(r#""name":"in{k}""#),
                format!(r#""shape":[{rows},{cols}]"#),
                format!(r#""datatype":{}"{dt}""#, ws(rng)),
                format!(r#""data":{}{data}"#, ws(rng)),
            ];
            if rng.random_bool(0.3) {
                fields.push(r#""parameters":{"content_type":"np","n":[1,{"a":null}]}"#.into());
            }
            if rng.random_bool(0.2) {
                fields.push(r#""extra":"x\"}y""#.into());
            }
            if rng.random_bool(0.3) {
                let i = rng.random_range(0..fields.len());
                let j = rng.random_range(0..fields.len());
                fields.swap(i, j);
            }
            let position = |key: &str| fields.iter().position(|f| f.starts_with(key));
            eligible &= dt != "INT64" && position("\"datatype\"") < position("\"data\"");
            inputs.push(format!("{{{}}}", fields.join(",")));
        }
        let mut top = vec![format!(r#""inputs":[{}]"#, inputs.join(","))];
        if rng.random_bool(0.5) {
            top.push(r#""id":"r-1""#.into());
        } else if rng.random_bool(0.3) {
            top.push(r#""id":null"#.into());
        }
        if rng.random_bool(0.3) {
            top.push(r#""parameters":{"binary_data_output":true}"#.into());
        }
        if rng.random_bool(0.3) {
            top.push(r#""outputs":[{"name":"y","parameters":{"binary_data":false}}]"#.into());
        }
        let first = rng.random_range(0..top.len());
        top.swap(0, first);
        let text = format!("{{{}{}}}{}", ws(rng), top.join(","), ws(rng));
        (text, eligible)
    }

    /// Whatever the fast path takes, the general path takes too, with bit-identical tensors (the
    /// debug form tells -0.0 from 0.0) and the same checks after parsing.
    #[test]
    fn fast_and_general_paths_agree() {
        let mut rng = StdRng::seed_from_u64(11);
        let (mut taken, mut taken_mutated, mut eligible_seen) = (0, 0, 0);
        for i in 0..30_000 {
            let (text, eligible) = body(&mut rng);
            let mut bytes = text.into_bytes();
            let mutated = i % 3 == 0;
            if mutated {
                for _ in 0..rng.random_range(1..4) {
                    let pos = rng.random_range(0..bytes.len());
                    match rng.random_range(0..3) {
                        0 => bytes[pos] = b"0123456789.eE-+,[]{}\" x"[rng.random_range(0..23)],
                        1 => {
                            bytes.remove(pos);
                        }
                        _ => bytes.insert(pos, rng.random()),
                    }
                }
            } else if eligible {
                eligible_seen += 1;
            }
            let Some(fast) = read_request(&bytes) else {
                assert!(
                    mutated || !eligible,
                    "fast path refused {:?}",
                    String::from_utf8_lossy(&bytes)
                );
                continue;
            };
            let general = serde_json::from_slice::<JsonRequest>(&bytes).unwrap_or_else(|e| {
                panic!(
                    "fast path took what serde rejects ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(
                format!("{:?}", finish_request(fast, Source::plain(&bytes), &[])),
                format!("{:?}", finish_request(general, Source::plain(&bytes), &[])),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            if mutated {
                taken_mutated += 1;
            } else {
                taken += 1;
            }
        }
        // Both kinds of body were compared, mutated ones included.
        assert!(
            taken >= eligible_seen && eligible_seen > 5_000,
            "{taken} {eligible_seen}"
        );
        assert!(taken_mutated > 100, "{taken_mutated}");
    }
}
