//! The protocol-neutral inference call shared by REST and gRPC, and its error kinds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::batcher::SubmitError;
use crate::protocol::ProtocolError;
use crate::repository::{Repository, RepositoryError, Served};
use crate::tensor::{Tensor, TensorError};

/// The protocol extensions the server metadata names (REST and gRPC).
pub const EXTENSIONS: [&str; 5] = [
    "classification",
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
];

/// An error as the client sees it: each kind maps to one HTTP status and one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<RepositoryError> for ServeError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::UnknownModel(_) | RepositoryError::UnknownVersion { .. } => {
                ServeError::NotFound(e.to_string())
            }
            RepositoryError::NotReady { .. } => ServeError::Unavailable(e.to_string()),
            RepositoryError::Load { .. } => ServeError::BadRequest(e.to_string()),
        }
    }
}

impl From<ProtocolError> for ServeError {
    fn from(e: ProtocolError) -> Self {
        ServeError::BadRequest(e.to_string())
    }
}

impl From<TensorError> for ServeError {
    fn from(e: TensorError) -> Self {
        ServeError::BadRequest(e.to_string())
    }
}

impl From<BackendError> for ServeError {
    fn from(e: BackendError) -> Self {
        if e.is_client_error() {
            ServeError::BadRequest(e.to_string())
        } else {
            ServeError::Internal(e.to_string())
        }
    }
}

impl From<SubmitError> for ServeError {
    fn from(e: SubmitError) -> Self {
        ServeError::Unavailable(e.to_string())
    }
}

/// Refuses the parameters of a repository load request (Triton's `config` override and
/// `file:<path>` contents): skiff loads a model from its directory only, and applying none of
/// what a client sent while answering success would mislead it.
pub fn check_load_parameters<'a>(
    mut keys: impl Iterator<Item = &'a str>,
) -> Result<(), ServeError> {
    match keys.next() {
        None => Ok(()),
        Some(key) => Err(ServeError::BadRequest(format!(
            "load parameter {key:?} is not supported: a model is loaded from its directory in the \
             repository (put its configuration in config.pbtxt or model-settings.json there)"
        ))),
    }
}

/// Counts a request for `served` that failed before [`infer`] (its body could not be decoded),
/// so that malformed requests show in the request and failure counters like the others.
pub fn rejected<T>(served: &Served, result: Result<T, ServeError>) -> Result<T, ServeError> {
    if result.is_err() {
        served.metrics.requests.inc();
        served.metrics.failures.inc();
        served.metrics.totals.fail.add(Duration::ZERO);
    }
    result
}

/// Validates, queues and awaits one inference; records request metrics.
pub async fn infer(
    repo: &Repository,
    model: &str,
    version: Option<&str>,
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
) -> Result<(Arc<Served>, Vec<Tensor>), ServeError> {
    let served = repo.get(model, version)?;
    let started = Instant::now();
    let metrics = &served.metrics;
    metrics.requests.inc();
    let result = async {
        served.signature.check_inputs(&inputs)?;
        served.signature.check_outputs(&outputs)?;
        if let Some(max) = served.max_request_rows {
            let rows = inputs.iter().filter_map(|t| t.shape.first()).max();
            if let Some(&rows) = rows.filter(|&&r| r > max as i64) {
                return Err(ServeError::BadRequest(format!(
                    "inference request batch-size must be <= {max} for {:?} (max_batch_size in \
                     its config.pbtxt); this one has {rows} rows",
                    served.name
                )));
            }
        }
        let rx = served.batcher.submit(inputs, outputs)?;
        let out = rx
            .await
            .map_err(|_| ServeError::Internal("the inference thread stopped".into()))??;
        Ok::<_, ServeError>(out)
    }
    .await;
    let took = started.elapsed();
    metrics.request_seconds.observe(took.as_secs_f64());
    match result {
        Ok(out) => {
            metrics.totals.succeeded(took);
            Ok((served, out))
        }
        Err(e) => {
            metrics.failures.inc();
            metrics.totals.fail.add(took);
            Err(e)
        }
    }
}
