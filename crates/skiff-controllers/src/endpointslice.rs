//! EndpointSlice controller: keeps discovery.k8s.io/v1 EndpointSlices (at most 100 endpoints each) for every Service with a selector.
//!
//! Like Kubernetes' endpointslice controller: slices are named `<service>-<random>`, labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, and controlled
//! by the Service (so the garbage collector removes them with it). Every pod with an IP
//! becomes an endpoint with `ready`/`serving`/`terminating` conditions (terminating pods
//! stay, not ready, serving while their Ready condition holds). Endpoints are grouped by
//! their resolved ports; existing slices are updated in place (endpoints keep their slot),
//! new endpoints fill slices with room before a new slice is made, a slice that would be
//! deleted is reused for one that would be created, and nothing is written when nothing
//! changed. A Service without endpoints keeps one empty placeholder slice.
//!
//! Services without a selector get their hand-written Endpoints mirrored into slices
//! managed by `endpointslicemirroring-controller.k8s.io` (Kubernetes' EndpointSliceMirroring
//! controller, folded in here), unless the Endpoints is labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"`. Unlike Kubernetes, a Service whose
//! selector is removed loses the slices made from its pods (Kubernetes leaves them stale).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

use crate::servicepods::{
    HEADLESS_LABEL, Key, Watches, find_port, hostname_for, is_headless, node_name, pod_ip,
    protocol, publishes_not_ready, selector, should_be_in_endpoints, target_ref,
};
use crate::workload::{ReconcileError, is_not_found, owner_ref, pod_is_ready};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (Kubernetes' own, so tools recognise it).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The [`MANAGED_BY_LABEL`] of slices mirrored from the Endpoints of Services without a
/// selector (Kubernetes' EndpointSliceMirroring controller's value).
pub const MIRRORING_MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// An Endpoints with this label set to "true" is not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Most endpoints in one slice (Kubernetes' default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

struct Ctx {
    client: Client,
    watches: Watches,
}

/// Starts the EndpointSlice controller; aborting the handle stops it.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let (watches, worker) = Watches::start(&client, true);
    let ctx = Arc::new(Ctx { client, watches });
    worker
        .run("endpointslice", |key| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
}

async fn reconcile(ctx: &Ctx, key: &Key) -> Result<(), ReconcileError> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.0);
    let lp = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={}", key.1));
    let (ours, mirrored): (Vec<_>, Vec<_>) = api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|s| {
            let by = s.labels().get(MANAGED_BY_LABEL).map(String::as_str);
            by == Some(MANAGED_BY) || by == Some(MIRRORING_MANAGED_BY)
        })
        .partition(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY));
    let svc = ctx.watches.service(&ctx.client, key).await?;
    let Some(svc) = svc else {
        // The Service is gone (the garbage collector would remove the slices too).
        delete_all(&api, &ours).await?;
        delete_all(&api, &mirrored).await?;
        return Ok(());
    };
    if let Some(sel) = selector(&svc) {
        let pods = ctx.watches.selected_pods(&key.0, sel);
        delete_all(&api, &mirrored).await?;
        return apply(&api, plan(&svc, &pods, ours)).await;
    }
    // No selector: the Service's hand-written Endpoints are mirrored.
    delete_all(&api, &ours).await?;
    let eps: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
    let source = eps
        .get_opt(&key.1)
        .await?
        .filter(|e| e.labels().get(SKIP_MIRROR_LABEL).map(String::as_str) != Some("true"));
    match source {
        Some(ep) => apply(&api, plan_for(&svc, mirror(&svc, &ep), mirrored)).await,
        None => delete_all(&api, &mirrored).await,
    }
}

