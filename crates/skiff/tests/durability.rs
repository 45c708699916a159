//! End-to-end durability with kube-rs as the client: concurrent creates, `kill -9`, restart;
//! every acknowledged write survives, revisions keep growing, and watches resume exactly.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::ObjectMeta;
use skiff_testkit::TestCluster;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WRITERS: usize = 8;
const PER_WRITER: usize = 250;
const PREFIX: &str = "cm-";

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

/// A real kube-rs client built from the cluster's kubeconfig (own connection pool each call).
async fn client(c: &TestCluster) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(c.kubeconfig()).expect("reading kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config from the kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// Resource versions are etcd-style revisions here; comparing them needs the number.
fn rv_of(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("object {:?} has no numeric resourceVersion", meta.name))
}

fn configmap(name: &str, i: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("index".to_string(), i.to_string())])),
        ..Default::default()
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the namespace");
}

/// Every configmap in `ns` whose name has our prefix, name -> resourceVersion (paged list).
async fn list_all(client: &kube::Client, ns: &str) -> BTreeMap<String, u64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.expect("listing configmaps");
        for cm in &page.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            if name.starts_with(PREFIX) {
                out.insert(name, rv_of(&cm.metadata));
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return out,
        }
    }
}

/// Acknowledged creates: name -> resourceVersion from the server's answer.
type Acked = Arc<Mutex<BTreeMap<String, u64>>>;

/// One writer: its own client, creates `count` configmaps in order, records each acknowledged
/// one, and stops at the first error (the server may have been killed under it).
async fn writer(
    client: kube::Client,
    ns: String,
    w: usize,
    count: usize,
    acked: Acked,
    progress: Arc<AtomicUsize>,
) -> Option<kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    for i in 0..count {
        let name = format!("{PREFIX}{w}-{i}");
        match api
            .create(&PostParams::default(), &configmap(&name, i))
            .await
        {
            Ok(cm) => {
                assert_eq!(cm.metadata.name.as_deref(), Some(name.as_str()));
                acked.lock().unwrap().insert(name, rv_of(&cm.metadata));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => return Some(e),
        }
    }
    None
}

