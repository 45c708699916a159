//! Type checking: the object must decode into the resource's Kubernetes type, as it must
//! in kube-apiserver before any validation runs (`replicas: "two"` never reaches storage).

use super::{child, index, key, render};
use crate::error::FieldError;
use crate::registry::ResourceDef;
use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, events};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The first field whose JSON type does not fit the resource's schema.
pub(crate) fn type_error(def: &ResourceDef, obj: &Value) -> Option<FieldError> {
    match (def.group, def.kind) {
        ("", "Namespace") => check::<core::v1::Namespace>(obj),
        ("", "Pod") => check::<core::v1::Pod>(obj),
        ("", "Service") => check::<core::v1::Service>(obj),
        ("", "Endpoints") => check::<core::v1::Endpoints>(obj),
        ("", "ConfigMap") => check::<core::v1::ConfigMap>(obj),
        ("", "Secret") => check::<core::v1::Secret>(obj),
        ("", "Node") => check::<core::v1::Node>(obj),
        ("", "Event") => check::<core::v1::Event>(obj),
        ("", "ServiceAccount") => check::<core::v1::ServiceAccount>(obj),
        ("", "PersistentVolume") => check::<core::v1::PersistentVolume>(obj),
        ("", "PersistentVolumeClaim") => check::<core::v1::PersistentVolumeClaim>(obj),
        ("apps", "Deployment") => check::<apps::v1::Deployment>(obj),
        ("apps", "ReplicaSet") => check::<apps::v1::ReplicaSet>(obj),
        ("apps", "StatefulSet") => check::<apps::v1::StatefulSet>(obj),
        ("apps", "DaemonSet") => check::<apps::v1::DaemonSet>(obj),
        ("apps", "ControllerRevision") => check::<apps::v1::ControllerRevision>(obj),
        ("batch", "Job") => check::<batch::v1::Job>(obj),
        ("batch", "CronJob") => check::<batch::v1::CronJob>(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            check::<autoscaling::v2::HorizontalPodAutoscaler>(obj)
        }
        ("coordination.k8s.io", "Lease") => check::<coordination::v1::Lease>(obj),
        ("discovery.k8s.io", "EndpointSlice") => check::<discovery::v1::EndpointSlice>(obj),
        ("events.k8s.io", "Event") => check::<events::v1::Event>(obj),
        _ => None,
    }
}

/// Fields whose JSON objects are maps (their keys are data, not field names).
const MAP_FIELDS: &[&str] = &[
    "data",
    "binaryData",
    "stringData",
    "labels",
    "annotations",
    "nodeSelector",
    "matchLabels",
    "selector",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "overhead",
];

fn check<T: DeserializeOwned>(obj: &Value) -> Option<FieldError> {
    // apiVersion and kind are checked by the apiserver against the URL, not here.
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let err = serde_path_to_error::deserialize::<_, T>(&body).err()?;
    let mut path = String::new();
    let mut at = Some(&body);
    for seg in err.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index: i } => {
                path = index(&path, *i);
                at = at.and_then(|v| v.get(*i));
            }
            serde_path_to_error::Segment::Map { key: k } => {
                // Entries of string maps are named `data[key]`, as Kubernetes names them.
                let parent = path.rsplit(['.', ']']).next().unwrap_or("");
                path = if MAP_FIELDS.contains(&parent) {
                    key(&path, k)
                } else {
                    child(&path, k)
                };
                at = at.and_then(|v| v.get(k.as_str()));
            }
            _ => {}
        }
    }
    let shown = if path.starts_with("data[") || path.starts_with("stringData[") {
        "<secret contents redacted>".to_string()
    } else {
        at.map(render).unwrap_or_else(|| "null".into())
    };
    Some(FieldError::invalid(path, shown, err.inner().to_string()))
}
