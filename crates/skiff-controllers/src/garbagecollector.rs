//! Garbage collector: follows ownerReferences to delete dependents whose owners are gone and to carry out Orphan and Foreground deletion.
//!
//! Like Kubernetes' garbage collector it keeps a graph of every object's uid and owners,
//! fed by one watch per resource, and reconciles one uid at a time from a de-duplicated
//! queue. The graph is only a hint: before deleting or editing anything the collector reads
//! the object again and confirms with a live GET (uid compared) that an owner is really gone,
//! so a stale graph can delay work but never delete an object whose owner exists.

use crate::resources::{Error, api_resource, dynamic_api, is_not_found, resolve_kind, status_code};
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::registry::{RESOURCES, ResourceDef};
use skiff_client::Client;
use skiff_client::kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use skiff_client::kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Finalizer the API server adds for `propagationPolicy: Orphan`.
pub const ORPHAN: &str = "orphan";
/// Finalizer the API server adds for `propagationPolicy: Foreground`.
pub const FOREGROUND: &str = "foregroundDeletion";

/// How often every object with owners or a pending GC finalizer is checked again, as a safety
/// net for missed events. Checks answered from the graph cost no API call.
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// One ownerReference, reduced to what the collector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

impl OwnerRef {
    fn from_meta(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Self {
        OwnerRef {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            block_owner_deletion: r.block_owner_deletion.unwrap_or(false),
        }
    }
}

/// One object in the ownership graph.
#[derive(Debug, Clone)]
pub struct Node {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerRef>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    /// The graph node of a watched object; `None` for objects without name or uid.
    pub fn from_object(def: &'static ResourceDef, obj: &DynamicObject) -> Option<Node> {
        let m = &obj.metadata;
        Some(Node {
            def,
            namespace: m.namespace.clone().filter(|_| def.namespaced),
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            owners: m
                .owner_references
                .iter()
                .flatten()
                .map(OwnerRef::from_meta)
                .collect(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        })
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Deleted in the foreground: its dependents go first.
    pub fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    /// Whether the collector has anything to check for this object.
    pub fn needs_attention(&self) -> bool {
        !self.owners.is_empty()
            || (self.deleting && (self.has_finalizer(ORPHAN) || self.has_finalizer(FOREGROUND)))
    }
}

/// The ownership graph: every watched object by uid, and the dependents of every owner uid
/// (also of owners that are not, or no longer, in the graph).
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The objects whose ownerReferences name `owner_uid`.
    pub fn dependents(&self, owner_uid: &str) -> Vec<Node> {
        self.dependents
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid).cloned())
            .collect()
    }

    /// Adds or replaces a node; returns the uids to reconcile because of the change.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let mut touched = vec![node.uid.clone()];
        if let Some(old) = self.nodes.remove(&node.uid) {
            touched.extend(self.unlink(&old));
        }
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(node.uid.clone());
            touched.push(r.uid.clone());
        }
        self.nodes.insert(node.uid.clone(), node);
        dedup(touched)
    }

    /// Removes a deleted object; returns its owners (one of them may be waiting for it) and
    /// its dependents (they may have lost their last owner).
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(old) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut touched = self.unlink(&old);
        touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        dedup(touched)
    }

    /// Drops the nodes of `def` that a fresh list did not return (deleted while unwatched).
    pub fn retain_listed(&mut self, def: &ResourceDef, listed: &HashSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.def == def && !listed.contains(&n.uid))
            .map(|n| n.uid.clone())
            .collect();
        gone.iter().flat_map(|uid| self.remove(uid)).collect()
    }

    /// Every uid the periodic resync should look at again.
    pub fn needing_attention(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.needs_attention())
            .map(|n| n.uid.clone())
            .collect()
    }

    fn unlink(&mut self, old: &Node) -> Vec<String> {
        let mut owners = Vec::new();
        for r in &old.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(&old.uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            owners.push(r.uid.clone());
        }
        owners
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// What is known about one owner of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not being deleted in the foreground (or cannot be checked): keeps the object.
    Solid,
    /// Exists and is being deleted in the foreground: waits for its dependents.
    Waiting,
    /// Confirmed gone (not found, or the name now belongs to another uid).
    Absent,
}

