//! Watch: a chunked stream of newline-delimited JSON events, with initial events, resume from
//! a resourceVersion, selector transitions, bookmarks, timeouts and 410 Gone.

use crate::handlers::build_table;
use crate::request::Output;
use crate::response::{Failure, HandlerResult};
use crate::storage;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use serde_json::{Value, json};
use skiff_api::ApiError;
use skiff_api::meta::{self, FieldSelector, LabelSelector};
use skiff_api::registry::ResourceDef;
use skiff_store::{Event, RangeOptions, Revision, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a watch asks for.
pub struct WatchSpec {
    pub def: &'static ResourceDef,
    pub prefix: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
    pub output: Output,
}

impl WatchSpec {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// Starts the watch; errors that happen before streaming starts are ordinary responses.
pub async fn serve(store: Arc<dyn Store>, spec: WatchSpec) -> HandlerResult {
    let rv = spec.resource_version.clone().filter(|s| !s.is_empty());
    let from_now = matches!(rv.as_deref(), None | Some("0"));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut initial = Vec::new();
    let start: Revision;
    if from_now || spec.send_initial_events {
        // Every current object as ADDED, then changes after the snapshot's revision.
        let res = store
            .range(&spec.prefix, RangeOptions::default())
            .await
            .map_err(|e| Failure(storage::store_error(spec.def, "", e)))?;
        start = res.revision;
        for kv in &res.kvs {
            let obj = storage::decode(kv)?;
            if spec.matches(&obj) {
                initial.push(obj);
            }
        }
        if !from_now && let Some(r) = rv.as_deref() {
            // sendInitialEvents with an explicit version: the snapshot must not be older.
            let _ = storage::parse_rv(r)?;
        }
    } else {
        start = storage::parse_rv(rv.as_deref().unwrap_or("0"))?;
        // Like kube-apiserver, wait a moment for a revision the store has not reached yet,
        // then refuse it rather than hold a watch on history that may never exist.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let current = store
                .current_revision()
                .await
                .map_err(|e| Failure(storage::store_error(spec.def, "", e)))?;
            if start <= current {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure(ApiError::Timeout {
                    message: format!("Too large resource version: {start}, current: {current}"),
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let events = match store.watch(&spec.prefix, start).await {
        Ok(s) => Some(s),
        Err(e @ (StoreError::Compacted { .. } | StoreError::FutureRevision(_))) => {
            // Kubernetes answers 200 and an ERROR event carrying 410 Expired.
            let status = storage::store_error(spec.def, "", e).status();
            let _ = tx
                .send(line(&json!({"type": "ERROR", "object": status})))
                .await;
            None
        }
        Err(e) => return Err(Failure(storage::store_error(spec.def, "", e))),
    };
    tokio::spawn(pump(spec, initial, start, events, tx));
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<Bytes, std::io::Error>);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        "no-cache, private".parse().expect("static header"),
    );
    Ok(resp)
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

struct Encoder {
    output: Output,
    def: &'static ResourceDef,
    headers_sent: bool,
}

impl Encoder {
    fn event(&mut self, ty: &str, obj: &Value) -> Bytes {
        let object = match self.output {
            Output::Table(inc) => {
                let rv = meta::resource_version(obj).unwrap_or_default();
                let t = build_table(
                    self.def,
                    std::slice::from_ref(obj),
                    inc,
                    rv,
                    None,
                    !self.headers_sent,
                );
                self.headers_sent = true;
                t
            }
            Output::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            }),
            Output::Json => obj.clone(),
        };
        line(&json!({"type": ty, "object": object}))
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut m = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(&json!({"type": "BOOKMARK", "object": {
            "kind": self.def.kind,
            "apiVersion": self.def.api_version(),
            "metadata": m,
        }}))
    }
}

async fn pump(
    spec: WatchSpec,
    initial: Vec<Value>,
    start: Revision,
    events: Option<skiff_store::WatchStream>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut enc = Encoder {
        output: spec.output,
        def: spec.def,
        headers_sent: false,
    };
    for obj in &initial {
        if tx.send(enc.event("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if spec.send_initial_events
        && spec.bookmarks
        && tx.send(enc.bookmark(start, true)).await.is_err()
    {
        return;
    }
    let Some(mut events) = events else { return };
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut last_rev = start;
    let mut bookmark = tokio::time::interval_at(
        tokio::time::Instant::now() + spec.bookmark_interval,
        spec.bookmark_interval,
    );
    loop {
        let next = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = bookmark.tick(), if spec.bookmarks => {
                if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                    return;
                }
                continue;
            }
            _ = tx.closed() => return,
            e = events.next() => e,
        };
        let ev = match next {
            None => return,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                let status = match e {
                    StoreError::Compacted { .. } => storage::store_error(spec.def, "", e).status(),
                    other => ApiError::internal(other).status(),
                };
                let _ = tx
                    .send(line(&json!({"type": "ERROR", "object": status})))
                    .await;
                return;
            }
        };
        last_rev = ev.revision();
        let out = match translate(&spec, ev) {
            Ok(Some((ty, obj))) => enc.event(ty, &obj),
            Ok(None) => continue,
            Err(e) => line(&json!({"type": "ERROR", "object": e.status()})),
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// The watch event a store event becomes for this watcher, applying selector transitions:
/// an object that stops matching is DELETED for the watcher, one that starts matching ADDED.
fn translate(spec: &WatchSpec, ev: Event) -> Result<Option<(&'static str, Value)>, ApiError> {
    match ev {
        Event::Put { kv, prev } => {
            let obj = storage::decode(&kv)?;
            let now_matches = spec.matches(&obj);
            let was = match &prev {
                Some(p) => Some(spec.matches(&storage::decode(p)?)),
                None => None,
            };
            Ok(match (was, now_matches) {
                (None, true) | (Some(false), true) => Some(("ADDED", obj)),
                (Some(true), true) => Some(("MODIFIED", obj)),
                (Some(true), false) => Some(("DELETED", obj)),
                _ => None,
            })
        }
        Event::Delete { prev, revision } => {
            let mut obj = storage::decode(&prev)?;
            if !spec.matches(&obj) {
                return Ok(None);
            }
            meta::set_meta(
                &mut obj,
                "resourceVersion",
                Value::String(revision.to_string()),
            );
            Ok(Some(("DELETED", obj)))
        }
    }
}
