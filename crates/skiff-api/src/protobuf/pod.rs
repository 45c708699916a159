//! Conversion of Pods and the pod templates every workload embeds.

use k8s_pb::api::core::v1::{
    Affinity, HostAlias, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, PodDnsConfig, PodDnsConfigOption, PodOs,
    PodReadinessGate, PodResourceClaim, PodSchedulingGate, PodSecurityContext, PodSpec, PodStatus,
    PodTemplateSpec, PreferredSchedulingTerm, Sysctl, Toleration, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use serde_json::Value;

use super::container::{
    app_armor_profile_json, container, resource_requirements, se_linux_options_json,
    seccomp_profile_json, windows_options_json,
};
use super::core::local_object_reference;
use super::json::{Fields, child, reject};
use super::meta::{label_selector, object_meta, opt_time, resource_list};
use super::volume::volume;
use crate::error::ApiError;

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
    reject(
        path,
        "ephemeralContainers",
        !ephemeral_containers.is_empty(),
    )?;
    reject(path, "workloadRef", workload_ref.is_some())?;

    let mut f = Fields::new();
    f.list(path, "volumes", volumes, volume)?
        .list(path, "initContainers", init_containers, container)?
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
        .opt_value(
            "securityContext",
            security_context.map(pod_security_context),
        )
        .list(
            path,
            "imagePullSecrets",
            image_pull_secrets,
            local_object_reference,
        )?
        .omitempty("hostname", hostname)
        .omitempty("subdomain", subdomain)
        .opt_value(
            "affinity",
            affinity
                .map(|a| affinity_json(a, &child(path, "affinity")))
                .transpose()?,
        )
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
    f.list(
        path,
        "topologySpreadConstraints",
        topology_spread_constraints,
        topology_spread_constraint,
    )?;
    f.pointer("setHostnameAsFQDN", set_hostname_as_fqdn)
        .opt_value("os", os.map(pod_os))
        .pointer("hostUsers", host_users)
        .list(path, "schedulingGates", scheduling_gates, scheduling_gate)?
        .list(path, "resourceClaims", resource_claims, pod_resource_claim)?;
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

fn pod_security_context(s: PodSecurityContext) -> Value {
    let PodSecurityContext {
        se_linux_options,
        windows_options,
        run_as_user,
        run_as_group,
        run_as_non_root,
        supplemental_groups,
        supplemental_groups_policy,
        fs_group,
        sysctls,
        fs_group_change_policy,
        seccomp_profile,
        app_armor_profile,
        se_linux_change_policy,
    } = s;
    let sysctls: Vec<Value> = sysctls
        .into_iter()
        .map(|s| {
            let Sysctl { name, value } = s;
            Fields::new()
                .always("name", name)
                .always("value", value)
                .finish()
        })
        .collect();
    let mut f = Fields::new();
    f.opt_value(
        "seLinuxOptions",
        se_linux_options.map(se_linux_options_json),
    )
    .opt_value("windowsOptions", windows_options.map(windows_options_json))
    .pointer("runAsUser", run_as_user)
    .pointer("runAsGroup", run_as_group)
    .pointer("runAsNonRoot", run_as_non_root);
    if !supplemental_groups.is_empty() {
        f.value("supplementalGroups", Value::from(supplemental_groups));
    }
    f.pointer("supplementalGroupsPolicy", supplemental_groups_policy)
        .pointer("fsGroup", fs_group);
    if !sysctls.is_empty() {
        f.value("sysctls", Value::Array(sysctls));
    }
    f.pointer("fsGroupChangePolicy", fs_group_change_policy)
        .opt_value("seccompProfile", seccomp_profile.map(seccomp_profile_json))
        .opt_value(
            "appArmorProfile",
            app_armor_profile.map(app_armor_profile_json),
        )
        .pointer("seLinuxChangePolicy", se_linux_change_policy);
    f.finish()
}

fn affinity_json(a: Affinity, path: &str) -> Result<Value, ApiError> {
    let Affinity {
        node_affinity,
        pod_affinity,
        pod_anti_affinity,
    } = a;
    let node_affinity = node_affinity
        .map(|n| {
            let NodeAffinity {
                required_during_scheduling_ignored_during_execution: required,
                preferred_during_scheduling_ignored_during_execution: preferred,
            } = n;
            let p = child(path, "nodeAffinity");
            let required = required
                .map(|r| {
                    node_selector(
                        r,
                        &child(&p, "requiredDuringSchedulingIgnoredDuringExecution"),
                    )
                })
                .transpose()?;
            Ok::<_, ApiError>(
                Fields::new()
                    .opt_value("requiredDuringSchedulingIgnoredDuringExecution", required)
                    .list(
                        &p,
                        "preferredDuringSchedulingIgnoredDuringExecution",
                        preferred,
                        preferred_scheduling_term,
                    )?
                    .finish(),
            )
        })
        .transpose()?;
    let pod_affinity = pod_affinity
        .map(|a| {
            let PodAffinity {
                required_during_scheduling_ignored_during_execution: required,
                preferred_during_scheduling_ignored_during_execution: preferred,
            } = a;
            pod_affinity_rules(required, preferred, &child(path, "podAffinity"))
        })
        .transpose()?;
    let pod_anti_affinity = pod_anti_affinity
        .map(|a| {
            let PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: required,
                preferred_during_scheduling_ignored_during_execution: preferred,
            } = a;
            pod_affinity_rules(required, preferred, &child(path, "podAntiAffinity"))
        })
        .transpose()?;
    Ok(Fields::new()
        .opt_value("nodeAffinity", node_affinity)
        .opt_value("podAffinity", pod_affinity)
        .opt_value("podAntiAffinity", pod_anti_affinity)
        .finish())
}

