//! Namespace lifecycle: empties a terminating namespace, then releases its `kubernetes` finalizer so the API server removes it.
//!
//! One task per terminating namespace deletes every namespaced object in it (Background
//! propagation, like Kubernetes), and polls with a growing delay until nothing is left —
//! objects with finalizers or pods shutting down gracefully hold the namespace, as in
//! Kubernetes. Then it removes `kubernetes` from `spec.finalizers` through the `finalize`
//! subresource. Every step re-reads the namespace, so a restart simply starts over.

use crate::resources::{Error, dynamic_api, is_not_found, status_code};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use skiff_api::registry::{RESOURCES, ResourceDef};
use skiff_client::Client;
use skiff_client::kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use skiff_client::kube::runtime::{WatchStreamExt, watcher};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tokio::task::JoinSet;

/// The finalizer the namespace controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(10);

/// Starts the namespace controller; aborting the handle stops it and its per-namespace tasks.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let stream = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let mut active: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(ns)) => {
                    if let Some(name) = terminating(&ns)
                        && active.insert(name.clone())
                    {
                        tasks.spawn(finalize_when_empty(client.clone(), name));
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "namespace watch failed; backing off"),
                None => return,
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(name) = done {
                    active.remove(&name);
                }
            }
        }
    }
}

/// The name of a namespace that is being deleted and still carries our finalizer.
fn terminating(ns: &Namespace) -> Option<String> {
    ns.metadata.deletion_timestamp.as_ref()?;
    has_finalizer(ns).then(|| ns.metadata.name.clone())?
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// The resources whose objects live in namespaces.
fn namespaced_resources() -> impl Iterator<Item = &'static ResourceDef> {
    RESOURCES.iter().filter(|d| d.namespaced)
}

enum Progress {
    Done,
    Remaining(usize),
}

/// Drives one terminating namespace to removal; returns its name when done.
async fn finalize_when_empty(client: Client, name: String) -> String {
    let mut delay = POLL_FIRST;
    let mut last_remaining = None;
    loop {
        match step(&client, &name).await {
            Ok(Progress::Done) => return name,
            Ok(Progress::Remaining(n)) => {
                if last_remaining != Some(n) {
                    tracing::debug!(namespace = %name, remaining = n, "waiting for namespace content to go");
                    last_remaining = Some(n);
                    // New progress: look again soon.
                    delay = POLL_FIRST;
                }
            }
            // A conflict only means the namespace changed under us; the next pass re-reads it.
            Err(Error::Kube(e)) if status_code(&e) == Some(409) => {
                tracing::debug!(namespace = %name, "namespace changed during cleanup; retrying")
            }
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "namespace cleanup step failed")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(POLL_MAX);
    }
}

/// One idempotent pass: delete what is left, report it in the conditions, and finalize when
/// nothing is left.
async fn step(client: &Client, name: &str) -> Result<Progress, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Progress::Done);
    };
    if terminating(&ns).is_none() {
        return Ok(Progress::Done);
    }
    let mut content = Content::default();
    for def in namespaced_resources() {
        if let Err(e) = delete_all(client, def, name, &mut content).await {
            content
                .failures
                .push(format!("{}: {e}", group_resource(def)));
        }
    }
    // Finalize what the status write returned: the namespace read above is now stale.
    let ns = update_conditions(&namespaces, &ns, &content)
        .await
        .unwrap_or(ns);
    if !content.is_empty() {
        return Ok(Progress::Remaining(content.remaining.values().sum()));
    }
    let mut finalized = ns;
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = spec
            .finalizers
            .take()
            .map(|f| f.into_iter().filter(|x| x != FINALIZER).collect());
    }
    match namespaces
        .replace_subresource("finalize", name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = %name, "namespace emptied and finalized");
            Ok(Progress::Done)
        }
        Err(e) if is_not_found(&e) => Ok(Progress::Done),
        Err(e) => Err(e.into()),
    }
}

/// What one pass found left in a namespace.
#[derive(Debug, Default)]
struct Content {
    /// Objects still present, by `resource.group`.
    remaining: BTreeMap<String, usize>,
    /// Finalizers on the objects still present, with how many objects carry each.
    finalizers: BTreeMap<String, usize>,
    /// Resources whose listing or deletion failed.
    failures: Vec<String>,
}

impl Content {
    fn is_empty(&self) -> bool {
        self.remaining.is_empty() && self.failures.is_empty()
    }

    fn record(&mut self, def: &ResourceDef, obj: &DynamicObject) {
        *self.remaining.entry(group_resource(def)).or_default() += 1;
        for f in obj.metadata.finalizers.iter().flatten() {
            *self.finalizers.entry(f.clone()).or_default() += 1;
        }
    }
}

/// `configmaps.` / `deployments.apps`, the way Kubernetes names resources in conditions.
fn group_resource(def: &ResourceDef) -> String {
    format!("{}.{}", def.plural, def.group)
}

