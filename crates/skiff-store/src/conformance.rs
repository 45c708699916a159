//! The conformance suite every `Store` backend must pass: etcd semantics for writes,
//! revisions, ranges, watches and compaction.
//!
//! Each case takes a fresh, empty store. `store_conformance_tests!` turns the suite into one
//! `#[tokio::test]` per case; `run_all` runs it in one go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{Event, KeyValue, RangeOptions, Revision, Store, StoreError, WatchStream};

/// Longest wait for an expected event; only reached when a backend is broken.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// Generates one `#[tokio::test]` per conformance case. `$make` is an expression callable as
/// `make() -> (Arc<S>, guard)`; the guard (e.g. a temporary directory) lives as long as the test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            crud, write_errors, revisions, range_prefix_isolation, range_paging,
            range_at_revision, watch_from_now, watch_replay, watch_prefix_filter,
            watch_prev_values, compaction, concurrent_creates, optimistic_concurrency);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = ($make)();
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// Runs every case, each on a new store from `make`.
pub async fn run_all<S, G>(make: impl Fn() -> (Arc<S>, G))
where
    S: Store + ?Sized,
{
    macro_rules! case {
        ($($case:ident),*) => {$({
            let (store, _guard) = make();
            $case(store).await;
        })*};
    }
    case!(
        crud,
        write_errors,
        revisions,
        range_prefix_isolation,
        range_paging,
        range_at_revision,
        watch_from_now,
        watch_replay,
        watch_prefix_filter,
        watch_prev_values,
        compaction,
        concurrent_creates,
        optimistic_concurrency
    );
}

async fn next_event(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("watch failed: {err}"),
        Ok(None) => panic!("watch ended early"),
        Err(_) => panic!("no watch event within {EVENT_DEADLINE:?}"),
    }
}

fn put_key(event: &Event) -> (&str, Option<&[u8]>) {
    match event {
        Event::Put { kv, .. } => (&kv.key, Some(&kv.value)),
        Event::Delete { prev, .. } => (&prev.key, None),
    }
}

async fn must_create<S: Store + ?Sized>(store: &S, key: &str, value: &str) -> Revision {
    match store.create(key, value.as_bytes().to_vec()).await {
        Ok(rev) => rev,
        Err(err) => panic!("create {key}: {err}"),
    }
}

async fn keys<S: Store + ?Sized>(store: &S, prefix: &str, opts: RangeOptions) -> Vec<String> {
    match store.range(prefix, opts).await {
        Ok(result) => result.kvs.into_iter().map(|kv| kv.key).collect(),
        Err(err) => panic!("range {prefix}: {err}"),
    }
}

