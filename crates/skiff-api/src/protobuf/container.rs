//! Conversion of containers: ports, environment, resources, mounts, probes, lifecycle hooks and
//! security contexts.

use k8s_pb::api::core::v1::{
    AppArmorProfile, Capabilities, ConfigMapEnvSource, ConfigMapKeySelector, Container,
    ContainerPort, ContainerResizePolicy, ContainerRestartRule, ContainerRestartRuleOnExitCodes,
    EnvFromSource, EnvVar, EnvVarSource, ExecAction, FileKeySelector, GrpcAction, HttpGetAction,
    HttpHeader, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, ProbeHandler,
    ResourceClaim, ResourceFieldSelector, ResourceRequirements, SeLinuxOptions, SeccompProfile,
    SecretEnvSource, SecretKeySelector, SecurityContext, SleepAction, TcpSocketAction,
    VolumeDevice, VolumeMount, WindowsSecurityContextOptions,
};
use serde_json::Value;

use super::core::inline_name;
use super::json::{Fields, child};
use super::meta::{int_or_string, quantity, resource_list};
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
    let liveness_probe = liveness_probe
        .map(|p| probe(p, &child(path, "livenessProbe")))
        .transpose()?;
    let readiness_probe = readiness_probe
        .map(|p| probe(p, &child(path, "readinessProbe")))
        .transpose()?;
    let startup_probe = startup_probe
        .map(|p| probe(p, &child(path, "startupProbe")))
        .transpose()?;
    let lifecycle = lifecycle
        .map(|l| lifecycle_json(l, &child(path, "lifecycle")))
        .transpose()?;
    let security_context = security_context.map(security_context_json);
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
        .list(
            path,
            "restartPolicyRules",
            restart_policy_rules,
            container_restart_rule,
        )?
        .list(path, "volumeMounts", volume_mounts, volume_mount)?
        .list(path, "volumeDevices", volume_devices, volume_device)?
        .opt_value("livenessProbe", liveness_probe)
        .opt_value("readinessProbe", readiness_probe)
        .opt_value("startupProbe", startup_probe)
        .opt_value("lifecycle", lifecycle)
        .omitempty("terminationMessagePath", termination_message_path)
        .omitempty("terminationMessagePolicy", termination_message_policy)
        .omitempty("imagePullPolicy", image_pull_policy)
        .opt_value("securityContext", security_context)
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

pub(super) fn object_field_selector(r: ObjectFieldSelector) -> Value {
    let ObjectFieldSelector {
        api_version,
        field_path,
    } = r;
    Fields::new()
        .omitempty("apiVersion", api_version)
        .always("fieldPath", field_path)
        .finish()
}