fn node_selector(s: NodeSelector, path: &str) -> Result<Value, ApiError> {
    let NodeSelector {
        node_selector_terms,
    } = s;
    Ok(Fields::new()
        .list_always(
            path,
            "nodeSelectorTerms",
            node_selector_terms,
            node_selector_term,
        )?
        .finish())
}

fn node_selector_term(t: NodeSelectorTerm, path: &str) -> Result<Value, ApiError> {
    let NodeSelectorTerm {
        match_expressions,
        match_fields,
    } = t;
    Ok(Fields::new()
        .list(
            path,
            "matchExpressions",
            match_expressions,
            node_selector_requirement,
        )?
        .list(path, "matchFields", match_fields, node_selector_requirement)?
        .finish())
}

fn node_selector_requirement(r: NodeSelectorRequirement, _path: &str) -> Result<Value, ApiError> {
    let NodeSelectorRequirement {
        key,
        operator,
        values,
    } = r;
    Ok(Fields::new()
        .always("key", key)
        .always("operator", operator)
        .strings("values", values)
        .finish())
}

fn preferred_scheduling_term(t: PreferredSchedulingTerm, path: &str) -> Result<Value, ApiError> {
    let PreferredSchedulingTerm { weight, preference } = t;
    Ok(Fields::new()
        .always("weight", weight)
        .value(
            "preference",
            node_selector_term(preference.unwrap_or_default(), &child(path, "preference"))?,
        )
        .finish())
}

/// The shared shape of podAffinity and podAntiAffinity.
fn pod_affinity_rules(
    required: Vec<PodAffinityTerm>,
    preferred: Vec<WeightedPodAffinityTerm>,
    path: &str,
) -> Result<Value, ApiError> {
    Ok(Fields::new()
        .list(
            path,
            "requiredDuringSchedulingIgnoredDuringExecution",
            required,
            pod_affinity_term,
        )?
        .list(
            path,
            "preferredDuringSchedulingIgnoredDuringExecution",
            preferred,
            |w, p| {
                let WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term: term,
                } = w;
                Ok(Fields::new()
                    .always("weight", weight)
                    .value(
                        "podAffinityTerm",
                        pod_affinity_term(term.unwrap_or_default(), &child(p, "podAffinityTerm"))?,
                    )
                    .finish())
            },
        )?
        .finish())
}

fn pod_affinity_term(t: PodAffinityTerm, path: &str) -> Result<Value, ApiError> {
    let PodAffinityTerm {
        label_selector: selector,
        namespaces,
        topology_key,
        namespace_selector,
        match_label_keys,
        mismatch_label_keys,
    } = t;
    let selector = selector
        .map(|s| label_selector(s, &child(path, "labelSelector")))
        .transpose()?;
    let namespace_selector = namespace_selector
        .map(|s| label_selector(s, &child(path, "namespaceSelector")))
        .transpose()?;
    Ok(Fields::new()
        .opt_value("labelSelector", selector)
        .strings("namespaces", namespaces)
        .always("topologyKey", topology_key)
        .opt_value("namespaceSelector", namespace_selector)
        .strings("matchLabelKeys", match_label_keys)
        .strings("mismatchLabelKeys", mismatch_label_keys)
        .finish())
}

fn topology_spread_constraint(c: TopologySpreadConstraint, path: &str) -> Result<Value, ApiError> {
    let TopologySpreadConstraint {
        max_skew,
        topology_key,
        when_unsatisfiable,
        label_selector: selector,
        min_domains,
        node_affinity_policy,
        node_taints_policy,
        match_label_keys,
    } = c;
    let selector = selector
        .map(|s| label_selector(s, &child(path, "labelSelector")))
        .transpose()?;
    Ok(Fields::new()
        .always("maxSkew", max_skew)
        .always("topologyKey", topology_key)
        .always("whenUnsatisfiable", when_unsatisfiable)
        .opt_value("labelSelector", selector)
        .pointer("minDomains", min_domains)
        .pointer("nodeAffinityPolicy", node_affinity_policy)
        .pointer("nodeTaintsPolicy", node_taints_policy)
        .strings("matchLabelKeys", match_label_keys)
        .finish())
}

fn pod_resource_claim(c: PodResourceClaim, _path: &str) -> Result<Value, ApiError> {
    let PodResourceClaim {
        name,
        resource_claim_name,
        resource_claim_template_name,
    } = c;
    Ok(Fields::new()
        .always("name", name)
        .pointer("resourceClaimName", resource_claim_name)
        .pointer("resourceClaimTemplateName", resource_claim_template_name)
        .finish())
}