pub async fn crud<S: Store + ?Sized>(store: Arc<S>) {
    let created = must_create(&*store, "/registry/pods/default/a", "v1").await;
    assert!(created > 0);
    let got = store.get("/registry/pods/default/a").await.expect("get");
    assert_eq!(
        got,
        Some(KeyValue {
            key: "/registry/pods/default/a".into(),
            value: b"v1".to_vec(),
            create_revision: created,
            mod_revision: created,
        })
    );

    let updated = store
        .update("/registry/pods/default/a", b"v2".to_vec(), created)
        .await
        .expect("update");
    assert!(updated > created);
    let got = store
        .get("/registry/pods/default/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got.value, b"v2");
    assert_eq!(
        got.create_revision, created,
        "an update keeps the create revision"
    );
    assert_eq!(got.mod_revision, updated);

    let (prev, deleted) = store
        .delete("/registry/pods/default/a", updated)
        .await
        .expect("delete");
    assert!(deleted > updated);
    assert_eq!(prev.value, b"v2");
    assert_eq!(prev.mod_revision, updated);
    assert_eq!(
        store.get("/registry/pods/default/a").await.expect("get"),
        None
    );
    assert_eq!(store.current_revision().await.expect("revision"), deleted);
    assert_eq!(
        store
            .get("/registry/pods/default/never")
            .await
            .expect("get"),
        None
    );
}

pub async fn write_errors<S: Store + ?Sized>(store: Arc<S>) {
    let rev = must_create(&*store, "/k", "v").await;
    assert_eq!(
        store.create("/k", b"again".to_vec()).await,
        Err(StoreError::AlreadyExists("/k".into()))
    );
    assert_eq!(
        store.update("/missing", b"v".to_vec(), 0).await,
        Err(StoreError::NotFound("/missing".into()))
    );
    assert_eq!(
        store.delete("/missing", 0).await,
        Err(StoreError::NotFound("/missing".into()))
    );
    assert_eq!(
        store.update("/k", b"v".to_vec(), rev + 100).await,
        Err(StoreError::Conflict {
            key: "/k".into(),
            expected: rev + 100,
            actual: rev
        })
    );
    assert_eq!(
        store.delete("/k", rev + 100).await,
        Err(StoreError::Conflict {
            key: "/k".into(),
            expected: rev + 100,
            actual: rev
        })
    );
    assert_eq!(
        store.current_revision().await.expect("revision"),
        rev,
        "failed writes must not use up revisions"
    );
    assert_eq!(
        store.get("/k").await.expect("get").map(|kv| kv.value),
        Some(b"v".to_vec())
    );
    // 0 means unconditional.
    let rev2 = store
        .update("/k", b"w".to_vec(), 0)
        .await
        .expect("unconditional update");
    assert!(rev2 > rev);
    let (prev, _) = store.delete("/k", 0).await.expect("unconditional delete");
    assert_eq!(prev.value, b"w");
}

pub async fn revisions<S: Store + ?Sized>(store: Arc<S>) {
    let mut last = store.current_revision().await.expect("revision");
    for i in 0..5 {
        let key = format!("/r/{i}");
        let created = must_create(&*store, &key, "a").await;
        assert!(created > last, "revision {created} after {last}");
        let updated = store
            .update(&key, b"b".to_vec(), created)
            .await
            .expect("update");
        assert!(updated > created);
        assert_eq!(store.current_revision().await.expect("revision"), updated);
        last = updated;
    }
    let (_, deleted) = store.delete("/r/0", 0).await.expect("delete");
    assert!(deleted > last);
    // A re-created key starts a new life with a new create revision.
    let recreated = must_create(&*store, "/r/0", "c").await;
    assert!(recreated > deleted);
    let kv = store.get("/r/0").await.expect("get").expect("present");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated)
    );
}

pub async fn range_prefix_isolation<S: Store + ?Sized>(store: Arc<S>) {
    for key in ["/a/2", "/ab/x", "/a", "/a/1", "/b/1", "/a0", "/"] {
        must_create(&*store, key, key).await;
    }
    assert_eq!(
        keys(&*store, "/a/", RangeOptions::default()).await,
        ["/a/1", "/a/2"]
    );
    assert_eq!(
        keys(&*store, "/ab/", RangeOptions::default()).await,
        ["/ab/x"]
    );
    assert!(
        keys(&*store, "/c/", RangeOptions::default())
            .await
            .is_empty()
    );
    let all = keys(&*store, "/", RangeOptions::default()).await;
    assert_eq!(all, ["/", "/a", "/a/1", "/a/2", "/a0", "/ab/x", "/b/1"]);
    let result = store
        .range("/a/", RangeOptions::default())
        .await
        .expect("range");
    assert_eq!(
        result.revision,
        store.current_revision().await.expect("revision")
    );
    assert!(!result.more);
    assert_eq!(result.kvs[0].value, b"/a/1");
}