pub(super) fn resource_field_selector(
    r: ResourceFieldSelector,
    path: &str,
) -> Result<Value, ApiError> {
    let ResourceFieldSelector {
        container_name,
        resource,
        divisor,
    } = r;
    // `divisor` is a non-pointer Quantity: the zero value prints as "0".
    let divisor = quantity(divisor.unwrap_or_default(), &child(path, "divisor"))?;
    Ok(Fields::new()
        .omitempty("containerName", container_name)
        .always("resource", resource)
        .value("divisor", divisor)
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
    let file_key_ref = file_key_ref.map(|r| {
        let FileKeySelector {
            volume_name,
            path,
            key,
            optional,
        } = r;
        Fields::new()
            .always("volumeName", volume_name)
            .always("path", path)
            .always("key", key)
            .pointer("optional", optional)
            .finish()
    });
    let field_ref = field_ref.map(object_field_selector);
    let resource_field_ref = resource_field_ref
        .map(|r| resource_field_selector(r, &child(path, "resourceFieldRef")))
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
        .opt_value("fileKeyRef", file_key_ref)
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

fn probe(p: Probe, path: &str) -> Result<Value, ApiError> {
    let Probe {
        handler,
        initial_delay_seconds,
        timeout_seconds,
        period_seconds,
        success_threshold,
        failure_threshold,
        termination_grace_period_seconds,
    } = p;
    // ProbeHandler is embedded inline in Go: its fields sit next to the timings.
    let ProbeHandler {
        exec,
        http_get,
        tcp_socket,
        grpc,
    } = handler.unwrap_or_default();
    let mut f = Fields::new();
    f.opt_value("exec", exec.map(exec_action))
        .opt_value(
            "httpGet",
            http_get
                .map(|h| http_get_action(h, &child(path, "httpGet")))
                .transpose()?,
        )
        .opt_value(
            "tcpSocket",
            tcp_socket
                .map(|t| tcp_socket_action(t, &child(path, "tcpSocket")))
                .transpose()?,
        )
        .opt_value(
            "grpc",
            grpc.map(|g| {
                let GrpcAction { port, service } = g;
                // `service` is a pointer without omitempty: null when unset.
                Fields::new()
                    .always("port", port)
                    .pointer_or_null("service", service)
                    .finish()
            }),
        )
        .omitempty("initialDelaySeconds", initial_delay_seconds)
        .omitempty("timeoutSeconds", timeout_seconds)
        .omitempty("periodSeconds", period_seconds)
        .omitempty("successThreshold", success_threshold)
        .omitempty("failureThreshold", failure_threshold)
        .pointer(
            "terminationGracePeriodSeconds",
            termination_grace_period_seconds,
        );
    Ok(f.finish())
}

fn exec_action(e: ExecAction) -> Value {
    let ExecAction { command } = e;
    Fields::new().strings("command", command).finish()
}

fn http_get_action(h: HttpGetAction, path: &str) -> Result<Value, ApiError> {
    let HttpGetAction {
        path: http_path,
        port,
        host,
        scheme,
        http_headers,
    } = h;
    let headers: Vec<Value> = http_headers
        .into_iter()
        .map(|h| {
            let HttpHeader { name, value } = h;
            Fields::new()
                .always("name", name)
                .always("value", value)
                .finish()
        })
        .collect();
    let mut f = Fields::new();
    f.omitempty("path", http_path)
        .value("port", int_or_string(port, &child(path, "port"))?)
        .omitempty("host", host)
        .omitempty("scheme", scheme);
    if !headers.is_empty() {
        f.value("httpHeaders", Value::Array(headers));
    }
    Ok(f.finish())
}

fn tcp_socket_action(t: TcpSocketAction, path: &str) -> Result<Value, ApiError> {
    let TcpSocketAction { port, host } = t;
    Ok(Fields::new()
        .value("port", int_or_string(port, &child(path, "port"))?)
        .omitempty("host", host)
        .finish())
}

fn lifecycle_json(l: Lifecycle, path: &str) -> Result<Value, ApiError> {
    let Lifecycle {
        post_start,
        pre_stop,
        stop_signal,
    } = l;
    let post_start = post_start
        .map(|h| lifecycle_handler(h, &child(path, "postStart")))
        .transpose()?;
    let pre_stop = pre_stop
        .map(|h| lifecycle_handler(h, &child(path, "preStop")))
        .transpose()?;
    Ok(Fields::new()
        .opt_value("postStart", post_start)
        .opt_value("preStop", pre_stop)
        .pointer("stopSignal", stop_signal)
        .finish())
}

fn lifecycle_handler(h: LifecycleHandler, path: &str) -> Result<Value, ApiError> {
    let LifecycleHandler {
        exec,
        http_get,
        tcp_socket,
        sleep,
    } = h;
    let sleep = sleep.map(|s| {
        let SleepAction { seconds } = s;
        Fields::new().always("seconds", seconds).finish()
    });
    Ok(Fields::new()
        .opt_value("exec", exec.map(exec_action))
        .opt_value(
            "httpGet",
            http_get
                .map(|h| http_get_action(h, &child(path, "httpGet")))
                .transpose()?,
        )
        .opt_value(
            "tcpSocket",
            tcp_socket
                .map(|t| tcp_socket_action(t, &child(path, "tcpSocket")))
                .transpose()?,
        )
        .opt_value("sleep", sleep)
        .finish())
}

fn security_context_json(s: SecurityContext) -> Value {
    let SecurityContext {
        capabilities,
        privileged,
        se_linux_options,
        windows_options,
        run_as_user,
        run_as_group,
        run_as_non_root,
        read_only_root_filesystem,
        allow_privilege_escalation,
        proc_mount,
        seccomp_profile,
        app_armor_profile,
    } = s;
    let capabilities = capabilities.map(|c| {
        let Capabilities { add, drop } = c;
        Fields::new()
            .strings("add", add)
            .strings("drop", drop)
            .finish()
    });
    Fields::new()
        .opt_value("capabilities", capabilities)
        .pointer("privileged", privileged)
        .opt_value(
            "seLinuxOptions",
            se_linux_options.map(se_linux_options_json),
        )
        .opt_value("windowsOptions", windows_options.map(windows_options_json))
        .pointer("runAsUser", run_as_user)
        .pointer("runAsGroup", run_as_group)
        .pointer("runAsNonRoot", run_as_non_root)
        .pointer("readOnlyRootFilesystem", read_only_root_filesystem)
        .pointer("allowPrivilegeEscalation", allow_privilege_escalation)
        .pointer("procMount", proc_mount)
        .opt_value("seccompProfile", seccomp_profile.map(seccomp_profile_json))
        .opt_value(
            "appArmorProfile",
            app_armor_profile.map(app_armor_profile_json),
        )
        .finish()
}

pub(super) fn se_linux_options_json(o: SeLinuxOptions) -> Value {
    let SeLinuxOptions {
        user,
        role,
        r#type,
        level,
    } = o;
    Fields::new()
        .omitempty("user", user)
        .omitempty("role", role)
        .omitempty("type", r#type)
        .omitempty("level", level)
        .finish()
}

pub(super) fn windows_options_json(o: WindowsSecurityContextOptions) -> Value {
    let WindowsSecurityContextOptions {
        gmsa_credential_spec_name,
        gmsa_credential_spec,
        run_as_user_name,
        host_process,
    } = o;
    Fields::new()
        .pointer("gmsaCredentialSpecName", gmsa_credential_spec_name)
        .pointer("gmsaCredentialSpec", gmsa_credential_spec)
        .pointer("runAsUserName", run_as_user_name)
        .pointer("hostProcess", host_process)
        .finish()
}

pub(super) fn seccomp_profile_json(p: SeccompProfile) -> Value {
    let SeccompProfile {
        r#type,
        localhost_profile,
    } = p;
    Fields::new()
        .always("type", r#type)
        .pointer("localhostProfile", localhost_profile)
        .finish()
}

pub(super) fn app_armor_profile_json(p: AppArmorProfile) -> Value {
    let AppArmorProfile {
        r#type,
        localhost_profile,
    } = p;
    Fields::new()
        .always("type", r#type)
        .pointer("localhostProfile", localhost_profile)
        .finish()
}

fn container_restart_rule(r: ContainerRestartRule, _path: &str) -> Result<Value, ApiError> {
    let ContainerRestartRule { action, exit_codes } = r;
    let exit_codes = exit_codes.map(|e| {
        let ContainerRestartRuleOnExitCodes { operator, values } = e;
        let mut f = Fields::new();
        f.omitempty("operator", operator);
        if !values.is_empty() {
            f.value("values", Value::from(values));
        }
        f.finish()
    });
    Ok(Fields::new()
        .omitempty("action", action)
        .opt_value("exitCodes", exit_codes)
        .finish())
}

fn volume_device(d: VolumeDevice, _path: &str) -> Result<Value, ApiError> {
    let VolumeDevice { name, device_path } = d;
    Ok(Fields::new()
        .always("name", name)
        .always("devicePath", device_path)
        .finish())
}
