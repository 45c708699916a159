//! Deployment controller: rolls ReplicaSets (RollingUpdate or Recreate), keeps revisions and reports rollout status.
//!
//! The logic follows Kubernetes' deployment controller: the "new" ReplicaSet is the one whose
//! template equals the Deployment's (ignoring `pod-template-hash`), every other one is "old";
//! a rolling update scales the new one up within `maxSurge` and old ones down within
//! `maxUnavailable`, counting only available pods. Like the ReplicaSet controller, each
//! reconcile reads its objects live from the API, so it never acts on a lagging watch cache.
//!
//! Pod-template hash: Kubernetes hashes Go's `spew` dump of the template, which cannot be
//! reproduced outside Go. Skiff hashes the template's canonical JSON (k8s-openapi's fixed
//! field order, sorted maps) with FNV-32a, appends `collisionCount` as 4 little-endian bytes
//! like Kubernetes does, and encodes the decimal hash with Kubernetes' safe alphabet. The
//! result is stable across restarts and versions of skiff, but differs from Kubernetes' value.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::workload::{
    ReconcileError, controller_ref, is_conflict, is_not_found, owner_ref, selector_matches,
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Annotations of the Deployment that are not copied onto its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const RESYNC: Duration = Duration::from_secs(300);

struct Ctx {
    client: Client,
}

/// Starts the Deployment controller; aborting the handle stops it.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let d_api: Api<Deployment> = Api::all(client.clone());
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(d_api, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(rs_api.clone(), watcher::Config::default())
        // Orphan ReplicaSets a Deployment's selector matches are candidates for adoption.
        .watches(rs_api, watcher::Config::default(), move |rs: ReplicaSet| {
            if controller_ref(&rs.metadata).is_some() {
                return Vec::new();
            }
            let ns = rs.namespace();
            store
                .state()
                .into_iter()
                .filter(|d| d.namespace() == ns)
                .filter(|d| {
                    d.spec
                        .as_ref()
                        .is_some_and(|s| selector_matches(&s.selector, rs.metadata.labels.as_ref()))
                })
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect()
        })
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "deployment reconcile");
            }
        })
        .await;
}

fn error_policy(_d: Arc<Deployment>, err: &ReconcileError, _ctx: Arc<Ctx>) -> Action {
    if err.is_conflict() {
        Action::requeue(Duration::from_millis(50))
    } else {
        tracing::warn!(error = %err, "deployment reconcile failed");
        Action::requeue(Duration::from_secs(1))
    }
}

async fn reconcile(obj: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(d) = d_api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if d.spec.is_none() {
        return Ok(Action::await_change());
    }
    let mut s = Sync {
        rs_api: Api::namespaced(ctx.client.clone(), &ns),
        pod_api: Api::namespaced(ctx.client.clone(), &ns),
        d_api,
        d,
        requeue: None,
    };
    let rss = s.claim_replica_sets().await?;
    if s.d.metadata.deletion_timestamp.is_some() {
        let (new, old) = s.split(rss);
        s.sync_status(new.as_ref(), &old).await?;
        return Ok(s.action());
    }
    s.check_paused_conditions().await?;
    let paused = s.spec().paused.unwrap_or(false);
    if paused || s.is_scaling_event(&rss) {
        s.sync(rss).await?;
    } else if is_recreate(s.spec()) {
        s.rollout_recreate(rss).await?;
    } else {
        s.rollout_rolling(rss).await?;
    }
    Ok(s.action())
}

/// One reconcile of one Deployment; `d` is kept equal to the last version written or read.
struct Sync {
    d_api: Api<Deployment>,
    rs_api: Api<ReplicaSet>,
    pod_api: Api<Pod>,
    d: Deployment,
    requeue: Option<Duration>,
}

