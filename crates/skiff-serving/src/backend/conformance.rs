//! The conformance suite every `Backend` must pass, on small ONNX graphs built here from the ONNX schema.
//!
//! Use `skiff_serving::conformance_tests!(|| make_backend())` in a test file to get one `#[test]`
//! per check. The checks panic on failure (they are test code).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;

use super::{Backend, LoadOptions, Model, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};

/// Hand-written subset of the ONNX protobuf schema (onnx.proto), enough to build test graphs.
pub mod onnx {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        /// The `tensor_type` member of the `value` oneof (the only one used here).
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeTensor>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeTensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(string, tag = "8")]
        pub name: String,
    }
}

/// ONNX `TensorProto.DataType` code of a protocol datatype.
pub fn onnx_elem_type(dt: DataType) -> i32 {
    match dt {
        DataType::Fp32 => 1,
        DataType::Uint8 => 2,
        DataType::Int8 => 3,
        DataType::Uint16 => 4,
        DataType::Int16 => 5,
        DataType::Int32 => 6,
        DataType::Int64 => 7,
        DataType::Bytes => 8,
        DataType::Bool => 9,
        DataType::Fp16 => 10,
        DataType::Fp64 => 11,
        DataType::Uint32 => 12,
        DataType::Uint64 => 13,
    }
}

