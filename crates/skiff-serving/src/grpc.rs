//! gRPC `inference.GRPCInferenceService` (placeholder until the service lands).

use std::sync::Arc;

use crate::repository::Repository;

/// Routes of the gRPC endpoint.
pub fn router(_repo: Arc<Repository>, _max_message: usize) -> axum::Router {
    axum::Router::new()
}