/// Deletes every object of `def` in `namespace` and records what is still there afterwards.
async fn delete_all(
    client: &Client,
    def: &ResourceDef,
    namespace: &str,
    content: &mut Content,
) -> Result<(), Error> {
    let api = dynamic_api(client, def, Some(namespace));
    let listed = api.list(&ListParams::default()).await?;
    let mut deleted_any = false;
    for obj in &listed.items {
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(obj_name) = obj.metadata.name.as_deref() else {
            continue;
        };
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(obj_name, &dp).await {
            Ok(_) => deleted_any = true,
            // Gone already, or replaced by a new object: the next pass sees it.
            Err(e) if is_not_found(&e) || status_code(&e) == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let left = if deleted_any {
        api.list(&ListParams::default()).await?.items
    } else {
        listed.items
    };
    for obj in &left {
        content.record(def, obj);
    }
    Ok(())
}

/// The deletion conditions Kubernetes' namespace controller reports, for `content`.
fn deletion_conditions(content: &Content) -> Vec<(&'static str, bool, &'static str, String)> {
    let failure = if content.failures.is_empty() {
        (
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        )
    } else {
        (
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                content.failures.len(),
                content.failures.join(", ")
            ),
        )
    };
    let remaining = if content.remaining.is_empty() {
        (
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".to_string(),
        )
    } else {
        let parts: Vec<String> = content
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if content.finalizers.is_empty() {
        (
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".to_string(),
        )
    } else {
        let parts: Vec<String> = content
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    vec![failure, remaining, finalizers]
}

/// Writes the deletion conditions to `status.conditions` when they changed, so `kubectl
/// describe namespace` shows what a stuck namespace waits for. Best effort: a failure here
/// must not hold up the deletion itself. Returns the namespace as written, if it was.
async fn update_conditions(
    namespaces: &Api<Namespace>,
    ns: &Namespace,
    content: &Content,
) -> Option<Namespace> {
    let current = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut changed = false;
    let mut next: Vec<NamespaceCondition> = current
        .iter()
        .filter(|c| !DELETION_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    for (type_, status, reason, message) in deletion_conditions(content) {
        let status = if status { "True" } else { "False" };
        let old = current.iter().find(|c| c.type_ == type_);
        let same = old.is_some_and(|c| {
            c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str())
        });
        changed |= !same;
        let since = old
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        next.push(NamespaceCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(since),
        });
    }
    if !changed {
        return None;
    }
    let name = ns.metadata.name.as_deref()?;
    let patch = json!({"status": {"conditions": next}});
    match namespaces
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(written) => Some(written),
        Err(e) => {
            tracing::debug!(namespace = name, error = %e, "could not update namespace conditions");
            None
        }
    }
}

const DELETION_CONDITIONS: &[&str] = &[
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ns(deleting: bool, finalizers: Option<Vec<&str>>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("ml".into()),
                deletion_timestamp: deleting
                    .then_some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            spec: Some(NamespaceSpec {
                finalizers: finalizers.map(|f| f.into_iter().map(String::from).collect()),
            }),
            status: None,
        }
    }

    #[test]
    fn only_terminating_namespaces_with_our_finalizer_are_worked_on() {
        assert_eq!(
            terminating(&ns(true, Some(vec![FINALIZER]))),
            Some("ml".into())
        );
        assert_eq!(terminating(&ns(false, Some(vec![FINALIZER]))), None);
        assert_eq!(terminating(&ns(true, Some(vec![]))), None);
        assert_eq!(
            terminating(&ns(true, Some(vec!["example.com/other"]))),
            None
        );
        assert_eq!(terminating(&ns(true, None)), None);
    }

    #[test]
    fn namespaced_resources_excludes_cluster_scoped_ones() {
        let plurals: Vec<_> = namespaced_resources().map(|d| d.plural).collect();
        assert!(plurals.contains(&"configmaps") && plurals.contains(&"deployments"));
        assert!(!plurals.contains(&"namespaces") && !plurals.contains(&"nodes"));
    }

    #[test]
    fn conditions_say_what_holds_the_namespace() {
        let clear = deletion_conditions(&Content::default());
        assert!(clear.iter().all(|(_, status, _, _)| !status));
        let mut content = Content::default();
        let cm = skiff_api::registry::lookup("", "v1", "configmaps").expect("served");
        let obj: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "held", "finalizers": ["example.com/hold"]}
        }))
        .expect("object");
        content.record(cm, &obj);
        content.record(cm, &obj);
        content.failures.push("pods.: boom".into());
        let conds = deletion_conditions(&content);
        assert!(conds.iter().all(|(_, status, _, _)| *status));
        assert_eq!(
            conds[1].3,
            "Some resources are remaining: configmaps. has 2 resource instances"
        );
        assert_eq!(
            conds[2].3,
            "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"
        );
        assert!(conds[0].3.contains("pods.: boom"));
        assert!(!content.is_empty());
    }
}