impl Sync {
    fn spec(&self) -> &DeploymentSpec {
        // `reconcile` returns early for a Deployment without a spec.
        static EMPTY: std::sync::OnceLock<DeploymentSpec> = std::sync::OnceLock::new();
        self.d
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(DeploymentSpec::default))
    }

    fn replicas(&self) -> i32 {
        self.spec().replicas.unwrap_or(1)
    }

    fn action(&self) -> Action {
        Action::requeue(self.requeue.unwrap_or(RESYNC))
    }

    fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    /// Lists the namespace's ReplicaSets and keeps the Deployment's: adopts matching orphans,
    /// releases owned ones that no longer match.
    async fn claim_replica_sets(&mut self) -> Result<Vec<ReplicaSet>, ReconcileError> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let selector = self.spec().selector.clone();
        let all = self.rs_api.list(&ListParams::default()).await?.items;
        let mut owned = Vec::new();
        for rs in all {
            let matches = selector_matches(&selector, rs.metadata.labels.as_ref());
            match controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(rs);
                    } else {
                        let refs: Vec<_> = rs
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|o| o.uid != uid)
                            .cloned()
                            .collect();
                        self.patch_rs_meta(&rs, json!(refs)).await?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(owner_ref(&self.d));
                    if let Some(rs) = self.patch_rs_meta(&rs, json!(refs)).await? {
                        owned.push(rs);
                    }
                }
                None => {}
            }
        }
        owned.sort_by(|a, b| {
            let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        Ok(owned)
    }

    async fn patch_rs_meta(
        &self,
        rs: &ReplicaSet,
        refs: Value,
    ) -> Result<Option<ReplicaSet>, ReconcileError> {
        let patch = json!({"metadata": {
            "resourceVersion": rs.metadata.resource_version,
            "ownerReferences": refs,
        }});
        match self
            .rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Splits the owned ReplicaSets into the new one (oldest whose template equals the
    /// Deployment's) and the old ones.
    fn split(&self, rss: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = self.spec().template.clone();
        let mut new = None;
        let mut old = Vec::new();
        for rs in rss {
            let same = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template));
            if same && new.is_none() {
                new = Some(rs);
            } else {
                old.push(rs);
            }
        }
        (new, old)
    }

    /// Kubernetes' `getAllReplicaSetsAndSyncRevision`: finds (or, with `create`, creates) the
    /// new ReplicaSet, gives it revision max(old)+1 and brings its annotations up to date.
    async fn new_and_old(
        &mut self,
        rss: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), ReconcileError> {
        let (new, old) = self.split(rss);
        let new_revision = old.iter().map(revision).max().unwrap_or(0) + 1;
        let has_deadline = has_progress_deadline(self.spec());
        if let Some(mut rs) = new {
            let mut updated = rs.clone();
            self.set_new_rs_annotations(&mut updated, new_revision, false);
            if let Some(spec) = updated.spec.as_mut() {
                spec.min_ready_seconds = self.spec().min_ready_seconds;
            }
            if updated != rs {
                rs = self
                    .rs_api
                    .replace(&rs.name_any(), &PostParams::default(), &updated)
                    .await?;
            }
            self.set_deployment_revision(revision(&rs)).await?;
            if has_deadline && condition(&self.d, "Progressing").is_none() {
                let mut status = self.d.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
                self.write_status(status).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = self
            .d
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let hash = pod_template_hash(&self.spec().template, collision)?;
        let mut template = self.spec().template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = self.spec().selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        let name = format!("{}-{}", self.d.name_any(), hash);
        let all: Vec<&ReplicaSet> = old.iter().collect();
        let replicas = self.new_rs_new_replicas(&all, None);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels,
                owner_references: Some(vec![owner_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: self.spec().min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        self.set_new_rs_annotations(&mut rs, new_revision, true);
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(e) if is_conflict(&e) => {
                // The name is taken: ours after a lost response, or a hash collision.
                let existing = self.rs_api.get(&name).await?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &self.spec().template));
                if ours && same {
                    return Ok((Some(existing), old));
                }
                let mut status = self.d.status.clone().unwrap_or_default();
                status.collision_count = Some(collision.saturating_add(1));
                self.write_status(status).await?;
                return Err(ReconcileError::Kube(e));
            }
            Err(e) => return Err(e.into()),
        };
        self.set_deployment_revision(new_revision).await?;
        if has_deadline {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                ),
            );
            self.write_status(status).await?;
        }
        Ok((Some(created), old))
    }

    /// Copies the Deployment's annotations, raises the revision to `new_revision` if lower,
    /// and (unless a scaling event is pending) records desired/max replicas.
    fn set_new_rs_annotations(&self, rs: &mut ReplicaSet, new_revision: i64, fresh: bool) {
        let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
        for (k, v) in self.d.metadata.annotations.iter().flatten() {
            if !NOT_COPIED.contains(&k.as_str()) {
                ann.insert(k.clone(), v.clone());
            }
        }
        let current: i64 = ann.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
        if current < new_revision {
            // A re-used ReplicaSet (rollback) remembers the revisions it had before.
            if current > 0 {
                let history = match ann.get(REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{current}"),
                    _ => current.to_string(),
                };
                ann.insert(REVISION_HISTORY.into(), history);
            }
            ann.insert(REVISION.into(), new_revision.to_string());
        }
        if fresh || !ann.contains_key(DESIRED_REPLICAS) {
            ann.insert(DESIRED_REPLICAS.into(), self.replicas().to_string());
            ann.insert(
                MAX_REPLICAS.into(),
                (self.replicas() + max_surge(self.spec())).to_string(),
            );
        }
    }

    /// Sets the Deployment's revision annotation (metadata only: the generation is unchanged).
    async fn set_deployment_revision(&mut self, rev: i64) -> Result<(), ReconcileError> {
        let rev = rev.to_string();
        let current = self.d.annotations().get(REVISION);
        if current == Some(&rev) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        let status = self.d.status.clone();
        self.d = self
            .d_api
            .patch(
                &self.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        // Keep the status this reconcile may already have computed.
        if self.d.status.is_none() {
            self.d.status = status;
        }
        Ok(())
    }

    async fn write_status(&mut self, status: DeploymentStatus) -> Result<(), ReconcileError> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.status = Some(status);
        self.d = self
            .d_api
            .replace_status(&d.name_any(), &PostParams::default(), &d)
            .await?;
        Ok(())
    }

    /// Sets `spec.replicas` of a ReplicaSet (and the replica annotations) if they differ.
    async fn scale_rs(&self, rs: &mut ReplicaSet, replicas: i32) -> Result<bool, ReconcileError> {
        let mut updated = rs.clone();
        let spec = updated.spec.get_or_insert_with(Default::default);
        let scaled = spec.replicas != Some(replicas);
        spec.replicas = Some(replicas);
        let ann = updated
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        ann.insert(DESIRED_REPLICAS.into(), self.replicas().to_string());
        ann.insert(
            MAX_REPLICAS.into(),
            (self.replicas() + max_surge(self.spec())).to_string(),
        );
        if updated != *rs {
            *rs = self
                .rs_api
                .replace(&rs.name_any(), &PostParams::default(), &updated)
                .await?;
        }
        Ok(scaled)
    }

    /// Replicas the new ReplicaSet may have now (Kubernetes' `NewRSNewReplicas`).
    fn new_rs_new_replicas(&self, all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> i32 {
        let want = self.replicas();
        if is_recreate(self.spec()) {
            return want;
        }
        let new_replicas = new.map(spec_replicas).unwrap_or(0);
        let current: i32 = all.iter().map(|r| spec_replicas(r)).sum();
        let max_total = want + max_surge(self.spec());
        if current >= max_total {
            return new_replicas;
        }
        let up = (max_total - current).min(want - new_replicas).max(0);
        new_replicas + up
    }

    fn is_scaling_event(&self, rss: &[ReplicaSet]) -> bool {
        let want = self.replicas().to_string();
        rss.iter().filter(|r| spec_replicas(r) > 0).any(|r| {
            r.annotations()
                .get(DESIRED_REPLICAS)
                .is_some_and(|d| *d != want)
        })
    }

    async fn rollout_rolling(&mut self, rss: Vec<ReplicaSet>) -> Result<(), ReconcileError> {
        let (new, mut old) = self.new_and_old(rss, true).await?;
        let Some(mut new) = new else {
            return Ok(());
        };
        // Scale up the new ReplicaSet within maxSurge.
        let want = self.replicas();
        let cur = spec_replicas(&new);
        let scaled_up = if cur > want {
            self.scale_rs(&mut new, want).await?
        } else if cur < want {
            let all: Vec<&ReplicaSet> = old.iter().collect();
            let mut with_new = all.clone();
            with_new.push(&new);
            let target = self.new_rs_new_replicas(&with_new, Some(&new));
            self.scale_rs(&mut new, target).await?
        } else {
            false
        };
        if scaled_up {
            return self.sync_rollout_status(Some(&new), &old).await;
        }
        if self.reconcile_old(&new, &mut old).await? {
            return self.sync_rollout_status(Some(&new), &old).await;
        }
        if self.complete_status(Some(&new), &old) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(&new), &old).await
    }

    /// Scales old ReplicaSets down as far as maxUnavailable allows (Kubernetes'
    /// `reconcileOldReplicaSets`): first their unhealthy replicas, then healthy ones.
    async fn reconcile_old(
        &self,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool, ReconcileError> {
        let old_count: i32 = old.iter().map(spec_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + spec_replicas(new);
        let min_available = self.replicas() - max_unavailable(self.spec());
        let new_unavailable = spec_replicas(new) - available(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy replicas of old ReplicaSets go first: removing them costs no availability.
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let replicas = spec_replicas(rs);
            let unhealthy = replicas - available(rs);
            if replicas == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            self.scale_rs(rs, replicas - down).await?;
            cleaned += down;
        }
        // Then healthy ones, while enough pods stay available.
        let available_total: i32 = old.iter().map(available).sum::<i32>() + available(new);
        let mut budget = available_total - min_available;
        let mut scaled = 0;
        for rs in old.iter_mut() {
            if budget <= 0 {
                break;
            }
            let replicas = spec_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(budget);
            self.scale_rs(rs, replicas - down).await?;
            budget -= down;
            scaled += down;
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(&mut self, rss: Vec<ReplicaSet>) -> Result<(), ReconcileError> {
        let (new, mut old) = self.new_and_old(rss, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut() {
            if spec_replicas(rs) > 0 {
                scaled_down |= self.scale_rs(rs, 0).await?;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(new.as_ref(), &old).await;
        }
        if self.old_pods_running(&old).await? {
            return self.sync_rollout_status(new.as_ref(), &old).await;
        }
        let (new, old) = match new {
            Some(n) => (Some(n), old),
            None => {
                let mut rss = old;
                rss.sort_by(|a, b| {
                    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                    t(a).cmp(&t(b))
                });
                self.new_and_old(rss, true).await?
            }
        };
        let Some(mut new) = new else { return Ok(()) };
        if spec_replicas(&new) == 0 {
            let want = self.replicas();
            self.scale_rs(&mut new, want).await?;
            return self.sync_rollout_status(Some(&new), &old).await;
        }
        if self.complete_status(Some(&new), &old) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(Some(&new), &old).await
    }

    /// True while any pod of an old ReplicaSet has not finished (Recreate waits for them).
    async fn old_pods_running(&self, old: &[ReplicaSet]) -> Result<bool, ReconcileError> {
        if old
            .iter()
            .any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return Ok(true);
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        let pods = self.pod_api.list(&ListParams::default()).await?.items;
        Ok(pods.iter().any(|p| {
            let owned = controller_ref(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()));
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            owned && !matches!(phase, Some("Succeeded" | "Failed"))
        }))
    }

    /// Scaling only (paused Deployments and replica-count changes): Kubernetes' `sync`.
    async fn sync(&mut self, rss: Vec<ReplicaSet>) -> Result<(), ReconcileError> {
        let (mut new, mut old) = self.new_and_old(rss, false).await?;
        self.scale(new.as_mut(), &mut old).await?;
        if self.spec().paused.unwrap_or(false) {
            self.cleanup(&old).await?;
        }
        self.sync_status(new.as_ref(), &old).await
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes all replicas; several share a
    /// replica-count change in proportion to their size (rolling updates only).
    async fn scale(
        &self,
        mut new: Option<&mut ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), ReconcileError> {
        let want = self.replicas();
        let active_count = old.iter().filter(|r| spec_replicas(r) > 0).count()
            + new
                .as_ref()
                .map_or(0, |n| usize::from(spec_replicas(n) > 0));
        if active_count <= 1 {
            // The single active one, else the new one, else the newest old one.
            let target: Option<&mut ReplicaSet> =
                if let Some(i) = old.iter().position(|r| spec_replicas(r) > 0) {
                    Some(&mut old[i])
                } else if let Some(n) = new.as_deref_mut() {
                    Some(n)
                } else {
                    old.last_mut()
                };
            if let Some(rs) = target {
                self.scale_rs(rs, want).await?;
            }
            return Ok(());
        }
        if let Some(n) = new.as_deref_mut() {
            let saturated = spec_replicas(n) == want
                && n.annotations().get(DESIRED_REPLICAS) == Some(&want.to_string())
                && available(n) == want;
            if saturated {
                for rs in old.iter_mut() {
                    self.scale_rs(rs, 0).await?;
                }
                return Ok(());
            }
        }
        if is_recreate(self.spec()) {
            return Ok(());
        }
        let surge = max_surge(self.spec());
        let allowed = want + surge;
        let mut active: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .chain(new)
            .filter(|r| spec_replicas(r) > 0)
            .collect();
        let total: i32 = active.iter().map(|r| spec_replicas(r)).sum();
        let to_add = allowed - total;
        if to_add == 0 {
            for rs in active {
                let n = spec_replicas(rs);
                self.scale_rs(rs, n).await?;
            }
            return Ok(());
        }
        // Newest first when growing, oldest first when shrinking; larger ones first.
        let created = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        active.sort_by(|a, b| {
            let by_size = spec_replicas(b).cmp(&spec_replicas(a));
            if to_add > 0 {
                by_size.then(created(b).cmp(&created(a)))
            } else {
                by_size.then(created(a).cmp(&created(b)))
            }
        });
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for rs in &active {
            let annotated = rs
                .annotations()
                .get(MAX_REPLICAS)
                .and_then(|m| m.parse::<i32>().ok())
                .unwrap_or(status_replicas);
            let fraction = if want == 0 {
                -spec_replicas(rs)
            } else if annotated <= 0 {
                0
            } else {
                let target = (f64::from(spec_replicas(rs)) * f64::from(allowed)
                    / f64::from(annotated))
                .round() as i32;
                target - spec_replicas(rs)
            };
            let left = to_add - added;
            let proportion = if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
            added += proportion;
            sizes.push(spec_replicas(rs) + proportion);
        }
        if let Some(first) = sizes.first_mut() {
            *first += to_add - added;
        }
        for (rs, size) in active.into_iter().zip(sizes) {
            self.scale_rs(rs, size.max(0)).await?;
        }
        Ok(())
    }

    /// Deletes the oldest fully scaled-down old ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), ReconcileError> {
        let Some(limit) = self.spec().revision_history_limit else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let mut excess = alive.len() as i64 - i64::from(limit.max(0));
        if excess <= 0 {
            return Ok(());
        }
        alive.sort_by_key(|r| revision(r));
        for rs in alive {
            if excess <= 0 {
                break;
            }
            let status = rs.status.clone().unwrap_or_default();
            let observed = status.observed_generation.unwrap_or(0);
            if status.replicas != 0
                || spec_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rs_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            excess -= 1;
        }
        Ok(())
    }

    /// Kubernetes' `calculateStatus`, including the Available condition.
    fn calculate_status(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
        let all = old.iter().chain(new);
        let (mut replicas, mut ready, mut avail) = (0, 0, 0);
        for rs in all {
            let s = rs.status.clone().unwrap_or_default();
            replicas += s.replicas;
            ready += s.ready_replicas.unwrap_or(0);
            avail += s.available_replicas.unwrap_or(0);
        }
        let updated = new
            .and_then(|n| n.status.as_ref())
            .map_or(0, |s| s.replicas);
        let want = self.replicas();
        let mut status = self.d.status.clone().unwrap_or_default();
        status.observed_generation = self.d.metadata.generation;
        status.replicas = Some(replicas);
        status.updated_replicas = Some(updated);
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(avail);
        status.unavailable_replicas = Some((want - avail).max(0));
        let cond = if avail >= want - max_unavailable(self.spec()) {
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut status, cond);
        status
    }

    fn complete_status(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        deployment_complete(&self.d, &self.calculate_status(new, old))
    }

    async fn sync_status(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), ReconcileError> {
        let status = self.calculate_status(new, old);
        self.write_status(status).await
    }

    /// Kubernetes' `syncRolloutStatus`: status plus the Progressing condition and the
    /// progress deadline.
    async fn sync_rollout_status(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), ReconcileError> {
        let mut status = self.calculate_status(new, old);
        let spec = self.spec().clone();
        if let Some(c) = status
            .conditions
            .as_mut()
            .filter(|_| !has_progress_deadline(&spec))
        {
            c.retain(|c| c.type_ != "Progressing");
        }
        let current = condition(&self.d, "Progressing").cloned();
        // A finished rollout that is merely being resynced makes no progress to estimate.
        let already_complete = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        let new_name = new.map(|n| n.name_any()).unwrap_or_default();
        if has_progress_deadline(&spec) && !already_complete {
            if deployment_complete(&self.d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    ),
                );
            } else if deployment_progressing(&self.d, &status) {
                // Progress refreshes lastUpdateTime, which restarts the deadline.
                let mut cond = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                );
                if let Some(c) = current.as_ref().filter(|c| c.status == "True") {
                    cond.last_transition_time = c.last_transition_time.clone();
                }
                if let Some(cs) = status.conditions.as_mut() {
                    cs.retain(|c| c.type_ != "Progressing");
                }
                status.conditions.get_or_insert_with(Vec::new).push(cond);
            } else if let Some(remaining) = deadline_remaining(&spec, current.as_ref()) {
                if remaining <= SignedDuration::ZERO {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        ),
                    );
                } else {
                    self.requeue_after(remaining.unsigned_abs() + Duration::from_millis(10));
                }
            }
        }
        self.write_status(status).await
    }

    /// Sets or clears the DeploymentPaused / DeploymentResumed Progressing condition.
    async fn check_paused_conditions(&mut self) -> Result<(), ReconcileError> {
        if !has_progress_deadline(self.spec()) {
            return Ok(());
        }
        let reason = condition(&self.d, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let paused_cond = reason.as_deref() == Some("DeploymentPaused");
        let paused = self.spec().paused.unwrap_or(false);
        let cond = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        let mut status = self.d.status.clone().unwrap_or_default();
        set_condition(&mut status, cond);
        self.write_status(status).await
    }
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet (0 when absent or malformed).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn is_recreate(spec: &DeploymentSpec) -> bool {
    spec.strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "Recreate")
}

