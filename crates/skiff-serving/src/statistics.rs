//! Triton's statistics extension (`GET /v2/models[/{m}[/versions/{v}]]/stats`, gRPC
//! `ModelStatistics`; tritonclient's `get_inference_statistics`, perf_analyzer): per served
//! model version, requests that succeeded and failed with their time, time queued and in the
//! engine, and how many executions ran how many rows. Counted since the version was first
//! loaded; a reload of the same version continues them, as its metrics do.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::repository::{Repository, RepositoryError, Served};

/// One model version's statistics.
pub struct ModelStats {
    pub name: String,
    pub version: String,
    /// Milliseconds since the Unix epoch of the last successful request; 0 before any.
    pub last_inference: u64,
    /// Rows inferred (Triton counts a request of batch size N as N inferences).
    pub inference_count: u64,
    pub execution_count: u64,
    /// (count, nanoseconds) each.
    pub success: (u64, u64),
    pub fail: (u64, u64),
    pub queue: (u64, u64),
    pub compute_infer: (u64, u64),
}

impl ModelStats {
    pub fn of(served: &Served) -> ModelStats {
        let t = &served.metrics.totals;
        ModelStats {
            name: served.name.clone(),
            version: served.version.clone(),
            last_inference: t.last_inference_ms.load(Ordering::Relaxed),
            inference_count: t.inferences.load(Ordering::Relaxed),
            execution_count: t.executions.load(Ordering::Relaxed),
            success: t.success.get(),
            fail: t.fail.get(),
            queue: t.queue.get(),
            compute_infer: t.compute.get(),
        }
    }

    /// As Triton's REST endpoint writes one entry of `model_stats`.
    pub fn to_json(&self) -> Value {
        let d = |(count, ns): (u64, u64)| json!({ "count": count, "ns": ns });
        let zero = d((0, 0));
        json!({
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": d(self.success),
                "fail": d(self.fail),
                "queue": d(self.queue),
                // skiff times the engine call as a whole: tensors in and out are part of it.
                "compute_input": zero,
                "compute_infer": d(self.compute_infer),
                "compute_output": zero,
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        })
    }
}

/// The statistics asked for: one model (the served version, or the one named), or with an
/// empty name every model that has a version being served.
pub fn collect(
    repo: &Repository,
    model: &str,
    version: Option<&str>,
) -> Result<Vec<ModelStats>, RepositoryError> {
    if model.is_empty() {
        return Ok(repo
            .model_names()
            .iter()
            .filter_map(|name| repo.get(name, None).ok())
            .map(|served| ModelStats::of(&served))
            .collect());
    }
    let served = repo.get(model, version)?;
    Ok(vec![ModelStats::of(&served)])
}
