//! Conversion of access-control messages: RBAC roles and bindings, and TokenRequest.

use k8s_pb::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenRequestStatus,
};
use k8s_pb::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use serde_json::Value;

use super::json::{Fields, child};
use super::meta::{label_selector, object_meta, time};
use crate::error::ApiError;

pub(super) fn role(r: Role, f: &mut Fields) -> Result<(), ApiError> {
    let Role { metadata, rules } = r;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .list_always("", "rules", rules, policy_rule)?;
    Ok(())
}

pub(super) fn cluster_role(r: ClusterRole, f: &mut Fields) -> Result<(), ApiError> {
    let ClusterRole {
        metadata,
        rules,
        aggregation_rule,
    } = r;
    let aggregation_rule = aggregation_rule
        .map(|a| {
            let AggregationRule {
                cluster_role_selectors,
            } = a;
            Ok::<_, ApiError>(
                Fields::new()
                    .list(
                        "aggregationRule",
                        "clusterRoleSelectors",
                        cluster_role_selectors,
                        label_selector,
                    )?
                    .finish(),
            )
        })
        .transpose()?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .list_always("", "rules", rules, policy_rule)?
        .opt_value("aggregationRule", aggregation_rule);
    Ok(())
}

fn policy_rule(r: PolicyRule, _path: &str) -> Result<Value, ApiError> {
    let PolicyRule {
        verbs,
        api_groups,
        resources,
        resource_names,
        non_resource_ur_ls,
    } = r;
    Ok(Fields::new()
        .strings_always("verbs", verbs)
        .strings("apiGroups", api_groups)
        .strings("resources", resources)
        .strings("resourceNames", resource_names)
        .strings("nonResourceURLs", non_resource_ur_ls)
        .finish())
}

pub(super) fn role_binding(b: RoleBinding, f: &mut Fields) -> Result<(), ApiError> {
    let RoleBinding {
        metadata,
        subjects,
        role_ref,
    } = b;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .list("", "subjects", subjects, subject)?
        .value("roleRef", role_ref_json(role_ref));
    Ok(())
}

pub(super) fn cluster_role_binding(b: ClusterRoleBinding, f: &mut Fields) -> Result<(), ApiError> {
    let ClusterRoleBinding {
        metadata,
        subjects,
        role_ref,
    } = b;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .list("", "subjects", subjects, subject)?
        .value("roleRef", role_ref_json(role_ref));
    Ok(())
}

fn subject(s: Subject, _path: &str) -> Result<Value, ApiError> {
    let Subject {
        kind,
        api_group,
        name,
        namespace,
    } = s;
    Ok(Fields::new()
        .always("kind", kind)
        .omitempty("apiGroup", api_group)
        .always("name", name)
        .omitempty("namespace", namespace)
        .finish())
}

fn role_ref_json(r: Option<RoleRef>) -> Value {
    let RoleRef {
        api_group,
        kind,
        name,
    } = r.unwrap_or_default();
    Fields::new()
        .always("apiGroup", api_group)
        .always("kind", kind)
        .always("name", name)
        .finish()
}

/// The body of `POST .../serviceaccounts/<name>/token` (`kubectl create token`).
pub(super) fn token_request(t: TokenRequest, f: &mut Fields) -> Result<(), ApiError> {
    let TokenRequest {
        metadata,
        spec,
        status,
    } = t;
    let TokenRequestSpec {
        audiences,
        expiration_seconds,
        bound_object_ref,
    } = spec.unwrap_or_default();
    let bound_object_ref = bound_object_ref.map(|r| {
        let BoundObjectReference {
            kind,
            api_version,
            name,
            u_id,
        } = r;
        Fields::new()
            .omitempty("kind", kind)
            .omitempty("apiVersion", api_version)
            .omitempty("name", name)
            .omitempty("uid", u_id)
            .finish()
    });
    let TokenRequestStatus {
        token,
        expiration_timestamp,
    } = status.unwrap_or_default();
    let expiration_timestamp = time(
        expiration_timestamp,
        &child("status", "expirationTimestamp"),
    )?;
    f.value("metadata", object_meta(metadata, "metadata")?)
        .value(
            "spec",
            Fields::new()
                .strings_always("audiences", audiences)
                .pointer_or_null("expirationSeconds", expiration_seconds)
                .value("boundObjectRef", bound_object_ref.unwrap_or(Value::Null))
                .finish(),
        )
        .value(
            "status",
            Fields::new()
                .always("token", token)
                .value("expirationTimestamp", expiration_timestamp)
                .finish(),
        );
    Ok(())
}
