//! Conversion of apimachinery messages: ObjectMeta, LabelSelector, Time, IntOrString, Quantity.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference, Time,
};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::json::{Fields, child, reject};
use crate::error::ApiError;

/// `metadata` (a Go non-pointer struct, so always present).
pub(super) fn object_meta(m: Option<ObjectMeta>, path: &str) -> Result<Value, ApiError> {
    let ObjectMeta {
        name,
        generate_name,
        namespace,
        self_link,
        uid,
        resource_version,
        generation,
        creation_timestamp,
        deletion_timestamp,
        deletion_grace_period_seconds,
        labels,
        annotations,
        owner_references,
        finalizers,
        managed_fields,
    } = m.unwrap_or_default();
    reject(path, "managedFields", !managed_fields.is_empty())?;
    let mut f = Fields::new();
    f.omitempty("name", name)
        .omitempty("generateName", generate_name)
        .omitempty("namespace", namespace)
        .omitempty("selfLink", self_link)
        .omitempty("uid", uid)
        .omitempty("resourceVersion", resource_version)
        .omitempty("generation", generation)
        // kubectl 1.32's apimachinery has no `omitzero` yet: a zero time is written as null.
        .value(
            "creationTimestamp",
            time(creation_timestamp, &child(path, "creationTimestamp"))?,
        )
        .opt_value(
            "deletionTimestamp",
            opt_time(deletion_timestamp, &child(path, "deletionTimestamp"))?,
        )
        .pointer("deletionGracePeriodSeconds", deletion_grace_period_seconds)
        .string_map("labels", labels)
        .string_map("annotations", annotations)
        .list(path, "ownerReferences", owner_references, owner_reference)?
        .strings("finalizers", finalizers);
    Ok(f.finish())
}

fn owner_reference(r: OwnerReference, _path: &str) -> Result<Value, ApiError> {
    let OwnerReference {
        api_version,
        kind,
        name,
        uid,
        controller,
        block_owner_deletion,
    } = r;
    Ok(Fields::new()
        .always("apiVersion", api_version)
        .always("kind", kind)
        .always("name", name)
        .always("uid", uid)
        .pointer("controller", controller)
        .pointer("blockOwnerDeletion", block_owner_deletion)
        .finish())
}

/// A `*metav1.LabelSelector`.
pub(super) fn label_selector(s: LabelSelector, path: &str) -> Result<Value, ApiError> {
    let LabelSelector {
        match_labels,
        match_expressions,
    } = s;
    Ok(Fields::new()
        .string_map("matchLabels", match_labels)
        .list(
            path,
            "matchExpressions",
            match_expressions,
            label_selector_requirement,
        )?
        .finish())
}

