//! The embedded backend: one SQLite file holding an etcd-style revision log, served from an
//! in-memory copy of the live keys, with group-committed durable writes and a watch cache.

mod history;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{
    Capabilities, Event, KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError,
    WatchStream,
};
use history::History;
use writer::{Request, WriteOp, Writer};

/// Tuning knobs of the SQLite backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Recent events kept in memory for watches that resume from a past revision.
    pub history_capacity: usize,
    /// Most bytes of keys and values the history keeps; the window shrinks to fit.
    pub history_max_bytes: usize,
    /// Commits buffered per watcher before it has to catch up from the history ring.
    pub watch_buffer: usize,
    /// Most writes folded into one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            history_capacity: 20_000,
            history_max_bytes: 64 << 20,
            watch_buffer: 256,
            max_batch: 10_000,
        }
    }
}

/// Counters that show group commit at work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteStats {
    /// Successful writes (creates, updates, deletes) since open.
    pub writes: u64,
    /// Transactions (fsyncs) that carried them.
    pub commits: u64,
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// The committed state as readers see it.
pub(crate) struct State {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
}

/// What the store handle and the writer thread share.
pub(crate) struct Shared {
    state: RwLock<State>,
    history: Arc<Mutex<History>>,
    compacted: AtomicI64,
    writes: AtomicU64,
    commits: AtomicU64,
}

impl Shared {
    fn current_revision(&self) -> Result<Revision> {
        Ok(self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision)
    }

    /// Makes a committed batch visible to readers and watchers at once: the history lock is
    /// held across both, so a watch opened "from now" starts exactly where reads stand.
    fn apply(
        &self,
        changes: HashMap<String, Option<KeyValue>>,
        revision: Revision,
        events: Vec<Event>,
    ) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for (key, kv) in changes {
                match kv {
                    Some(kv) => {
                        state.kvs.insert(key, kv);
                    }
                    None => {
                        state.kvs.remove(&key);
                    }
                }
            }
            state.revision = revision;
        }
        history.publish(events);
    }
}

/// Read connections for ranges at past revisions, reused across calls.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.path).map_err(backend)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(backend)?;
                conn.pragma_update(None, "query_only", true)
                    .map_err(backend)?;
                conn
            }
        };
        let out = f(&mut conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < 4 {
            idle.push(conn);
        }
        out
    }
}

/// The SQLite-backed store. Writes are durable (WAL, `synchronous=FULL`) when acknowledged;
/// reads at the current revision never touch the disk.
pub struct SqliteStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    readers: Arc<ReadPool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    /// Waits for the writer to finish its batch and let go of the file, so the store can be
    /// opened again as soon as this returns.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Takes `<path>.lock`, so that two processes never serve the same file: each keeps its own
/// copy of the state in memory and would not see the other's writes.
fn lock(path: &Path) -> Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(backend)?;
    #[cfg(unix)]
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |err| StoreError::Backend(format!("store {} is in use ({err})", path.display())),
    )?;
    Ok(file)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store file and loads the live keys and recent history. Blocking:
    /// call it before serving, or from `spawn_blocking`.
    pub fn open(path: &Path, opts: SqliteOptions) -> Result<Arc<SqliteStore>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(backend)?;
        }
        let lock = lock(path)?;
        let conn = Connection::open(path).map_err(backend)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "cannot enable WAL (journal_mode is {mode})"
            )));
        }
        // FULL also fsyncs the WAL on every commit, so an acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        // Checkpoints run on the writer; cap the WAL file they leave behind.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.execute_batch(schema::SCHEMA).map_err(backend)?;

        let revision = schema::current_revision(&conn).map_err(backend)?;
        let compacted = schema::meta(&conn, "compact_rev").map_err(backend)?;
        let kvs = schema::load_live(&conn).map_err(backend)?;
        let capacity = opts.history_capacity.max(1);
        let window = revision.saturating_sub(i64::try_from(capacity).unwrap_or(i64::MAX));
        let floor = compacted.max(window).max(0);
        let events = schema::load_events(&conn, floor).map_err(backend)?;
        let history = History::new(
            capacity,
            opts.history_max_bytes,
            opts.watch_buffer,
            floor,
            revision,
            events,
        );

        let shared = Arc::new(Shared {
            state: RwLock::new(State { kvs, revision }),
            history: Arc::new(Mutex::new(history)),
            compacted: AtomicI64::new(compacted),
            writes: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        });
        let (requests, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            shared: shared.clone(),
            requests: rx,
            max_batch: opts.max_batch.max(1),
            failed: None,
            _lock: lock,
        };
        let writer = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run())
            .map_err(backend)?;
        let readers = Arc::new(ReadPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        Ok(Arc::new(SqliteStore {
            shared,
            requests,
            readers,
            writer: Some(writer),
        }))
    }

    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            writes: self.shared.writes.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
        }
    }

    /// The revision below which history has been compacted away (0 = none).
    pub fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn write(&self, op: WriteOp) -> Result<Event> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write(op, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn range_in_memory(&self, prefix: &str, opts: &RangeOptions) -> RangeResult {
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let lower = match opts.start_after.as_deref() {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for (key, kv) in state.kvs.range::<str, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if opts.limit != 0 && kvs.len() == opts.limit {
                more = true;
                break;
            }
            kvs.push(kv.clone());
        }
        RangeResult {
            kvs,
            more,
            revision: state.revision,
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            range_at_revision: true,
            durable: true,
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.shared.current_revision()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(state.kvs.get(key).cloned())
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let current = self.shared.current_revision()?;
        if opts.revision == 0 || opts.revision == current {
            let result = self.range_in_memory(prefix, &opts);
            // A write may have landed between the two reads; then fall through to the log.
            if opts.revision == 0 || result.revision == opts.revision {
                return Ok(result);
            }
        }
        let revision = opts.revision;
        if revision > current {
            return Err(StoreError::FutureRevision(revision));
        }
        let compacted = self.compacted_revision();
        if revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                oldest: compacted,
            });
        }
        let readers = self.readers.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            readers.with(|conn| {
                // One read transaction: the compaction point and the rows come from one snapshot.
                let tx = conn.transaction().map_err(backend)?;
                let compacted = schema::meta(&tx, "compact_rev").map_err(backend)?;
                if revision < compacted {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        oldest: compacted,
                    });
                }
                let mut kvs = schema::range_at(
                    &tx,
                    &prefix,
                    opts.start_after.as_deref(),
                    opts.limit,
                    revision,
                )
                .map_err(backend)?;
                let more = opts.limit != 0 && kvs.len() > opts.limit;
                if opts.limit != 0 {
                    kvs.truncate(opts.limit);
                }
                Ok(RangeResult {
                    kvs,
                    more,
                    revision,
                })
            })
        })
        .await
        .map_err(backend)?
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let event = self
            .write(WriteOp::Create {
                key: key.to_string(),
                value,
            })
            .await?;
        Ok(event.revision())
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let op = WriteOp::Update {
            key: key.to_string(),
            value,
            expected,
        };
        Ok(self.write(op).await?.revision())
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<(KeyValue, Revision)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_string(),
                expected,
            })
            .await?
        {
            Event::Delete { prev, revision } => Ok((prev, revision)),
            Event::Put { .. } => Err(StoreError::Backend("delete produced a put".into())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        history::watch(&self.shared.history, prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Compact(revision, reply))
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
