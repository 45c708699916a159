//! Tests of the SQLite backend: the shared conformance suite plus restart, crash, lag and
//! group-commit behaviour that only a persistent backend has.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{SqliteOptions, SqliteStore};
use crate::{Event, RangeOptions, Store, StoreError};

fn temp_store() -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default()).expect("open");
    (store, dir)
}

mod conformance {
    crate::store_conformance_tests!(super::temp_store);
}

fn open(path: &Path) -> Arc<SqliteStore> {
    SqliteStore::open(path, SqliteOptions::default()).expect("open")
}

async fn next(stream: &mut crate::WatchStream) -> Option<crate::Result<Event>> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch stalled")
}

#[tokio::test]
async fn state_history_and_revision_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/store.db");
    let store = open(&path);
    let r1 = store.create("/k/a", b"1".to_vec()).await.expect("create");
    let r2 = store
        .update("/k/a", b"2".to_vec(), r1)
        .await
        .expect("update");
    let r3 = store.create("/k/b", b"1".to_vec()).await.expect("create");
    let (_, r4) = store.delete("/k/b", r3).await.expect("delete");
    drop(store);

    let store = open(&path);
    assert_eq!(store.current_revision().await.expect("revision"), r4);
    let kv = store.get("/k/a").await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], r1, r2)
    );
    assert_eq!(store.get("/k/b").await.expect("get"), None);
    // A watcher that last saw r1 before the restart resumes without a gap.
    let mut watch = store.watch("/k/", r1).await.expect("watch");
    match next(&mut watch).await {
        Some(Ok(Event::Put {
            kv,
            prev: Some(prev),
        })) => {
            assert_eq!((kv.mod_revision, prev.value.as_slice()), (r2, &b"1"[..]));
        }
        other => panic!("expected the update, got {other:?}"),
    }
    assert_eq!(
        next(&mut watch)
            .await
            .and_then(Result::ok)
            .map(|e| e.revision()),
        Some(r3)
    );
    match next(&mut watch).await {
        Some(Ok(Event::Delete { prev, revision })) => {
            assert_eq!(
                (revision, prev.value.as_slice(), prev.mod_revision),
                (r4, &b"1"[..], r3)
            );
        }
        other => panic!("expected the delete, got {other:?}"),
    }
    let r5 = store.create("/k/c", b"1".to_vec()).await.expect("create");
    assert_eq!(r5, r4 + 1);
    assert_eq!(
        next(&mut watch)
            .await
            .and_then(Result::ok)
            .map(|e| e.revision()),
        Some(r5)
    );
    let page = store
        .range(
            "/k/",
            RangeOptions {
                revision: r3,
                ..Default::default()
            },
        )
        .await
        .expect("range at a revision from before the restart");
    assert_eq!(page.kvs.len(), 2);
}