fn has_progress_deadline(spec: &DeploymentSpec) -> bool {
    spec.progress_deadline_seconds
        .is_some_and(|s| s != i32::MAX)
}

/// Resolves an int-or-percent against `total`; percentages round up or down as asked.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool, default_pct: i32) -> i32 {
    let pct = match v {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
            .unwrap_or(i64::from(default_pct)),
        None => i64::from(default_pct),
    };
    let num = pct.max(0) * i64::from(total.max(0));
    let v = if round_up {
        (num + 99) / 100
    } else {
        num / 100
    };
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// maxSurge and maxUnavailable resolved against `spec.replicas` (Kubernetes'
/// `ResolveFenceposts`): surge rounds up, unavailable down, and both zero means one may be
/// unavailable so that a rollout can progress.
fn fenceposts(spec: &DeploymentSpec) -> (i32, i32) {
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let replicas = spec.replicas.unwrap_or(1);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, 25);
    let unavailable = scaled_value(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        25,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn max_surge(spec: &DeploymentSpec) -> i32 {
    if is_recreate(spec) {
        0
    } else {
        fenceposts(spec).0
    }
}

fn max_unavailable(spec: &DeploymentSpec) -> i32 {
    let replicas = spec.replicas.unwrap_or(1);
    if is_recreate(spec) || replicas == 0 {
        return 0;
    }
    fenceposts(spec).1.min(replicas)
}

fn condition<'a>(d: &'a Deployment, type_: &str) -> Option<&'a DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

