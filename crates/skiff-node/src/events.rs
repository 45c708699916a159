//! core/v1 Events about pods, reported as the kubelet reports them (source `kubelet`, the
//! node as host); repeats of one event bump its `count` instead of piling up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_client::Client;

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Involved {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{name}` for container events.
    pub field_path: Option<String>,
}

/// (object, reason, message): what makes two events "the same".
type EventKey = (Involved, String, String);

/// Writes events in the background; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
    /// (object, reason, message) -> (event name, count), to aggregate repeats.
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

/// Events kept for aggregation before the table starts over.
const SEEN_LIMIT: usize = 4096;

impl Recorder {
    pub fn new(client: Client, host: &str) -> Self {
        Recorder {
            client,
            host: host.to_string(),
            seen: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn normal(&self, obj: &Involved, reason: &str, message: impl Into<String>) {
        self.record(obj, "Normal", reason, message.into());
    }

    pub fn warning(&self, obj: &Involved, reason: &str, message: impl Into<String>) {
        self.record(obj, "Warning", reason, message.into());
    }

    fn record(&self, obj: &Involved, type_: &str, reason: &str, message: String) {
        let now = chrono::Utc::now();
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let key = (obj.clone(), reason.to_string(), message.clone());
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > SEEN_LIMIT {
                seen.clear();
            }
            match seen.get_mut(&key) {
                Some((name, count)) => {
                    *count += 1;
                    Some((name.clone(), *count))
                }
                None => {
                    let name = format!(
                        "{}.{:x}",
                        obj.name,
                        now.timestamp_nanos_opt().unwrap_or_default()
                    );
                    seen.insert(key.clone(), (name, 1));
                    None
                }
            }
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &obj.namespace);
        let name = match &repeat {
            Some((name, _)) => name.clone(),
            None => self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
        };
        let mut involved = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": obj.namespace,
            "name": obj.name,
            "uid": obj.uid,
        });
        if let Some(fp) = &obj.field_path {
            involved["fieldPath"] = json!(fp);
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": obj.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "kubelet", "host": self.host},
            "reportingComponent": "kubelet",
            "reportingInstance": self.host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        });
        tokio::spawn(async move {
            if let Some((name, count)) = repeat {
                let patch = json!({"count": count, "lastTimestamp": stamp});
                if api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            let event: Event = match serde_json::from_value(event) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "building an event");
                    return;
                }
            };
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "writing an event failed");
            }
        });
    }
}
