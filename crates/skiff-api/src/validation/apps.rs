//! apps/v1 workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet.

use super::meta::{self, object_meta, selector_is_empty, selector_matches};
use super::names;
use super::pod::pod_template;
use super::{
    arr, child, get, go_map, go_selector, int, int_or_percent_value, nonnegative,
    not_more_than_100_percent, obj, positive_int_or_percent, quote, render_int_or_string, s,
};
use crate::error::FieldError;
use serde_json::Value;

/// `spec.selector` of a workload: required, valid and not empty.
fn workload_selector(spec: &Value, kind_word: &str, errs: &mut Vec<FieldError>) {
    match get(spec, "selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            meta::label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    go_selector(Some(sel)),
                    format!("empty selector is invalid for {kind_word}"),
                ));
            }
        }
    }
}

/// The template's labels must be selected by the selector; a missing selector selects
/// nothing, so it never matches (Kubernetes reports both problems).
fn selector_matches_template(spec: &Value, errs: &mut Vec<FieldError>) {
    let template_labels = get(spec, "template")
        .and_then(|t| get(t, "metadata"))
        .and_then(|m| obj(m, "labels"));
    let matches = match get(spec, "selector") {
        None => Some(false),
        Some(sel) if selector_is_empty(sel) => Some(true),
        Some(sel) => selector_matches(sel, template_labels),
    };
    if matches == Some(false) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            go_map(template_labels),
            "`selector` does not match template `labels`",
        ));
    }
}

/// ValidatePodTemplateSpecForReplicaSet and friends: template valid, restartPolicy Always,
/// no activeDeadlineSeconds.
fn always_restarting_template(
    spec: &Value,
    kind: &str,
    extra_volumes: &[String],
    errs: &mut Vec<FieldError>,
) {
    selector_matches_template(spec, errs);
    let template = get(spec, "template");
    pod_template(template, "spec.template", extra_volumes, errs);
    let Some(t) = template else { return };
    let null = Value::Null;
    let pod = get(t, "spec").unwrap_or(&null);
    let rp = s(pod, "restartPolicy");
    if rp != "Always" && !rp.is_empty() {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            quote(rp),
            &["Always"],
        ));
    }
    if let Some(ads) = int(pod, "activeDeadlineSeconds") {
        if kind == "DaemonSet" {
            errs.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                ads,
                "activeDeadlineSeconds must be nil for daemonset",
            ));
        } else {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                format!("activeDeadlineSeconds in {kind} is not Supported"),
            ));
        }
    }
}

fn selector_immutable(spec: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(old) = old else { return };
    let old_sel = get(old, "spec").and_then(|sp| get(sp, "selector"));
    let new_sel = get(spec, "selector");
    if old_sel != new_sel {
        errs.push(FieldError::invalid(
            "spec.selector",
            go_selector(new_sel),
            "field is immutable",
        ));
    }
}

