//! Conversion of containers: ports, environment, resources, mounts, probes, lifecycle hooks and
//! security contexts.

use k8s_pb::api::core::v1::{
    ConfigMapEnvSource, ConfigMapKeySelector, Container, ContainerPort, ContainerResizePolicy,
    EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, ResourceClaim, ResourceFieldSelector,
    ResourceRequirements, SecretEnvSource, SecretKeySelector, VolumeMount,
};
use serde_json::Value;

use super::core::inline_name;
use super::json::{Fields, child, reject};
use super::meta::{quantity, resource_list};
use crate::error::ApiError;

pub(super) fn container(c: Container, path: &str) -> Result<Value, ApiError> {
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

pub(super) fn resource_requirements(
    r: ResourceRequirements,
    path: &str,
) -> Result<Value, ApiError> {
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
