//! batch/v1: Job (including its generated selector) and CronJob.

use super::meta::{self, object_meta, selector_matches};
use super::names;
use super::pod::pod_template;
use super::{
    child, get, go_map, go_selector, immutable, int, nonnegative, obj, one_of, opt_str, quote,
    render, s,
};
use crate::defaults::{
    CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_CONTROLLER_UID_LABEL, LEGACY_JOB_NAME_LABEL,
};
use crate::error::FieldError;
use serde_json::{Map, Value};

/// validateJobSpec, at `path` (`spec` or `spec.jobTemplate.spec`).
fn job_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(child(path, f), int(spec, f), errs);
    }
    let mode = opt_str(spec, "completionMode");
    if let Some(m) = mode {
        if m != "NonIndexed" && m != "Indexed" {
            errs.push(FieldError::not_supported(
                child(path, "completionMode"),
                quote(m),
                &["NonIndexed", "Indexed"],
            ));
        }
        if m == "Indexed" {
            if int(spec, "completions").is_none() {
                errs.push(FieldError::required(
                    child(path, "completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = int(spec, "parallelism")
                && p > 100_000
            {
                errs.push(FieldError::invalid(
                    child(path, "parallelism"),
                    p,
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
    }
    if get(spec, "backoffLimitPerIndex").is_some() && mode != Some("Indexed") {
        errs.push(FieldError::invalid(
            child(path, "backoffLimitPerIndex"),
            int(spec, "backoffLimitPerIndex").unwrap_or(0),
            "requires indexed completion mode",
        ));
    }
    if let Some(p) = opt_str(spec, "podReplacementPolicy") {
        if get(spec, "podFailurePolicy").is_some() {
            if p != "Failed" {
                errs.push(FieldError::not_supported(
                    child(path, "podReplacementPolicy"),
                    quote(p),
                    &["Failed"],
                ));
            }
        } else if p != "TerminatingOrFailed" && p != "Failed" {
            errs.push(FieldError::not_supported(
                child(path, "podReplacementPolicy"),
                quote(p),
                &["TerminatingOrFailed", "Failed"],
            ));
        }
    }
    if let Some(pfp) = get(spec, "podFailurePolicy") {
        pod_failure_policy(pfp, &child(path, "podFailurePolicy"), errs);
    }
    let tp = child(path, "template");
    let template = get(spec, "template");
    pod_template(template, &tp, &[], errs);
    if let Some(t) = template {
        let rp = get(t, "spec")
            .map(|sp| s(sp, "restartPolicy"))
            .unwrap_or("");
        if rp != "OnFailure" && rp != "Never" {
            if rp.is_empty() {
                errs.push(FieldError::required(
                    child(&child(&tp, "spec"), "restartPolicy"),
                    "valid values: \"OnFailure\", \"Never\"",
                ));
            } else {
                errs.push(FieldError::not_supported(
                    child(&child(&tp, "spec"), "restartPolicy"),
                    quote(rp),
                    &["OnFailure", "Never"],
                ));
            }
        }
        if rp == "OnFailure" && get(spec, "podFailurePolicy").is_some() {
            errs.push(FieldError::invalid(
                child(&child(&tp, "spec"), "restartPolicy"),
                quote(rp),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
    }
}

fn pod_failure_policy(pfp: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (i, rule) in super::arr(pfp, "rules").iter().enumerate() {
        let rp = super::index(&child(path, "rules"), i);
        one_of(
            child(&rp, "action"),
            s(rule, "action"),
            &["Count", "FailIndex", "FailJob", "Ignore"],
            errs,
        );
        let has_exit = get(rule, "onExitCodes").is_some();
        let has_cond = get(rule, "onPodConditions").is_some();
        if has_exit == has_cond {
            errs.push(FieldError::invalid(
                rp,
                render(rule),
                "specifying one of OnExitCodes and OnPodConditions is required",
            ));
        }
    }
}

/// The job's template labels must be selected by its selector.
fn selector_matches_template(spec: &Value, errs: &mut Vec<FieldError>) {
    let template_labels = get(spec, "template")
        .and_then(|t| get(t, "metadata"))
        .and_then(|m| obj(m, "labels"));
    let matches = match get(spec, "selector") {
        None => Some(false),
        Some(sel) if meta::selector_is_empty(sel) => Some(true),
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

/// validateGeneratedSelector: the labels the apiserver generated must still be there.
fn generated_selector(o: &Value, spec: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let m = get(o, "metadata").unwrap_or(&null);
    let uid = s(m, "uid");
    let name = s(m, "name");
    if uid.is_empty() {
        errs.push(FieldError::required("metadata.uid", ""));
    }
    let labels = get(spec, "template")
        .and_then(|t| get(t, "metadata"))
        .and_then(|tm| obj(tm, "labels"));
    let mut has =
        |label: &str, want: &str| match labels.and_then(|l| l.get(label)).and_then(Value::as_str) {
            None => errs.push(FieldError::required(
                format!("spec.template.metadata.labels[{label}]"),
                "",
            )),
            Some(v) if v != want => errs.push(FieldError::invalid(
                format!("spec.template.metadata.labels[{label}]"),
                go_map(labels),
                format!("must be '{want}'"),
            )),
            _ => {}
        };
    has(LEGACY_CONTROLLER_UID_LABEL, uid);
    has(LEGACY_JOB_NAME_LABEL, name);
    has(CONTROLLER_UID_LABEL, uid);
    has(JOB_NAME_LABEL, name);
    let mut expected = Map::new();
    expected.insert(CONTROLLER_UID_LABEL.into(), Value::String(uid.into()));
    expected.insert(
        LEGACY_CONTROLLER_UID_LABEL.into(),
        Value::String(uid.into()),
    );
    if let Some(sel) = get(spec, "selector")
        && selector_matches(sel, Some(&expected)) == Some(false)
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            go_selector(Some(sel)),
            "`selector` not auto-generated",
        ));
    }
}

pub(crate) fn job(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    match get(spec, "selector") {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => meta::label_selector(sel, "spec.selector", errs),
    }
    selector_matches_template(spec, errs);
    let manual = spec
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !manual {
        generated_selector(o, spec, errs);
    }
    job_spec(spec, "spec", errs);

    let Some(old) = old else { return };
    let old_spec = get(old, "spec").unwrap_or(&null);
    immutable(
        "spec.selector".into(),
        get(spec, "selector"),
        get(old_spec, "selector"),
        errs,
    );
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "manualSelector",
        "successPolicy",
        "managedBy",
    ] {
        immutable(child("spec", f), get(spec, f), get(old_spec, f), errs);
    }
    // Completions may change only for Indexed jobs scaled elastically (with parallelism).
    let indexed_scale = s(spec, "completionMode") == "Indexed"
        && int(spec, "completions") == int(spec, "parallelism")
        && int(old_spec, "completions") == int(old_spec, "parallelism");
    if !indexed_scale {
        immutable(
            "spec.completions".into(),
            get(spec, "completions"),
            get(old_spec, "completions"),
            errs,
        );
    }
    // A suspended Job that never ran may still have its scheduling directives changed.
    let suspended_unstarted = old_spec.get("suspend").and_then(Value::as_bool) == Some(true)
        && get(old, "status").is_none_or(|st| get(st, "startTime").is_none());
    let template_view = |sp: &Value| -> Option<Value> {
        let mut t = get(sp, "template")?.clone();
        if suspended_unstarted {
            if let Some(tm) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                tm.remove("labels");
                tm.remove("annotations");
            }
            if let Some(ps) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for f in ["nodeSelector", "affinity", "tolerations", "schedulingGates"] {
                    ps.remove(f);
                }
            }
        }
        Some(t)
    };
    if template_view(spec) != template_view(old_spec) {
        errs.push(FieldError::invalid(
            "spec.template",
            "<pod template>",
            "field is immutable",
        ));
    }
}

pub(crate) fn cron_job(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let name = get(o, "metadata").map(|m| s(m, "name")).unwrap_or("");
    // The controller appends an 11-character suffix to make Job names, which are labels.
    if old.is_none() && name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            quote(name),
            "must be no more than 52 characters",
        ));
    }
    let null = Value::Null;
    let spec = get(o, "spec").unwrap_or(&null);
    let schedule = s(spec, "schedule");
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = crate::cron::Schedule::parse(schedule) {
            errs.push(FieldError::invalid("spec.schedule", quote(schedule), e.0));
        }
        let allow_tz = old
            .and_then(|o| get(o, "spec"))
            .is_some_and(|sp| s(sp, "schedule").contains("TZ"));
        if schedule.contains("TZ") {
            if !allow_tz {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    quote(schedule),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if get(spec, "timeZone").is_some() {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    quote(schedule),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    if let Some(tz) = opt_str(spec, "timeZone") {
        let ok = !tz.is_empty()
            && tz != "Local"
            && tz
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"/_-+".contains(&c))
            && !tz.starts_with('/')
            && !tz.contains("..");
        if !ok {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                quote(tz),
                format!("unknown time zone {tz}"),
            ));
        }
    }
    nonnegative(
        "spec.startingDeadlineSeconds".into(),
        int(spec, "startingDeadlineSeconds"),
        errs,
    );
    one_of(
        "spec.concurrencyPolicy".into(),
        s(spec, "concurrencyPolicy"),
        &["Allow", "Forbid", "Replace"],
        errs,
    );
    nonnegative(
        "spec.successfulJobsHistoryLimit".into(),
        int(spec, "successfulJobsHistoryLimit"),
        errs,
    );
    nonnegative(
        "spec.failedJobsHistoryLimit".into(),
        int(spec, "failedJobsHistoryLimit"),
        errs,
    );
    let jt = get(spec, "jobTemplate").unwrap_or(&null);
    meta::template_meta(jt, "spec.jobTemplate", errs);
    let js = get(jt, "spec").unwrap_or(&null);
    job_spec(js, "spec.jobTemplate.spec", errs);
    if let Some(sel) = get(js, "selector") {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            go_selector(Some(sel)),
            "`selector` will be auto-generated",
        ));
    }
    if js.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            "true",
            &["nil", "false"],
        ));
    }
}
