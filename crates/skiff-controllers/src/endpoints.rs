//! Endpoints controller: keeps the core/v1 Endpoints named after each Service with a selector equal to the addresses and ports of the pods it selects.
//!
//! Like Kubernetes' endpoints controller: ready pods go to `addresses`, pods that are not
//! ready to `notReadyAddresses` (all to `addresses` with `publishNotReadyAddresses`),
//! terminating pods are left out, `targetPort` names are resolved per pod, and the result is
//! packed into subsets of ports that share the same addresses. Services without a selector
//! are left alone (their Endpoints are written by hand); when a Service goes, so do its
//! Endpoints. The object is only written when its subsets or labels change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

use crate::servicepods::{
    HEADLESS_LABEL, Key, Watches, find_port, hostname_for, is_headless, key_of, node_name, pod_ip,
    protocol, publishes_not_ready, selector, should_be_in_endpoints, target_ref,
};
use crate::workload::{ReconcileError, is_not_found, pod_is_ready};

/// Set on every Endpoints this controller writes (as Kubernetes does); it also marks the
/// Endpoints this controller may delete when their Service disappeared while it was down.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

struct Ctx {
    client: Client,
    watches: Watches,
}

/// Starts the Endpoints controller; aborting the handle stops it.
pub fn start(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client))
}

async fn run(client: Client) {
    let (watches, worker) = Watches::start(&client, false);
    let ctx = Arc::new(Ctx { client, watches });
    // Waiting here, not in a second task: a reflector store wakes only one waiter.
    ctx.watches.ready().await;
    if let Err(e) = queue_leftovers(&ctx).await {
        tracing::warn!(error = %e, "endpoints: listing leftover Endpoints");
    }
    worker
        .run("endpoints", |key| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        })
        .await;
}

/// Queues the Endpoints this controller wrote whose Service is gone (deleted while the
/// controller was not running), so that reconciling them deletes them.
async fn queue_leftovers(ctx: &Ctx) -> Result<(), kube::Error> {
    let all: Api<Endpoints> = Api::all(ctx.client.clone());
    for ep in all.list(&ListParams::default()).await?.items {
        let managed = ep
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LAST_CHANGE_TRIGGER_TIME));
        if managed {
            let _ = ctx.watches.queue.send(key_of(&ep));
        }
    }
    Ok(())
}

