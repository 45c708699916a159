//! Conversion of core/v1 messages: Namespace, ConfigMap, Secret, Service, ServiceAccount, Pod,
//! ResourceQuota.

use k8s_pb::api::core::v1::{
    ClientIpConfig, ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, Container, ContainerPort,
    ContainerResizePolicy, EnvFromSource, EnvVar, EnvVarSource, HostAlias, LoadBalancerStatus,
    LocalObjectReference, Namespace, NamespaceSpec, NamespaceStatus, ObjectFieldSelector,
    ObjectReference, Pod, PodDnsConfig, PodDnsConfigOption, PodOs, PodReadinessGate,
    PodSchedulingGate, PodSpec, PodStatus, PodTemplateSpec, ResourceClaim, ResourceFieldSelector,
    ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus, ResourceRequirements, ScopeSelector,
    ScopedResourceSelectorRequirement, Secret, SecretEnvSource, SecretKeySelector, Service,
    ServiceAccount, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig, Toleration,
    VolumeMount,
};
use serde_json::Value;

use super::json::{Fields, child, reject};
use super::meta::{int_or_string, object_meta, opt_time, quantity, resource_list};
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

fn local_object_reference(r: LocalObjectReference, _path: &str) -> Result<Value, ApiError> {
    let LocalObjectReference { name } = r;
    Ok(Fields::new().omitempty("name", name).finish())
}

