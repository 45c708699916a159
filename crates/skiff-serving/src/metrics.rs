//! Prometheus metrics per model and version: requests, failures, queue and compute latency, batch sizes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels every serving metric carries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: LabelText,
    pub version: LabelText,
}

impl ModelLabels {
    pub fn new(model: &str, version: &str) -> ModelLabels {
        ModelLabels {
            model: LabelText(model.to_string()),
            version: LabelText(version.to_string()),
        }
    }
}

/// A label value written as the text format requires: `\`, `"` and line feeds escaped.
/// prometheus-client writes values as they are (prometheus/client_rust#151), and a model named
/// after a directory may hold any of them; one unescaped quote makes the whole scrape unreadable.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub String);

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn latency() -> Histogram {
    // 50us .. ~1.6s covers both tiny tabular models and larger graphs.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// A count of events and their summed duration, as Triton's statistics report them.
#[derive(Debug, Default)]
pub struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Tally {
    pub fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (count, nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

/// One model version's totals for the statistics extension (prometheus-client does not let
/// its histograms be read back): per request, success, failure, queue and compute time; per
/// execution, rows and count.
#[derive(Debug, Default)]
pub struct Totals {
    pub success: Tally,
    pub fail: Tally,
    pub queue: Tally,
    pub compute: Tally,
    pub inferences: AtomicU64,
    pub executions: AtomicU64,
    /// Milliseconds since the Unix epoch of the last request that succeeded.
    pub last_inference_ms: AtomicU64,
}

impl Totals {
    pub fn executed(&self, rows: usize) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        self.inferences.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn succeeded(&self, took: Duration) {
        self.success.add(took);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_inference_ms.store(now, Ordering::Relaxed);
    }
}

/// All serving metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    /// Shared by every resolution of the same labels, as the families' series are.
    totals: Mutex<HashMap<ModelLabels, Arc<Totals>>>,
    pub requests: Family<ModelLabels, Counter>,
    pub failures: Family<ModelLabels, Counter>,
    pub request_seconds: Family<ModelLabels, Histogram>,
    pub queue_seconds: Family<ModelLabels, Histogram>,
    pub compute_seconds: Family<ModelLabels, Histogram>,
    pub batch_size: Family<ModelLabels, Histogram>,
}

/// Handles on one model version's series; clones share the values registered in [`Metrics`].
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    pub requests: Counter,
    pub failures: Counter,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub compute_seconds: Histogram,
    pub batch_size: Histogram,
    pub totals: Arc<Totals>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("skiff_inference");
        let requests = Family::<ModelLabels, Counter>::default();
        let failures = Family::<ModelLabels, Counter>::default();
        let request_seconds =
            Family::<ModelLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let queue_seconds =
            Family::<ModelLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let compute_seconds =
            Family::<ModelLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let batch_size = Family::<ModelLabels, Histogram>::new_with_constructor(
            batch_sizes as fn() -> Histogram,
        );
        registry.register("requests", "Inference requests received", requests.clone());
        registry.register(
            "failures",
            "Inference requests that failed",
            failures.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "End-to-end inference latency inside the server",
            request_seconds.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time a request waited in the batching queue",
            queue_seconds.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Time the backend spent on the batch holding the request",
            compute_seconds.clone(),
        );
        registry.register(
            "batch_size",
            "Rows per backend execution after dynamic batching",
            batch_size.clone(),
        );
        Metrics {
            registry,
            totals: Mutex::new(HashMap::new()),
            requests,
            failures,
            request_seconds,
            queue_seconds,
            compute_seconds,
            batch_size,
        }
    }

    /// The series of one model version, resolved once: the request path then updates atomics
    /// without hashing labels under the families' locks.
    pub fn for_model(&self, labels: &ModelLabels) -> ModelMetrics {
        ModelMetrics {
            requests: self.requests.get_or_create(labels).clone(),
            failures: self.failures.get_or_create(labels).clone(),
            request_seconds: self.request_seconds.get_or_create(labels).clone(),
            queue_seconds: self.queue_seconds.get_or_create(labels).clone(),
            compute_seconds: self.compute_seconds.get_or_create(labels).clone(),
            batch_size: self.batch_size.get_or_create(labels).clone(),
            totals: self
                .totals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(labels.clone())
                .or_default()
                .clone(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_families() {
        let m = Metrics::new();
        let l = ModelLabels::new("iris", "2");
        let h = m.for_model(&l);
        h.requests.inc();
        h.batch_size.observe(4.0);
        // Resolving the same labels again shares the series rather than resetting it.
        m.for_model(&l).requests.inc();
        let text = m.render();
        assert!(
            text.contains("skiff_inference_requests_total{model=\"iris\",version=\"2\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("skiff_inference_batch_size_count{model=\"iris\",version=\"2\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.for_model(&ModelLabels::new("a\"b\\c\nd", "1"))
            .requests
            .inc();
        let text = m.render();
        assert!(
            text.contains(r#"skiff_inference_requests_total{model="a\"b\\c\nd",version="1"} 1"#),
            "{text}"
        );
    }
}