async fn apply(api: &Api<EndpointSlice>, plan: Plan) -> Result<(), ReconcileError> {
    delete_all(api, &plan.delete).await?;
    for s in &plan.update {
        let mut s = s.clone();
        // The server keeps the managed fields of a write that sends none.
        s.metadata.managed_fields = None;
        api.replace(&s.name_any(), &PostParams::default(), &s)
            .await?;
    }
    for s in &plan.create {
        match api.create(&PostParams::default(), s).await {
            Ok(_) => {}
            // The namespace is being deleted: the Service goes with it.
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn delete_all(
    api: &Api<EndpointSlice>,
    slices: &[EndpointSlice],
) -> Result<(), ReconcileError> {
    for s in slices {
        delete(api, s).await?;
    }
    Ok(())
}

/// The slices' content for a Service without a selector: its Endpoints, address by
/// address (Kubernetes' EndpointSliceMirroring controller). Only the Ready condition is
/// known for such addresses.
fn mirror(svc: &Service, ep: &Endpoints) -> Desired {
    let mut labels = ep.labels().clone();
    labels.remove(SKIP_MIRROR_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MIRRORING_MANAGED_BY.into());
    let mut endpoints: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(
                    p.protocol
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "TCP".into()),
                ),
                app_protocol: p.app_protocol.clone().filter(|a| !a.is_empty()),
            })
            .collect();
        let pool = endpoints.entry(port_set(&ports)).or_default();
        let lists = [
            (&subset.addresses, true),
            (&subset.not_ready_addresses, false),
        ];
        for (list, ready) in lists {
            for a in list.iter().flatten() {
                if a.ip.parse::<Ipv4Addr>().is_err() {
                    continue;
                }
                pool.push(Endpoint {
                    addresses: vec![a.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        ..Default::default()
                    }),
                    hostname: a.hostname.clone().filter(|h| !h.is_empty()),
                    node_name: a.node_name.clone().filter(|n| !n.is_empty()),
                    target_ref: a.target_ref.clone(),
                    ..Default::default()
                });
            }
        }
    }
    endpoints.retain(|_, v| !v.is_empty());
    Desired {
        endpoints,
        labels,
        placeholder: false,
    }
}

async fn delete(api: &Api<EndpointSlice>, slice: &EndpointSlice) -> Result<(), ReconcileError> {
    match api
        .delete(&slice.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The writes that bring a Service's slices to the desired state.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

/// A set of ports, in a canonical order, identifying which slices an endpoint may go to.
pub(crate) type PortSet = Vec<(String, i32, String, String)>;

fn port_set(ports: &[EndpointPort]) -> PortSet {
    let mut set: PortSet = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    set.sort();
    set
}

fn ports_of(set: &PortSet) -> Vec<EndpointPort> {
    set.iter()
        .map(|(name, port, protocol, app)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: (!app.is_empty()).then(|| app.clone()),
        })
        .collect()
}

/// Identifies an endpoint across reconciles: its pod's uid (or its address).
fn endpoint_id(ep: &Endpoint) -> String {
    ep.target_ref
        .as_ref()
        .and_then(|t| t.uid.clone())
        .or_else(|| ep.addresses.first().cloned())
        .unwrap_or_default()
}

/// The desired endpoints of a Service, grouped by the ports they serve.
fn desired(svc: &Service, pods: &[Pod]) -> BTreeMap<PortSet, Vec<Endpoint>> {
    let publish = publishes_not_ready(svc);
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut out: BTreeMap<PortSet, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(pod, true) {
            continue;
        }
        // Only IPv4 slices are made.
        let Some(ip) = pod_ip(pod).filter(|ip| ip.parse::<Ipv4Addr>().is_ok()) else {
            continue;
        };
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, sp)?),
                    protocol: Some(protocol(sp)),
                    app_protocol: sp.app_protocol.clone().filter(|a| !a.is_empty()),
                })
            })
            .collect();
        let serving = pod_is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        // A terminating pod is never ready, unless the Service publishes not-ready addresses.
        let ready = publish || (serving && !terminating);
        let ep = Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving || publish),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, svc),
            node_name: node_name(pod),
            target_ref: Some(target_ref(pod)),
            ..Default::default()
        };
        out.entry(port_set(&ports)).or_default().push(ep);
    }
    out
}

/// Labels of every slice of `svc`: the Service's own plus the two that tie the slice to it.
fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