/// Kubernetes' `SetDeploymentCondition`: an unchanged status and reason keeps the old
/// condition; an unchanged status keeps its transition time.
fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|c| c.type_ != cond.type_);
    conds.push(cond);
}

/// `kubectl rollout status`'s notion of done, as the controller computes it.
fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// True when the new status shows progress over the stored one.
fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let o = |v: Option<i32>| v.unwrap_or(0);
    let old_old = o(old.replicas) - o(old.updated_replicas);
    let new_old = o(new.replicas) - o(new.updated_replicas);
    o(new.updated_replicas) > o(old.updated_replicas)
        || new_old < old_old
        || o(new.ready_replicas) > o(old.ready_replicas)
        || o(new.available_replicas) > o(old.available_replicas)
}

/// Time left before the progress deadline passes, counted from the Progressing condition's
/// last update; `None` when there is no running deadline.
fn deadline_remaining(
    spec: &DeploymentSpec,
    cond: Option<&DeploymentCondition>,
) -> Option<SignedDuration> {
    let secs = spec.progress_deadline_seconds?;
    let cond = cond?;
    match cond.reason.as_deref() {
        Some("NewReplicaSetAvailable") => return None,
        Some("ProgressDeadlineExceeded") => return Some(SignedDuration::ZERO),
        _ => {}
    }
    let from = cond.last_update_time.as_ref()?.0;
    let deadline = from + SignedDuration::from_secs(i64::from(secs));
    Some(Timestamp::now().duration_until(deadline))
}

