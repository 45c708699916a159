//! The classification extension of the Open Inference Protocol (as Triton implements it): an
//! output requested with `"classification": N` comes back as the top N classes of each row,
//! BYTES strings `"<value>:<index>"`, instead of the scores themselves.

use crate::backend::TensorSpec;
use crate::service::ServeError;
use crate::tensor::{Tensor, TensorData};

/// Replaces each output named in `wanted` (name, class count) by its top classes. `specs` are
/// the model's outputs: a first dimension the graph leaves open (-1) is the batch, so an output
/// of one dimension is then one value per row, not a row of classes. An output that was not
/// produced was refused before inference, so every name here is found.
pub fn apply(
    outputs: Vec<Tensor>,
    wanted: &[(String, usize)],
    specs: &[TensorSpec],
) -> Result<Vec<Tensor>, ServeError> {
    outputs
        .into_iter()
        .map(|t| match wanted.iter().find(|(name, _)| *name == t.name) {
            Some(&(_, count)) => {
                let batched = specs
                    .iter()
                    .find(|s| s.name == t.name)
                    .is_some_and(|s| s.shape.first() == Some(&-1));
                if batched && t.shape.len() == 1 {
                    return Err(ServeError::BadRequest(format!(
                        "output {:?}: classification needs scores shaped [batch, classes]; this \
                         output has one value per row",
                        t.name
                    )));
                }
                top_classes(&t, count)
            }
            None => Ok(t),
        })
        .collect()
}

/// The class count of a `classification` parameter: a whole number above 0.
pub fn class_count(name: &str, value: Option<i64>) -> Result<Option<usize>, ServeError> {
    match value {
        None => Ok(None),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .map(Some)
            .ok_or_else(|| {
                ServeError::BadRequest(format!(
                    "output {name:?}: parameter \"classification\" must be a class count above 0, got {n}"
                ))
            }),
    }
}

/// The top `count` classes of each row of `t` (a vector of scores, or a batch of them), best
/// first, ties in index order; fewer when the output has fewer classes.
fn top_classes(t: &Tensor, count: usize) -> Result<Tensor, ServeError> {
    let scores: Vec<f64> = match &t.data {
        TensorData::Uint8(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Uint16(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Uint32(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Uint64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Int8(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Int16(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Fp16(v) => v.iter().map(|&x| x.to_f64()).collect(),
        TensorData::Fp32(v) => v.iter().map(|&x| x.into()).collect(),
        TensorData::Fp64(v) => v.clone(),
        TensorData::Bool(_) | TensorData::Bytes(_) => {
            return Err(ServeError::BadRequest(format!(
                "output {:?}: classification needs numeric scores, not {}",
                t.name,
                t.data.datatype()
            )));
        }
    };
    let (rows, classes) = match t.shape.as_slice() {
        [c] => (1, *c as usize),
        [b, c] => (*b as usize, *c as usize),
        other => {
            return Err(ServeError::BadRequest(format!(
                "output {:?}: classification needs scores shaped [classes] or [batch, classes], \
                 not {other:?}",
                t.name
            )));
        }
    };
    let k = count.min(classes);
    let integer = !t.data.datatype().is_float();
    let mut labels = Vec::with_capacity(rows * k);
    for row in 0..rows {
        let row_scores = &scores[row * classes..(row + 1) * classes];
        let mut order: Vec<usize> = (0..classes).collect();
        // NaN sorts last, so that a real score always ranks above it.
        order.sort_by(|&a, &b| {
            let (x, y) = (row_scores[a], row_scores[b]);
            y.partial_cmp(&x)
                .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
        });
        for &i in &order[..k] {
            // Triton writes the score with C++'s std::to_string: six decimals for floats.
            let value = if integer {
                format!("{}", row_scores[i] as i64)
            } else {
                format!("{:.6}", row_scores[i])
            };
            labels.push(format!("{value}:{i}").into_bytes());
        }
    }
    let shape = match t.shape.len() {
        1 => vec![k as i64],
        _ => vec![rows as i64, k as i64],
    };
    Tensor::new(t.name.as_str(), shape, TensorData::Bytes(labels))
        .map_err(|e| ServeError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(shape: Vec<i64>, data: TensorData) -> Tensor {
        Tensor::new("p", shape, data).unwrap()
    }

    fn strings(t: &Tensor) -> Vec<String> {
        match &t.data {
            TensorData::Bytes(v) => v
                .iter()
                .map(|b| String::from_utf8(b.clone()).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn top_classes_per_row_best_first() {
        let t = scores(
            vec![2, 3],
            TensorData::Fp32(vec![0.1, 0.7, 0.2, 0.5, 0.25, 0.25]),
        );
        let out = apply(vec![t], &[("p".into(), 2)], &[]).unwrap();
        assert_eq!(out[0].shape, vec![2, 2]);
        assert_eq!(
            strings(&out[0]),
            ["0.700000:1", "0.200000:2", "0.500000:0", "0.250000:1"]
        );
        // More classes asked than there are: all of them. Integers are written as integers.
        let t = scores(vec![3], TensorData::Int64(vec![3, 9, -1]));
        let out = apply(vec![t], &[("p".into(), 5)], &[]).unwrap();
        assert_eq!(out[0].shape, vec![3]);
        assert_eq!(strings(&out[0]), ["9:1", "3:0", "-1:2"]);
        // NaN ranks last.
        let t = scores(vec![3], TensorData::Fp64(vec![f64::NAN, 0.5, 1.0]));
        let out = apply(vec![t], &[("p".into(), 3)], &[]).unwrap();
        assert_eq!(strings(&out[0])[2], "NaN:0");
        // Outputs not named stay as they are.
        let t = scores(vec![1], TensorData::Fp32(vec![1.0]));
        assert_eq!(apply(vec![t.clone()], &[], &[]).unwrap(), vec![t]);
    }

    #[test]
    fn what_cannot_be_classified_is_a_client_error() {
        for t in [
            scores(vec![1, 1, 2], TensorData::Fp32(vec![1.0, 2.0])),
            scores(vec![2], TensorData::Bool(vec![true, false])),
        ] {
            let e = apply(vec![t], &[("p".into(), 1)], &[]).unwrap_err();
            assert!(matches!(e, ServeError::BadRequest(_)), "{e}");
        }
        // One value per row of a batched output.
        let spec = TensorSpec {
            name: "p".into(),
            datatype: crate::tensor::DataType::Int64,
            shape: vec![-1],
        };
        let t = scores(vec![2], TensorData::Int64(vec![1, 0]));
        let e = apply(vec![t], &[("p".into(), 1)], &[spec]).unwrap_err();
        assert!(e.to_string().contains("one value per row"), "{e}");
        assert!(class_count("p", Some(0)).is_err());
        assert!(class_count("p", Some(-3)).is_err());
        assert_eq!(class_count("p", Some(3)).unwrap(), Some(3));
        assert_eq!(class_count("p", None).unwrap(), None);
    }
}
