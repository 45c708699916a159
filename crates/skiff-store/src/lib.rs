//! The versioned object store: the `Store` trait (etcd's model), its conformance suite, the
//! embedded SQLite backend, and encryption of chosen keys at rest.
//!
//! Typical wiring (the API server holds an `Arc<dyn Store>`; resourceVersion = mod_revision):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use skiff_store::*;
//! # fn wire(dir: &std::path::Path) -> Result<Arc<dyn Store>> {
//! let sqlite = SqliteStore::open(&dir.join("state.db"), SqliteOptions::default())?;
//! let key = EncryptionKey::load_or_create(&dir.join("encryption.key"))
//!     .map_err(|e| StoreError::Backend(e.to_string()))?;
//! let store: Arc<dyn Store> = Arc::new(EncryptingStore::new(sqlite, EncryptionConfig::secrets(key)));
//! let _compactor = spawn_auto_compaction(&store, AutoCompaction::default());
//! # Ok(store) }
//! ```

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod encryption;
pub mod sqlite;

pub use encryption::{EncryptingStore, EncryptionConfig, EncryptionKey, KeyFileError};
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore};

/// A global, strictly increasing revision, as in etcd. 0 means "none".
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the create that made this key live (etcd `create_revision`).
    pub create_revision: Revision,
    /// Revision of the last change (etcd `mod_revision`); what the API calls `resourceVersion`.
    pub mod_revision: Revision,
}

/// A page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// The store revision the range was read at.
    pub revision: Revision,
}

/// A change, as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A create or an update; `prev` is the value before an update (None on create).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete; `prev` is the value that was deleted, `revision` the delete's revision.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What a backend can do, so callers check one struct instead of backend names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `range` can read at a past revision (needed for consistent `continue` pages).
    pub range_at_revision: bool,
    /// Acknowledged writes survive a crash of the process (fsync before ack).
    pub durable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The key's current mod revision differs from the expected one.
    #[error("key {key:?} was modified (expected revision {expected}, found {actual})")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The requested revision has been compacted away (the API answers 410 Gone).
    #[error("required revision {requested} has been compacted (oldest available {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The requested revision is in the future.
    #[error("revision {0} is newer than the store's current revision")]
    FutureRevision(Revision),
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stream of events for a watch; it ends when the store closes or the watcher falls
/// irrecoverably behind (then its last item is an error).
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// Range options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Only keys strictly greater than this (the `continue` position).
    pub start_after: Option<String>,
    /// At most this many keys (0 = no limit).
    pub limit: usize,
    /// Read at this revision (0 = current). Needs `Capabilities::range_at_revision`.
    pub revision: Revision,
}

/// The store, shaped like etcd's KV + Watch API so that an etcd backend fits behind it.
///
/// Keys are `/registry/...` strings; values are opaque bytes. Every successful write
/// advances the single global revision by one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn capabilities(&self) -> Capabilities;

    /// The current revision (the revision of the last write; 0 on an empty store).
    async fn current_revision(&self) -> Result<Revision>;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys starting with `prefix`, in key order.
    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult>;

    /// Creates a key that must not exist; returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision>;

    /// Replaces the value of an existing key whose mod revision is `expected`
    /// (0 = unconditional); returns the new revision.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision>;

    /// Deletes a key whose mod revision is `expected` (0 = unconditional); returns the
    /// deleted value and the delete's revision.
    async fn delete(&self, key: &str, expected: Revision) -> Result<(KeyValue, Revision)>;

    /// Events for keys starting with `prefix` with revision > `after` (0 = from now on).
    /// Fails with `Compacted` when `after` is older than the retained history.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Drops history older than `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// A shared store is a store, so wrappers such as `EncryptingStore` can hold an `Arc`.
#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn current_revision(&self) -> Result<Revision> {
        (**self).current_revision().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }
    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        (**self).range(prefix, opts).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        (**self).create(key, value).await
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        (**self).update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Revision) -> Result<(KeyValue, Revision)> {
        (**self).delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        (**self).watch(prefix, after).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        (**self).compact(revision).await
    }
}

/// How much history the background compactor keeps (etcd's `--auto-compaction-retention`
/// in revision mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCompaction {
    /// Revisions kept behind the current one; watches and paged lists older than that get 410.
    pub keep_revisions: Revision,
    /// Time between compactions.
    pub interval: Duration,
}

impl Default for AutoCompaction {
    fn default() -> Self {
        AutoCompaction {
            keep_revisions: 10_000,
            interval: Duration::from_secs(60),
        }
    }
}

/// Compacts everything older than the newest `keep_revisions` revisions; returns the revision
/// compacted at, or None when there is not yet enough history.
pub async fn compact_once<S: Store + ?Sized>(
    store: &S,
    keep_revisions: Revision,
) -> Result<Option<Revision>> {
    let target = store.current_revision().await? - keep_revisions.max(0);
    if target <= 0 {
        return Ok(None);
    }
    store.compact(target).await?;
    Ok(Some(target))
}

/// Runs `compact_once` every `policy.interval` (the first right away) for as long as anyone
/// else holds the store; holding only a weak reference lets the store close on shutdown.
pub async fn run_auto_compaction<S: Store + ?Sized>(store: Weak<S>, policy: AutoCompaction) {
    let mut ticker = tokio::time::interval(policy.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match compact_once(&*store, policy.keep_revisions).await {
            Ok(Some(revision)) => tracing::debug!(revision, "store compacted"),
            Ok(None) => {}
            Err(StoreError::Closed) => return,
            Err(err) => tracing::warn!(error = %err, "store compaction failed"),
        }
    }
}

/// Spawns `run_auto_compaction` on the current tokio runtime.
pub fn spawn_auto_compaction<S: Store + ?Sized>(
    store: &Arc<S>,
    policy: AutoCompaction,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_auto_compaction(Arc::downgrade(store), policy))
}
