//! Conversion of core/v1 objects other than Pods: Namespace, ConfigMap, Secret, Service,
//! ServiceAccount, ResourceQuota.

use k8s_pb::api::core::v1::{
    ClientIpConfig, ConfigMap, LoadBalancerStatus, LocalObjectReference, Namespace, NamespaceSpec,
    NamespaceStatus, ObjectReference, ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus,
    ScopeSelector, ScopedResourceSelectorRequirement, Secret, Service, ServiceAccount, ServicePort,
    ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use serde_json::Value;

use super::json::{Fields, child, reject};
use super::meta::{int_or_string, object_meta, resource_list};
use crate::error::ApiError;

pub(super) fn namespace(ns: Namespace, f: &mut Fields) -> Result<(), ApiError> {
    let Namespace {
        metadata,
        spec,
        status,
    } = ns;
    let NamespaceSpec { finalizers } = spec.unwrap_or_default();
    let NamespaceStatus { phase, conditions } = status.unwrap_or_default();
    reject("status", "conditions", !conditions.is_empty())?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value(
            "spec",
            Fields::new().strings("finalizers", finalizers).finish(),
        )
        .value("status", Fields::new().omitempty("phase", phase).finish());
    Ok(())
}

pub(super) fn config_map(cm: ConfigMap, f: &mut Fields) -> Result<(), ApiError> {
    let ConfigMap {
        metadata,
        immutable,
        data,
        binary_data,
    } = cm;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .pointer("immutable", immutable)
        .string_map("data", data)
        .bytes_map("binaryData", binary_data);
    Ok(())
}

pub(super) fn secret(s: Secret, f: &mut Fields) -> Result<(), ApiError> {
    let Secret {
        metadata,
        immutable,
        data,
        string_data,
        r#type,
    } = s;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .pointer("immutable", immutable)
        .bytes_map("data", data)
        .string_map("stringData", string_data)
        .omitempty("type", r#type);
    Ok(())
}

pub(super) fn service_account(sa: ServiceAccount, f: &mut Fields) -> Result<(), ApiError> {
    let ServiceAccount {
        metadata,
        secrets,
        image_pull_secrets,
        automount_service_account_token,
    } = sa;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .list("", "secrets", secrets, object_reference)?
        .list(
            "",
            "imagePullSecrets",
            image_pull_secrets,
            local_object_reference,
        )?
        .pointer(
            "automountServiceAccountToken",
            automount_service_account_token,
        );
    Ok(())
}

pub(super) fn object_reference(r: ObjectReference, _path: &str) -> Result<Value, ApiError> {
    let ObjectReference {
        kind,
        namespace,
        name,
        uid,
        api_version,
        resource_version,
        field_path,
    } = r;
    Ok(Fields::new()
        .omitempty("kind", kind)
        .omitempty("namespace", namespace)
        .omitempty("name", name)
        .omitempty("uid", uid)
        .omitempty("apiVersion", api_version)
        .omitempty("resourceVersion", resource_version)
        .omitempty("fieldPath", field_path)
        .finish())
}

pub(super) fn local_object_reference(
    r: LocalObjectReference,
    _path: &str,
) -> Result<Value, ApiError> {
    let LocalObjectReference { name } = r;
    Ok(Fields::new().omitempty("name", name).finish())
}

/// The `name` of an embedded (inline) LocalObjectReference.
pub(super) fn inline_name(r: Option<LocalObjectReference>) -> Option<String> {
    let LocalObjectReference { name } = r.unwrap_or_default();
    name
}

pub(super) fn service(svc: Service, f: &mut Fields) -> Result<(), ApiError> {
    let Service {
        metadata,
        spec,
        status,
    } = svc;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", service_spec(spec.unwrap_or_default(), "spec")?)
        .value(
            "status",
            service_status(status.unwrap_or_default(), "status")?,
        );
    Ok(())
}

fn service_spec(s: ServiceSpec, path: &str) -> Result<Value, ApiError> {
    let ServiceSpec {
        ports,
        selector,
        cluster_ip,
        cluster_ips,
        r#type,
        external_ips,
        session_affinity,
        load_balancer_ip,
        load_balancer_source_ranges,
        external_name,
        external_traffic_policy,
        health_check_node_port,
        publish_not_ready_addresses,
        session_affinity_config,
        ip_families,
        ip_family_policy,
        allocate_load_balancer_node_ports,
        load_balancer_class,
        internal_traffic_policy,
        traffic_distribution,
    } = s;
    let mut f = Fields::new();
    f.list(path, "ports", ports, service_port)?
        .string_map("selector", selector)
        .omitempty("clusterIP", cluster_ip)
        .strings("clusterIPs", cluster_ips)
        .omitempty("type", r#type)
        .strings("externalIPs", external_ips)
        .omitempty("sessionAffinity", session_affinity)
        .omitempty("loadBalancerIP", load_balancer_ip)
        .strings("loadBalancerSourceRanges", load_balancer_source_ranges)
        .omitempty("externalName", external_name)
        .omitempty("externalTrafficPolicy", external_traffic_policy)
        .omitempty("healthCheckNodePort", health_check_node_port)
        .omitempty("publishNotReadyAddresses", publish_not_ready_addresses)
        .opt_value(
            "sessionAffinityConfig",
            session_affinity_config.map(session_affinity_config_json),
        )
        .strings("ipFamilies", ip_families)
        .pointer("ipFamilyPolicy", ip_family_policy)
        .pointer(
            "allocateLoadBalancerNodePorts",
            allocate_load_balancer_node_ports,
        )
        .pointer("loadBalancerClass", load_balancer_class)
        .pointer("internalTrafficPolicy", internal_traffic_policy)
        .pointer("trafficDistribution", traffic_distribution);
    Ok(f.finish())
}

fn service_port(p: ServicePort, path: &str) -> Result<Value, ApiError> {
    let ServicePort {
        name,
        protocol,
        app_protocol,
        port,
        target_port,
        node_port,
    } = p;
    Ok(Fields::new()
        .omitempty("name", name)
        .omitempty("protocol", protocol)
        .pointer("appProtocol", app_protocol)
        .always("port", port)
        // A non-pointer struct: Go's omitempty never drops it, so an unset target port is 0.
        .value(
            "targetPort",
            int_or_string(target_port, &child(path, "targetPort"))?,
        )
        .omitempty("nodePort", node_port)
        .finish())
}

fn session_affinity_config_json(c: SessionAffinityConfig) -> Value {
    let SessionAffinityConfig { client_ip } = c;
    let client_ip = client_ip.map(|c| {
        let ClientIpConfig { timeout_seconds } = c;
        Fields::new()
            .pointer("timeoutSeconds", timeout_seconds)
            .finish()
    });
    Fields::new().opt_value("clientIP", client_ip).finish()
}

fn service_status(s: ServiceStatus, path: &str) -> Result<Value, ApiError> {
    let ServiceStatus {
        load_balancer,
        conditions,
    } = s;
    let LoadBalancerStatus { ingress } = load_balancer.unwrap_or_default();
    reject(&child(path, "loadBalancer"), "ingress", !ingress.is_empty())?;
    reject(path, "conditions", !conditions.is_empty())?;
    Ok(Fields::new()
        .value("loadBalancer", Fields::new().finish())
        .finish())
}

pub(super) fn resource_quota(q: ResourceQuota, f: &mut Fields) -> Result<(), ApiError> {
    let ResourceQuota {
        metadata,
        spec,
        status,
    } = q;
    let ResourceQuotaSpec {
        hard,
        scopes,
        scope_selector,
    } = spec.unwrap_or_default();
    let scope_selector = scope_selector
        .map(|s| {
            let ScopeSelector { match_expressions } = s;
            Ok::<_, ApiError>(
                Fields::new()
                    .list(
                        "spec.scopeSelector",
                        "matchExpressions",
                        match_expressions,
                        scoped_requirement,
                    )?
                    .finish(),
            )
        })
        .transpose()?;
    let mut spec = Fields::new();
    resource_list(&mut spec, "spec", "hard", hard)?;
    spec.strings("scopes", scopes)
        .opt_value("scopeSelector", scope_selector);
    let ResourceQuotaStatus {
        hard: status_hard,
        used,
    } = status.unwrap_or_default();
    let mut status = Fields::new();
    resource_list(&mut status, "status", "hard", status_hard)?;
    resource_list(&mut status, "status", "used", used)?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", spec.finish())
        .value("status", status.finish());
    Ok(())
}

fn scoped_requirement(
    r: ScopedResourceSelectorRequirement,
    _path: &str,
) -> Result<Value, ApiError> {
    let ScopedResourceSelectorRequirement {
        scope_name,
        operator,
        values,
    } = r;
    Ok(Fields::new()
        .always("scopeName", scope_name)
        .always("operator", operator)
        .strings("values", values)
        .finish())
}
