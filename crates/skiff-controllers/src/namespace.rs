//! Namespace lifecycle: empties a terminating namespace, then releases its `kubernetes` finalizer so the API server removes it.
//!
//! One task per terminating namespace deletes every namespaced object in it (Background
//! propagation, like Kubernetes), and polls with a growing delay until nothing is left —
//! objects with finalizers or pods shutting down gracefully hold the namespace, as in
//! Kubernetes. Then it removes `kubernetes` from `spec.finalizers` through the `finalize`
//! subresource. Every step re-reads the namespace, so a restart simply starts over.

use crate::resources::{Error, dynamic_api, is_not_found};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use skiff_api::registry::{RESOURCES, ResourceDef};
use skiff_client::Client;
use skiff_client::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use skiff_client::kube::runtime::{WatchStreamExt, watcher};
use std::collections::HashSet;
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
            Err(e) => {
                tracing::warn!(namespace = %name, error = %e, "namespace cleanup step failed")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(POLL_MAX);
    }
}

/// One idempotent pass: delete what is left, and finalize when nothing is.
async fn step(client: &Client, name: &str) -> Result<Progress, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = namespaces.get_opt(name).await? else {
        return Ok(Progress::Done);
    };
    if terminating(&ns).is_none() {
        return Ok(Progress::Done);
    }
    let mut remaining = 0;
    for def in namespaced_resources() {
        remaining += delete_all(client, def, name).await?;
    }
    if remaining > 0 {
        return Ok(Progress::Remaining(remaining));
    }
    let mut finalized = ns.clone();
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

/// Deletes every object of `def` in `namespace`; returns how many still exist afterwards.
async fn delete_all(client: &Client, def: &ResourceDef, namespace: &str) -> Result<usize, Error> {
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
            Err(e) if is_not_found(&e) || crate::resources::status_code(&e) == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if listed.items.is_empty() {
        return Ok(0);
    }
    if !deleted_any {
        return Ok(listed.items.len());
    }
    Ok(api.list(&ListParams::default()).await?.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

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
}