pub async fn range_paging<S: Store + ?Sized>(store: Arc<S>) {
    for i in 0..10 {
        must_create(&*store, &format!("/p/{i:02}"), "v").await;
    }
    must_create(&*store, "/q/0", "v").await;
    let mut seen = Vec::new();
    let mut start_after = None;
    loop {
        let opts = RangeOptions {
            start_after: start_after.clone(),
            limit: 3,
            revision: 0,
        };
        let page = store.range("/p/", opts).await.expect("range");
        assert!(page.kvs.len() <= 3);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        assert_eq!(page.kvs.len(), 3, "a page with more after it is full");
        start_after = page.kvs.last().map(|kv| kv.key.clone());
    }
    let expected: Vec<String> = (0..10).map(|i| format!("/p/{i:02}")).collect();
    assert_eq!(seen, expected);
    // An exact fit: limit equal to the number of keys has nothing more.
    let page = store
        .range(
            "/p/",
            RangeOptions {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("range");
    assert!(!page.more);
    // A start before the prefix starts at the prefix.
    let page = store
        .range(
            "/p/",
            RangeOptions {
                start_after: Some("/a".into()),
                limit: 1,
                revision: 0,
            },
        )
        .await
        .expect("range");
    assert_eq!(page.kvs[0].key, "/p/00");
    assert!(page.more);
}

pub async fn range_at_revision<S: Store + ?Sized>(store: Arc<S>) {
    if !store.capabilities().range_at_revision {
        return;
    }
    let r1 = must_create(&*store, "/t/a", "a1").await;
    let r2 = must_create(&*store, "/t/b", "b1").await;
    let r3 = store
        .update("/t/a", b"a2".to_vec(), r1)
        .await
        .expect("update");
    let (_, r4) = store.delete("/t/b", r2).await.expect("delete");
    let r5 = must_create(&*store, "/t/c", "c1").await;

    let at = |revision| RangeOptions {
        revision,
        ..Default::default()
    };
    let values = |kvs: Vec<KeyValue>| -> Vec<(String, Vec<u8>, Revision)> {
        kvs.into_iter()
            .map(|kv| (kv.key, kv.value, kv.mod_revision))
            .collect()
    };
    let page = store.range("/t/", at(r2)).await.expect("range at r2");
    assert_eq!(page.revision, r2);
    assert_eq!(
        values(page.kvs),
        [
            ("/t/a".into(), b"a1".to_vec(), r1),
            ("/t/b".into(), b"b1".to_vec(), r2)
        ]
    );
    let page = store.range("/t/", at(r3)).await.expect("range at r3");
    assert_eq!(
        values(page.kvs),
        [
            ("/t/a".into(), b"a2".to_vec(), r3),
            ("/t/b".into(), b"b1".to_vec(), r2)
        ]
    );
    let page = store.range("/t/", at(r4)).await.expect("range at r4");
    assert_eq!(values(page.kvs), [("/t/a".into(), b"a2".to_vec(), r3)]);
    let page = store.range("/t/", at(r5)).await.expect("range at r5");
    assert_eq!(page.kvs.len(), 2);
    // Paging at a fixed revision ignores later writes.
    let r6 = must_create(&*store, "/t/0", "late").await;
    let first = store
        .range(
            "/t/",
            RangeOptions {
                limit: 1,
                revision: r3,
                start_after: None,
            },
        )
        .await
        .expect("page 1");
    assert_eq!((first.kvs.len(), first.more), (1, true));
    assert_eq!(first.kvs[0].key, "/t/a");
    let second = store
        .range(
            "/t/",
            RangeOptions {
                limit: 1,
                revision: r3,
                start_after: Some("/t/a".into()),
            },
        )
        .await
        .expect("page 2");
    assert_eq!(values(second.kvs), [("/t/b".into(), b"b1".to_vec(), r2)]);
    assert!(!second.more);
    assert!(matches!(
        store.range("/t/", at(r6 + 10)).await,
        Err(StoreError::FutureRevision(_))
    ));
}

pub async fn watch_from_now<S: Store + ?Sized>(store: Arc<S>) {
    must_create(&*store, "/w/old", "v").await;
    let mut watch = store.watch("/w/", 0).await.expect("watch");
    let new = must_create(&*store, "/w/new", "v").await;
    let event = next_event(&mut watch).await;
    assert_eq!(
        event.key(),
        "/w/new",
        "a watch from 0 starts after the current revision"
    );
    assert_eq!(event.revision(), new);
    let later = store
        .update("/w/old", b"x".to_vec(), 0)
        .await
        .expect("update");
    let event = next_event(&mut watch).await;
    assert_eq!((event.key(), event.revision()), ("/w/old", later));
}

pub async fn watch_replay<S: Store + ?Sized>(store: Arc<S>) {
    let seen = must_create(&*store, "/w/a", "1").await;
    // The writes a disconnected watcher missed.
    let r1 = store
        .update("/w/a", b"2".to_vec(), seen)
        .await
        .expect("update");
    let r2 = must_create(&*store, "/w/b", "1").await;
    let (_, r3) = store.delete("/w/a", r1).await.expect("delete");
    let mut watch = store.watch("/w/", seen).await.expect("watch");
    let mut replayed = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut watch).await;
        replayed.push((
            event.revision(),
            put_key(&event).0.to_string(),
            put_key(&event).1.map(<[u8]>::to_vec),
        ));
    }
    assert_eq!(
        replayed,
        [
            (r1, "/w/a".to_string(), Some(b"2".to_vec())),
            (r2, "/w/b".to_string(), Some(b"1".to_vec())),
            (r3, "/w/a".to_string(), None),
        ]
    );
    // Then live events follow with nothing lost or repeated in between.
    let r4 = store
        .update("/w/b", b"2".to_vec(), r2)
        .await
        .expect("update");
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision(), r4);

    // Resuming in the middle replays only the rest.
    let mut watch = store.watch("/w/", r2).await.expect("watch");
    assert_eq!(next_event(&mut watch).await.revision(), r3);
    assert_eq!(next_event(&mut watch).await.revision(), r4);
}

