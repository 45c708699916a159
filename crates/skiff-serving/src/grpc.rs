//! gRPC `inference.GRPCInferenceService` (KServe v2 / Triton wire format) over tonic, without protoc.
//!
//! The messages are written by hand from the protocol's documentation with `prost` derives; the
//! service dispatches on the method path and runs each call through tonic's unary machinery.

use std::convert::Infallible;
use std::sync::Arc;

use tonic::server::Grpc;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::repository::{ModelState, Repository};
use crate::service::{ServeError, check_load_parameters, infer};
use crate::tensor::{DataType, Tensor, TensorData, element_count};

/// Messages of `grpc_service.proto` (package `inference`).
pub mod pb {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerLiveRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerLiveResponse {
        #[prost(bool, tag = "1")]
        pub live: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReadyRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelReadyRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerMetadataRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerMetadataResponse {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, repeated, tag = "3")]
        pub extensions: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelStatisticsRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelStatisticsResponse {
        #[prost(message, repeated, tag = "1")]
        pub model_stats: Vec<ModelStatistics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelStatistics {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(uint64, tag = "3")]
        pub last_inference: u64,
        #[prost(uint64, tag = "4")]
        pub inference_count: u64,
        #[prost(uint64, tag = "5")]
        pub execution_count: u64,
        #[prost(message, optional, tag = "6")]
        pub inference_stats: Option<InferStatistics>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferStatistics {
        #[prost(message, optional, tag = "1")]
        pub success: Option<StatisticDuration>,
        #[prost(message, optional, tag = "2")]
        pub fail: Option<StatisticDuration>,
        #[prost(message, optional, tag = "3")]
        pub queue: Option<StatisticDuration>,
        #[prost(message, optional, tag = "4")]
        pub compute_input: Option<StatisticDuration>,
        #[prost(message, optional, tag = "5")]
        pub compute_infer: Option<StatisticDuration>,
        #[prost(message, optional, tag = "6")]
        pub compute_output: Option<StatisticDuration>,
        #[prost(message, optional, tag = "7")]
        pub cache_hit: Option<StatisticDuration>,
        #[prost(message, optional, tag = "8")]
        pub cache_miss: Option<StatisticDuration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatisticDuration {
        #[prost(uint64, tag = "1")]
        pub count: u64,
        #[prost(uint64, tag = "2")]
        pub ns: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelConfigRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelConfigResponse {
        #[prost(message, optional, tag = "1")]
        pub config: Option<ModelConfig>,
    }
    /// The fields of Triton's `ModelConfig` (model_config.proto) that skiff fills; enums are
    /// written as their int32 values, as on the wire.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelConfig {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub platform: String,
        #[prost(message, optional, tag = "3")]
        pub version_policy: Option<ModelVersionPolicy>,
        #[prost(int32, tag = "4")]
        pub max_batch_size: i32,
        #[prost(message, repeated, tag = "5")]
        pub input: Vec<ModelInput>,
        #[prost(message, repeated, tag = "6")]
        pub output: Vec<ModelOutput>,
        #[prost(message, repeated, tag = "7")]
        pub instance_group: Vec<ModelInstanceGroup>,
        #[prost(message, optional, tag = "11")]
        pub dynamic_batching: Option<ModelDynamicBatching>,
        #[prost(string, tag = "17")]
        pub backend: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInput {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(int64, repeated, tag = "4")]
        pub dims: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelOutput {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(int64, repeated, tag = "3")]
        pub dims: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInstanceGroup {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int32, tag = "2")]
        pub count: i32,
        /// `KIND_CPU` = 2.
        #[prost(int32, tag = "4")]
        pub kind: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelDynamicBatching {
        #[prost(uint64, tag = "2")]
        pub max_queue_delay_microseconds: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelVersionPolicy {
        #[prost(oneof = "VersionPolicyChoice", tags = "1, 3")]
        pub policy_choice: Option<VersionPolicyChoice>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum VersionPolicyChoice {
        #[prost(message, tag = "1")]
        Latest(LatestVersions),
        #[prost(message, tag = "3")]
        Specific(SpecificVersions),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LatestVersions {
        #[prost(uint32, tag = "1")]
        pub num_versions: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SpecificVersions {
        #[prost(int64, repeated, tag = "1")]
        pub versions: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelMetadataRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelMetadataResponse {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, repeated, tag = "2")]
        pub versions: Vec<String>,
        #[prost(string, tag = "3")]
        pub platform: String,
        #[prost(message, repeated, tag = "4")]
        pub inputs: Vec<TensorMetadata>,
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<TensorMetadata>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferParameter {
        #[prost(oneof = "ParameterChoice", tags = "1, 2, 3, 4, 5")]
        pub parameter_choice: Option<ParameterChoice>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ParameterChoice {
        #[prost(bool, tag = "1")]
        BoolParam(bool),
        #[prost(int64, tag = "2")]
        Int64Param(i64),
        #[prost(string, tag = "3")]
        StringParam(String),
        #[prost(double, tag = "4")]
        DoubleParam(f64),
        #[prost(uint64, tag = "5")]
        Uint64Param(u64),
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferTensorContents {
        #[prost(bool, repeated, tag = "1")]
        pub bool_contents: Vec<bool>,
        #[prost(int32, repeated, tag = "2")]
        pub int_contents: Vec<i32>,
        #[prost(int64, repeated, tag = "3")]
        pub int64_contents: Vec<i64>,
        #[prost(uint32, repeated, tag = "4")]
        pub uint_contents: Vec<u32>,
        #[prost(uint64, repeated, tag = "5")]
        pub uint64_contents: Vec<u64>,
        #[prost(float, repeated, tag = "6")]
        pub fp32_contents: Vec<f32>,
        #[prost(double, repeated, tag = "7")]
        pub fp64_contents: Vec<f64>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub bytes_contents: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferInputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferRequestedOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(map = "string, message", tag = "2")]
        pub parameters: HashMap<String, InferParameter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferRequest {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, repeated, tag = "5")]
        pub inputs: Vec<InferInputTensor>,
        #[prost(message, repeated, tag = "6")]
        pub outputs: Vec<InferRequestedOutputTensor>,
        #[prost(bytes = "vec", repeated, tag = "7")]
        pub raw_input_contents: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferResponse {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(map = "string, message", tag = "4")]
        pub parameters: HashMap<String, InferParameter>,
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<InferOutputTensor>,
        #[prost(bytes = "vec", repeated, tag = "6")]
        pub raw_output_contents: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryIndexRequest {
        #[prost(string, tag = "1")]
        pub repository_name: String,
        #[prost(bool, tag = "2")]
        pub ready: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelIndex {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(string, tag = "3")]
        pub state: String,
        #[prost(string, tag = "4")]
        pub reason: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryIndexResponse {
        #[prost(message, repeated, tag = "1")]
        pub models: Vec<ModelIndex>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryModelLoadRequest {
        #[prost(string, tag = "1")]
        pub repository_name: String,
        #[prost(string, tag = "2")]
        pub model_name: String,
        #[prost(map = "string, message", tag = "3")]
        pub parameters: HashMap<String, ModelRepositoryParameter>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelRepositoryParameter {
        #[prost(
            oneof = "model_repository_parameter::ParameterChoice",
            tags = "1, 2, 3, 4"
        )]
        pub parameter_choice: Option<model_repository_parameter::ParameterChoice>,
    }
    pub mod model_repository_parameter {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum ParameterChoice {
            #[prost(bool, tag = "1")]
            BoolParam(bool),
            #[prost(int64, tag = "2")]
            Int64Param(i64),
            #[prost(string, tag = "3")]
            StringParam(String),
            #[prost(bytes = "vec", tag = "4")]
            BytesParam(Vec<u8>),
        }
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryModelLoadResponse {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryModelUnloadRequest {
        #[prost(string, tag = "1")]
        pub repository_name: String,
        #[prost(string, tag = "2")]
        pub model_name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RepositoryModelUnloadResponse {}
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::NotFound(m) => Status::not_found(m),
            ServeError::BadRequest(m) => Status::invalid_argument(m),
            ServeError::Unavailable(m) => Status::unavailable(m),
            ServeError::Internal(m) => Status::internal(m),
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn version_opt(v: &str) -> Option<&str> {
    if v.is_empty() { None } else { Some(v) }
}

async fn server_live(
    _: Arc<Repository>,
    _: Request<pb::ServerLiveRequest>,
) -> Reply<pb::ServerLiveResponse> {
    Ok(Response::new(pb::ServerLiveResponse { live: true }))
}

async fn server_ready(
    repo: Arc<Repository>,
    _: Request<pb::ServerReadyRequest>,
) -> Reply<pb::ServerReadyResponse> {
    Ok(Response::new(pb::ServerReadyResponse {
        ready: repo.all_ready(),
    }))
}

async fn model_ready(
    repo: Arc<Repository>,
    req: Request<pb::ModelReadyRequest>,
) -> Reply<pb::ModelReadyResponse> {
    let r = req.into_inner();
    // An unknown model or version is not ready, as Triton answers (tritonclient's
    // is_model_ready returns False rather than raising).
    let ready = repo.get(&r.name, version_opt(&r.version)).is_ok();
    Ok(Response::new(pb::ModelReadyResponse { ready }))
}

async fn server_metadata(
    _: Arc<Repository>,
    _: Request<pb::ServerMetadataRequest>,
) -> Reply<pb::ServerMetadataResponse> {
    Ok(Response::new(pb::ServerMetadataResponse {
        name: "skiff".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: crate::service::EXTENSIONS.map(String::from).to_vec(),
    }))
}

fn tensor_meta(specs: &[crate::backend::TensorSpec]) -> Vec<pb::TensorMetadata> {
    specs
        .iter()
        .map(|s| pb::TensorMetadata {
            name: s.name.clone(),
            datatype: s.datatype.as_str().into(),
            shape: s.shape.clone(),
        })
        .collect()
}

async fn model_statistics(
    repo: Arc<Repository>,
    req: Request<pb::ModelStatisticsRequest>,
) -> Reply<pb::ModelStatisticsResponse> {
    let r = req.into_inner();
    let stats = crate::statistics::collect(&repo, &r.name, version_opt(&r.version))
        .map_err(ServeError::from)?;
    let d = |(count, ns)| Some(pb::StatisticDuration { count, ns });
    Ok(Response::new(pb::ModelStatisticsResponse {
        model_stats: stats
            .into_iter()
            .map(|m| pb::ModelStatistics {
                name: m.name,
                version: m.version,
                last_inference: m.last_inference,
                inference_count: m.inference_count,
                execution_count: m.execution_count,
                inference_stats: Some(pb::InferStatistics {
                    success: d(m.success),
                    fail: d(m.fail),
                    queue: d(m.queue),
                    compute_input: d((0, 0)),
                    compute_infer: d(m.compute_infer),
                    compute_output: d((0, 0)),
                    cache_hit: d((0, 0)),
                    cache_miss: d((0, 0)),
                }),
            })
            .collect(),
    }))
}

async fn model_config(
    repo: Arc<Repository>,
    req: Request<pb::ModelConfigRequest>,
) -> Reply<pb::ModelConfigResponse> {
    let r = req.into_inner();
    let served = repo
        .get(&r.name, version_opt(&r.version))
        .map_err(ServeError::from)?;
    let view = crate::model_config::ModelConfigView::of(&served);
    let config = pb::ModelConfig {
        name: view.name,
        platform: view.platform,
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(match view.pinned_version {
                Some(v) => {
                    pb::VersionPolicyChoice::Specific(pb::SpecificVersions { versions: vec![v] })
                }
                None => pb::VersionPolicyChoice::Latest(pb::LatestVersions { num_versions: 1 }),
            }),
        }),
        max_batch_size: view.max_batch_size,
        input: view
            .inputs
            .into_iter()
            .map(|t| pb::ModelInput {
                name: t.name,
                data_type: t.data_type,
                dims: t.dims,
            })
            .collect(),
        output: view
            .outputs
            .into_iter()
            .map(|t| pb::ModelOutput {
                name: t.name,
                data_type: t.data_type,
                dims: t.dims,
            })
            .collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            name: served.name.clone(),
            count: view.instances,
            kind: 2,
        }],
        dynamic_batching: view
            .dynamic_batching_delay_us
            .map(|us| pb::ModelDynamicBatching {
                max_queue_delay_microseconds: us,
            }),
        backend: view.backend,
    };
    Ok(Response::new(pb::ModelConfigResponse {
        config: Some(config),
    }))
}

async fn model_metadata(
    repo: Arc<Repository>,
    req: Request<pb::ModelMetadataRequest>,
) -> Reply<pb::ModelMetadataResponse> {
    let r = req.into_inner();
    let served = repo
        .get(&r.name, version_opt(&r.version))
        .map_err(ServeError::from)?;
    let versions = match version_opt(&r.version) {
        Some(_) => vec![served.version.clone()],
        None => repo.versions(&r.name),
    };
    Ok(Response::new(pb::ModelMetadataResponse {
        name: served.name.clone(),
        versions,
        platform: served.platform.clone(),
        inputs: tensor_meta(&served.signature.inputs),
        outputs: tensor_meta(&served.signature.outputs),
    }))
}

fn narrow<T: TryFrom<i64>>(name: &str, dt: DataType, v: &[i64]) -> Result<Vec<T>, ServeError> {
    v.iter()
        .map(|&x| {
            T::try_from(x).map_err(|_| {
                ServeError::BadRequest(format!("input {name:?}: {x} does not fit {dt}"))
            })
        })
        .collect()
}

/// Decodes typed `contents` of one input.
fn from_contents(
    input: &pb::InferInputTensor,
    dt: DataType,
    c: pb::InferTensorContents,
) -> Result<TensorData, ServeError> {
    let name = &input.name;
    // Data in another typed field than the datatype's would read as "0 elements given".
    let expected = match dt {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => "raw_input_contents",
    };
    let given = [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ];
    if let Some((other, _)) = given
        .iter()
        .find(|(field, empty)| !empty && *field != expected)
    {
        return Err(ServeError::BadRequest(format!(
            "input {name:?}: datatype {dt} takes its data in {expected}, but {other} was given"
        )));
    }
    let ints = |v: Vec<i32>| v.into_iter().map(i64::from).collect::<Vec<_>>();
    let uints = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<_>>();
    Ok(match dt {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(name, dt, &ints(c.int_contents))?),
        DataType::Int16 => TensorData::Int16(narrow(name, dt, &ints(c.int_contents))?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(name, dt, &uints(c.uint_contents))?),
        DataType::Uint16 => TensorData::Uint16(narrow(name, dt, &uints(c.uint_contents))?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::Fp16 => {
            return Err(ServeError::BadRequest(format!(
                "input {name:?}: FP16 has no typed contents field; send it in raw_input_contents"
            )));
        }
    })
}

/// The outputs asked for as classes (`classification` parameter), with their class counts.
fn requested_classes(req: &pb::ModelInferRequest) -> Result<Vec<(String, usize)>, ServeError> {
    let mut out = Vec::new();
    for o in &req.outputs {
        let Some(choice) = o
            .parameters
            .get("classification")
            .and_then(|p| p.parameter_choice.as_ref())
        else {
            continue;
        };
        let count = match choice {
            pb::ParameterChoice::Int64Param(n) => crate::classify::class_count(i128::from(*n)),
            pb::ParameterChoice::Uint64Param(n) => crate::classify::class_count(i128::from(*n)),
            _ => None,
        };
        let count = count.ok_or_else(|| {
            ServeError::BadRequest(format!(
                "output {:?}: parameter \"classification\" must be a class count above 0",
                o.name
            ))
        })?;
        out.push((o.name.clone(), count));
    }
    Ok(out)
}

/// Turns a gRPC request into tensors: all inputs from `raw_input_contents` (in order) or all from `contents`.
pub fn decode_request(
    req: pb::ModelInferRequest,
) -> Result<(Vec<Tensor>, Vec<String>), ServeError> {
    let raw = req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(ServeError::BadRequest(format!(
            "{} raw_input_contents for {} inputs; give one per input or none",
            raw.len(),
            req.inputs.len()
        )));
    }
    if !raw.is_empty()
        && let Some(both) = req.inputs.iter().find(|i| i.contents.is_some())
    {
        return Err(ServeError::BadRequest(format!(
            "input {:?} has typed contents while the request carries raw_input_contents; give all \
             inputs' data one way or the other",
            both.name
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for mut input in req.inputs {
        let dt = DataType::parse(&input.datatype)?;
        let count = element_count(&input.name, &input.shape)?;
        let data = match raw.next() {
            Some(bytes) => TensorData::from_binary(&input.name, dt, &input.shape, count, &bytes)?,
            None => {
                let contents = input.contents.take().unwrap_or_default();
                from_contents(&input, dt, contents)?
            }
        };
        if inputs.iter().any(|t: &Tensor| t.name == input.name) {
            return Err(ServeError::BadRequest(format!(
                "duplicate input {:?}",
                input.name
            )));
        }
        inputs.push(Tensor::new(input.name, input.shape, data)?);
    }
    let outputs = req.outputs.into_iter().map(|o| o.name).collect();
    Ok((inputs, outputs))
}

async fn model_infer(
    repo: Arc<Repository>,
    req: Request<pb::ModelInferRequest>,
) -> Reply<pb::ModelInferResponse> {
    let r = req.into_inner();
    let (model, version, id) = (r.model_name.clone(), r.model_version.clone(), r.id.clone());
    let target = repo
        .get(&model, version_opt(&version))
        .map_err(ServeError::from)?;
    let classes = crate::service::rejected(
        &target,
        requested_classes(&r)
            .and_then(|c| crate::classify::check(&c, &target.signature.outputs).map(|()| c)),
    )?;
    let (inputs, outputs) = crate::service::rejected(&target, decode_request(r))?;
    let (served, produced) = infer(&repo, &model, version_opt(&version), inputs, outputs).await?;
    let produced = crate::classify::apply(produced, &classes)?;
    let mut resp = pb::ModelInferResponse {
        model_name: served.name.clone(),
        model_version: served.version.clone(),
        id,
        ..Default::default()
    };
    for t in produced {
        let mut raw = Vec::new();
        t.data.write_binary(&mut raw);
        resp.outputs.push(pb::InferOutputTensor {
            name: t.name,
            datatype: t.data.datatype().as_str().into(),
            shape: t.shape,
            ..Default::default()
        });
        resp.raw_output_contents.push(raw);
    }
    Ok(Response::new(resp))
}

async fn repository_index(
    repo: Arc<Repository>,
    req: Request<pb::RepositoryIndexRequest>,
) -> Reply<pb::RepositoryIndexResponse> {
    let only_ready = req.into_inner().ready;
    let models = repo
        .index()
        .into_iter()
        .filter(|e| !only_ready || e.state == ModelState::Ready)
        .map(|e| {
            let (state, reason) = e.state.index_state();
            pb::ModelIndex {
                name: e.name,
                version: e.version.unwrap_or_default(),
                state: state.into(),
                reason,
            }
        })
        .collect();
    Ok(Response::new(pb::RepositoryIndexResponse { models }))
}

async fn repository_load(
    repo: Arc<Repository>,
    req: Request<pb::RepositoryModelLoadRequest>,
) -> Reply<pb::RepositoryModelLoadResponse> {
    let req = req.into_inner();
    check_load_parameters(req.parameters.keys().map(String::as_str))?;
    let name = req.model_name;
    tokio::task::spawn_blocking(move || repo.load(&name))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(ServeError::from)?;
    Ok(Response::new(pb::RepositoryModelLoadResponse {}))
}

async fn repository_unload(
    repo: Arc<Repository>,
    req: Request<pb::RepositoryModelUnloadRequest>,
) -> Reply<pb::RepositoryModelUnloadResponse> {
    repo.unload(&req.into_inner().model_name)
        .map_err(ServeError::from)?;
    Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
}

const SERVICE: &str = "/inference.GRPCInferenceService/";

/// Runs one unary call through tonic's codec with the given handler.
macro_rules! unary {
    ($repo:expr, $max:expr, $req:expr, $handler:path) => {{
        let repo = $repo.clone();
        let svc = tower::service_fn(move |r| $handler(repo.clone(), r));
        let mut grpc = Grpc::new(ProstCodec::default())
            .max_decoding_message_size($max)
            .max_encoding_message_size($max);
        oversized_is_resource_exhausted(grpc.unary(svc, $req).await)
    }};
}

/// tonic answers a message over the size limit with OUT_OF_RANGE; gRPC's status codes (and
/// Triton, through grpc core) use RESOURCE_EXHAUSTED for it, which clients retry differently.
/// skiff's handlers never answer OUT_OF_RANGE themselves, so the code alone identifies it.
fn oversized_is_resource_exhausted<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let h = resp.headers_mut();
    if h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11") {
        let code = tonic::Code::ResourceExhausted as i32;
        h.insert("grpc-status", http::HeaderValue::from(code));
    }
    resp
}

async fn dispatch(
    repo: Arc<Repository>,
    max: usize,
    req: http::Request<axum::body::Body>,
) -> http::Response<tonic::body::Body> {
    let method = req.uri().path().strip_prefix(SERVICE).unwrap_or_default();
    match method {
        "ServerLive" => unary!(repo, max, req, server_live),
        "ServerReady" => unary!(repo, max, req, server_ready),
        "ModelReady" => unary!(repo, max, req, model_ready),
        "ServerMetadata" => unary!(repo, max, req, server_metadata),
        "ModelMetadata" => unary!(repo, max, req, model_metadata),
        "ModelConfig" => unary!(repo, max, req, model_config),
        "ModelStatistics" => unary!(repo, max, req, model_statistics),
        "ModelInfer" => unary!(repo, max, req, model_infer),
        "RepositoryIndex" => unary!(repo, max, req, repository_index),
        "RepositoryModelLoad" => unary!(repo, max, req, repository_load),
        "RepositoryModelUnload" => unary!(repo, max, req, repository_unload),
        _ => Status::unimplemented(format!("method {} is not implemented", req.uri().path()))
            .into_http(),
    }
}

/// The gRPC endpoint as an axum router (served over HTTP/2 by `axum::serve`).
pub fn router(repo: Arc<Repository>, max_message_bytes: usize) -> axum::Router {
    let svc = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let repo = repo.clone();
        async move {
            let resp = dispatch(repo, max_message_bytes, req).await;
            Ok::<_, Infallible>(resp.map(axum::body::Body::new))
        }
    });
    axum::Router::new().fallback_service(svc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::HashMap;

    fn input(
        name: &str,
        dt: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> pb::InferInputTensor {
        pb::InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            parameters: HashMap::new(),
            contents,
        }
    }

    #[test]
    fn raw_and_typed_contents_decode() {
        let mut raw = Vec::new();
        TensorData::Fp32(vec![1.0, 2.0]).write_binary(&mut raw);
        let req = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![1, 2], None)],
            raw_input_contents: vec![raw],
            outputs: vec![pb::InferRequestedOutputTensor {
                name: "y".into(),
                parameters: HashMap::new(),
            }],
            ..Default::default()
        };
        let (inputs, outputs) = decode_request(req).unwrap();
        assert_eq!(inputs[0].data, TensorData::Fp32(vec![1.0, 2.0]));
        assert_eq!(outputs, vec!["y".to_string()]);
        let typed = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT8",
                vec![2],
                Some(pb::InferTensorContents {
                    int_contents: vec![-1, 5],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let (inputs, _) = decode_request(typed).unwrap();
        assert_eq!(inputs[0].data, TensorData::Int8(vec![-1, 5]));
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let overflow = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT8",
                vec![1],
                Some(pb::InferTensorContents {
                    int_contents: vec![300],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        assert!(matches!(
            decode_request(overflow),
            Err(ServeError::BadRequest(_))
        ));
        let count = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", vec![3], None)],
            raw_input_contents: vec![vec![0; 8]],
            ..Default::default()
        };
        assert!(matches!(
            decode_request(count),
            Err(ServeError::BadRequest(_))
        ));
        let mismatch = pb::ModelInferRequest {
            inputs: vec![
                input("x", "FP32", vec![1], None),
                input("y", "FP32", vec![1], None),
            ],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(matches!(
            decode_request(mismatch),
            Err(ServeError::BadRequest(_))
        ));
        let ints_for_floats = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "FP32",
                vec![1],
                Some(pb::InferTensorContents {
                    int_contents: vec![1],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let e = decode_request(ints_for_floats).unwrap_err().to_string();
        assert!(
            e.contains("takes its data in fp32_contents, but int_contents was given"),
            "{e}"
        );
        let both = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "FP32",
                vec![1],
                Some(pb::InferTensorContents {
                    fp32_contents: vec![1.0],
                    ..Default::default()
                }),
            )],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        let e = decode_request(both).unwrap_err().to_string();
        assert!(e.contains("one way or the other"), "{e}");
    }

    #[test]
    fn random_messages_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seed = pb::ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![
                input("x", "BYTES", vec![2], None),
                input("y", "FP16", vec![1, 1], None),
            ],
            raw_input_contents: vec![vec![1, 0, 0, 0, b'a', 0, 0, 0, 0], vec![0, 60]],
            ..Default::default()
        }
        .encode_to_vec();
        for _ in 0..20_000 {
            let mut b = seed.clone();
            for _ in 0..rng.random_range(1..5) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            if let Ok(m) = pb::ModelInferRequest::decode(b.as_slice()) {
                let _ = decode_request(m);
            }
        }
    }
}