fn value_info(name: &str, dt: DataType, shape: &[Option<i64>]) -> onnx::ValueInfoProto {
    onnx::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(onnx::TypeProto {
            tensor_type: Some(onnx::TypeTensor {
                elem_type: onnx_elem_type(dt),
                shape: Some(onnx::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|d| match d {
                            Some(v) => onnx::Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            None => onnx::Dimension {
                                dim_value: None,
                                dim_param: Some("batch".into()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn model(graph: onnx::GraphProto) -> Vec<u8> {
    onnx::ModelProto {
        ir_version: 8,
        producer_name: "skiff-conformance".into(),
        graph: Some(graph),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
    }
    .encode_to_vec()
}

/// A graph with one `Identity` per datatype: input `x_<dt>` -> output `y_<dt>`, shape `[batch, 2]`.
pub fn identity_model(dtypes: &[DataType]) -> Vec<u8> {
    let mut g = onnx::GraphProto {
        name: "identity".into(),
        ..Default::default()
    };
    for dt in dtypes {
        let (x, y) = (
            format!("x_{}", dt.as_str().to_lowercase()),
            format!("y_{}", dt.as_str().to_lowercase()),
        );
        g.node.push(onnx::NodeProto {
            input: vec![x.clone()],
            output: vec![y.clone()],
            name: format!("id_{dt}"),
            op_type: "Identity".into(),
        });
        g.input.push(value_info(&x, *dt, &[None, Some(2)]));
        g.output.push(value_info(&y, *dt, &[None, Some(2)]));
    }
    model(g)
}

/// `sum = x + [10, 20]` and `double = x + x` over FP32 `x` of shape `[batch, 2]`.
pub fn add_model() -> Vec<u8> {
    let g = onnx::GraphProto {
        name: "add".into(),
        node: vec![
            onnx::NodeProto {
                input: vec!["x".into(), "c".into()],
                output: vec!["sum".into()],
                name: "add_c".into(),
                op_type: "Add".into(),
            },
            onnx::NodeProto {
                input: vec!["x".into(), "x".into()],
                output: vec!["double".into()],
                name: "add_x".into(),
                op_type: "Add".into(),
            },
        ],
        initializer: vec![onnx::TensorProto {
            dims: vec![2],
            data_type: 1,
            float_data: vec![10.0, 20.0],
            name: "c".into(),
        }],
        input: vec![value_info("x", DataType::Fp32, &[None, Some(2)])],
        output: vec![
            value_info("sum", DataType::Fp32, &[None, Some(2)]),
            value_info("double", DataType::Fp32, &[None, Some(2)]),
        ],
    };
    model(g)
}

/// A graph using an operator no backend knows, to check the load error names it.
pub fn unknown_op_model() -> Vec<u8> {
    let g = onnx::GraphProto {
        name: "bogus".into(),
        node: vec![onnx::NodeProto {
            input: vec!["x".into()],
            output: vec!["y".into()],
            name: "n".into(),
            op_type: "SkiffNoSuchOp".into(),
        }],
        input: vec![value_info("x", DataType::Fp32, &[None, Some(2)])],
        output: vec![value_info("y", DataType::Fp32, &[None, Some(2)])],
        ..Default::default()
    };
    model(g)
}

/// Writes bytes to a fresh file under the system temp dir and returns its path.
pub fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-conformance-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp model");
    path
}

fn opts() -> LoadOptions {
    LoadOptions {
        intra_op_threads: 1,
    }
}

fn load(backend: &dyn Backend, bytes: &[u8]) -> Box<dyn Model> {
    let path = write_temp("model.onnx", bytes);
    backend.load(&path, &opts()).unwrap_or_else(|e| {
        panic!(
            "{} failed to load a valid model: {e}",
            backend.capabilities().name
        )
    })
}

fn sample(dt: DataType) -> TensorData {
    match dt {
        DataType::Bool => TensorData::Bool(vec![true, false, false, true]),
        DataType::Uint8 => TensorData::Uint8(vec![0, 1, 128, 255]),
        DataType::Uint16 => TensorData::Uint16(vec![0, 1, 300, 65535]),
        DataType::Uint32 => TensorData::Uint32(vec![0, 1, 70000, u32::MAX]),
        DataType::Uint64 => TensorData::Uint64(vec![0, 1, 1 << 40, u64::MAX]),
        DataType::Int8 => TensorData::Int8(vec![-128, -1, 0, 127]),
        DataType::Int16 => TensorData::Int16(vec![-300, -1, 0, 300]),
        DataType::Int32 => TensorData::Int32(vec![i32::MIN, -1, 0, i32::MAX]),
        DataType::Int64 => TensorData::Int64(vec![i64::MIN, -1, 0, i64::MAX]),
        DataType::Fp16 => TensorData::Fp16(
            [0.5f32, -1.0, 0.0, 1024.0]
                .map(half::f16::from_f32)
                .to_vec(),
        ),
        DataType::Fp32 => TensorData::Fp32(vec![0.5, -1.25, 0.0, 3.0e38]),
        DataType::Fp64 => TensorData::Fp64(vec![0.5, -1.25, 0.0, 1e300]),
        DataType::Bytes => {
            TensorData::Bytes(vec![b"a".to_vec(), vec![], b"hello".to_vec(), "é".into()])
        }
    }
}

/// The signature comes from the graph: names, datatypes, dynamic first dimension as -1.
pub fn signature_from_graph(backend: &dyn Backend) {
    let m = load(backend, &add_model());
    let sig = m.signature();
    assert_eq!(
        sig.inputs,
        vec![TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2]
        }]
    );
    let outs: Vec<_> = sig.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outs, ["sum", "double"]);
    assert!(sig.batchable());
}

/// Every datatype the backend claims goes through `Identity` unchanged.
pub fn identity_every_datatype(backend: &dyn Backend) {
    let dts = backend.capabilities().datatypes;
    let mut m = load(backend, &identity_model(&dts));
    assert_eq!(m.signature().inputs.len(), dts.len());
    let inputs: Vec<Tensor> = dts
        .iter()
        .map(|dt| {
            Tensor::new(
                format!("x_{}", dt.as_str().to_lowercase()),
                vec![2, 2],
                sample(*dt),
            )
            .unwrap()
        })
        .collect();
    m.signature()
        .check_inputs(&inputs)
        .expect("inputs match signature");
    let out = m.infer(inputs.clone(), &[]).expect("identity runs");
    assert_eq!(out.len(), dts.len());
    for (i, o) in inputs.iter().zip(&out) {
        assert_eq!(o.name, i.name.replacen("x_", "y_", 1));
        assert_eq!(o.shape, i.shape, "{}", o.name);
        assert_eq!(o.data, i.data, "{}", o.name);
    }
}

/// Arithmetic is right for any batch size, and output selection returns what was asked in that order.
pub fn add_with_output_selection(backend: &dyn Backend) {
    let mut m = load(backend, &add_model());
    for rows in [1usize, 3, 17] {
        let x: Vec<f32> = (0..rows * 2).map(|i| i as f32 * 0.5).collect();
        let input = Tensor::new("x", vec![rows as i64, 2], TensorData::Fp32(x.clone())).unwrap();
        let out = m
            .infer(vec![input], &["double".into(), "sum".into()])
            .expect("add runs");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name, "double");
        assert_eq!(out[1].name, "sum");
        assert_eq!(out[1].shape, vec![rows as i64, 2]);
        let want_sum: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + [10.0, 20.0][i % 2])
            .collect();
        let want_double: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        assert_eq!(out[1].data, TensorData::Fp32(want_sum));
        assert_eq!(out[0].data, TensorData::Fp32(want_double));
    }
}

/// Files that are not models, and graphs with unknown operators, fail to load with a message.
pub fn bad_models_fail_to_load(backend: &dyn Backend) {
    let missing = std::env::temp_dir().join("skiff-conformance-no-such-dir/model.onnx");
    assert!(backend.load(&missing, &opts()).is_err());
    let garbage = write_temp("model.onnx", b"this is not an onnx model");
    assert!(backend.load(&garbage, &opts()).is_err());
    let unknown = write_temp("model.onnx", &unknown_op_model());
    let err = match backend.load(&unknown, &opts()) {
        Ok(_) => panic!("a graph with an unknown operator loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("SkiffNoSuchOp"),
        "error does not name the operator: {err}"
    );
}

/// Expands to one `#[test]` per conformance check for the backend built by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        #[test]
        fn conformance_signature_from_graph() {
            $crate::backend::conformance::signature_from_graph(&*($make)());
        }
        #[test]
        fn conformance_identity_every_datatype() {
            $crate::backend::conformance::identity_every_datatype(&*($make)());
        }
        #[test]
        fn conformance_add_with_output_selection() {
            $crate::backend::conformance::add_with_output_selection(&*($make)());
        }
        #[test]
        fn conformance_bad_models_fail_to_load() {
            $crate::backend::conformance::bad_models_fail_to_load(&*($make)());
        }
    };
}