pub async fn watch_prefix_filter<S: Store + ?Sized>(store: Arc<S>) {
    let start = store.current_revision().await.expect("revision");
    let mut watch = store.watch("/a/", 0).await.expect("watch");
    let mut replay = store
        .watch("/a/", start)
        .await
        .expect("watch from revision");
    must_create(&*store, "/ab/x", "no").await;
    must_create(&*store, "/a", "no").await;
    let wanted = must_create(&*store, "/a/1", "yes").await;
    must_create(&*store, "/b/1", "no").await;
    let last = must_create(&*store, "/a/2", "yes").await;
    for stream in [&mut watch, &mut replay] {
        let first = next_event(stream).await;
        assert_eq!((first.key(), first.revision()), ("/a/1", wanted));
        let second = next_event(stream).await;
        assert_eq!((second.key(), second.revision()), ("/a/2", last));
    }
}

pub async fn watch_prev_values<S: Store + ?Sized>(store: Arc<S>) {
    let mut watch = store.watch("/v/", 0).await.expect("watch");
    let created = must_create(&*store, "/v/k", "one").await;
    let updated = store
        .update("/v/k", b"two".to_vec(), created)
        .await
        .expect("update");
    let (_, deleted) = store.delete("/v/k", updated).await.expect("delete");

    match next_event(&mut watch).await {
        Event::Put { kv, prev } => {
            assert_eq!(
                (kv.value.as_slice(), kv.mod_revision),
                (&b"one"[..], created)
            );
            assert_eq!(prev, None, "a create has no previous value");
        }
        other => panic!("expected create, got {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Put { kv, prev } => {
            assert_eq!(kv.value, b"two");
            assert_eq!(kv.create_revision, created);
            let prev = prev.expect("an update carries the previous value");
            assert_eq!(
                (prev.value.as_slice(), prev.mod_revision),
                (&b"one"[..], created)
            );
        }
        other => panic!("expected update, got {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Delete { prev, revision } => {
            assert_eq!(revision, deleted);
            assert_eq!(prev.key, "/v/k");
            assert_eq!(prev.value, b"two");
            assert_eq!(
                (prev.create_revision, prev.mod_revision),
                (created, updated)
            );
        }
        other => panic!("expected delete, got {other:?}"),
    }
}

