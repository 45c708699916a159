//! The classification extension of the Open Inference Protocol (as Triton implements it): an
//! output requested with `"classification": N` comes back as the top N classes of each row,
//! BYTES strings `"<value>:<index>"`, instead of the scores themselves.

use crate::backend::TensorSpec;
use crate::service::ServeError;
use crate::tensor::{DataType, Tensor, TensorData};

/// Checks the outputs asked for as classes against the model's outputs before anything runs:
/// numeric scores shaped `[classes]`, or `[batch, classes]` where the graph leaves the first
/// dimension open (-1 is the batch, so a one-dimensional batched output is one value per row).
pub fn check(wanted: &[(String, usize)], specs: &[TensorSpec]) -> Result<(), ServeError> {
    for (name, _) in wanted {
        let Some(spec) = specs.iter().find(|s| s.name == *name) else {
            // An unknown output is refused by the signature check, naming the known ones.
            continue;
        };
        let bad = |why: String| {
            Err(ServeError::BadRequest(format!(
                "output {name:?}: classification needs {why}"
            )))
        };
        if matches!(spec.datatype, DataType::Bool | DataType::Bytes) {
            return bad(format!("numeric scores, not {}", spec.datatype));
        }
        let batched = spec.shape.first() == Some(&-1);
        match spec.shape.len() {
            1 if batched => {
                return bad(
                    "scores shaped [batch, classes]; this output has one value per row".into(),
                );
            }
            1 | 2 => {}
            _ => {
                return bad(format!(
                    "scores shaped [classes] or [batch, classes], not {:?}",
                    spec.shape
                ));
            }
        }
    }
    Ok(())
}

/// Replaces each output named in `wanted` (name, class count) by its top classes; [`check`]
/// has vetted them against the model's outputs.
pub fn apply(outputs: Vec<Tensor>, wanted: &[(String, usize)]) -> Result<Vec<Tensor>, ServeError> {
    outputs
        .into_iter()
        .map(|t| match wanted.iter().find(|(name, _)| *name == t.name) {
            Some(&(_, count)) => top_classes(&t, count),
            None => Ok(t),
        })
        .collect()
}

/// The class count a `classification` parameter asks for, `None` unless it is above 0; a count
/// past `usize` is as good as all classes.
pub fn class_count(value: i128) -> Option<usize> {
    (value > 0).then(|| usize::try_from(value).unwrap_or(usize::MAX))
}

/// A score as Triton writes it: C++'s `std::to_string`, six decimals for floats (`nan`, `inf`),
/// the exact value for integers.
trait Score: Copy + PartialOrd {
    fn write(self) -> String;
}

macro_rules! integer_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            fn write(self) -> String {
                self.to_string()
            }
        }
    )*};
}
integer_score!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Score for f64 {
    fn write(self) -> String {
        if self.is_nan() {
            "nan".into()
        } else {
            format!("{self:.6}")
        }
    }
}

/// The `k` best indices of `row`, best first, ties in index order, NaN (the one value not
/// equal to itself) last.
fn top<T: Score>(row: &[T], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    #[allow(clippy::eq_op)]
    order.sort_by(|&a, &b| {
        let (x, y) = (row[a], row[b]);
        y.partial_cmp(&x).unwrap_or_else(|| (x != x).cmp(&(y != y)))
    });
    order.truncate(k);
    order
}