pub(crate) fn deployment(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    nonnegative("spec.replicas".into(), int(spec, "replicas"), errs);
    workload_selector(spec, "deployment", errs);
    always_restarting_template(spec, "ReplicaSet", &[], errs);
    if let Some(strategy) = get(spec, "strategy") {
        let ty = s(strategy, "type");
        match ty {
            "Recreate" => {
                if get(strategy, "rollingUpdate").is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => match get(strategy, "rollingUpdate") {
                None => errs.push(FieldError::required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                )),
                Some(ru) => {
                    let mu = get(ru, "maxUnavailable");
                    let ms = get(ru, "maxSurge");
                    positive_int_or_percent(
                        mu,
                        "spec.strategy.rollingUpdate.maxUnavailable".into(),
                        errs,
                    );
                    positive_int_or_percent(
                        ms,
                        "spec.strategy.rollingUpdate.maxSurge".into(),
                        errs,
                    );
                    if int_or_percent_value(mu) == 0 && int_or_percent_value(ms) == 0 {
                        errs.push(FieldError::invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            mu.map(render_int_or_string).unwrap_or_else(|| "0".into()),
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    not_more_than_100_percent(
                        mu,
                        "spec.strategy.rollingUpdate.maxUnavailable".into(),
                        errs,
                    );
                }
            },
            other => errs.push(FieldError::not_supported(
                "spec.strategy",
                quote(other),
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    let min_ready = int(spec, "minReadySeconds").unwrap_or(0);
    nonnegative("spec.minReadySeconds".into(), Some(min_ready), errs);
    nonnegative(
        "spec.revisionHistoryLimit".into(),
        int(spec, "revisionHistoryLimit"),
        errs,
    );
    if let Some(pd) = int(spec, "progressDeadlineSeconds") {
        nonnegative("spec.progressDeadlineSeconds".into(), Some(pd), errs);
        if pd <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                pd,
                "must be greater than minReadySeconds",
            ));
        }
    }
    if let Some(rb) = get(spec, "rollbackTo") {
        nonnegative("spec.rollbackTo.revision".into(), int(rb, "revision"), errs);
    }
    selector_immutable(spec, old, errs);
}

pub(crate) fn replica_set(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    nonnegative("spec.replicas".into(), int(spec, "replicas"), errs);
    nonnegative(
        "spec.minReadySeconds".into(),
        int(spec, "minReadySeconds"),
        errs,
    );
    // Kubernetes words the ReplicaSet's empty-selector error like the Deployment's.
    workload_selector(spec, "deployment", errs);
    always_restarting_template(spec, "ReplicaSet", &[], errs);
    selector_immutable(spec, old, errs);
}

pub(crate) fn stateful_set(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    match s(spec, "podManagementPolicy") {
        "" => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            quote(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = get(spec, "updateStrategy");
    match strategy.map(|st| s(st, "type")).unwrap_or("") {
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if strategy.and_then(|st| get(st, "rollingUpdate")).is_some() {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    "{}",
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = strategy.and_then(|st| get(st, "rollingUpdate")) {
                nonnegative(
                    "spec.updateStrategy.rollingUpdate.partition".into(),
                    int(ru, "partition"),
                    errs,
                );
                if let Some(mu) = get(ru, "maxUnavailable") {
                    positive_int_or_percent(
                        Some(mu),
                        "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                        errs,
                    );
                    if int_or_percent_value(Some(mu)) == 0 {
                        errs.push(FieldError::invalid(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            render_int_or_string(mu),
                            "must be greater than 0",
                        ));
                    }
                    not_more_than_100_percent(
                        Some(mu),
                        "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                        errs,
                    );
                }
            }
        }
        other => errs.push(FieldError::invalid(
            "spec.updateStrategy",
            quote(other),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(policy) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            let v = s(policy, f);
            if !v.is_empty() && v != "Retain" && v != "Delete" {
                errs.push(FieldError::not_supported(
                    child("spec.persistentVolumeClaimRetentionPolicy", f),
                    quote(v),
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    nonnegative("spec.replicas".into(), int(spec, "replicas"), errs);
    if let Some(ord) = get(spec, "ordinals") {
        nonnegative("spec.ordinals.start".into(), int(ord, "start"), errs);
    }
    nonnegative(
        "spec.minReadySeconds".into(),
        int(spec, "minReadySeconds"),
        errs,
    );
    workload_selector(spec, "statefulset", errs);
    let mut claim_names = Vec::new();
    for (i, claim) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
        let cp = super::index("spec.volumeClaimTemplates", i);
        let name = get(claim, "metadata").map(|m| s(m, "name")).unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required(
                child(&child(&cp, "metadata"), "name"),
                "",
            ));
        } else {
            for msg in names::dns1123_subdomain(name) {
                errs.push(FieldError::invalid(
                    child(&child(&cp, "metadata"), "name"),
                    quote(name),
                    msg,
                ));
            }
            claim_names.push(name.to_string());
        }
        let null = Value::Null;
        super::core::claim_spec(
            get(claim, "spec").unwrap_or(&null),
            &child(&cp, "spec"),
            errs,
        );
    }
    always_restarting_template(spec, "StatefulSet", &claim_names, errs);

    if let Some(old) = old {
        let old_spec = get(old, "spec").unwrap_or(&null);
        let mutable = [
            "replicas",
            "template",
            "updateStrategy",
            "minReadySeconds",
            "ordinals",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
        ];
        let strip = |sp: &Value| -> serde_json::Map<String, Value> {
            sp.as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, v)| !mutable.contains(&k.as_str()) && !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        if strip(spec) != strip(old_spec) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

pub(crate) fn daemon_set(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    match get(spec, "selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            meta::label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    go_selector(Some(sel)),
                    "empty selector is invalid for daemonset",
                ));
            }
        }
    }
    always_restarting_template(spec, "DaemonSet", &[], errs);
    nonnegative(
        "spec.minReadySeconds".into(),
        int(spec, "minReadySeconds"),
        errs,
    );
    nonnegative(
        "spec.templateGeneration".into(),
        int(spec, "templateGeneration"),
        errs,
    );
    nonnegative(
        "spec.revisionHistoryLimit".into(),
        int(spec, "revisionHistoryLimit"),
        errs,
    );
    if let Some(strategy) = get(spec, "updateStrategy") {
        match s(strategy, "type") {
            "OnDelete" => {}
            "RollingUpdate" => match get(strategy, "rollingUpdate") {
                None => errs.push(FieldError::required(
                    "spec.updateStrategy.rollingUpdate",
                    "",
                )),
                Some(ru) => {
                    let base = "spec.updateStrategy.rollingUpdate";
                    let mu = get(ru, "maxUnavailable");
                    let ms = get(ru, "maxSurge");
                    positive_int_or_percent(mu, child(base, "maxUnavailable"), errs);
                    positive_int_or_percent(ms, child(base, "maxSurge"), errs);
                    not_more_than_100_percent(mu, child(base, "maxUnavailable"), errs);
                    not_more_than_100_percent(ms, child(base, "maxSurge"), errs);
                    let has_unavailable = int_or_percent_value(mu) != 0;
                    let has_surge = int_or_percent_value(ms) != 0;
                    if has_unavailable && has_surge {
                        errs.push(FieldError::invalid(
                            child(base, "maxSurge"),
                            ms.map(render_int_or_string).unwrap_or_default(),
                            "may not be set when maxUnavailable is non-zero",
                        ));
                    } else if !has_unavailable && !has_surge {
                        errs.push(FieldError::required(
                            child(base, "maxUnavailable"),
                            "cannot be 0 when maxSurge is 0",
                        ));
                    }
                }
            },
            other => errs.push(FieldError::not_supported(
                "spec.updateStrategy",
                quote(other),
                &["RollingUpdate", "OnDelete"],
            )),
        }
    }
    selector_immutable(spec, old, errs);
}