async fn reconcile(ctx: &Ctx, key: &Key) -> Result<(), ReconcileError> {
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
    let Some(svc) = ctx.watches.service(&ctx.client, key).await? else {
        return match api.delete(&key.1, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        };
    };
    let Some(sel) = selector(&svc) else {
        return Ok(());
    };
    let pods = ctx.watches.selected_pods(&key.0, sel);
    let subsets = desired_subsets(&svc, &pods);
    let labels = desired_labels(&svc);
    let current = api.get_opt(&key.1).await?;
    let mut annotations = current
        .as_ref()
        .and_then(|c| c.metadata.annotations.clone())
        .unwrap_or_default();
    if let Some(cur) = &current {
        let same_subsets = normalize(cur.subsets.clone().unwrap_or_default()) == subsets;
        let same_labels = cur.metadata.labels.clone().unwrap_or_default() == labels;
        if same_subsets && same_labels {
            return Ok(());
        }
    }
    annotations.insert(
        LAST_CHANGE_TRIGGER_TIME.into(),
        Timestamp::now().to_string(),
    );
    let ep = Endpoints {
        metadata: ObjectMeta {
            name: Some(key.1.clone()),
            namespace: Some(key.0.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            resource_version: current.as_ref().and_then(|c| c.resource_version()),
            // The server keeps the managed fields of a write that sends none.
            managed_fields: None,
            ..current.map(|c| c.metadata).unwrap_or_default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    if ep.metadata.resource_version.is_some() {
        api.replace(&key.1, &PostParams::default(), &ep).await?;
    } else {
        match api.create(&PostParams::default(), &ep).await {
            Ok(_) => {}
            // The namespace is being deleted: the Service goes with it.
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Service's labels, plus the headless marker for headless Services.
fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Orders addresses within the Endpoints (by IP, then pod uid).
type AddrKey = (String, String);

/// A port as an ordered key: name, number, protocol, appProtocol.
type PortKey = (String, i32, String, String);

/// The subsets for `pods` (already filtered by the selector), packed like Kubernetes'
/// `RepackSubsets`: ports that have exactly the same ready and not-ready addresses share a
/// subset, so pods that serve a named port on different numbers land in different subsets.
pub(crate) fn desired_subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let publish = publishes_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut addrs: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    // Per port: (ready, not ready) addresses.
    type AddrSets = (BTreeSet<AddrKey>, BTreeSet<AddrKey>);
    let mut by_port: BTreeMap<PortKey, AddrSets> = BTreeMap::new();
    let mut portless: AddrSets = Default::default();
    for pod in pods {
        if !should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        let key = (ip.to_string(), pod.metadata.uid.clone().unwrap_or_default());
        let ready = publish || pod_is_ready(pod);
        let mut placed = false;
        if ports.is_empty() {
            // A headless Service without ports still lists its pods (for DNS).
            if is_headless(svc) {
                let set = if ready {
                    &mut portless.0
                } else {
                    &mut portless.1
                };
                set.insert(key.clone());
                placed = true;
            }
        } else {
            for sp in &ports {
                let Some(number) = find_port(pod, sp) else {
                    tracing::debug!(pod = %pod.name_any(), port = ?sp.name, "no such container port");
                    continue;
                };
                let pk = (
                    sp.name.clone().unwrap_or_default(),
                    number,
                    protocol(sp),
                    sp.app_protocol.clone().unwrap_or_default(),
                );
                let sets = by_port.entry(pk).or_default();
                let set = if ready { &mut sets.0 } else { &mut sets.1 };
                set.insert(key.clone());
                placed = true;
            }
        }
        if placed {
            addrs.insert(
                key,
                EndpointAddress {
                    ip: ip.to_string(),
                    hostname: hostname_for(pod, svc),
                    node_name: node_name(pod),
                    target_ref: Some(target_ref(pod)),
                },
            );
        }
    }
    let mut groups: BTreeMap<AddrSets, Vec<PortKey>> = BTreeMap::new();
    for (port, sets) in by_port {
        groups.entry(sets).or_default().push(port);
    }
    if !portless.0.is_empty() || !portless.1.is_empty() {
        groups.entry(portless).or_default();
    }
    let list = |keys: &BTreeSet<AddrKey>| -> Option<Vec<EndpointAddress>> {
        let v: Vec<EndpointAddress> = keys.iter().filter_map(|k| addrs.get(k).cloned()).collect();
        (!v.is_empty()).then_some(v)
    };
    let subsets = groups
        .into_iter()
        .map(|((ready, not_ready), ports)| EndpointSubset {
            addresses: list(&ready),
            not_ready_addresses: list(&not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app)| EndpointPort {
                        name: (!name.is_empty()).then_some(name),
                        port,
                        protocol: Some(protocol),
                        app_protocol: (!app.is_empty()).then_some(app),
                    })
                    .collect()
            }),
        })
        .collect();
    normalize(subsets)
}

/// Subsets in the form this controller writes them (empty strings and lists as absent), so
/// that stored and desired subsets compare equal when they mean the same.
fn normalize(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    let norm_str = |s: Option<String>| s.filter(|s| !s.is_empty());
    let norm_addrs = |a: Option<Vec<EndpointAddress>>| {
        a.map(|v| {
            v.into_iter()
                .map(|a| EndpointAddress {
                    hostname: norm_str(a.hostname),
                    node_name: norm_str(a.node_name),
                    ..a
                })
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
    };
    subsets
        .into_iter()
        .map(|s| EndpointSubset {
            addresses: norm_addrs(s.addresses),
            not_ready_addresses: norm_addrs(s.not_ready_addresses),
            ports: s
                .ports
                .map(|v| {
                    v.into_iter()
                        .map(|p| EndpointPort {
                            name: norm_str(p.name),
                            protocol: Some(norm_str(p.protocol).unwrap_or_else(|| "TCP".into())),
                            app_protocol: norm_str(p.app_protocol),
                            port: p.port,
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|v| !v.is_empty()),
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        a.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn splits_ready_and_groups_by_resolved_port() {
        let svc = service(vec![ServicePort {
            name: Some("web".into()),
            port: 80,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        let pods = vec![
            pod("a", "10.42.0.2", true, 8080),
            pod("b", "10.42.0.3", false, 8080),
            pod("c", "10.42.0.4", true, 9090),
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().is_some_and(|p| p[0].port == 8080))
            .expect("8080 subset");
        assert_eq!(ips(&s8080.addresses), vec!["10.42.0.2"]);
        assert_eq!(ips(&s8080.not_ready_addresses), vec!["10.42.0.3"]);
        let s9090 = subsets
            .iter()
            .find(|s| s.ports.as_ref().is_some_and(|p| p[0].port == 9090))
            .expect("9090 subset");
        assert_eq!(ips(&s9090.addresses), vec!["10.42.0.4"]);
        let addr = &s9090.addresses.as_ref().expect("addresses")[0];
        assert_eq!(addr.node_name.as_deref(), Some("n1"));
        let tr = addr.target_ref.as_ref().expect("targetRef");
        assert_eq!(tr.uid.as_deref(), Some("uid-c"));
        assert_eq!(tr.kind.as_deref(), Some("Pod"));
        // Desired subsets are already in normal form: comparing with a stored copy is exact.
        assert_eq!(normalize(subsets.clone()), subsets);
    }

    #[test]
    fn publish_not_ready_and_headless_without_ports() {
        let mut svc = service(vec![]);
        let pods = vec![pod("a", "10.42.0.2", false, 8080)];
        assert!(
            desired_subsets(&svc, &pods).is_empty(),
            "no ports, not headless"
        );
        if let Some(s) = svc.spec.as_mut() {
            s.cluster_ip = Some("None".into());
        }
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.42.0.2"]);
        assert!(subsets[0].ports.is_none());
        if let Some(s) = svc.spec.as_mut() {
            s.publish_not_ready_addresses = Some(true);
        }
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.2"]);
        assert!(desired_labels(&svc).contains_key(HEADLESS_LABEL));
    }

    #[test]
    fn pod_without_the_named_port_is_left_out() {
        let svc = service(vec![ServicePort {
            port: 80,
            target_port: Some(IntOrString::String("grpc".into())),
            ..Default::default()
        }]);
        assert!(desired_subsets(&svc, &[pod("a", "10.42.0.2", true, 8080)]).is_empty());
    }
}