/// Whether two pod templates are equal once the `pod-template-hash` label is ignored.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn strip(t: &PodTemplateSpec) -> PodTemplateSpec {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut()
            && let Some(l) = m.labels.as_mut()
        {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
        t
    }
    strip(a) == strip(b)
}

/// The `pod-template-hash` of a template (see the module docs for how it relates to Kubernetes').
pub fn pod_template_hash(
    template: &PodTemplateSpec,
    collision_count: i32,
) -> Result<String, ReconcileError> {
    let bytes = serde_json::to_vec(template)?;
    Ok(safe_encode(&fnv32a(&bytes, collision_count).to_string()))
}

/// FNV-32a over `bytes`, then over `collision_count` as 4 little-endian bytes when non-zero.
fn fnv32a(bytes: &[u8], collision_count: i32) -> u32 {
    let extra = (collision_count as u32).to_le_bytes();
    let tail: &[u8] = if collision_count != 0 { &extra } else { &[] };
    bytes.iter().chain(tail).fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Kubernetes' `rand.SafeEncodeString`: maps each byte onto an alphabet without vowels or
/// look-alike characters, so names never spell words.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentStrategy, RollingUpdateDeployment};

    fn spec(
        replicas: i32,
        surge: Option<IntOrString>,
        unav: Option<IntOrString>,
    ) -> DeploymentSpec {
        DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: surge,
                    max_unavailable: unav,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        let s = spec(10, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&s), max_unavailable(&s)), (3, 2));
        let s = spec(3, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&s), max_unavailable(&s)), (1, 0));
        let s = spec(3, Some(IntOrString::Int(0)), Some(IntOrString::Int(0)));
        assert_eq!((max_surge(&s), max_unavailable(&s)), (0, 1));
        let s = spec(2, Some(IntOrString::Int(1)), Some(IntOrString::Int(5)));
        assert_eq!(max_unavailable(&s), 2);
    }

    #[test]
    fn hash_is_stable_uses_safe_alphabet_and_changes_with_collisions() {
        let t = PodTemplateSpec::default();
        let h0 = pod_template_hash(&t, 0).unwrap_or_default();
        assert_eq!(h0, pod_template_hash(&t, 0).unwrap_or_default());
        assert_ne!(h0, pod_template_hash(&t, 1).unwrap_or_default());
        assert!(!h0.is_empty());
        assert!(
            h0.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        // Reference vectors: FNV-32a("a") = 0xe40c292c; the alphabet maps '0' to '4', '9' to 'f'.
        assert_eq!(fnv32a(b"a", 0), 0xe40c_292c);
        assert_eq!(safe_encode("01239"), "4567f");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let b = a.clone();
        if let Some(l) = a.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH.into(), "abc".into());
        }
        assert!(equal_ignore_hash(&a, &b));
        if let Some(l) = a.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert("app".into(), "api".into());
        }
        assert!(!equal_ignore_hash(&a, &b));
    }

    #[test]
    fn set_condition_keeps_transition_time_for_same_status() {
        let mut s = DeploymentStatus::default();
        let mut c = new_condition("Progressing", "True", "NewReplicaSetCreated", "x".into());
        c.last_transition_time = Some(Time(Timestamp::UNIX_EPOCH));
        set_condition(&mut s, c);
        set_condition(
            &mut s,
            new_condition("Progressing", "True", "ReplicaSetUpdated", "y".into()),
        );
        let conds = s.conditions.unwrap_or_default();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(
            conds[0].last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
    }
}