pub async fn compaction<S: Store + ?Sized>(store: Arc<S>) {
    let r1 = must_create(&*store, "/c/a", "1").await;
    let r2 = store
        .update("/c/a", b"2".to_vec(), r1)
        .await
        .expect("update");
    let r3 = must_create(&*store, "/c/b", "1").await;
    let (_, r4) = store.delete("/c/b", r3).await.expect("delete");
    let r5 = store
        .update("/c/a", b"3".to_vec(), r2)
        .await
        .expect("update");
    must_create(&*store, "/c/c", "1").await;

    store.compact(r4).await.expect("compact");
    assert!(matches!(
        store.watch("/c/", r1).await.err(),
        Some(StoreError::Compacted { requested, .. }) if requested == r1
    ));
    if store.capabilities().range_at_revision {
        let old = RangeOptions {
            revision: r2,
            ..Default::default()
        };
        assert!(matches!(
            store.range("/c/", old).await,
            Err(StoreError::Compacted { .. })
        ));
        // The compaction point itself and later stay readable.
        let at = RangeOptions {
            revision: r4,
            ..Default::default()
        };
        let page = store
            .range("/c/", at)
            .await
            .expect("range at the compaction point");
        let values: Vec<_> = page
            .kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
            .collect();
        assert_eq!(values, [("/c/a", &b"2"[..])]);
    }
    // Everything after the compaction point can still be watched, previous values included.
    let mut watch = store
        .watch("/c/", r4)
        .await
        .expect("watch after the compaction point");
    match next_event(&mut watch).await {
        Event::Put { kv, prev } => {
            assert_eq!(kv.mod_revision, r5);
            assert_eq!(prev.map(|p| p.value), Some(b"2".to_vec()));
        }
        other => panic!("expected update, got {other:?}"),
    }
    // The current state is untouched.
    assert_eq!(
        keys(&*store, "/c/", RangeOptions::default()).await,
        ["/c/a", "/c/c"]
    );
    assert_eq!(
        store.get("/c/a").await.expect("get").map(|kv| kv.value),
        Some(b"3".to_vec())
    );
    // Compacting again at or below the point is harmless; beyond the current revision it is not.
    store.compact(r4).await.expect("compact again");
    let current = store.current_revision().await.expect("revision");
    assert_eq!(
        store.compact(current + 10).await,
        Err(StoreError::FutureRevision(current + 10))
    );
}

pub async fn concurrent_creates<S: Store + ?Sized>(store: Arc<S>) {
    const TASKS: usize = 32;
    const PER_TASK: usize = 25;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..PER_TASK {
                let key = format!("/cc/{t:02}/{i:03}");
                match store.create(&key, key.as_bytes().to_vec()).await {
                    Ok(rev) => revisions.push(rev),
                    Err(err) => panic!("create {key}: {err}"),
                }
            }
            revisions
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        for rev in task.await.expect("writer task") {
            assert!(all.insert(rev), "revision {rev} given out twice");
        }
    }
    assert_eq!(all.len(), TASKS * PER_TASK);
    let result = store
        .range("/cc/", RangeOptions::default())
        .await
        .expect("range");
    assert_eq!(result.kvs.len(), TASKS * PER_TASK);
    assert!(result.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    let max = all.iter().copied().max().unwrap_or(0);
    assert_eq!(store.current_revision().await.expect("revision"), max);
}

pub async fn optimistic_concurrency<S: Store + ?Sized>(store: Arc<S>) {
    let base = must_create(&*store, "/oc", "0").await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.update("/oc", format!("{t}").into_bytes(), base).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { expected, .. }) => assert_eq!(expected, base),
            Err(err) => panic!("unexpected error {err}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer may win a compare-and-swap");
}