/// The top `count` classes of each row of `t` (a vector of scores, or a batch of them).
fn top_classes(t: &Tensor, count: usize) -> Result<Tensor, ServeError> {
    let (rows, classes) = match t.shape.as_slice() {
        [c] => (1, usize::try_from(*c).unwrap_or(0)),
        [b, c] => (
            usize::try_from(*b).unwrap_or(0),
            usize::try_from(*c).unwrap_or(0),
        ),
        other => {
            return Err(ServeError::BadRequest(format!(
                "output {:?}: classification needs scores shaped [classes] or [batch, classes], \
                 not {other:?}",
                t.name
            )));
        }
    };
    let k = count.min(classes);
    fn labels<T: Score>(v: &[T], rows: usize, classes: usize, k: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(rows * k);
        for row in v.chunks_exact(classes.max(1)).take(rows) {
            for i in top(row, k) {
                out.push(format!("{}:{i}", row[i].write()).into_bytes());
            }
        }
        out
    }
    let widen = |v: Vec<f64>| labels(&v, rows, classes, k);
    let data = match &t.data {
        TensorData::Uint8(v) => labels(v, rows, classes, k),
        TensorData::Uint16(v) => labels(v, rows, classes, k),
        TensorData::Uint32(v) => labels(v, rows, classes, k),
        TensorData::Uint64(v) => labels(v, rows, classes, k),
        TensorData::Int8(v) => labels(v, rows, classes, k),
        TensorData::Int16(v) => labels(v, rows, classes, k),
        TensorData::Int32(v) => labels(v, rows, classes, k),
        TensorData::Int64(v) => labels(v, rows, classes, k),
        // Floats are written through double, as std::to_string promotes them.
        TensorData::Fp16(v) => widen(v.iter().map(|x| x.to_f64()).collect()),
        TensorData::Fp32(v) => widen(v.iter().map(|&x| x.into()).collect()),
        TensorData::Fp64(v) => labels(v, rows, classes, k),
        TensorData::Bool(_) | TensorData::Bytes(_) => {
            return Err(ServeError::BadRequest(format!(
                "output {:?}: classification needs numeric scores, not {}",
                t.name,
                t.data.datatype()
            )));
        }
    };
    let shape = match t.shape.len() {
        1 => vec![k as i64],
        _ => vec![rows as i64, k as i64],
    };
    Tensor::new(t.name.as_str(), shape, TensorData::Bytes(data))
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
        let out = apply(vec![t], &[("p".into(), 2)]).unwrap();
        assert_eq!(out[0].shape, vec![2, 2]);
        assert_eq!(
            strings(&out[0]),
            ["0.700000:1", "0.200000:2", "0.500000:0", "0.250000:1"]
        );
        // More classes asked than there are: all of them. Integers are written as integers.
        let t = scores(vec![3], TensorData::Int64(vec![3, 9, -1]));
        let out = apply(vec![t], &[("p".into(), 5)]).unwrap();
        assert_eq!(out[0].shape, vec![3]);
        assert_eq!(strings(&out[0]), ["9:1", "3:0", "-1:2"]);
        // NaN ranks last.
        let t = scores(vec![3], TensorData::Fp64(vec![f64::NAN, 0.5, 1.0]));
        let out = apply(vec![t], &[("p".into(), 3)]).unwrap();
        assert_eq!(strings(&out[0])[2], "nan:0");
        // Large integers keep every digit.
        let t = scores(vec![2], TensorData::Uint64(vec![u64::MAX, 1]));
        let out = apply(vec![t], &[("p".into(), 1)]).unwrap();
        assert_eq!(strings(&out[0]), ["18446744073709551615:0"]);
        // Outputs not named stay as they are.
        let t = scores(vec![1], TensorData::Fp32(vec![1.0]));
        assert_eq!(apply(vec![t.clone()], &[]).unwrap(), vec![t]);
    }

    #[test]
    fn what_cannot_be_classified_is_refused_before_inference() {
        let spec = |dt, shape: Vec<i64>| TensorSpec {
            name: "p".into(),
            datatype: dt,
            shape,
        };
        let wanted = [("p".to_string(), 1)];
        for (s, why) in [
            (spec(DataType::Int64, vec![-1]), "one value per row"),
            (spec(DataType::Fp32, vec![-1, 2, 3]), "not [-1, 2, 3]"),
            (
                spec(DataType::Bytes, vec![-1, 3]),
                "numeric scores, not BYTES",
            ),
        ] {
            let e = check(&wanted, &[s]).unwrap_err();
            assert!(
                matches!(&e, ServeError::BadRequest(m) if m.contains(why)),
                "{e}"
            );
        }
        for s in [
            spec(DataType::Fp32, vec![-1, 3]),
            spec(DataType::Fp32, vec![3]),
            spec(DataType::Int32, vec![2, 3]),
        ] {
            check(&wanted, &[s]).unwrap();
        }
        assert_eq!(class_count(0), None);
        assert_eq!(class_count(-3), None);
        assert_eq!(class_count(3), Some(3));
        assert_eq!(class_count(i128::from(u64::MAX)), Some(usize::MAX));
    }
}
