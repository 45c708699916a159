//! autoscaling/v2 HorizontalPodAutoscaler.

use super::meta::object_meta;
use super::names;
use super::{arr, child, get, index, int, one_of, quantity, quote, s};
use crate::error::FieldError;
use serde_json::Value;

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

pub(crate) fn horizontal_pod_autoscaler(o: &Value, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    let min = int(spec, "minReplicas");
    if let Some(m) = min
        && m < 1
    {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            m,
            "must be greater than or equal to 1",
        ));
    }
    let max = int(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        ));
    }
    if let Some(m) = min
        && max < m
    {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let target = get(spec, "scaleTargetRef").unwrap_or(&null);
    for f in ["kind", "name"] {
        let v = s(target, f);
        let p = child("spec.scaleTargetRef", f);
        if v.is_empty() {
            errs.push(FieldError::required(p, ""));
        } else {
            for msg in names::path_segment_name(v) {
                errs.push(FieldError::invalid(p.clone(), quote(v), msg));
            }
        }
    }
    for (i, m) in arr(spec, "metrics").iter().enumerate() {
        metric(m, &index("spec.metrics", i), errs);
    }
    if let Some(b) = get(spec, "behavior") {
        for dir in ["scaleUp", "scaleDown"] {
            if let Some(r) = get(b, dir) {
                scaling_rules(r, &child("spec.behavior", dir), errs);
            }
        }
    }
}

fn metric(m: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ty = s(m, "type");
    if ty.is_empty() {
        errs.push(FieldError::required(
            child(path, "type"),
            "must specify a metric source type",
        ));
    } else if !METRIC_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            child(path, "type"),
            quote(ty),
            METRIC_TYPES,
        ));
    }
    let field_of = |t: &str| -> &'static str {
        match t {
            "Object" => "object",
            "Pods" => "pods",
            "Resource" => "resource",
            "External" => "external",
            "ContainerResource" => "containerResource",
            _ => "",
        }
    };
    let expected = field_of(ty);
    for t in METRIC_TYPES {
        let f = field_of(t);
        if f != expected && get(m, f).is_some() {
            errs.push(FieldError::forbidden(
                child(path, f),
                "must populate the given metric source only",
            ));
        }
    }
    if expected.is_empty() {
        return;
    }
    let Some(src) = get(m, expected) else {
        errs.push(FieldError::required(
            child(path, expected),
            "must populate information for the given metric source",
        ));
        return;
    };
    let sp = child(path, expected);
    match ty {
        "Resource" | "ContainerResource" => {
            if s(src, "name").is_empty() {
                errs.push(FieldError::required(
                    child(&sp, "name"),
                    "must specify a resource name",
                ));
            }
            if ty == "ContainerResource" && s(src, "container").is_empty() {
                errs.push(FieldError::required(
                    child(&sp, "container"),
                    "must specify a container",
                ));
            }
        }
        _ => {
            let metric_id = get(src, "metric");
            if metric_id.is_none_or(|mi| s(mi, "name").is_empty()) {
                errs.push(FieldError::required(
                    child(&child(&sp, "metric"), "name"),
                    "must specify a metric name",
                ));
            }
            if ty == "Object" {
                let d = get(src, "describedObject");
                for f in ["kind", "name"] {
                    if d.is_none_or(|d| s(d, f).is_empty()) {
                        errs.push(FieldError::required(
                            child(&child(&sp, "describedObject"), f),
                            "",
                        ));
                    }
                }
            }
        }
    }
    let null = Value::Null;
    metric_target(
        get(src, "target").unwrap_or(&null),
        &child(&sp, "target"),
        errs,
    );
}

fn metric_target(t: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ty = s(t, "type");
    if ty.is_empty() {
        errs.push(FieldError::required(
            child(path, "type"),
            "must specify a metric target type",
        ));
    } else if !["Utilization", "Value", "AverageValue"].contains(&ty) {
        errs.push(FieldError::not_supported(
            child(path, "type"),
            quote(ty),
            &["Utilization", "Value", "AverageValue"],
        ));
    }
    if get(t, "value").is_none()
        && get(t, "averageValue").is_none()
        && get(t, "averageUtilization").is_none()
    {
        errs.push(FieldError::required(
            path,
            "must set either a target raw value, a target average value, or a target percentage",
        ));
    }
    if let Some(u) = int(t, "averageUtilization")
        && u < 1
    {
        errs.push(FieldError::invalid(
            child(path, "averageUtilization"),
            u,
            "must be greater than 0",
        ));
    }
    for f in ["value", "averageValue"] {
        if let Some(v) = get(t, f)
            && let Some(q) = quantity(v, &child(path, f), errs)
            && q.nanos() <= 0
        {
            errs.push(FieldError::invalid(
                child(path, f),
                q.to_string(),
                "must be positive",
            ));
        }
    }
}

fn scaling_rules(r: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(w) = int(r, "stabilizationWindowSeconds") {
        if w < 0 {
            errs.push(FieldError::invalid(
                child(path, "stabilizationWindowSeconds"),
                w,
                "must be greater than or equal to zero",
            ));
        } else if w > 3600 {
            errs.push(FieldError::invalid(
                child(path, "stabilizationWindowSeconds"),
                w,
                "must be less than or equal to 3600",
            ));
        }
    }
    if let Some(p) = super::opt_str(r, "selectPolicy") {
        one_of(
            child(path, "selectPolicy"),
            p,
            &["Disabled", "Max", "Min"],
            errs,
        );
    }
    let policies = arr(r, "policies");
    if policies.is_empty() {
        errs.push(FieldError::required(
            child(path, "policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.iter().enumerate() {
        let pp = index(&child(path, "policies"), i);
        one_of(child(&pp, "type"), s(p, "type"), &["Percent", "Pods"], errs);
        let v = int(p, "value").unwrap_or(0);
        if v <= 0 {
            errs.push(FieldError::invalid(
                child(&pp, "value"),
                v,
                "must be greater than zero",
            ));
        }
        let period = int(p, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            errs.push(FieldError::invalid(
                child(&pp, "periodSeconds"),
                period,
                "must be greater than zero",
            ));
        } else if period > 1800 {
            errs.push(FieldError::invalid(
                child(&pp, "periodSeconds"),
                period,
                "must be less than or equal to 1800",
            ));
        }
    }
}