#[tokio::test]
async fn revision_never_goes_back_when_newest_rows_are_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    store.create("/a", b"1".to_vec()).await.expect("create");
    let rb = store.create("/b", b"1".to_vec()).await.expect("create");
    let (_, rd) = store.delete("/b", rb).await.expect("delete");
    // Removes the delete row and the version it deleted: the newest log rows.
    store.compact(rd).await.expect("compact");
    drop(store);

    let store = open(&path);
    assert_eq!(store.current_revision().await.expect("revision"), rd);
    assert_eq!(store.compacted_revision(), rd);
    let next_rev = store.create("/c", b"1".to_vec()).await.expect("create");
    assert!(next_rev > rd, "revision {next_rev} reused after {rd}");
    assert!(matches!(
        store.watch("/", rb).await.err(),
        Some(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn history_window_after_restart_is_bounded_by_capacity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    for i in 0..10 {
        store
            .create(&format!("/h/{i}"), b"v".to_vec())
            .await
            .expect("create");
    }
    drop(store);
    let opts = SqliteOptions {
        history_capacity: 3,
        ..Default::default()
    };
    let store = SqliteStore::open(&path, opts).expect("open");
    assert!(matches!(
        store.watch("/h/", 6).await.err(),
        Some(StoreError::Compacted {
            requested: 6,
            oldest: 7
        })
    ));
    let mut watch = store
        .watch("/h/", 7)
        .await
        .expect("watch inside the window");
    assert_eq!(
        next(&mut watch)
            .await
            .and_then(Result::ok)
            .map(|e| e.revision()),
        Some(8)
    );
}

#[tokio::test]
async fn lagging_watcher_catches_up_from_history_without_blocking_writers() {
    let (dir, opts) = (
        tempfile::tempdir().expect("tempdir"),
        SqliteOptions {
            history_capacity: 50,
            watch_buffer: 2,
            ..Default::default()
        },
    );
    let store = SqliteStore::open(&dir.path().join("store.db"), opts).expect("open");
    let mut watch = store.watch("/", 0).await.expect("watch");
    // Twenty commits while nobody reads the watch: far more than its buffer of two.
    for i in 0..20 {
        store
            .create(&format!("/l/{i:02}"), b"v".to_vec())
            .await
            .expect("create");
    }
    for rev in 1..=20 {
        let event = next(&mut watch).await.expect("open").expect("event");
        assert_eq!(event.revision(), rev);
    }
}

#[tokio::test]
async fn watcher_too_far_behind_is_told_to_relist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteOptions {
        history_capacity: 10,
        watch_buffer: 2,
        ..Default::default()
    };
    let store = SqliteStore::open(&dir.path().join("store.db"), opts).expect("open");
    let mut watch = store.watch("/", 0).await.expect("watch");
    for i in 0..40 {
        store
            .create(&format!("/l/{i:02}"), b"v".to_vec())
            .await
            .expect("create");
    }
    assert!(matches!(
        next(&mut watch).await,
        Some(Err(StoreError::Compacted { .. }))
    ));
    assert!(
        next(&mut watch).await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test]
async fn dropping_the_store_ends_watches() {
    let (store, _dir) = temp_store();
    let mut watch = store.watch("/", 0).await.expect("watch");
    drop(store);
    assert!(next(&mut watch).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let (store, _dir) = temp_store();
    let writes = (0..1000).map(|i| {
        let store = store.clone();
        async move { store.create(&format!("/g/{i:04}"), b"v".to_vec()).await }
    });
    let results = futures::future::join_all(writes).await;
    assert!(results.iter().all(Result::is_ok));
    let stats = store.stats();
    assert_eq!(stats.writes, 1000);
    assert!(
        stats.commits <= 100,
        "1000 queued writes took {} commits",
        stats.commits
    );
}

#[tokio::test]
async fn compact_once_keeps_the_newest_revisions() {
    let (store, _dir) = temp_store();
    assert_eq!(crate::compact_once(&*store, 5).await, Ok(None));
    for i in 0..12 {
        store
            .create(&format!("/x/{i}"), b"v".to_vec())
            .await
            .expect("create");
    }
    assert_eq!(crate::compact_once(&*store, 5).await, Ok(Some(7)));
    assert_eq!(store.compacted_revision(), 7);
    assert!(store.watch("/", 6).await.is_err());
    assert!(store.watch("/", 7).await.is_ok());
}

const CRASH_CHILD_DB: &str = "SKIFF_STORE_CRASH_CHILD_DB";

/// The writer half of `acknowledged_writes_survive_sigkill`: writes until killed and prints
/// every key the store acknowledged.
#[test]
#[ignore = "run as a child process by acknowledged_writes_survive_sigkill"]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_DB) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = open(Path::new(&path));
        let writers: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/crash/{t}/{i}");
                        let rev = store
                            .create(&key, key.as_bytes().to_vec())
                            .await
                            .expect("create");
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {key} {rev}").expect("stdout");
                        out.flush().expect("stdout");
                    }
                })
            })
            .collect();
        futures::future::join_all(writers).await;
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sqlite::tests::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = Vec::new();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child");
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, rev) = rest.split_once(' ').expect("ack line");
            acked.push((key.to_string(), rev.parse::<i64>().expect("revision")));
        }
        if !killed && (acked.len() >= 2000 || Instant::now() > deadline) {
            // SIGKILL in the middle of the stream; lines already printed were acknowledged.
            child.kill().expect("kill child");
            killed = true;
        }
    }
    let status = child.wait().expect("wait child");
    assert!(killed, "child exited on its own: {status}");
    assert!(
        acked.len() >= 2000,
        "child acknowledged only {} writes",
        acked.len()
    );

    let store = open(&path);
    let max_acked = acked.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
    for (key, rev) in &acked {
        let kv = store
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged {key} lost"));
        assert_eq!(kv.mod_revision, *rev, "{key}");
    }
    assert!(store.current_revision().await.expect("revision") >= max_acked);
    let next_rev = store
        .create("/after-crash", Vec::new())
        .await
        .expect("create");
    assert!(next_rev > max_acked);
}

/// Not a correctness test: prints durable write and read throughput for this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn throughput() {
    let (store, _dir) = temp_store();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let key = format!("/registry/pods/ns{t}/pod{i}");
                    store.create(&key, vec![b'x'; 1024]).await.expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    println!(
        "{} durable writes in {elapsed:?}: {:.0}/s over {} commits",
        stats.writes,
        stats.writes as f64 / elapsed.as_secs_f64(),
        stats.commits
    );
    let start = Instant::now();
    for i in 0..100_000 {
        let key = format!("/registry/pods/ns{}/pod{}", i % 64, i % 200);
        store.get(&key).await.expect("get").expect("present");
    }
    println!("100000 gets in {:?}", start.elapsed());
}