/// The `name` of an embedded (inline) LocalObjectReference.
fn inline_name(r: Option<LocalObjectReference>) -> Option<String> {
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

pub(super) fn pod(p: Pod, f: &mut Fields) -> Result<(), ApiError> {
    let Pod {
        metadata,
        spec,
        status,
    } = p;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", pod_spec(spec.unwrap_or_default(), "spec")?)
        .value("status", pod_status(status.unwrap_or_default(), "status")?);
    Ok(())
}

fn pod_status(s: PodStatus, path: &str) -> Result<Value, ApiError> {
    let PodStatus {
        observed_generation,
        phase,
        conditions,
        message,
        reason,
        nominated_node_name,
        host_ip,
        host_ips,
        pod_ip,
        pod_ips,
        start_time,
        init_container_statuses,
        container_statuses,
        qos_class,
        ephemeral_container_statuses,
        resize,
        resource_claim_statuses,
        extended_resource_claim_status,
        allocated_resources,
        resources,
    } = s;
    // A client never sets these on create; they are written by the node agent.
    reject(path, "conditions", !conditions.is_empty())?;
    reject(path, "hostIPs", !host_ips.is_empty())?;
    reject(path, "podIPs", !pod_ips.is_empty())?;
    reject(
        path,
        "initContainerStatuses",
        !init_container_statuses.is_empty(),
    )?;
    reject(path, "containerStatuses", !container_statuses.is_empty())?;
    reject(
        path,
        "ephemeralContainerStatuses",
        !ephemeral_container_statuses.is_empty(),
    )?;
    reject(
        path,
        "resourceClaimStatuses",
        !resource_claim_statuses.is_empty(),
    )?;
    reject(
        path,
        "extendedResourceClaimStatus",
        extended_resource_claim_status.is_some(),
    )?;
    let mut f = Fields::new();
    f.omitempty("observedGeneration", observed_generation)
        .omitempty("phase", phase)
        .omitempty("message", message)
        .omitempty("reason", reason)
        .omitempty("nominatedNodeName", nominated_node_name)
        .omitempty("hostIP", host_ip)
        .omitempty("podIP", pod_ip)
        .opt_value(
            "startTime",
            opt_time(start_time, &child(path, "startTime"))?,
        )
        .omitempty("qosClass", qos_class)
        .omitempty("resize", resize);
    resource_list(&mut f, path, "allocatedResources", allocated_resources)?;
    if let Some(r) = resources {
        f.value(
            "resources",
            resource_requirements(r, &child(path, "resources"))?,
        );
    }
    Ok(f.finish())
}

/// A `v1.PodTemplateSpec` (non-pointer in every workload).
pub(super) fn pod_template_spec(t: Option<PodTemplateSpec>, path: &str) -> Result<Value, ApiError> {
    let PodTemplateSpec { metadata, spec } = t.unwrap_or_default();
    Ok(Fields::new()
        .value("metadata", object_meta(metadata, &child(path, "metadata"))?)
        .value(
            "spec",
            pod_spec(spec.unwrap_or_default(), &child(path, "spec"))?,
        )
        .finish())
}

pub(super) fn pod_spec(s: PodSpec, path: &str) -> Result<Value, ApiError> {
    let PodSpec {
        volumes,
        init_containers,
        containers,
        ephemeral_containers,
        restart_policy,
        termination_grace_period_seconds,
        active_deadline_seconds,
        dns_policy,
        node_selector,
        service_account_name,
        service_account,
        automount_service_account_token,
        node_name,
        host_network,
        host_pid,
        host_ipc,
        share_process_namespace,
        security_context,
        image_pull_secrets,
        hostname,
        subdomain,
        affinity,
        scheduler_name,
        tolerations,
        host_aliases,
        priority_class_name,
        priority,
        dns_config,
        readiness_gates,
        runtime_class_name,
        enable_service_links,
        preemption_policy,
        overhead,
        topology_spread_constraints,
        set_hostname_as_fqdn,
        os,
        host_users,
        scheduling_gates,
        resource_claims,
        resources,
        hostname_override,
        workload_ref,
    } = s;
    // Deep structures kubectl's generators never set; JSON bodies carry them fine.
    reject(path, "volumes", !volumes.is_empty())?;
    reject(
        path,
        "ephemeralContainers",
        !ephemeral_containers.is_empty(),
    )?;
    reject(path, "securityContext", security_context.is_some())?;
    reject(path, "affinity", affinity.is_some())?;
    reject(
        path,
        "topologySpreadConstraints",
        !topology_spread_constraints.is_empty(),
    )?;
    reject(path, "resourceClaims", !resource_claims.is_empty())?;
    reject(path, "workloadRef", workload_ref.is_some())?;

    let mut f = Fields::new();
    f.list(path, "initContainers", init_containers, container)?
        .list_always(path, "containers", containers, container)?
        .omitempty("restartPolicy", restart_policy)
        .pointer(
            "terminationGracePeriodSeconds",
            termination_grace_period_seconds,
        )
        .pointer("activeDeadlineSeconds", active_deadline_seconds)
        .omitempty("dnsPolicy", dns_policy)
        .string_map("nodeSelector", node_selector)
        .omitempty("serviceAccountName", service_account_name)
        .omitempty("serviceAccount", service_account)
        .pointer(
            "automountServiceAccountToken",
            automount_service_account_token,
        )
        .omitempty("nodeName", node_name)
        .omitempty("hostNetwork", host_network)
        .omitempty("hostPID", host_pid)
        .omitempty("hostIPC", host_ipc)
        .pointer("shareProcessNamespace", share_process_namespace)
        .list(
            path,
            "imagePullSecrets",
            image_pull_secrets,
            local_object_reference,
        )?
        .omitempty("hostname", hostname)
        .omitempty("subdomain", subdomain)
        .omitempty("schedulerName", scheduler_name)
        .list(path, "tolerations", tolerations, toleration)?
        .list(path, "hostAliases", host_aliases, host_alias)?
        .omitempty("priorityClassName", priority_class_name)
        .pointer("priority", priority)
        .opt_value("dnsConfig", dns_config.map(pod_dns_config))
        .list(path, "readinessGates", readiness_gates, readiness_gate)?
        .pointer("runtimeClassName", runtime_class_name)
        .pointer("enableServiceLinks", enable_service_links)
        .pointer("preemptionPolicy", preemption_policy);
    resource_list(&mut f, path, "overhead", overhead)?;
    f.pointer("setHostnameAsFQDN", set_hostname_as_fqdn)
        .opt_value("os", os.map(pod_os))
        .pointer("hostUsers", host_users)
        .list(path, "schedulingGates", scheduling_gates, scheduling_gate)?;
    if let Some(r) = resources {
        f.value(
            "resources",
            resource_requirements(r, &child(path, "resources"))?,
        );
    }
    f.pointer("hostnameOverride", hostname_override);
    Ok(f.finish())
}

fn toleration(t: Toleration, _path: &str) -> Result<Value, ApiError> {
    let Toleration {
        key,
        operator,
        value,
        effect,
        toleration_seconds,
    } = t;
    Ok(Fields::new()
        .omitempty("key", key)
        .omitempty("operator", operator)
        .omitempty("value", value)
        .omitempty("effect", effect)
        .pointer("tolerationSeconds", toleration_seconds)
        .finish())
}

fn host_alias(h: HostAlias, _path: &str) -> Result<Value, ApiError> {
    let HostAlias { ip, hostnames } = h;
    Ok(Fields::new()
        .always("ip", ip)
        .strings("hostnames", hostnames)
        .finish())
}

fn pod_dns_config(c: PodDnsConfig) -> Value {
    let PodDnsConfig {
        nameservers,
        searches,
        options,
    } = c;
    let options: Vec<Value> = options
        .into_iter()
        .map(|o| {
            let PodDnsConfigOption { name, value } = o;
            Fields::new()
                .omitempty("name", name)
                .pointer("value", value)
                .finish()
        })
        .collect();
    let mut f = Fields::new();
    f.strings("nameservers", nameservers)
        .strings("searches", searches);
    if !options.is_empty() {
        f.value("options", Value::Array(options));
    }
    f.finish()
}

fn readiness_gate(g: PodReadinessGate, _path: &str) -> Result<Value, ApiError> {
    let PodReadinessGate { condition_type } = g;
    Ok(Fields::new()
        .always("conditionType", condition_type)
        .finish())
}

fn pod_os(o: PodOs) -> Value {
    let PodOs { name } = o;
    Fields::new().always("name", name).finish()
}

fn scheduling_gate(g: PodSchedulingGate, _path: &str) -> Result<Value, ApiError> {
    let PodSchedulingGate { name } = g;
    Ok(Fields::new().always("name", name).finish())
}

fn container(c: Container, path: &str) -> Result<Value, ApiError> {
    let Container {
        name,
        image,
        command,
        args,
        working_dir,
        ports,
        env_from,
        env,
        resources,
        resize_policy,
        restart_policy,
        restart_policy_rules,
        volume_mounts,
        volume_devices,
        liveness_probe,
        readiness_probe,
        startup_probe,
        lifecycle,
        termination_message_path,
        termination_message_policy,
        image_pull_policy,
        security_context,
        stdin,
        stdin_once,
        tty,
    } = c;
    reject(path, "restartPolicyRules", !restart_policy_rules.is_empty())?;
    reject(path, "volumeDevices", !volume_devices.is_empty())?;
    reject(path, "livenessProbe", liveness_probe.is_some())?;
    reject(path, "readinessProbe", readiness_probe.is_some())?;
    reject(path, "startupProbe", startup_probe.is_some())?;
    reject(path, "lifecycle", lifecycle.is_some())?;
    reject(path, "securityContext", security_context.is_some())?;
    let mut f = Fields::new();
    f.always("name", name)
        .omitempty("image", image)
        .strings("command", command)
        .strings("args", args)
        .omitempty("workingDir", working_dir)
        .list(path, "ports", ports, container_port)?
        .list(path, "envFrom", env_from, env_from_source)?
        .list(path, "env", env, env_var)?
        // A non-pointer struct, so `{}` even when empty (as kubectl prints it).
        .value(
            "resources",
            resource_requirements(resources.unwrap_or_default(), &child(path, "resources"))?,
        )
        .list(path, "resizePolicy", resize_policy, container_resize_policy)?
        .pointer("restartPolicy", restart_policy)
        .list(path, "volumeMounts", volume_mounts, volume_mount)?
        .omitempty("terminationMessagePath", termination_message_path)
        .omitempty("terminationMessagePolicy", termination_message_policy)
        .omitempty("imagePullPolicy", image_pull_policy)
        .omitempty("stdin", stdin)
        .omitempty("stdinOnce", stdin_once)
        .omitempty("tty", tty);
    Ok(f.finish())
}

fn container_port(p: ContainerPort, _path: &str) -> Result<Value, ApiError> {
    let ContainerPort {
        name,
        host_port,
        container_port,
        protocol,
        host_ip,
    } = p;
    Ok(Fields::new()
        .omitempty("name", name)
        .omitempty("hostPort", host_port)
        .always("containerPort", container_port)
        .omitempty("protocol", protocol)
        .omitempty("hostIP", host_ip)
        .finish())
}

fn env_from_source(e: EnvFromSource, _path: &str) -> Result<Value, ApiError> {
    let EnvFromSource {
        prefix,
        config_map_ref,
        secret_ref,
    } = e;
    let config_map_ref = config_map_ref.map(|r| {
        let ConfigMapEnvSource {
            local_object_reference,
            optional,
        } = r;
        Fields::new()
            .omitempty("name", inline_name(local_object_reference))
            .pointer("optional", optional)
            .finish()
    });
    let secret_ref = secret_ref.map(|r| {
        let SecretEnvSource {
            local_object_reference,
            optional,
        } = r;
        Fields::new()
            .omitempty("name", inline_name(local_object_reference))
            .pointer("optional", optional)
            .finish()
    });
    Ok(Fields::new()
        .omitempty("prefix", prefix)
        .opt_value("configMapRef", config_map_ref)
        .opt_value("secretRef", secret_ref)
        .finish())
}

fn env_var(e: EnvVar, path: &str) -> Result<Value, ApiError> {
    let EnvVar {
        name,
        value,
        value_from,
    } = e;
    let value_from = value_from
        .map(|v| env_var_source(v, &child(path, "valueFrom")))
        .transpose()?;
    Ok(Fields::new()
        .always("name", name)
        .omitempty("value", value)
        .opt_value("valueFrom", value_from)
        .finish())
}

fn env_var_source(s: EnvVarSource, path: &str) -> Result<Value, ApiError> {
    let EnvVarSource {
        field_ref,
        resource_field_ref,
        config_map_key_ref,
        secret_key_ref,
        file_key_ref,
    } = s;
    reject(path, "fileKeyRef", file_key_ref.is_some())?;
    let field_ref = field_ref.map(|r| {
        let ObjectFieldSelector {
            api_version,
            field_path,
        } = r;
        Fields::new()
            .omitempty("apiVersion", api_version)
            .always("fieldPath", field_path)
            .finish()
    });
    let resource_field_ref = resource_field_ref
        .map(|r| {
            let ResourceFieldSelector {
                container_name,
                resource,
                divisor,
            } = r;
            let divisor_path = child(&child(path, "resourceFieldRef"), "divisor");
            Ok::<_, ApiError>(
                Fields::new()
                    .omitempty("containerName", container_name)
                    .always("resource", resource)
                    .value(
                        "divisor",
                        quantity(divisor.unwrap_or_default(), &divisor_path)?,
                    )
                    .finish(),
            )
        })
        .transpose()?;
    let config_map_key_ref = config_map_key_ref.map(|r| {
        let ConfigMapKeySelector {
            local_object_reference,
            key,
            optional,
        } = r;
        Fields::new()
            .omitempty("name", inline_name(local_object_reference))
            .always("key", key)
            .pointer("optional", optional)
            .finish()
    });
    let secret_key_ref = secret_key_ref.map(|r| {
        let SecretKeySelector {
            local_object_reference,
            key,
            optional,
        } = r;
        Fields::new()
            .omitempty("name", inline_name(local_object_reference))
            .always("key", key)
            .pointer("optional", optional)
            .finish()
    });
    Ok(Fields::new()
        .opt_value("fieldRef", field_ref)
        .opt_value("resourceFieldRef", resource_field_ref)
        .opt_value("configMapKeyRef", config_map_key_ref)
        .opt_value("secretKeyRef", secret_key_ref)
        .finish())
}

fn resource_requirements(r: ResourceRequirements, path: &str) -> Result<Value, ApiError> {
    let ResourceRequirements {
        limits,
        requests,
        claims,
    } = r;
    let mut f = Fields::new();
    resource_list(&mut f, path, "limits", limits)?;
    resource_list(&mut f, path, "requests", requests)?;
    f.list(path, "claims", claims, resource_claim)?;
    Ok(f.finish())
}

fn resource_claim(c: ResourceClaim, _path: &str) -> Result<Value, ApiError> {
    let ResourceClaim { name, request } = c;
    Ok(Fields::new()
        .always("name", name)
        .omitempty("request", request)
        .finish())
}

fn container_resize_policy(p: ContainerResizePolicy, _path: &str) -> Result<Value, ApiError> {
    let ContainerResizePolicy {
        resource_name,
        restart_policy,
    } = p;
    Ok(Fields::new()
        .always("resourceName", resource_name)
        .always("restartPolicy", restart_policy)
        .finish())
}

fn volume_mount(m: VolumeMount, _path: &str) -> Result<Value, ApiError> {
    let VolumeMount {
        name,
        read_only,
        recursive_read_only,
        mount_path,
        sub_path,
        mount_propagation,
        sub_path_expr,
    } = m;
    Ok(Fields::new()
        .always("name", name)
        .omitempty("readOnly", read_only)
        .pointer("recursiveReadOnly", recursive_read_only)
        .always("mountPath", mount_path)
        .omitempty("subPath", sub_path)
        .pointer("mountPropagation", mount_propagation)
        .omitempty("subPathExpr", sub_path_expr)
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
