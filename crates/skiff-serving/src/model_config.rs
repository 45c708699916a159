//! A served model's configuration in the shape of Triton's `ModelConfig` (the model
//! configuration extension: `GET /v2/models/{m}/config`, gRPC `ModelConfig`), so that tools
//! that read it (tritonclient's `get_model_config`, perf_analyzer) find the model's inputs,
//! outputs, batching and instances.
//!
//! Triton's meaning of `max_batch_size` is kept: when it is above 0 the first dimension of
//! every input and output is the batch and is left out of `dims`. skiff reports it above 0
//! when requests are bounded (a `config.pbtxt` `max_batch_size`) or merged (batching on);
//! otherwise it is 0 and `dims` are the graph's shapes.

use serde_json::{Value, json};

use crate::backend::TensorSpec;
use crate::repository::Served;
use crate::tensor::DataType;

/// One input or output as the configuration lists it.
pub struct ConfigTensor {
    pub name: String,
    /// Triton's `DataType` enum value, e.g. 11 for `TYPE_FP32`.
    pub data_type: i32,
    pub dims: Vec<i64>,
}

/// The fields of Triton's `ModelConfig` that skiff can fill.
pub struct ModelConfigView {
    pub name: String,
    pub platform: String,
    pub backend: String,
    pub max_batch_size: i32,
    pub inputs: Vec<ConfigTensor>,
    pub outputs: Vec<ConfigTensor>,
    /// `dynamic_batching { max_queue_delay_microseconds }` when requests are merged.
    pub dynamic_batching_delay_us: Option<u64>,
    pub instances: i32,
    /// `version_policy { specific { versions } }` when pinned, else `latest { num_versions: 1 }`.
    pub pinned_version: Option<i64>,
}

/// Triton's `DataType` enum (model_config.proto).
pub fn triton_data_type(dt: DataType) -> (i32, &'static str) {
    match dt {
        DataType::Bool => (1, "TYPE_BOOL"),
        DataType::Uint8 => (2, "TYPE_UINT8"),
        DataType::Uint16 => (3, "TYPE_UINT16"),
        DataType::Uint32 => (4, "TYPE_UINT32"),
        DataType::Uint64 => (5, "TYPE_UINT64"),
        DataType::Int8 => (6, "TYPE_INT8"),
        DataType::Int16 => (7, "TYPE_INT16"),
        DataType::Int32 => (8, "TYPE_INT32"),
        DataType::Int64 => (9, "TYPE_INT64"),
        DataType::Fp16 => (10, "TYPE_FP16"),
        DataType::Fp32 => (11, "TYPE_FP32"),
        DataType::Fp64 => (12, "TYPE_FP64"),
        DataType::Bytes => (13, "TYPE_STRING"),
    }
}

fn data_type_name(code: i32) -> &'static str {
    DataType::ALL
        .into_iter()
        .map(triton_data_type)
        .find(|&(c, _)| c == code)
        .map_or("TYPE_INVALID", |(_, name)| name)
}

impl ModelConfigView {
    pub fn of(served: &Served) -> ModelConfigView {
        let batch_bound = served.max_request_rows.or(served
            .batcher
            .merges()
            .then(|| served.batcher.policy().max_batch_size));
        // A batch dimension exists only where every input and output leaves the first open.
        let max_batch_size = batch_bound
            .filter(|_| served.signature.batchable())
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX));
        let tensors = |specs: &[TensorSpec]| {
            specs
                .iter()
                .map(|s| ConfigTensor {
                    name: s.name.clone(),
                    data_type: triton_data_type(s.datatype).0,
                    dims: if max_batch_size > 0 {
                        s.shape[1..].to_vec()
                    } else {
                        s.shape.clone()
                    },
                })
                .collect()
        };
        ModelConfigView {
            name: served.name.clone(),
            platform: served.platform.clone(),
            backend: served.backend.to_string(),
            max_batch_size,
            inputs: tensors(&served.signature.inputs),
            outputs: tensors(&served.signature.outputs),
            dynamic_batching_delay_us: served.batcher.merges().then(|| {
                u64::try_from(served.batcher.policy().max_delay.as_micros()).unwrap_or(u64::MAX)
            }),
            instances: i32::try_from(served.instances).unwrap_or(i32::MAX),
            pinned_version: served.pinned.then(|| served.version.parse().ok()).flatten(),
        }
    }

    /// The configuration as Triton's REST endpoint writes it (protobuf JSON, field names as in
    /// model_config.proto).
    pub fn to_json(&self) -> Value {
        let tensors = |ts: &[ConfigTensor]| {
            ts.iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "data_type": data_type_name(t.data_type),
                        "dims": t.dims,
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut config = json!({
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "version_policy": match self.pinned_version {
                Some(v) => json!({"specific": {"versions": [v]}}),
                None => json!({"latest": {"num_versions": 1}}),
            },
            "max_batch_size": self.max_batch_size,
            "input": tensors(&self.inputs),
            "output": tensors(&self.outputs),
            "instance_group": [{"name": self.name, "kind": "KIND_CPU", "count": self.instances}],
        });
        if let Some(us) = self.dynamic_batching_delay_us {
            config["dynamic_batching"] = json!({ "max_queue_delay_microseconds": us });
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_round_trip_through_their_names() {
        for dt in DataType::ALL {
            let (code, name) = triton_data_type(dt);
            assert_eq!(data_type_name(code), name);
        }
        assert_eq!(data_type_name(0), "TYPE_INVALID");
    }

    #[test]
    fn json_carries_batching_only_when_merged() {
        let view = ModelConfigView {
            name: "m".into(),
            platform: "onnxruntime_onnx".into(),
            backend: "onnxruntime".into(),
            max_batch_size: 8,
            inputs: vec![ConfigTensor {
                name: "X".into(),
                data_type: 11,
                dims: vec![4],
            }],
            outputs: vec![],
            dynamic_batching_delay_us: Some(500),
            instances: 2,
            pinned_version: Some(3),
        };
        let j = view.to_json();
        assert_eq!(j["input"][0]["data_type"], "TYPE_FP32");
        assert_eq!(j["dynamic_batching"]["max_queue_delay_microseconds"], 500);
        assert_eq!(j["version_policy"]["specific"]["versions"][0], 3);
        assert_eq!(j["instance_group"][0]["count"], 2);
        let unbatched = ModelConfigView {
            dynamic_batching_delay_us: None,
            pinned_version: None,
            ..view
        };
        let j = unbatched.to_json();
        assert!(j.get("dynamic_batching").is_none());
        assert_eq!(j["version_policy"]["latest"]["num_versions"], 1);
    }
}