/// What to do with an object, given the state of each of its owners.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Keep,
    /// Keep the object but drop the ownerReferences with these uids.
    RemoveOwnerRefs(Vec<String>),
    Delete(PropagationPolicy),
}

/// Kubernetes' rule: an object with a solid owner stays (references to gone or
/// foreground-deleted owners are dropped); otherwise it is deleted — in the foreground when a
/// waiting owner asked to be blocked by it, so its own dependents go first.
pub fn verdict(owners: &[(OwnerRef, OwnerState)]) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    if owners.iter().any(|(_, s)| *s == OwnerState::Solid) {
        let drop: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(r, _)| r.uid.clone())
            .collect();
        return if drop.is_empty() {
            Verdict::Keep
        } else {
            Verdict::RemoveOwnerRefs(drop)
        };
    }
    let blocking = owners
        .iter()
        .any(|(r, s)| *s == OwnerState::Waiting && r.block_owner_deletion);
    if blocking {
        Verdict::Delete(PropagationPolicy::Foreground)
    } else {
        Verdict::Delete(PropagationPolicy::Background)
    }
}

/// A de-duplicated FIFO of uids for the single reconcile worker.
#[derive(Default)]
struct Queue {
    items: Mutex<(VecDeque<String>, HashSet<String>)>,
    notify: Notify,
}

impl Queue {
    fn push_all(&self, uids: impl IntoIterator<Item = String>) {
        let mut added = false;
        {
            let mut guard = lock(&self.items);
            let (fifo, pending) = &mut *guard;
            for uid in uids {
                if pending.insert(uid.clone()) {
                    fifo.push_back(uid);
                    added = true;
                }
            }
        }
        if added {
            self.notify.notify_one();
        }
    }

    async fn pop(&self) -> String {
        loop {
            {
                let mut guard = lock(&self.items);
                let (fifo, pending) = &mut *guard;
                if let Some(uid) = fifo.pop_front() {
                    pending.remove(&uid);
                    return uid;
                }
            }
            self.notify.notified().await;
        }
    }
}

/// A poisoned lock only means another task panicked mid-update of plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    client: Client,
    graph: Mutex<Graph>,
    queue: Queue,
}

impl Shared {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        lock(&self.graph)
    }
}

/// Starts the garbage collector; aborting the handle stops its watches and worker.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let shared = Arc::new(Shared {
        client,
        graph: Mutex::new(Graph::default()),
        queue: Queue::default(),
    });
    // Dropping the set (when this task is aborted) aborts the watches too.
    let mut tasks = JoinSet::new();
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(0usize);
    let synced_tx = Arc::new(synced_tx);
    for def in RESOURCES {
        tasks.spawn(watch_resource(def, shared.clone(), synced_tx.clone()));
    }
    // Acting before every resource is listed could miss dependents (an orphaned owner would
    // release its finalizer with dependents still pointing at it), so wait for all lists.
    loop {
        let all = RESOURCES.len();
        let waited = tokio::time::timeout(RESYNC_PERIOD, synced_rx.wait_for(|n| *n >= all))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => break,
            Ok(false) => return,
            Err(_) => tracing::warn!(
                synced = *synced_rx.borrow(),
                resources = all,
                "garbage collector still waiting for its watches to list every resource"
            ),
        }
    }
    tracing::info!(resources = RESOURCES.len(), "garbage collector synced");
    tasks.spawn(resync(Arc::downgrade(&shared)));
    let mut failures: HashMap<String, u32> = HashMap::new();
    loop {
        let uid = shared.queue.pop().await;
        match reconcile(&shared, &uid).await {
            Ok(()) => {
                failures.remove(&uid);
            }
            Err(e) => {
                let n = failures.entry(uid.clone()).or_insert(0);
                *n = n.saturating_add(1);
                let delay = RETRY_BASE
                    .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(8)))
                    .min(RETRY_MAX);
                tracing::debug!(%uid, error = %e, ?delay, "garbage collection step failed; retrying");
                let weak = Arc::downgrade(&shared);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(shared) = weak.upgrade() {
                        shared.queue.push_all([uid]);
                    }
                });
            }
        }
    }
}

