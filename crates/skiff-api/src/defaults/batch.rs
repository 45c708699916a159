//! Defaults of the batch/v1 group: Job (including its generated selector) and CronJob.

use super::core::pod_template;
use super::{default, default_str, each_obj, obj_entry, obj_mut};
use serde_json::{Map, Value, json};

pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

pub(super) fn job(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let uid = meta
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = obj_entry(root, "spec") else {
        return;
    };
    let manual = spec
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !manual && !uid.is_empty() {
        generate_selector(spec, &name, &uid);
    }
    job_spec(spec);
    // A Job without labels takes its pod template's labels (SetDefaults_Job).
    let template_labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
        .cloned();
    if let Some(labels) = template_labels
        && let Some(meta) = obj_entry(root, "metadata")
    {
        let empty = meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|l| l.is_empty());
        if empty {
            meta.insert("labels".into(), Value::Object(labels));
        }
    }
}

/// The job strategy's selector generation: pods are labelled with the Job's uid and name,
/// and the selector picks the uid, so a Job never adopts another Job's pods. Labels the user
/// already set are left alone (validation rejects them if they conflict).
fn generate_selector(spec: &mut Map<String, Value>, name: &str, uid: &str) {
    if let Some(template) = obj_entry(spec, "template")
        && let Some(meta) = obj_entry(template, "metadata")
        && let Some(labels) = obj_entry(meta, "labels")
    {
        if !name.is_empty() {
            for k in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
                labels.entry(k).or_insert_with(|| json!(name));
            }
        }
        for k in [LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL] {
            labels.entry(k).or_insert_with(|| json!(uid));
        }
    }
    if let Some(sel) = obj_entry(spec, "selector")
        && let Some(ml) = obj_entry(sel, "matchLabels")
    {
        ml.entry(CONTROLLER_UID_LABEL).or_insert_with(|| json!(uid));
    }
}

/// SetDefaults_Job on a Job's spec.
fn job_spec(spec: &mut Map<String, Value>) {
    if let Some(t) = obj_entry(spec, "template") {
        pod_template(t);
    }
    let unset = |s: &Map<String, Value>, k: &str| s.get(k).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    if unset(spec, "backoffLimit") {
        let limit = if unset(spec, "backoffLimitPerIndex") {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    default_str(spec, "completionMode", "NonIndexed");
    default(spec, "manualSelector", json!(false));
    default(spec, "suspend", json!(false));
    let has_failure_policy = !unset(spec, "podFailurePolicy");
    if let Some(pfp) = obj_mut(spec, "podFailurePolicy") {
        for rule in each_obj(pfp, "rules") {
            for cond in each_obj(rule, "onPodConditions") {
                default_str(cond, "status", "True");
            }
        }
    }
    default_str(
        spec,
        "podReplacementPolicy",
        if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        },
    );
}

/// SetDefaults_CronJob. The job template's own fields are not defaulted (Kubernetes
/// defaults them when the Job is created), only its pod template.
pub(super) fn cron_job(obj: &mut Value) {
    let Some(spec) = obj.as_object_mut().and_then(|r| obj_entry(r, "spec")) else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(jt) = obj_entry(spec, "jobTemplate")
        && let Some(js) = obj_entry(jt, "spec")
        && let Some(t) = obj_entry(js, "template")
    {
        pod_template(t);
    }
}
