//! The watch cache: a bounded ring of recent committed events plus the live broadcast, joined
//! into gap-free, duplicate-free watch streams.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use tokio::sync::broadcast;

use crate::{Event, Revision, StoreError, WatchStream};

/// Events of one commit, in revision order, shared by every watcher.
pub(crate) type Batch = Arc<Vec<Arc<Event>>>;

/// The ring of recent events. Watchers that start at a revision inside it replay from it; the
/// writer appends to it and broadcasts under the same lock, which is what makes replay + live
/// seamless.
pub(crate) struct History {
    events: VecDeque<Arc<Event>>,
    /// Every event with a revision greater than this is in `events` (or not yet committed).
    floor: Revision,
    /// Revision of the last committed write.
    last: Revision,
    capacity: usize,
    /// Most bytes of keys and values kept; big objects shorten the window instead of
    /// growing memory.
    max_bytes: usize,
    bytes: usize,
    sender: broadcast::Sender<Batch>,
}

fn size(event: &Event) -> usize {
    match event {
        Event::Put { kv, prev } => {
            kv.key.len() + kv.value.len() + prev.as_ref().map_or(0, |p| p.value.len())
        }
        Event::Delete { prev, .. } => prev.key.len() + prev.value.len(),
    }
}

impl History {
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        watch_buffer: usize,
        floor: Revision,
        last: Revision,
        events: Vec<Event>,
    ) -> History {
        let (sender, _) = broadcast::channel(watch_buffer.max(1));
        let mut history = History {
            events: VecDeque::with_capacity(capacity.min(events.len())),
            floor,
            last,
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            sender,
        };
        for event in events {
            history.push(Arc::new(event));
        }
        history
    }

    fn push(&mut self, event: Arc<Event>) {
        self.last = self.last.max(event.revision());
        self.bytes += size(&event);
        self.events.push_back(event);
        // The newest event always stays, however big, so "from now" watches can start.
        while self.events.len() > 1
            && (self.events.len() > self.capacity || self.bytes > self.max_bytes)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.bytes -= size(&old);
            self.floor = self.floor.max(old.revision());
        }
    }

    /// Records a commit and hands it to live watchers. A watcher that is not keeping up only
    /// loses its place in the broadcast buffer (and recovers from the ring); the writer never waits.
    pub(crate) fn publish(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let batch: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        for event in &batch {
            self.push(event.clone());
        }
        // An error only means nobody is watching right now.
        let _ = self.sender.send(Arc::new(batch));
    }

    /// Forgets events at or below a compacted revision, so old watches fail like old ranges.
    pub(crate) fn compact(&mut self, revision: Revision) {
        while self
            .events
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            self.pop();
        }
        self.floor = self.floor.max(revision);
    }

    /// Subscribes and collects the replay for a watch that has seen everything up to `after`.
    fn resume(
        &self,
        after: Revision,
    ) -> Result<(broadcast::Receiver<Batch>, VecDeque<Arc<Event>>), StoreError> {
        if after < self.floor {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.floor,
            });
        }
        let start = self.events.partition_point(|e| e.revision() <= after);
        let replay = self.events.range(start..).cloned().collect();
        Ok((self.sender.subscribe(), replay))
    }
}

struct WatchState {
    history: Weak<Mutex<History>>,
    rx: broadcast::Receiver<Batch>,
    prefix: String,
    /// Highest revision already delivered or skipped; later copies of it are dropped.
    last: Revision,
    pending: VecDeque<Arc<Event>>,
}

enum Step {
    Emit(Event),
    Fail(StoreError),
    End,
}

impl WatchState {
    async fn next(&mut self) -> Step {
        loop {
            while let Some(event) = self.pending.pop_front() {
                let revision = event.revision();
                if revision <= self.last {
                    continue;
                }
                self.last = revision;
                if event.key().starts_with(&self.prefix) {
                    return Step::Emit((*event).clone());
                }
            }
            match self.rx.recv().await {
                Ok(batch) => self.pending.extend(batch.iter().cloned()),
                Err(broadcast::error::RecvError::Closed) => return Step::End,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell out of the broadcast buffer: catch up from the ring if it still
                    // reaches back far enough, else the client must re-list (410 Gone).
                    let Some(history) = self.history.upgrade() else {
                        return Step::End;
                    };
                    let resumed = match history.lock() {
                        Ok(h) => h.resume(self.last),
                        Err(_) => Err(StoreError::Backend("watch cache lock poisoned".into())),
                    };
                    match resumed {
                        Ok((rx, replay)) => {
                            self.rx = rx;
                            self.pending = replay;
                        }
                        Err(err) => return Step::Fail(err),
                    }
                }
            }
        }
    }
}

/// Opens a watch on `prefix` for events after `after` (0 = from now on).
pub(crate) fn watch(
    history: &Arc<Mutex<History>>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    let (rx, pending, last) = {
        let h = history
            .lock()
            .map_err(|_| StoreError::Backend("watch cache lock poisoned".into()))?;
        let from = if after == 0 { h.last } else { after };
        let (rx, replay) = h.resume(from)?;
        (rx, replay, from)
    };
    let state = WatchState {
        history: Arc::downgrade(history),
        rx,
        prefix: prefix.to_string(),
        last,
        pending,
    };
    let stream = futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next().await {
            Step::Emit(event) => Some((Ok(event), Some(state))),
            Step::Fail(err) => Some((Err(err), None)),
            Step::End => None,
        }
    });
    Ok(stream.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn put(revision: Revision, value_len: usize) -> Event {
        Event::Put {
            kv: KeyValue {
                key: "/k".into(),
                value: vec![0; value_len],
                create_revision: revision,
                mod_revision: revision,
            },
            prev: None,
        }
    }

    #[test]
    fn the_window_shrinks_to_fit_the_byte_budget() {
        let mut history = History::new(100, 1_000, 4, 0, 0, Vec::new());
        history.publish((1..=10).map(|r| put(r, 98)).collect());
        // 100 bytes per event (2 of key, 98 of value): only the newest ten fit.
        assert_eq!(history.events.len(), 10);
        assert_eq!(history.floor, 0);
        history.publish(vec![put(11, 498)]);
        assert_eq!(history.events.len(), 6);
        assert_eq!(history.floor, 5);
        assert!(history.resume(4).is_err());
        assert_eq!(
            history.resume(5).map(|(_, replay)| replay.len()).ok(),
            Some(6)
        );
        // A single event over budget still stays, as the newest.
        history.publish(vec![put(12, 5_000)]);
        assert_eq!(history.events.len(), 1);
        assert_eq!(history.floor, 11);
        history.compact(12);
        assert_eq!(
            (history.events.len(), history.bytes, history.floor),
            (0, 0, 12)
        );
    }
}