async fn watch_resource(
    def: &'static ResourceDef,
    shared: Arc<Shared>,
    synced: Arc<tokio::sync::watch::Sender<usize>>,
) {
    let api: Api<DynamicObject> = Api::all_with(shared.client.clone(), &api_resource(def));
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_sync = true;
    while let Some(event) = stream.next().await {
        let touched = match event {
            Ok(watcher::Event::Init) => {
                listed.clear();
                Vec::new()
            }
            Ok(watcher::Event::InitApply(obj)) => match Node::from_object(def, &obj) {
                Some(node) => {
                    listed.insert(node.uid.clone());
                    shared.graph().upsert(node)
                }
                None => Vec::new(),
            },
            Ok(watcher::Event::InitDone) => {
                let touched = shared.graph().retain_listed(def, &listed);
                listed.clear();
                if first_sync {
                    first_sync = false;
                    synced.send_modify(|n| *n += 1);
                }
                touched
            }
            Ok(watcher::Event::Apply(obj)) => match Node::from_object(def, &obj) {
                Some(node) => shared.graph().upsert(node),
                None => Vec::new(),
            },
            Ok(watcher::Event::Delete(obj)) => match &obj.metadata.uid {
                Some(uid) => shared.graph().remove(uid),
                None => Vec::new(),
            },
            Err(e) => {
                tracing::debug!(resource = def.plural, error = %e, "garbage collector watch failed; backing off");
                Vec::new()
            }
        };
        // Only uids the graph knows can be reconciled; the rest are owners outside it.
        let known: Vec<String> = {
            let graph = shared.graph();
            touched
                .into_iter()
                .filter(|u| graph.get(u).is_some_and(Node::needs_attention))
                .collect()
        };
        shared.queue.push_all(known);
    }
}

async fn resync(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(RESYNC_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let uids = shared.graph().needing_attention();
        shared.queue.push_all(uids);
    }
}

/// Brings one object in line with the ownership rules. Idempotent: every step re-reads what
/// it changes and is guarded by uid and resourceVersion preconditions.
async fn reconcile(shared: &Shared, uid: &str) -> Result<(), Error> {
    let Some(node) = shared.graph().get(uid).cloned() else {
        return Ok(());
    };
    if node.deleting {
        if node.has_finalizer(ORPHAN) {
            return orphan_dependents(shared, &node).await;
        }
        if node.has_finalizer(FOREGROUND) {
            return delete_dependents_first(shared, &node).await;
        }
        return Ok(());
    }
    if node.owners.is_empty() {
        return Ok(());
    }
    collect_if_unowned(shared, &node).await
}

/// Orphan deletion: dependents lose their reference to the owner and stay; then the owner's
/// `orphan` finalizer goes and the API server removes it.
async fn orphan_dependents(shared: &Shared, owner: &Node) -> Result<(), Error> {
    let dependents = shared.graph().dependents(&owner.uid);
    for dep in &dependents {
        remove_owner_refs(shared, dep, std::slice::from_ref(&owner.uid)).await?;
    }
    remove_finalizer(shared, owner, ORPHAN).await
}

/// Foreground deletion: the dependents are deleted first; once none is left the owner's
/// `foregroundDeletion` finalizer goes and the API server removes it.
async fn delete_dependents_first(shared: &Shared, owner: &Node) -> Result<(), Error> {
    let dependents = shared.graph().dependents(&owner.uid);
    if dependents.is_empty() {
        return remove_finalizer(shared, owner, FOREGROUND).await;
    }
    // Each dependent decides for itself (it may have another, solid owner); their deletion
    // events bring the owner back here.
    let mut pending = Vec::new();
    for dep in dependents {
        if !dep.deleting {
            pending.push(dep.uid);
        }
    }
    shared.queue.push_all(pending);
    Ok(())
}

