//! The skiff model server: ONNX backends, Open Inference Protocol over REST and gRPC, batching, metrics.

pub mod backend;
pub mod tensor;
