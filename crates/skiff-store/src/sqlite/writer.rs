//! The single writer thread: owns the write connection and group-commits every queued write
//! in one transaction (one fsync), then publishes and answers them all.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, PoisonError};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{Shared, schema};
use crate::{Event, KeyValue, Revision, StoreError};

pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Revision,
    },
}

impl WriteOp {
    fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

pub(crate) enum Request {
    /// Answered with the event the write produced.
    Write(WriteOp, oneshot::Sender<Result<Event, StoreError>>),
    Compact(Revision, oneshot::Sender<Result<(), StoreError>>),
}

fn backend(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// Decides what a write does given the key's current state, or why it cannot happen.
fn plan(op: WriteOp, current: Option<&KeyValue>, revision: Revision) -> Result<Event, StoreError> {
    let check = |kv: &KeyValue, expected: Revision| {
        if expected != 0 && expected != kv.mod_revision {
            Err(StoreError::Conflict {
                key: kv.key.clone(),
                expected,
                actual: kv.mod_revision,
            })
        } else {
            Ok(())
        }
    };
    match op {
        WriteOp::Create { key, value } => match current {
            Some(_) => Err(StoreError::AlreadyExists(key)),
            None => Ok(Event::Put {
                kv: KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                },
                prev: None,
            }),
        },
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let prev = current.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            check(prev, expected)?;
            Ok(Event::Put {
                kv: KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                },
                prev: Some(prev.clone()),
            })
        }
        WriteOp::Delete { key, expected } => {
            let prev = current.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            check(prev, expected)?;
            Ok(Event::Delete {
                prev: prev.clone(),
                revision,
            })
        }
    }
}

fn insert(conn: &Connection, event: &Event) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(schema::INSERT_ROW)?;
    match event {
        Event::Put { kv, prev } => {
            let prev_rev = prev.as_ref().map_or(0, |p| p.mod_revision);
            stmt.execute(params![
                kv.mod_revision,
                kv.key,
                kv.value,
                kv.create_revision,
                prev_rev,
                false
            ])?;
        }
        Event::Delete { prev, revision } => {
            stmt.execute(params![
                revision,
                prev.key,
                prev.value,
                prev.create_revision,
                prev.mod_revision,
                true
            ])?;
        }
    }
    Ok(())
}

type Reply = oneshot::Sender<Result<Event, StoreError>>;

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) shared: Arc<Shared>,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) max_batch: usize,
    /// Set when a commit failed in a way that may have left memory and disk apart.
    pub(crate) failed: Option<StoreError>,
    /// Held (and the file locked) until the writer stops.
    pub(crate) _lock: std::fs::File,
}

impl Writer {
    pub(crate) fn run(mut self) {
        // Ends when the store (the only sender) is dropped.
        while let Ok(first) = self.requests.recv() {
            let mut writes = Vec::new();
            let mut compactions = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Write(op, reply) => writes.push((op, reply)),
                    Request::Compact(rev, reply) => compactions.push((rev, reply)),
                }
                if writes.len() < self.max_batch {
                    next = self.requests.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
            for (revision, reply) in compactions {
                let _ = reply.send(self.compact(revision));
            }
        }
    }

    fn commit(&mut self, writes: Vec<(WriteOp, Reply)>) {
        if let Some(err) = &self.failed {
            for (_, reply) in writes {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let start = state.revision;
        // Writes later in the batch see the effects of earlier ones before anything is visible.
        let mut overlay: HashMap<String, Option<KeyValue>> = HashMap::new();
        let mut planned: Vec<(Result<Event, StoreError>, Reply)> = Vec::with_capacity(writes.len());
        let mut revision = start;
        for (op, reply) in writes {
            let current = match overlay.get(op.key()) {
                Some(entry) => entry.as_ref(),
                None => state.kvs.get(op.key()),
            };
            let outcome = plan(op, current, revision + 1);
            if let Ok(event) = &outcome {
                revision += 1;
                let after = match event {
                    Event::Put { kv, .. } => Some(kv.clone()),
                    Event::Delete { .. } => None,
                };
                overlay.insert(event.key().to_string(), after);
            }
            planned.push((outcome, reply));
        }
        // Only this thread changes the state, so it cannot move while the lock is released.
        drop(state);
        if revision == start {
            for (outcome, reply) in planned {
                let _ = reply.send(outcome);
            }
            return;
        }
        if let Err(err) = self.persist(&planned, revision) {
            tracing::error!(error = %err, "store commit failed");
            // The error does not always say whether the commit reached the disk; the
            // revision counter in the file does.
            match schema::current_revision(&self.conn) {
                Ok(on_disk) if on_disk == start => {
                    // Rolled back: nothing became visible, the revisions are used again.
                    for (_, reply) in planned {
                        let _ = reply.send(Err(err.clone()));
                    }
                    return;
                }
                Ok(on_disk) if on_disk == revision => {
                    tracing::warn!("the failed commit reached the disk; treating it as done");
                }
                _ => {
                    // Memory and disk may disagree: stop writing rather than diverge.
                    let stopped =
                        StoreError::Backend(format!("store stopped after a failed commit: {err}"));
                    self.failed = Some(stopped);
                    for (_, reply) in planned {
                        let _ = reply.send(Err(err.clone()));
                    }
                    return;
                }
            }
        }
        let events: Vec<Event> = planned
            .iter()
            .filter_map(|(o, _)| o.as_ref().ok().cloned())
            .collect();
        self.shared
            .writes
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.shared.apply(overlay, revision, events);
        for (outcome, reply) in planned {
            let _ = reply.send(outcome);
        }
    }

    fn persist(
        &mut self,
        planned: &[(Result<Event, StoreError>, Reply)],
        revision: Revision,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for event in planned.iter().filter_map(|(o, _)| o.as_ref().ok()) {
            insert(&tx, event).map_err(backend)?;
        }
        tx.execute(schema::SET_CURRENT_REV, [revision])
            .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn compact(&mut self, revision: Revision) -> Result<(), StoreError> {
        let current = self.shared.current_revision()?;
        if revision > current {
            return Err(StoreError::FutureRevision(revision));
        }
        if revision <= self.shared.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for sql in schema::COMPACT {
            tx.execute(sql, [revision]).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        self.shared.compacted.store(revision, Ordering::Release);
        if let Ok(mut history) = self.shared.history.lock() {
            history.compact(revision);
        }
        Ok(())
    }
}