fn new_slice(
    svc: &Service,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Vec::new(),
        ports: Some(Vec::new()),
    }
}

/// What a Service's slices should hold, whoever computed it.
pub(crate) struct Desired {
    pub endpoints: BTreeMap<PortSet, Vec<Endpoint>>,
    pub labels: BTreeMap<String, String>,
    /// Keep one empty slice when there are no endpoints.
    pub placeholder: bool,
}

/// The slices of a Service with a selector: its pods.
pub(crate) fn plan(svc: &Service, pods: &[Pod], existing: Vec<EndpointSlice>) -> Plan {
    let want = Desired {
        endpoints: desired(svc, pods),
        labels: desired_labels(svc),
        placeholder: true,
    };
    plan_for(svc, want, existing)
}

/// Decides the creates, updates and deletes that make `existing` (the Service's slices of
/// one manager) hold `want`; a pure function so that it can be tested without a cluster.
pub(crate) fn plan_for(svc: &Service, want: Desired, existing: Vec<EndpointSlice>) -> Plan {
    let mut plan = Plan::default();
    let labels = want.labels;
    let owner = owner_ref(svc);
    let mut want_eps = want.endpoints;

    // Slices that stay, with their port set and whether they changed.
    let mut kept: Vec<(PortSet, EndpointSlice, bool)> = Vec::new();
    for slice in existing {
        let owned = slice
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner.uid && o.controller == Some(true));
        if !owned || slice.address_type != "IPv4" {
            plan.delete.push(slice);
            continue;
        }
        let set = port_set(slice.ports.as_deref().unwrap_or_default());
        let Some(pool) = want_eps.get_mut(&set) else {
            plan.delete.push(slice);
            continue;
        };
        // Keep each still-wanted endpoint in its slot, with its current content.
        let mut slice = slice;
        let mut changed = false;
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for ep in std::mem::take(&mut slice.endpoints) {
            let id = endpoint_id(&ep);
            match pool.iter().position(|w| endpoint_id(w) == id) {
                Some(i) if endpoints.len() < MAX_ENDPOINTS_PER_SLICE => {
                    let w = pool.swap_remove(i);
                    changed |= w != ep;
                    endpoints.push(w);
                }
                _ => changed = true,
            }
        }
        slice.endpoints = endpoints;
        if slice.endpoints.is_empty() {
            plan.delete.push(slice);
        } else {
            kept.push((set, slice, changed));
        }
    }

    // New endpoints: fill slices with room, then make new slices.
    let mut create: Vec<EndpointSlice> = Vec::new();
    for (set, mut pool) in want_eps {
        pool.sort_by_key(endpoint_id);
        let mut pool = pool.into_iter();
        for (kset, slice, changed) in kept.iter_mut() {
            if *kset != set {
                continue;
            }
            while slice.endpoints.len() < MAX_ENDPOINTS_PER_SLICE {
                let Some(ep) = pool.next() else { break };
                slice.endpoints.push(ep);
                *changed = true;
            }
        }
        let rest: Vec<Endpoint> = pool.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            let mut s = new_slice(svc, &labels, &owner);
            s.ports = Some(ports_of(&set));
            s.endpoints = chunk.to_vec();
            create.push(s);
        }
    }

    // A Service without endpoints keeps one empty slice, so that "no endpoints" is
    // distinguishable from "not processed yet".
    if want.placeholder && kept.is_empty() && create.is_empty() {
        create.push(new_slice(svc, &labels, &owner));
    }

    // Rewrite a slice that would be deleted rather than delete one and create another.
    for mut c in create {
        match plan.delete.iter().position(|d| {
            // addressType is immutable, so only an IPv4 slice can be rewritten.
            d.address_type == "IPv4"
                && d.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == owner.uid)
        }) {
            Some(i) => {
                let old = plan.delete.swap_remove(i);
                let changed = old.endpoints != c.endpoints
                    || port_set(old.ports.as_deref().unwrap_or_default())
                        != port_set(c.ports.as_deref().unwrap_or_default());
                c.metadata = old.metadata;
                kept.push((Vec::new(), c, changed));
            }
            None => plan.create.push(c),
        }
    }

    for (_, mut slice, changed) in kept {
        let labels_ok = slice.metadata.labels.as_ref() == Some(&labels);
        let owner_ok =
            slice.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner));
        if changed || !labels_ok || !owner_ok {
            slice.metadata.labels = Some(labels.clone());
            slice.metadata.owner_references = Some(vec![owner.clone()]);
            plan.update.push(slice);
        }
    }
    plan
}