#[tokio::test]
async fn auto_compaction_runs_until_the_store_is_dropped() {
    let (store, _dir) = temp_store();
    for i in 0..20 {
        store
            .create(&format!("/x/{i}"), b"v".to_vec())
            .await
            .expect("create");
    }
    let policy = crate::AutoCompaction {
        keep_revisions: 5,
        interval: Duration::from_millis(10),
    };
    let task = crate::spawn_auto_compaction(&store, policy);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.compacted_revision() != 15 {
        assert!(Instant::now() < deadline, "no compaction happened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(store);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("compactor outlived the store")
        .expect("compactor task");
}

#[tokio::test]
async fn a_failed_commit_changes_nothing_and_frees_its_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    let r1 = store.create("/ok/1", b"v".to_vec()).await.expect("create");
    let mut watch = store.watch("/", r1).await.expect("watch");
    // Make the database refuse one key, as a full disk or an I/O error would.
    let saboteur = rusqlite::Connection::open(&path).expect("open");
    saboteur
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON log WHEN NEW.key = '/fail'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .expect("trigger");
    match store.create("/fail", b"v".to_vec()).await {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("injected failure"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(store.get("/fail").await.expect("get"), None);
    assert_eq!(store.current_revision().await.expect("revision"), r1);
    let r2 = store.create("/ok/2", b"v".to_vec()).await.expect("create");
    assert_eq!(r2, r1 + 1);
    let event = next(&mut watch).await.expect("open").expect("event");
    assert_eq!((event.key(), event.revision()), ("/ok/2", r2));
}

#[tokio::test]
async fn a_store_file_is_served_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let store = open(&path);
    store.create("/a", b"1".to_vec()).await.expect("create");
    match SqliteStore::open(&path, SqliteOptions::default()) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("a second open must fail, got {other:?}"),
    }
    drop(store);
    let store = open(&path);
    assert!(store.get("/a").await.expect("get").is_some());
}

/// The informer contract under load: a list at revision R plus the watch from R, applied in
/// order, always rebuilds exactly the state a later list shows, while writers and compaction
/// run concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_then_watch_rebuilds_the_state_under_concurrent_writes() {
    use std::collections::BTreeMap;

    let (store, _dir) = temp_store();
    for i in 0..20 {
        store
            .create(&format!("/s/seed/{i}"), b"0".to_vec())
            .await
            .expect("create");
    }
    let list = store
        .range("/s/", RangeOptions::default())
        .await
        .expect("list");
    let mut state: BTreeMap<String, (Vec<u8>, i64)> = list
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    let mut watch = store.watch("/s/", list.revision).await.expect("watch");

    let writers: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let key = format!("/s/{t}/{}", i % 7);
                    let value = format!("{t}-{i}").into_bytes();
                    // Whatever the key's state, one of these succeeds or fails cleanly.
                    match i % 3 {
                        0 => store.create(&key, value).await.map(|_| ()),
                        1 => store.update(&key, value, 0).await.map(|_| ()),
                        _ => store.delete(&key, 0).await.map(|_| ()),
                    }
                    .or_else(|err| match err {
                        StoreError::AlreadyExists(_) | StoreError::NotFound(_) => Ok(()),
                        other => Err(other),
                    })
                    .expect("write");
                    // Noise outside the watched prefix.
                    store
                        .create(&format!("/other/{t}/{i}"), Vec::new())
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    let compactor = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                crate::compact_once(&*store, 100).await.expect("compact");
                tokio::task::yield_now().await;
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    compactor.await.expect("compactor");

    // A last write under the prefix tells the watcher it has seen everything.
    let end = store.create("/s/~end", Vec::new()).await.expect("create");
    let mut seen = list.revision;
    let mut relists = 0;
    while seen < end {
        let event = match next(&mut watch).await {
            Some(Ok(event)) => event,
            // Fell behind compaction: re-list and watch again, as an informer does on 410.
            Some(Err(StoreError::Compacted { .. })) if relists < 10 => {
                relists += 1;
                let list = store
                    .range("/s/", RangeOptions::default())
                    .await
                    .expect("list");
                state = list
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                    .collect();
                seen = list.revision;
                watch = store.watch("/s/", seen).await.expect("watch");
                continue;
            }
            other => panic!("watch failed before revision {end}: {other:?}"),
        };
        assert!(
            event.revision() > seen,
            "revision {} after {seen}",
            event.revision()
        );
        seen = event.revision();
        assert!(
            event.key().starts_with("/s/"),
            "{} leaked through the filter",
            event.key()
        );
        match event {
            Event::Put { kv, prev } => {
                assert_eq!(
                    prev.map(|p| p.mod_revision),
                    state.get(&kv.key).map(|s| s.1)
                );
                state.insert(kv.key, (kv.value, kv.mod_revision));
            }
            Event::Delete { prev, .. } => {
                assert_eq!(
                    state.remove(&prev.key).map(|s| s.1),
                    Some(prev.mod_revision)
                );
            }
        }
    }
    let fresh: BTreeMap<String, (Vec<u8>, i64)> = store
        .range("/s/", RangeOptions::default())
        .await
        .expect("list")
        .kvs
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect();
    assert_eq!(state, fresh);
}
