//! The load scenarios: concurrent ConfigMap creates, gets by name, lists of a namespace, and a
//! watch fan-out where every watcher must see every event of a write burst, in order.

use crate::client::{Endpoint, Pool};
use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Meta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

#[derive(Deserialize)]
struct Object {
    metadata: Meta,
}

#[derive(Deserialize)]
struct List {
    metadata: Meta,
    items: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Object,
}

fn parse_rv(s: &str) -> Result<u64> {
    s.parse()
        .with_context(|| format!("bad resourceVersion {s:?}"))
}

pub fn configmaps(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

fn configmap(ns: &str, name: &str, i: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
            "data": {"index": i.to_string(), "payload": "x".repeat(64)},
        })
        .to_string(),
    )
}

/// Creates the namespace unless it exists.
pub async fn ensure_namespace(pool: &Pool, ns: &str) -> Result<()> {
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let (status, body) = pool
        .conn()
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(Bytes::from(body.to_string())),
        )
        .await?;
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        bail!(
            "creating namespace {ns}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// What a batch of writes did.
pub struct Writes {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// resourceVersions of the acknowledged writes.
    pub revisions: Vec<u64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Creates `count` ConfigMaps named `{prefix}-{i}` from `clients` concurrent tasks.
pub async fn create(pool: &Pool, ns: &str, prefix: &str, count: usize, clients: usize) -> Writes {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (pool, next, ns, prefix) = (
            pool.clone(),
            next.clone(),
            ns.to_string(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let path = configmaps(&ns);
            let mut out = Writes {
                elapsed: Duration::ZERO,
                latencies: Vec::new(),
                revisions: Vec::new(),
                errors: 0,
                first_error: None,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let body = configmap(&ns, &format!("{prefix}-{i:06}"), i);
                let t0 = Instant::now();
                let result = pool.conn().call(Method::POST, &path, Some(body)).await;
                let took = t0.elapsed();
                let failure = match result {
                    Ok((StatusCode::CREATED, body)) => {
                        match serde_json::from_slice::<Object>(&body)
                            .map_err(anyhow::Error::from)
                            .and_then(|o| parse_rv(&o.metadata.resource_version))
                        {
                            Ok(rv) => {
                                out.latencies.push(took);
                                out.revisions.push(rv);
                                None
                            }
                            Err(e) => Some(format!("bad create response: {e}")),
                        }
                    }
                    Ok((status, body)) => {
                        Some(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Some(format!("{e:#}")),
                };
                if let Some(f) = failure {
                    out.errors += 1;
                    out.first_error.get_or_insert(f);
                }
            }
            out
        }));
    }
    let mut all = Writes {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(count),
        revisions: Vec::with_capacity(count),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok(w) => {
                all.latencies.extend(w.latencies);
                all.revisions.extend(w.revisions);
                all.errors += w.errors;
                if all.first_error.is_none() {
                    all.first_error = w.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

/// What a timed run of reads did.
pub struct Reads {
    pub elapsed: Duration,
    pub ok: usize,
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Runs `streams` tasks for `duration`, each issuing the request `path_of(task, n)` in turn and
/// checking the answer with `check`.
async fn timed_reads<P, C>(
    pool: &Pool,
    streams: usize,
    duration: Duration,
    path_of: P,
    check: C,
) -> Reads
where
    P: Fn(usize, u64) -> String + Send + Sync + 'static,
    C: Fn(&[u8]) -> Result<()> + Send + Sync + 'static,
{
    let path_of = Arc::new(path_of);
    let check = Arc::new(check);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for task in 0..streams.max(1) {
        let (pool, path_of, check) = (pool.clone(), path_of.clone(), check.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = Reads {
                elapsed: Duration::ZERO,
                ok: 0,
                latencies: Vec::new(),
                errors: 0,
                first_error: None,
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                let path = path_of(task, n);
                n += 1;
                let t0 = Instant::now();
                let failure = match pool.conn().call(Method::GET, &path, None).await {
                    Ok((StatusCode::OK, body)) => check(&body).err().map(|e| format!("{e:#}")),
                    Ok((status, body)) => {
                        Some(format!("{status}: {}", String::from_utf8_lossy(&body)))
                    }
                    Err(e) => Some(format!("{e:#}")),
                };
                match failure {
                    None => {
                        r.ok += 1;
                        r.latencies.push(t0.elapsed());
                    }
                    Some(f) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(f);
                    }
                }
            }
            r
        }));
    }
    let mut all = Reads {
        elapsed: Duration::ZERO,
        ok: 0,
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for t in tasks {
        match t.await {
            Ok(r) => {
                all.ok += r.ok;
                all.latencies.extend(r.latencies);
                all.errors += r.errors;
                if all.first_error.is_none() {
                    all.first_error = r.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    all.elapsed = started.elapsed();
    all
}

/// A cheap, well-spread sequence so that gets hit names all over the namespace.
fn spread(task: usize, n: u64) -> u64 {
    let mut x = (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ n.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 29)
}

/// GETs of existing ConfigMaps `{prefix}-{i}` (i < `count`) by name.
pub async fn get(
    pool: &Pool,
    ns: &str,
    prefix: &str,
    count: usize,
    streams: usize,
    duration: Duration,
) -> Reads {
    let base = configmaps(ns);
    let prefix = prefix.to_string();
    let count = count.max(1) as u64;
    timed_reads(
        pool,
        streams,
        duration,
        move |task, n| format!("{base}/{prefix}-{:06}", spread(task, n) % count),
        |body| {
            serde_json::from_slice::<Object>(body)?;
            Ok(())
        },
    )
    .await
}

/// LISTs of a whole namespace that must hold exactly `expected` ConfigMaps.
pub async fn list(
    pool: &Pool,
    ns: &str,
    expected: usize,
    streams: usize,
    duration: Duration,
) -> Reads {
    let path = configmaps(ns);
    timed_reads(
        pool,
        streams,
        duration,
        move |_, _| path.clone(),
        move |body| {
            let list: List = serde_json::from_slice(body)?;
            if list.items.len() != expected {
                bail!("list had {} items, expected {expected}", list.items.len());
            }
            Ok(())
        },
    )
    .await
}

/// The current resourceVersion of a namespace's ConfigMaps, for watches to start from.
pub async fn list_revision(pool: &Pool, ns: &str) -> Result<u64> {
    let (status, body) = pool
        .conn()
        .call(Method::GET, &format!("{}?limit=1", configmaps(ns)), None)
        .await?;
    if status != StatusCode::OK {
        bail!("list {ns}: {status}");
    }
    let list: List = serde_json::from_slice(&body)?;
    parse_rv(&list.metadata.resource_version)
}

/// What one watcher saw.
struct Seen {
    revisions: Vec<u64>,
    /// When the last expected event arrived.
    done: Option<Instant>,
    error: Option<String>,
}

/// Reads watch events until `expect` have arrived (or the stream ends).
async fn drain(resp: http::Response<hyper::body::Incoming>, expect: usize) -> Seen {
    let mut seen = Seen {
        revisions: Vec::with_capacity(expect),
        done: None,
        error: None,
    };
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while seen.revisions.len() < expect {
        let frame = match body.frame().await {
            None => break,
            Some(Err(e)) => {
                seen.error = Some(format!("watch stream failed: {e}"));
                break;
            }
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            match serde_json::from_slice::<WatchEvent>(&line[..nl]) {
                Ok(ev) if ev.kind == "ADDED" => {
                    match parse_rv(&ev.object.metadata.resource_version) {
                        Ok(rv) => seen.revisions.push(rv),
                        Err(e) => seen.error = Some(format!("{e:#}")),
                    }
                }
                Ok(ev) if ev.kind == "BOOKMARK" => {}
                Ok(ev) => seen.error = Some(format!("unexpected {} event", ev.kind)),
                Err(e) => seen.error = Some(format!("bad watch line: {e}")),
            }
        }
    }
    if seen.revisions.len() >= expect {
        seen.done = Some(Instant::now());
    }
    seen
}

/// The outcome of a fan-out run.
pub struct FanOut {
    pub watchers: usize,
    /// Watchers that saw exactly the acknowledged writes, in revision order.
    pub complete: usize,
    pub first_problem: Option<String>,
    /// Burst start to the last write acknowledged.
    pub writes_elapsed: Duration,
    /// Burst start to the last watcher having seen the last event.
    pub delivered_after: Option<Duration>,
    pub writes: Writes,
}

/// Parameters of a fan-out run.
pub struct FanOutSpec<'a> {
    pub ns: &'a str,
    pub watchers: usize,
    pub watch_connections: usize,
    pub writes: usize,
    pub writers: usize,
    pub write_connections: usize,
    pub limit: Duration,
}

/// Opens the watchers (all registered before the first write), then the write burst.
pub async fn fan_out(endpoint: &Endpoint, spec: FanOutSpec<'_>) -> Result<FanOut> {
    let watch_pool = Pool::connect(endpoint, spec.watch_connections).await?;
    let write_pool = Pool::connect(endpoint, spec.write_connections).await?;
    let rv = list_revision(&write_pool, spec.ns).await?;
    let path = format!(
        "{}?watch=true&resourceVersion={rv}&timeoutSeconds={}",
        configmaps(spec.ns),
        spec.limit.as_secs().max(1) + 60
    );
    let mut watchers = Vec::with_capacity(spec.watchers);
    for _ in 0..spec.watchers {
        // The server answers the head once the watch is registered with the store, so every
        // watcher is in place when this loop ends.
        let resp = watch_pool
            .conn()
            .start(Method::GET, &path, None)
            .await
            .context("opening a watch")?;
        if resp.status() != StatusCode::OK {
            bail!("watch answered {}", resp.status());
        }
        watchers.push(tokio::spawn(drain(resp, spec.writes)));
    }
    let started = Instant::now();
    let writes = create(&write_pool, spec.ns, "burst", spec.writes, spec.writers).await;
    let writes_elapsed = started.elapsed();
    let mut expected = writes.revisions.clone();
    expected.sort_unstable();
    let deadline = started + spec.limit;
    let mut complete = 0;
    let mut last_done: Option<Instant> = None;
    let mut first_problem = None;
    for w in watchers {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = w.abort_handle();
        let seen = match tokio::time::timeout(left, w).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(e)) => {
                first_problem.get_or_insert(format!("watcher task failed: {e}"));
                continue;
            }
            Err(_) => {
                abort.abort();
                first_problem.get_or_insert(format!(
                    "a watcher had not seen every event after {:?}",
                    spec.limit
                ));
                continue;
            }
        };
        if let Some(e) = seen.error {
            first_problem.get_or_insert(e);
        } else if seen.revisions != expected {
            first_problem.get_or_insert(format!(
                "a watcher saw {} events, not the {} acknowledged writes in revision order",
                seen.revisions.len(),
                expected.len()
            ));
        } else {
            complete += 1;
        }
        if let Some(d) = seen.done {
            last_done = Some(last_done.map_or(d, |l| l.max(d)));
        }
    }
    let delivered_after = (complete == spec.watchers)
        .then(|| last_done.map_or(Duration::ZERO, |d| d.saturating_duration_since(started)));
    Ok(FanOut {
        watchers: spec.watchers,
        complete,
        first_problem,
        writes_elapsed,
        delivered_after,
        writes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_the_range() {
        let hit: std::collections::HashSet<u64> = (0..2_000).map(|n| spread(3, n) % 100).collect();
        assert_eq!(hit.len(), 100);
    }

    #[test]
    fn configmap_bodies_are_valid_objects() {
        let v: serde_json::Value =
            serde_json::from_slice(&configmap("ns", "cm-000001", 1)).unwrap();
        assert_eq!(v["metadata"]["name"], "cm-000001");
        assert_eq!(v["data"]["index"], "1");
    }
}
