//! Conversion of networking/v1 messages: Ingress.

use k8s_pb::api::core::v1::TypedLocalObjectReference;
use k8s_pb::api::networking::v1::{
    HttpIngressPath, HttpIngressRuleValue, Ingress, IngressBackend, IngressLoadBalancerStatus,
    IngressRule, IngressRuleValue, IngressServiceBackend, IngressSpec, IngressStatus, IngressTls,
    ServiceBackendPort,
};
use serde_json::Value;

use super::json::{Fields, child, reject};
use super::meta::object_meta;
use crate::error::ApiError;

pub(super) fn ingress(i: Ingress, f: &mut Fields) -> Result<(), ApiError> {
    let Ingress {
        metadata,
        spec,
        status,
    } = i;
    let IngressStatus { load_balancer } = status.unwrap_or_default();
    let IngressLoadBalancerStatus { ingress } = load_balancer.unwrap_or_default();
    reject("status.loadBalancer", "ingress", !ingress.is_empty())?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value("spec", ingress_spec(spec.unwrap_or_default(), "spec")?)
        .value(
            "status",
            Fields::new()
                .value("loadBalancer", Fields::new().finish())
                .finish(),
        );
    Ok(())
}

fn ingress_spec(s: IngressSpec, path: &str) -> Result<Value, ApiError> {
    let IngressSpec {
        ingress_class_name,
        default_backend,
        tls,
        rules,
    } = s;
    let default_backend = default_backend
        .map(|b| ingress_backend(b, &child(path, "defaultBackend")))
        .transpose()?;
    Ok(Fields::new()
        .pointer("ingressClassName", ingress_class_name)
        .opt_value("defaultBackend", default_backend)
        .list(path, "tls", tls, ingress_tls)?
        .list(path, "rules", rules, ingress_rule)?
        .finish())
}

fn ingress_tls(t: IngressTls, _path: &str) -> Result<Value, ApiError> {
    let IngressTls { hosts, secret_name } = t;
    Ok(Fields::new()
        .strings("hosts", hosts)
        .omitempty("secretName", secret_name)
        .finish())
}

fn ingress_rule(r: IngressRule, path: &str) -> Result<Value, ApiError> {
    let IngressRule {
        host,
        ingress_rule_value,
    } = r;
    // IngressRuleValue is embedded inline in Go, so `http` sits next to `host`.
    let IngressRuleValue { http } = ingress_rule_value.unwrap_or_default();
    let http = http
        .map(|h| {
            let HttpIngressRuleValue { paths } = h;
            Ok::<_, ApiError>(
                Fields::new()
                    .list_always(&child(path, "http"), "paths", paths, http_ingress_path)?
                    .finish(),
            )
        })
        .transpose()?;
    Ok(Fields::new()
        .omitempty("host", host)
        .opt_value("http", http)
        .finish())
}

fn http_ingress_path(p: HttpIngressPath, path: &str) -> Result<Value, ApiError> {
    let HttpIngressPath {
        path: http_path,
        path_type,
        backend,
    } = p;
    Ok(Fields::new()
        .omitempty("path", http_path)
        .pointer_or_null("pathType", path_type)
        .value(
            "backend",
            ingress_backend(backend.unwrap_or_default(), &child(path, "backend"))?,
        )
        .finish())
}

fn ingress_backend(b: IngressBackend, _path: &str) -> Result<Value, ApiError> {
    let IngressBackend { service, resource } = b;
    let resource = resource.map(|r| {
        let TypedLocalObjectReference {
            api_group,
            kind,
            name,
        } = r;
        // `apiGroup` is a pointer without omitempty: null when unset.
        Fields::new()
            .pointer_or_null("apiGroup", api_group)
            .always("kind", kind)
            .always("name", name)
            .finish()
    });
    let service = service.map(|s| {
        let IngressServiceBackend { name, port } = s;
        let ServiceBackendPort {
            name: port_name,
            number,
        } = port.unwrap_or_default();
        Fields::new()
            .always("name", name)
            .value(
                "port",
                Fields::new()
                    .omitempty("name", port_name)
                    .omitempty("number", number)
                    .finish(),
            )
            .finish()
    });
    Ok(Fields::new()
        .opt_value("service", service)
        .opt_value("resource", resource)
        .finish())
}
