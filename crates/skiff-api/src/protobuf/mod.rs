//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON.
//!
//! kubectl's typed commands (`kubectl create deployment|configmap|secret|service|job|...`,
//! `kubectl autoscale`, `kubectl create token`) POST protobuf and do not retry with JSON on a 415,
//! so the API server turns the body into exactly the JSON object kubectl would have sent (what
//! `--dry-run=client -o json` prints) and handles it like any JSON body. The wire form is the
//! magic `k8s\0` followed by a `runtime.Unknown` whose `raw` holds the object.
//!
//! Go's protobuf code writes every non-pointer field, zero or not, so which fields appear in the
//! JSON follows the Go struct tags (see `json.rs`). Each message has one conversion function that
//! destructures the k8s-pb struct without `..`: a field added to k8s-pb fails to compile until it
//! is handled. Rarely used deep fields are refused with a 415 naming their path rather than
//! converted, and fields k8s-pb itself does not know are found by `wire.rs`; nothing set is ever
//! dropped silently.

mod access;
mod container;
mod core;
mod json;
mod meta;
mod networking;
mod pod;
mod volume;
mod wire;
mod workloads;

use k8s_pb::api::apps::v1::Deployment;
use k8s_pb::api::authentication::v1::TokenRequest;
use k8s_pb::api::autoscaling::v1::HorizontalPodAutoscaler;
use k8s_pb::api::batch::v1::{CronJob, Job};
use k8s_pb::api::core::v1::{
    ConfigMap, Namespace, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_pb::api::networking::v1::Ingress;
use k8s_pb::api::policy::v1::PodDisruptionBudget;
use k8s_pb::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_pb::api::scheduling::v1::PriorityClass;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::Value;

use crate::error::ApiError;
use json::Fields;

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The `(apiVersion, kind)` pairs [`decode`] converts: every object kubectl 1.32 sends as
/// protobuf (`create`, `autoscale`, `create token`, `create job --from`) plus Pod.
pub const SUPPORTED_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("v1", "ResourceQuota"),
    ("apps/v1", "Deployment"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("autoscaling/v1", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("networking.k8s.io/v1", "Ingress"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("authentication.k8s.io/v1", "TokenRequest"),
];

/// Whether a `Content-Type` header value names the Kubernetes protobuf media type
/// (parameters such as `; charset=...` ignored, case-insensitive).
pub fn is_protobuf(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(CONTENT_TYPE)
}

/// Decodes a `k8s\0`-prefixed `runtime.Unknown` envelope into the JSON form of the object,
/// with `apiVersion` and `kind` taken from the envelope.
///
/// Malformed bytes are a 400 BadRequest; a kind, or a field, this decoder does not convert is a
/// 415 UnsupportedMediaType whose message says to send JSON instead.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        ApiError::bad_request(
            "protobuf body does not start with the Kubernetes magic bytes \"k8s\\x00\"",
        )
    })?;
    let Unknown {
        type_meta,
        raw,
        content_encoding,
        content_type,
    } = Unknown::decode(rest).map_err(|e| {
        ApiError::bad_request(format!(
            "failed to decode protobuf runtime.Unknown envelope: {e}"
        ))
    })?;
    if let Some(enc) = content_encoding.filter(|e| !e.is_empty()) {
        return Err(ApiError::UnsupportedMediaType {
            message: format!("protobuf content encoding {enc:?} is not supported; send JSON"),
        });
    }
    if let Some(ct) = content_type.filter(|c| !c.is_empty() && c != CONTENT_TYPE) {
        return Err(ApiError::UnsupportedMediaType {
            message: format!("protobuf envelope content type {ct:?} is not supported; send JSON"),
        });
    }
    let TypeMeta { api_version, kind } = type_meta.unwrap_or_default();
    let api_version = api_version.unwrap_or_default();
    let kind = kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "protobuf envelope has no apiVersion and kind",
        ));
    }
    let raw = raw.unwrap_or_default();

    let mut f = Fields::new();
    f.value("kind", Value::String(kind.clone()))
        .value("apiVersion", Value::String(api_version.clone()));
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => convert::<Namespace>(&raw, &kind, &mut f, core::namespace)?,
        ("v1", "ConfigMap") => convert::<ConfigMap>(&raw, &kind, &mut f, core::config_map)?,
        ("v1", "Secret") => convert::<Secret>(&raw, &kind, &mut f, core::secret)?,
        ("v1", "Service") => convert::<Service>(&raw, &kind, &mut f, core::service)?,
        ("v1", "ServiceAccount") => {
            convert::<ServiceAccount>(&raw, &kind, &mut f, core::service_account)?
        }
        ("v1", "Pod") => convert::<Pod>(&raw, &kind, &mut f, pod::pod)?,
        ("apps/v1", "Deployment") => {
            convert::<Deployment>(&raw, &kind, &mut f, workloads::deployment)?
        }
        ("batch/v1", "Job") => convert::<Job>(&raw, &kind, &mut f, workloads::job)?,
        ("batch/v1", "CronJob") => convert::<CronJob>(&raw, &kind, &mut f, workloads::cron_job)?,
        ("v1", "ResourceQuota") => {
            convert::<ResourceQuota>(&raw, &kind, &mut f, core::resource_quota)?
        }
        ("autoscaling/v1", "HorizontalPodAutoscaler") => convert::<HorizontalPodAutoscaler>(
            &raw,
            &kind,
            &mut f,
            workloads::horizontal_pod_autoscaler,
        )?,
        ("policy/v1", "PodDisruptionBudget") => {
            convert::<PodDisruptionBudget>(&raw, &kind, &mut f, workloads::pod_disruption_budget)?
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            convert::<PriorityClass>(&raw, &kind, &mut f, workloads::priority_class)?
        }
        ("networking.k8s.io/v1", "Ingress") => {
            convert::<Ingress>(&raw, &kind, &mut f, networking::ingress)?
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            convert::<Role>(&raw, &kind, &mut f, access::role)?
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            convert::<ClusterRole>(&raw, &kind, &mut f, access::cluster_role)?
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            convert::<RoleBinding>(&raw, &kind, &mut f, access::role_binding)?
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            convert::<ClusterRoleBinding>(&raw, &kind, &mut f, access::cluster_role_binding)?
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            convert::<TokenRequest>(&raw, &kind, &mut f, access::token_request)?
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "protobuf encoding of {api_version} {kind} is not supported; send JSON"
                ),
            });
        }
    }
    Ok(f.finish())
}

/// Decodes `raw` as message `M` and appends its JSON fields after the type meta.
fn convert<M: Message + Default>(
    raw: &[u8],
    kind: &str,
    f: &mut Fields,
    to_json: fn(M, &mut Fields) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let msg = M::decode(raw)
        .map_err(|e| ApiError::bad_request(format!("failed to decode protobuf {kind}: {e}")))?;
    // prost skips fields it does not know: refuse them rather than drop them silently.
    if let Some(field) = wire::first_unknown_field(raw, &msg.encode_to_vec()) {
        return Err(ApiError::UnsupportedMediaType {
            message: format!(
                "protobuf {kind} has field number {field}, which this server does not know; send JSON"
            ),
        });
    }
    to_json(msg, f)
}

#[cfg(test)]
mod tests;