/// The uids of the pods listed in `slices` (for tests and callers checking coverage).
pub fn endpoint_pod_uids(slices: &[EndpointSlice]) -> HashSet<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.uid.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::Int(8080)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(i: usize, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i}")),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{i:04}")),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                pod_ip: Some(format!("10.42.{}.{}", i / 200, i % 200 + 1)),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// Applies a plan as the API server would (names for created slices).
    fn apply(existing: Vec<EndpointSlice>, plan: Plan, next: &mut usize) -> Vec<EndpointSlice> {
        let gone: HashSet<String> = plan
            .delete
            .iter()
            .chain(plan.update.iter())
            .map(|s| s.name_any())
            .collect();
        let mut out: Vec<EndpointSlice> = existing
            .into_iter()
            .filter(|s| !gone.contains(&s.name_any()))
            .collect();
        out.extend(plan.update);
        for mut c in plan.create {
            *next += 1;
            c.metadata.name = Some(format!("web-{next}"));
            out.push(c);
        }
        out
    }

    #[test]
    fn splits_into_slices_of_100_and_reuses_them() {
        let svc = svc();
        let pods: Vec<Pod> = (0..250).map(|i| pod(i, i % 2 == 0)).collect();
        let mut n = 0;
        let p = plan(&svc, &pods, Vec::new());
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (3, 0, 0));
        let slices = apply(Vec::new(), p, &mut n);
        assert_eq!(endpoint_pod_uids(&slices).len(), 250);
        assert!(
            slices
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );

        // Nothing changed: nothing to write.
        let p = plan(&svc, &pods, slices.clone());
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 0, 0));

        // One pod becomes ready: exactly one slice is updated.
        let mut pods2 = pods.clone();
        pods2[1] = pod(1, true);
        let p = plan(&svc, &pods2, slices.clone());
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));

        // 60 pods go: the freed room is used before anything new is made.
        let mut pods3: Vec<Pod> = pods[60..].to_vec();
        pods3.push(pod(900, true));
        let p = plan(&svc, &pods3, slices.clone());
        assert_eq!(p.create.len(), 0, "{p:#?}");
        let slices = apply(slices, p, &mut n);
        assert_eq!(endpoint_pod_uids(&slices).len(), 191);

        // No pods at all: one empty placeholder slice remains.
        let p = plan(&svc, &[], slices.clone());
        let slices = apply(slices, p, &mut n);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        let p = plan(&svc, &[], slices.clone());
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 0, 0));
    }

    #[test]
    fn terminating_pods_are_serving_but_not_ready() {
        let svc = svc();
        let mut p = pod(1, true);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let d = desired(&svc, &[p, pod(2, false)]);
        let eps: Vec<&Endpoint> = d.values().flatten().collect();
        let cond = |i: usize| eps[i].conditions.clone().expect("conditions");
        assert_eq!(
            (cond(0).ready, cond(0).serving, cond(0).terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(
            (cond(1).ready, cond(1).serving, cond(1).terminating),
            (Some(false), Some(false), Some(false))
        );
    }

    #[test]
    fn slices_of_another_service_uid_are_replaced() {
        let svc = svc();
        let mut old = new_slice(&svc, &desired_labels(&svc), &owner_ref(&svc));
        old.metadata.name = Some("web-old".into());
        if let Some(refs) = old.metadata.owner_references.as_mut() {
            refs[0].uid = "previous-incarnation".into();
        }
        let p = plan(&svc, &[pod(1, true)], vec![old]);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.create.len(), 1);
    }
}
