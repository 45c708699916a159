//! Defaults of autoscaling/v2 HorizontalPodAutoscaler.

use super::{canonical_quantity, default, default_str, each_obj, obj_entry, obj_mut};
use serde_json::{Map, Value, json};

pub(super) fn horizontal_pod_autoscaler(obj: &mut Value) {
    let Some(spec) = obj.as_object_mut().and_then(|r| obj_entry(r, "spec")) else {
        return;
    };
    default(spec, "minReplicas", json!(1));
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    if no_metrics {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 80 } }
            }]),
        );
    }
    for m in each_obj(spec, "metrics") {
        for source in [
            "resource",
            "containerResource",
            "pods",
            "object",
            "external",
        ] {
            if let Some(t) = obj_mut(m, source).and_then(|s| obj_mut(s, "target")) {
                for f in ["value", "averageValue"] {
                    if let Some(v) = t.get_mut(f) {
                        canonical_quantity(v, false);
                    }
                }
            }
        }
    }
    // Behavior is only filled in when the user gave one; otherwise the controller's
    // built-in behavior applies and the object stays as written.
    if let Some(behavior) = obj_mut(spec, "behavior") {
        if let Some(up) = obj_entry(behavior, "scaleUp") {
            rules(
                up,
                Some(0),
                json!([
                    { "type": "Pods", "value": 4, "periodSeconds": 15 },
                    { "type": "Percent", "value": 100, "periodSeconds": 15 },
                ]),
            );
        }
        if let Some(down) = obj_entry(behavior, "scaleDown") {
            rules(
                down,
                None,
                json!([{ "type": "Percent", "value": 100, "periodSeconds": 15 }]),
            );
        }
    }
}

fn rules(r: &mut Map<String, Value>, window: Option<i64>, policies: Value) {
    if let Some(w) = window {
        default(r, "stabilizationWindowSeconds", json!(w));
    }
    default_str(r, "selectPolicy", "Max");
    let empty = r
        .get("policies")
        .and_then(Value::as_array)
        .is_none_or(|p| p.is_empty());
    if empty {
        r.insert("policies".into(), policies);
    }
}
