//! Watch: a chunked stream of newline-delimited JSON events, with initial events, resume from
//! a resourceVersion, selector transitions, bookmarks, timeouts and 410 Gone.

use crate::handlers::build_table;
use crate::request::Output;
use crate::response::{Failure, HandlerResult};
use crate::storage;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{StatusCode, header};
use serde_json::{Value, json};
use skiff_api::ApiError;
use skiff_api::meta::{self, FieldSelector, LabelSelector};
use skiff_api::registry::ResourceDef;
use skiff_store::{Event, RangeOptions, Revision, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The server's shared cache of encoded events.
    pub encoded: Arc<EncodedEvents>,
}

impl WatchSpec {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(meta::labels(obj)) && self.fields.matches(obj)
    }

    /// Plain JSON without selectors: every watcher of the prefix gets the same bytes per event.
    fn shares_encoding(&self) -> bool {
        matches!(self.output, Output::Json) && self.labels.is_empty() && self.fields.0.is_empty()
    }
}

/// Most encoded events kept for sharing between watchers.
const ENCODED_CAPACITY: usize = 4096;

/// The JSON of recently delivered objects, keyed by the revision of their event (one write
/// per revision), shared by the watches of one server: with many watchers of the same
/// resources, each event is decoded and serialised once instead of once per watcher.
#[derive(Default)]
pub struct EncodedEvents {
    inner: Mutex<EncodedInner>,
}

#[derive(Default)]
struct EncodedInner {
    objects: HashMap<Revision, Bytes>,
    order: VecDeque<Revision>,
}

impl EncodedEvents {
    /// The object of `ev` as JSON (with its resourceVersion), encoding it on first use.
    fn object(&self, ev: &Event) -> Result<Bytes, ApiError> {
        let revision = ev.revision();
        if let Some(b) = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .objects
            .get(&revision)
        {
            return Ok(b.clone());
        }
        let obj = match ev {
            Event::Put { kv, .. } => storage::decode(kv)?,
            Event::Delete { prev, revision } => {
                let mut obj = storage::decode(prev)?;
                meta::set_meta(
                    &mut obj,
                    "resourceVersion",
                    Value::String(revision.to_string()),
                );
                obj
            }
        };
        let bytes = Bytes::from(serde_json::to_vec(&obj).map_err(ApiError::internal)?);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.objects.insert(revision, bytes.clone()).is_none() {
            inner.order.push_back(revision);
            while inner.order.len() > ENCODED_CAPACITY {
                if let Some(old) = inner.order.pop_front() {
                    inner.objects.remove(&old);
                }
            }
        }
        Ok(bytes)
    }
}

/// One watch event line around already-encoded object JSON (what `line` would produce).
fn shared_line(ty: &str, object: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(object.len() + ty.len() + 24);
    b.extend_from_slice(b"{\"type\":\"");
    b.extend_from_slice(ty.as_bytes());
    b.extend_from_slice(b"\",\"object\":");
    b.extend_from_slice(object);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

/// Most bytes of events coalesced into one write to the client.
const COALESCE_BYTES: usize = 64 * 1024;

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
    // One timer for the whole watch: a new one per event would register and cancel a timer
    // for every event of every watcher.
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    let mut last_rev = start;
    let mut bookmark = tokio::time::interval_at(
        tokio::time::Instant::now() + spec.bookmark_interval,
        spec.bookmark_interval,
    );
    // An item taken from the stream while coalescing that must be handled on its own.
    let mut pending = None;
    loop {
        let next = if let Some(p) = pending.take() {
            p
        } else {
            tokio::select! {
            _ = &mut expiry => return,
            _ = bookmark.tick(), if spec.bookmarks => {
                if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                    return;
                }
                continue;
            }
            _ = tx.closed() => return,
            e = events.next() => e,
            }
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
        let Some(first) = render(&spec, &mut enc, ev) else {
            continue;
        };
        // Events that are already waiting go out in the same write: with many watchers,
        // one frame per event costs more than the events themselves.
        let mut out = Vec::new();
        while out.len() + first.len() < COALESCE_BYTES {
            match events.next().now_or_never() {
                Some(Some(Ok(ev))) => {
                    last_rev = ev.revision();
                    if let Some(b) = render(&spec, &mut enc, ev) {
                        if out.is_empty() {
                            out.extend_from_slice(&first);
                        }
                        out.extend_from_slice(&b);
                    }
                }
                None => break,
                Some(other) => {
                    pending = Some(other);
                    break;
                }
            }
        }
        let out = if out.is_empty() {
            first
        } else {
            Bytes::from(out)
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// The line a store event becomes for this watcher, if any.
fn render(spec: &WatchSpec, enc: &mut Encoder, ev: Event) -> Option<Bytes> {
    if spec.shares_encoding() {
        // Without selectors every event is delivered and its type follows from the event.
        let ty = match &ev {
            Event::Put { prev: None, .. } => "ADDED",
            Event::Put { prev: Some(_), .. } => "MODIFIED",
            Event::Delete { .. } => "DELETED",
        };
        return Some(match spec.encoded.object(&ev) {
            Ok(object) => shared_line(ty, &object),
            Err(e) => line(&json!({"type": "ERROR", "object": e.status()})),
        });
    }
    match translate(spec, ev) {
        Ok(Some((ty, obj))) => Some(enc.event(ty, &obj)),
        Ok(None) => None,
        Err(e) => Some(line(&json!({"type": "ERROR", "object": e.status()}))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::KeyValue;

    fn kv(rev: Revision, value: &str) -> KeyValue {
        KeyValue {
            key: "/registry/configmaps/ns/a".into(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    #[test]
    fn shared_lines_match_per_watcher_lines() {
        let cache = EncodedEvents::default();
        let put = Event::Put {
            kv: kv(
                7,
                r#"{"kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#,
            ),
            prev: None,
        };
        let obj = storage::decode(match &put {
            Event::Put { kv, .. } => kv,
            Event::Delete { prev, .. } => prev,
        })
        .unwrap();
        let expected = line(&json!({"type": "ADDED", "object": obj}));
        assert_eq!(shared_line("ADDED", &cache.object(&put).unwrap()), expected);
        // The second watcher gets the cached bytes.
        assert_eq!(cache.object(&put).unwrap(), cache.object(&put).unwrap());
        assert_eq!(cache.inner.lock().unwrap().objects.len(), 1);
    }

    #[test]
    fn deleted_objects_carry_the_delete_revision() {
        let cache = EncodedEvents::default();
        let del = Event::Delete {
            prev: kv(7, r#"{"metadata":{"name":"a"}}"#),
            revision: 9,
        };
        let v: Value = serde_json::from_slice(&cache.object(&del).unwrap()).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = EncodedEvents::default();
        for rev in 1..=(ENCODED_CAPACITY as Revision + 10) {
            let ev = Event::Put {
                kv: kv(rev, r#"{"metadata":{"name":"a"}}"#),
                prev: None,
            };
            cache.object(&ev).unwrap();
        }
        let inner = cache.inner.lock().unwrap();
        assert_eq!(inner.objects.len(), ENCODED_CAPACITY);
        assert!(!inner.objects.contains_key(&1));
    }
}