fn label_selector_requirement(r: LabelSelectorRequirement, _path: &str) -> Result<Value, ApiError> {
    let LabelSelectorRequirement {
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

/// A non-pointer `metav1.Time`: Go writes the zero time as `null`.
pub(super) fn time(t: Option<Time>, path: &str) -> Result<Value, ApiError> {
    let Some(Time { seconds, nanos }) = t else {
        return Ok(Value::Null);
    };
    // Go decodes an empty Time message as the zero time, but explicit zero seconds as the epoch.
    if seconds.is_none() && nanos.is_none() {
        return Ok(Value::Null);
    }
    let seconds = seconds.unwrap_or(0);
    let nanos = i64::from(nanos.unwrap_or(0));
    let bad = || ApiError::bad_request(format!("protobuf field {path}: time out of range"));
    let whole = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(bad)?;
    let t = DateTime::from_timestamp(whole, 0).ok_or_else(bad)?;
    if !(0..=9999).contains(&t.year()) {
        return Err(bad());
    }
    // metav1.Time marshals with second precision in UTC.
    Ok(Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

/// A `*metav1.Time` with `omitempty`.
pub(super) fn opt_time(t: Option<Time>, path: &str) -> Result<Option<Value>, ApiError> {
    t.map(|t| time(Some(t), path)).transpose()
}

/// An `intstr.IntOrString`: a JSON number or string depending on its type tag.
pub(super) fn int_or_string(v: Option<IntOrString>, path: &str) -> Result<Value, ApiError> {
    let IntOrString {
        r#type,
        int_val,
        str_val,
    } = v.unwrap_or_default();
    match r#type.unwrap_or(0) {
        0 => Ok(Value::from(int_val.unwrap_or(0))),
        1 => Ok(Value::String(str_val.unwrap_or_default())),
        other => Err(ApiError::bad_request(format!(
            "protobuf field {path}: invalid IntOrString type {other}"
        ))),
    }
}

/// A `resource.Quantity`, written as its string form.
pub(super) fn quantity(q: Quantity, path: &str) -> Result<Value, ApiError> {
    let Quantity { string } = q;
    match string {
        // Go leaves an empty message as the zero Quantity, which prints as "0".
        None => Ok(Value::String("0".into())),
        Some(s) if s.is_empty() => Err(ApiError::bad_request(format!(
            "protobuf field {path}: quantities must match the regular expression"
        ))),
        Some(s) => Ok(Value::String(s)),
    }
}

/// A `ResourceList` (`map[ResourceName]Quantity`, `omitempty`).
pub(super) fn resource_list(
    f: &mut Fields,
    path: &str,
    key: &str,
    m: BTreeMap<String, Quantity>,
) -> Result<(), ApiError> {
    if m.is_empty() {
        return Ok(());
    }
    let list_path = child(path, key);
    let mut obj = Map::new();
    for (name, q) in m {
        let v = quantity(q, &format!("{list_path}[{name}]"))?;
        obj.insert(name, v);
    }
    f.value(key, Value::Object(obj));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_formats_like_metav1() {
        let t = |s: Option<i64>, n: Option<i32>| {
            time(
                Some(Time {
                    seconds: s,
                    nanos: n,
                }),
                "x",
            )
        };
        assert_eq!(
            t(Some(1_704_067_200), None).ok(),
            Some(json!("2024-01-01T00:00:00Z"))
        );
        assert_eq!(
            t(Some(1_704_067_200), Some(999_999_999)).ok(),
            Some(json!("2024-01-01T00:00:00Z"))
        );
        assert_eq!(t(None, None).ok(), Some(Value::Null));
        assert_eq!(t(Some(0), None).ok(), Some(json!("1970-01-01T00:00:00Z")));
        assert_eq!(time(None, "x").ok(), Some(Value::Null));
        assert!(t(Some(i64::MAX), Some(i32::MAX)).is_err());
        assert!(t(Some(300_000_000_000), None).is_err());
    }

    #[test]
    fn int_or_string_by_type() {
        let v = |t, i, s: Option<&str>| {
            int_or_string(
                Some(IntOrString {
                    r#type: t,
                    int_val: i,
                    str_val: s.map(String::from),
                }),
                "p",
            )
        };
        assert_eq!(v(Some(0), Some(8080), Some("")).ok(), Some(json!(8080)));
        assert_eq!(v(Some(1), Some(0), Some("http")).ok(), Some(json!("http")));
        assert_eq!(v(None, None, None).ok(), Some(json!(0)));
        assert_eq!(
            v(Some(7), None, None).map_err(|e| e.code()).err(),
            Some(400)
        );
    }

    #[test]
    fn quantity_strings() {
        assert_eq!(
            quantity(
                Quantity {
                    string: Some("500m".into())
                },
                "q"
            )
            .ok(),
            Some(json!("500m"))
        );
        assert_eq!(
            quantity(Quantity { string: None }, "q").ok(),
            Some(json!("0"))
        );
        assert_eq!(
            quantity(
                Quantity {
                    string: Some(String::new())
                },
                "q"
            )
            .map_err(|e| e.code())
            .err(),
            Some(400)
        );
    }
}