/// Events seen by a watch: (type, name, resourceVersion), in arrival order.
type Seen = Arc<Mutex<Vec<(&'static str, String, u64)>>>;

/// Consumes a watch stream into `seen` until it ends or errors; only our configmaps count.
async fn record_watch(client: kube::Client, ns: String, from: String, seen: Seen) {
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut stream = match api.watch(&WatchParams::default().timeout(290), &from).await {
        Ok(s) => s.boxed(),
        Err(e) => {
            seen.lock()
                .unwrap()
                .push(("ERROR", format!("starting the watch from {from}: {e}"), 0));
            return;
        }
    };
    while let Ok(Some(event)) = stream.try_next().await {
        let (kind, cm) = match event {
            WatchEvent::Added(cm) => ("ADDED", cm),
            WatchEvent::Modified(cm) => ("MODIFIED", cm),
            WatchEvent::Deleted(cm) => ("DELETED", cm),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => {
                seen.lock()
                    .unwrap()
                    .push(("ERROR", format!("watch from {from}: {e:?}"), 0));
                return;
            }
        };
        let name = cm.metadata.name.clone().unwrap_or_default();
        if name.starts_with(PREFIX) {
            seen.lock().unwrap().push((kind, name, rv_of(&cm.metadata)));
        }
    }
}

fn failed(seen: &Seen) -> bool {
    seen.lock().unwrap().iter().any(|e| e.0 == "ERROR")
}

/// Polls (without sleeping on the server) until `cond` holds or `timeout` passes.
async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The current list resourceVersion of configmaps in `ns`: where a watch that must miss
/// nothing starts.
async fn list_rv(client: &kube::Client, ns: &str) -> String {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let list = api
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("listing");
    list.metadata
        .resource_version
        .expect("list resourceVersion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill9_and_watch_resumes() {
    let mut c = tokio::task::block_in_place(cluster);
    let ns = "durability".to_string();
    let admin = client(&c).await;
    create_namespace(&admin, &ns).await;

    // A watch open during the whole write burst.
    let start_rv = list_rv(&admin, &ns).await;
    let seen: Seen = Arc::default();
    let watch = tokio::spawn(record_watch(
        client(&c).await,
        ns.clone(),
        start_rv.clone(),
        seen.clone(),
    ));

    let acked: Acked = Arc::default();
    let progress = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let cl = client(&c).await;
        writers.push(tokio::spawn(writer(
            cl,
            ns.clone(),
            w,
            PER_WRITER,
            acked.clone(),
            progress.clone(),
        )));
    }
    for wr in writers {
        if let Some(e) = wr.await.expect("writer task") {
            panic!("a create failed while the server was up: {e}");
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    let distinct: HashSet<u64> = acked.values().copied().collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "two creates were acknowledged with the same resourceVersion"
    );
    let max_acked = *acked.values().max().expect("writes");

    // The pre-crash watch sees every create exactly once, in revision order.
    wait_until(
        Duration::from_secs(60),
        "the watch to see every create",
        || failed(&seen) || seen.lock().unwrap().len() >= acked.len(),
    )
    .await;
    let before: Vec<_> = seen.lock().unwrap().clone();
    assert_eq!(
        before.len(),
        acked.len(),
        "the watch delivered extra events"
    );
    assert!(
        before.windows(2).all(|p| p[0].2 < p[1].2),
        "watch events out of revision order"
    );
    for (kind, name, rv) in &before {
        assert_eq!(*kind, "ADDED");
        assert_eq!(
            acked.get(name),
            Some(rv),
            "watch event for {name} disagrees with the create answer"
        );
    }
    // Resume points: half-way through the burst, and the last event seen before the crash.
    let mid_rv = before[before.len() / 2].2;
    let last_rv = before.last().expect("events").2;

    tokio::task::block_in_place(|| {
        c.kill9();
        c.restart();
    });
    let _ = watch.await;

    let after_client = client(&c).await;
    let present = list_all(&after_client, &ns).await;
    for (name, rv) in &acked {
        assert_eq!(
            present.get(name),
            Some(rv),
            "acknowledged {name} (rv {rv}) lost or changed by kill -9"
        );
    }
    assert_eq!(
        present.len(),
        acked.len(),
        "objects appeared that nobody created"
    );

    // New writes after the restart: revisions keep growing.
    let api: Api<ConfigMap> = Api::namespaced(after_client.clone(), &ns);
    let mut post = Vec::new();
    for i in 0..5 {
        let name = format!("{PREFIX}after-{i}");
        let cm = api
            .create(&PostParams::default(), &configmap(&name, i))
            .await
            .expect("create after restart");
        let rv = rv_of(&cm.metadata);
        assert!(
            rv > max_acked,
            "rv {rv} after restart is not above the last acknowledged {max_acked}"
        );
        post.push(("ADDED", name, rv));
    }
    assert!(post.windows(2).all(|p| p[0].2 < p[1].2));

    // A watch resumed from the last version seen before the crash gets exactly the new writes;
    // one resumed from half-way also gets the second half of the burst, once each.
    for (from, label) in [(last_rv, "last seen"), (mid_rv, "half-way")] {
        let mut expected: Vec<(&'static str, String, u64)> =
            before.iter().filter(|e| e.2 > from).cloned().collect();
        expected.extend(post.iter().cloned());
        let resumed: Seen = Arc::default();
        let task = tokio::spawn(record_watch(
            client(&c).await,
            ns.clone(),
            from.to_string(),
            resumed.clone(),
        ));
        wait_until(
            Duration::from_secs(60),
            &format!("the watch resumed from the {label} version to catch up"),
            || failed(&resumed) || resumed.lock().unwrap().len() >= expected.len(),
        )
        .await;
        // One more write: anything wrongly queued before it would show up by the time it does.
        let marker = format!("{PREFIX}marker-{from}");
        let cm = api
            .create(&PostParams::default(), &configmap(&marker, 0))
            .await
            .expect("marker create");
        expected.push(("ADDED", marker.clone(), rv_of(&cm.metadata)));
        post.push(("ADDED", marker, rv_of(&cm.metadata)));
        wait_until(Duration::from_secs(30), "the marker event", || {
            failed(&resumed) || resumed.lock().unwrap().len() >= expected.len()
        })
        .await;
        task.abort();
        let got = resumed.lock().unwrap().clone();
        assert_eq!(
            got, expected,
            "watch resumed from the {label} version {from} delivered the wrong events"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_acknowledged_before_a_kill_mid_burst_survive() {
    let mut c = tokio::task::block_in_place(cluster);
    let ns = "midburst".to_string();
    let admin = client(&c).await;
    create_namespace(&admin, &ns).await;

    let acked: Acked = Arc::default();
    let progress = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let cl = client(&c).await;
        writers.push(tokio::spawn(writer(
            cl,
            ns.clone(),
            w,
            PER_WRITER,
            acked.clone(),
            progress.clone(),
        )));
    }
    // Kill while the writers are in full flight.
    let p = progress.clone();
    wait_until(
        Duration::from_secs(120),
        "some creates to be acknowledged",
        || p.load(Ordering::SeqCst) >= 400,
    )
    .await;
    tokio::task::block_in_place(|| c.kill9());
    let mut failed = 0;
    for wr in writers {
        let result = tokio::time::timeout(Duration::from_secs(60), wr)
            .await
            .expect("a writer hung after the kill");
        if result.expect("writer task").is_some() {
            failed += 1;
        }
    }
    assert!(
        failed > 0,
        "no writer noticed the server was killed (the kill came too late to test anything)"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() < WRITERS * PER_WRITER);
    eprintln!(
        "killed after {} acknowledged creates; {failed} writers saw the kill",
        acked.len()
    );

    tokio::task::block_in_place(|| c.restart());
    let present = list_all(&client(&c).await, &ns).await;
    for (name, rv) in &acked {
        assert_eq!(
            present.get(name),
            Some(rv),
            "acknowledged {name} (rv {rv}) lost by kill -9"
        );
    }
    // In-flight creates may or may not have committed, but only names a writer attempted exist,
    // and each writer's commits form a prefix of its sequence (it waits for each answer).
    for name in present.keys() {
        let rest = name.strip_prefix(PREFIX).expect("prefix");
        let (w, i) = rest.split_once('-').expect("writer-index name");
        let (w, i): (usize, usize) = (w.parse().expect("writer"), i.parse().expect("index"));
        assert!(w < WRITERS && i < PER_WRITER, "unexpected object {name}");
        if i > 0 {
            assert!(
                present.contains_key(&format!("{PREFIX}{w}-{}", i - 1)),
                "{name} present but its predecessor is not"
            );
        }
    }
    assert!(
        present.len() <= acked.len() + WRITERS,
        "more objects than acknowledged plus one in flight per writer"
    );
    let max_acked = acked.values().copied().max().unwrap_or(0);
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, &ns);
    let cm = api
        .create(
            &PostParams::default(),
            &configmap(&format!("{PREFIX}after"), 0),
        )
        .await
        .expect("create after restart");
    assert!(rv_of(&cm.metadata) > max_acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_secrets_survive_kill9_and_still_decrypt() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let mut c = tokio::task::block_in_place(cluster);
    let ns = "secrets";
    create_namespace(&client(&c).await, ns).await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let api: Api<Secret> = Api::namespaced(client(&c).await, ns);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..50 {
                let name = format!("s-{w}-{i}");
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "token".to_string(),
                        ByteString(format!("value-{w}-{i}").into_bytes()),
                    )])),
                    ..Default::default()
                };
                let created = api
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("creating a secret");
                acked.push((name, rv_of(&created.metadata)));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("secret writer"));
    }
    tokio::task::block_in_place(|| c.restart());
    let api: Api<Secret> = Api::namespaced(client(&c).await, ns);
    for (name, rv) in &acked {
        let s = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("secret {name} lost by kill -9: {e}"));
        assert_eq!(rv_of(&s.metadata), *rv, "{name}");
        let (w, i) = name
            .strip_prefix("s-")
            .and_then(|r| r.split_once('-'))
            .expect("name");
        let value = s.data.and_then(|d| d.get("token").cloned()).map(|b| b.0);
        assert_eq!(
            value,
            Some(format!("value-{w}-{i}").into_bytes()),
            "{name} did not decrypt to its value"
        );
    }
}