/// Deletes an object whose owners are all gone (or waiting for it), or drops the references
/// to gone owners when a solid owner remains.
async fn collect_if_unowned(shared: &Shared, node: &Node) -> Result<(), Error> {
    // A cheap first pass from the graph: owners it knows and that are not being deleted in
    // the foreground keep the object, and most objects stop here without an API call.
    let all_solid = {
        let graph = shared.graph();
        node.owners.iter().all(|r| {
            graph
                .get(&r.uid)
                .is_some_and(|o| !o.waiting_for_dependents() && !o.deleting)
        })
    };
    if all_solid {
        return Ok(());
    }
    // Something may have to change: re-read the object and check each owner for real.
    let api = dynamic_api(&shared.client, node.def, node.namespace.as_deref());
    let Some(live) = api.get_opt(&node.name).await? else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(node.uid.as_str())
        || live.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let refs: Vec<OwnerRef> = live
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(OwnerRef::from_meta)
        .collect();
    let mut states = Vec::with_capacity(refs.len());
    for r in refs {
        let state = owner_state(shared, node, &r).await?;
        states.push((r, state));
    }
    match verdict(&states) {
        Verdict::Keep => Ok(()),
        Verdict::RemoveOwnerRefs(uids) => remove_owner_refs(shared, node, &uids).await,
        Verdict::Delete(policy) => {
            tracing::info!(
                resource = node.def.plural,
                namespace = node.namespace.as_deref().unwrap_or(""),
                name = %node.name,
                ?policy,
                "deleting object whose owners are gone or being deleted"
            );
            let dp = DeleteParams {
                propagation_policy: Some(policy),
                preconditions: Some(Preconditions {
                    uid: Some(node.uid.clone()),
                    resource_version: live.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(&node.name, &dp).await {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The state of one owner of `dependent`. Only a live GET (uid compared) may call an owner
/// absent; a kind the server does not know is treated as solid, since it cannot be checked.
async fn owner_state(shared: &Shared, dependent: &Node, r: &OwnerRef) -> Result<OwnerState, Error> {
    let Some(def) = resolve_kind(&r.api_version, &r.kind) else {
        return Ok(OwnerState::Solid);
    };
    let namespace = if def.namespaced {
        match &dependent.namespace {
            Some(ns) => Some(ns.as_str()),
            // A cluster-scoped object cannot be owned by a namespaced one; leave it alone.
            None => return Ok(OwnerState::Solid),
        }
    } else {
        None
    };
    let api = dynamic_api(&shared.client, def, namespace);
    let Some(owner) = api.get_opt(&r.name).await? else {
        return Ok(OwnerState::Absent);
    };
    if owner.metadata.uid.as_deref() != Some(r.uid.as_str()) {
        return Ok(OwnerState::Absent);
    }
    let foreground = owner.metadata.deletion_timestamp.is_some()
        && owner
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FOREGROUND);
    Ok(if foreground {
        OwnerState::Waiting
    } else {
        OwnerState::Solid
    })
}

/// Drops the ownerReferences with `uids` from the live object (no-op when none is left).
async fn remove_owner_refs(shared: &Shared, node: &Node, uids: &[String]) -> Result<(), Error> {
    let api = dynamic_api(&shared.client, node.def, node.namespace.as_deref());
    let Some(live) = api.get_opt(&node.name).await? else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(node.uid.as_str()) {
        return Ok(());
    }
    let refs = live.metadata.owner_references.clone().unwrap_or_default();
    let kept: Vec<_> = refs
        .iter()
        .filter(|r| !uids.contains(&r.uid))
        .cloned()
        .collect();
    if kept.len() == refs.len() {
        return Ok(());
    }
    let value = if kept.is_empty() {
        Value::Null
    } else {
        serde_json::to_value(&kept).map_err(|e| Error::Invalid(e.to_string()))?
    };
    patch_metadata(&api, &node.name, &live, "ownerReferences", value).await
}

/// Removes `finalizer` from the live object; the API server deletes it if it was the last.
async fn remove_finalizer(shared: &Shared, node: &Node, finalizer: &str) -> Result<(), Error> {
    let api = dynamic_api(&shared.client, node.def, node.namespace.as_deref());
    let Some(live) = api.get_opt(&node.name).await? else {
        return Ok(());
    };
    if live.metadata.uid.as_deref() != Some(node.uid.as_str()) {
        return Ok(());
    }
    let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
    let kept: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    if kept.len() == finalizers.len() {
        return Ok(());
    }
    let value = if kept.is_empty() {
        Value::Null
    } else {
        json!(kept)
    };
    patch_metadata(&api, &node.name, &live, "finalizers", value).await
}

/// A merge patch of one metadata field, guarded by the resourceVersion that was read (a
/// conflict means someone else wrote in between; the step is retried on fresh data).
async fn patch_metadata(
    api: &Api<DynamicObject>,
    name: &str,
    live: &DynamicObject,
    field: &str,
    value: Value,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {
            "resourceVersion": live.metadata.resource_version,
            field: value,
        }
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            if status_code(&e) == Some(409) {
                tracing::debug!(name, field, "conflict while patching; will retry");
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::registry::lookup;

    fn cm() -> &'static ResourceDef {
        lookup("", "v1", "configmaps").expect("configmaps are served")
    }

    fn owner_ref(uid: &str, block: bool) -> OwnerRef {
        OwnerRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("owner-{uid}"),
            uid: uid.into(),
            block_owner_deletion: block,
        }
    }

    fn node(uid: &str, owners: &[&str]) -> Node {
        Node {
            def: cm(),
            namespace: Some("default".into()),
            name: format!("cm-{uid}"),
            uid: uid.into(),
            owners: owners.iter().map(|o| owner_ref(o, false)).collect(),
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn graph_tracks_dependents_across_updates_and_removal() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        let touched = g.upsert(node("a", &["owner"]));
        assert_eq!(touched, vec!["a".to_string(), "owner".to_string()]);
        g.upsert(node("b", &["owner"]));
        assert_eq!(g.dependents("owner").len(), 2);
        // b is re-parented: it leaves the old owner's dependents, and both owners are touched.
        let touched = g.upsert(node("b", &["other"]));
        assert!(touched.contains(&"owner".to_string()) && touched.contains(&"other".to_string()));
        assert_eq!(g.dependents("owner").len(), 1);
        // Removing the owner touches its dependents, which still point at its uid.
        let touched = g.remove("owner");
        assert_eq!(touched, vec!["a".to_string()]);
        assert_eq!(g.dependents("owner").len(), 1);
        g.remove("a");
        assert!(g.dependents("owner").is_empty());
        assert!(g.remove("a").is_empty());
    }

    #[test]
    fn retain_listed_removes_objects_deleted_while_unwatched() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("a", &["owner"]));
        let listed: HashSet<String> = ["a".to_string()].into();
        let touched = g.retain_listed(cm(), &listed);
        assert_eq!(touched, vec!["a".to_string()]);
        assert!(g.get("owner").is_none());
        assert!(g.get("a").is_some());
    }

    #[test]
    fn attention_is_only_for_owned_or_gc_finalized_objects() {
        let mut plain = node("x", &[]);
        assert!(!plain.needs_attention());
        plain.deleting = true;
        plain.finalizers = vec!["example.com/keep".into()];
        assert!(!plain.needs_attention());
        plain.finalizers.push(FOREGROUND.into());
        assert!(plain.needs_attention() && plain.waiting_for_dependents());
        assert!(node("y", &["x"]).needs_attention());
    }

    #[test]
    fn verdict_follows_kubernetes_rules() {
        use OwnerState::*;
        assert_eq!(verdict(&[]), Verdict::Keep);
        assert_eq!(verdict(&[(owner_ref("a", false), Solid)]), Verdict::Keep);
        assert_eq!(
            verdict(&[(owner_ref("a", false), Absent)]),
            Verdict::Delete(PropagationPolicy::Background)
        );
        // A solid owner keeps the object; references to gone and waiting owners are dropped.
        assert_eq!(
            verdict(&[
                (owner_ref("a", false), Absent),
                (owner_ref("b", true), Solid),
                (owner_ref("c", true), Waiting),
            ]),
            Verdict::RemoveOwnerRefs(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            verdict(&[
                (owner_ref("a", true), Waiting),
                (owner_ref("b", false), Absent)
            ]),
            Verdict::Delete(PropagationPolicy::Foreground)
        );
        assert_eq!(
            verdict(&[(owner_ref("a", false), Waiting)]),
            Verdict::Delete(PropagationPolicy::Background)
        );
    }

    #[tokio::test]
    async fn queue_deduplicates_pending_uids() {
        let q = Queue::default();
        q.push_all(["a".to_string(), "b".to_string(), "a".to_string()]);
        q.push_all(["b".to_string()]);
        assert_eq!(q.pop().await, "a");
        assert_eq!(q.pop().await, "b");
        // Once popped, a uid can be queued again.
        q.push_all(["a".to_string()]);
        assert_eq!(q.pop().await, "a");
        assert!(lock(&q.items).0.is_empty());
    }
}
