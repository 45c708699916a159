//! ObjectMeta, labels, annotations and label selectors (apimachinery's metadata validation).

use super::names::{self, mask_trailing_dash};
use super::{arr, child, get, go_strs, index, obj, quote, s};
use crate::error::FieldError;
use serde_json::{Map, Value};

/// Annotations may total at most 256 KiB.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

pub(crate) type NameFn = fn(&str) -> Vec<String>;

/// ValidateObjectMeta: names, namespace, labels, annotations, owner references, finalizers.
pub(crate) fn object_meta(
    o: &Value,
    namespaced: bool,
    name_fn: NameFn,
    errs: &mut Vec<FieldError>,
) {
    let empty = Value::Object(Map::new());
    let m = get(o, "metadata").unwrap_or(&empty);
    if !m.is_object() {
        errs.push(FieldError::invalid(
            "metadata",
            super::render(m),
            "must be an object",
        ));
        return;
    }
    let generate_name = s(m, "generateName");
    if !generate_name.is_empty() {
        for msg in name_fn(&mask_trailing_dash(generate_name)) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                quote(generate_name),
                msg,
            ));
        }
    }
    let name = s(m, "name");
    if name.is_empty() {
        // With generateName the apiserver picks the name before storing.
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in name_fn(name) {
            errs.push(FieldError::invalid("metadata.name", quote(name), msg));
        }
    }
    let namespace = s(m, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::dns1123_label(namespace) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    quote(namespace),
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    super::nonnegative(
        "metadata.generation".into(),
        super::int(m, "generation"),
        errs,
    );
    labels(obj(m, "labels"), "metadata.labels", errs);
    annotations(obj(m, "annotations"), "metadata.annotations", errs);
    owner_references(arr(m, "ownerReferences"), errs);
    finalizers(arr(m, "finalizers"), "metadata.finalizers", errs);
}

/// ValidateObjectMetaUpdate: identity fields never change; a deleting object gains no finalizers.
pub(crate) fn object_meta_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let null = Value::Null;
    let nm = get(new, "metadata").unwrap_or(&null);
    let om = get(old, "metadata").unwrap_or(&null);
    for f in ["name", "namespace"] {
        if s(nm, f) != s(om, f) {
            errs.push(FieldError::invalid(
                format!("metadata.{f}"),
                quote(s(nm, f)),
                "field is immutable",
            ));
        }
    }
    // An update that leaves these out keeps the stored values (the REST layer copies them).
    for f in ["uid", "creationTimestamp"] {
        let (n, o) = (s(nm, f), s(om, f));
        if !n.is_empty() && !o.is_empty() && n != o {
            errs.push(FieldError::invalid(
                format!("metadata.{f}"),
                quote(n),
                "field is immutable",
            ));
        }
    }
    let old_deletion = s(om, "deletionTimestamp");
    if !old_deletion.is_empty() {
        let new_deletion = s(nm, "deletionTimestamp");
        if !new_deletion.is_empty() && new_deletion != old_deletion {
            errs.push(FieldError::invalid(
                "metadata.deletionTimestamp",
                quote(new_deletion),
                "field is immutable",
            ));
        }
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let added: Vec<Value> = arr(nm, "finalizers")
            .iter()
            .filter(|f| f.as_str().is_some_and(|f| !old_f.contains(&f)))
            .cloned()
            .collect();
        if !added.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!("no new finalizers can be added if the object is being deleted, found new finalizers {}", go_strs(&added)),
            ));
        }
    }
}

/// ValidateLabels: keys are qualified names, values label values; both report at `path`.
pub(crate) fn labels(m: Option<&Map<String, Value>>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(m) = m else { return };
    for (k, v) in m {
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid(path, quote(k), msg));
        }
        match v.as_str() {
            Some(v) => {
                for msg in names::label_value(v) {
                    errs.push(FieldError::invalid(path, quote(v), msg));
                }
            }
            None => errs.push(FieldError::invalid(
                super::key(path, k),
                super::render(v),
                "must be a string",
            )),
        }
    }
}

/// ValidateAnnotations: case-insensitive qualified-name keys, 256 KiB in total.
pub(crate) fn annotations(m: Option<&Map<String, Value>>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(m) = m else { return };
    let mut total = 0;
    for (k, v) in m {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, quote(k), msg));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
        if !v.is_string() {
            errs.push(FieldError::invalid(
                super::key(path, k),
                super::render(v),
                "must be a string",
            ));
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

fn owner_references(refs: &[Value], errs: &mut Vec<FieldError>) {
    let path = "metadata.ownerReferences";
    let mut controllers = Vec::new();
    for r in refs {
        let api_version = s(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(path, "apiVersion"),
                quote(api_version),
                "version must not be empty",
            ));
        }
        for f in ["kind", "name", "uid"] {
            if s(r, f).is_empty() {
                errs.push(FieldError::invalid(
                    child(path, f),
                    quote(""),
                    "must not be empty",
                ));
            }
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            controllers.push(format!(
                "{}/{}, Kind={}, Name={}, UID={}",
                api_version,
                "",
                s(r, "kind"),
                s(r, "name"),
                s(r, "uid")
            ));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            super::render(&Value::Array(refs.to_vec())),
            format!("Only one reference can have Controller set to true. Found \"true\" in references for {}", controllers.join(" and ")),
        ));
    }
}

fn finalizers(list: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let mut has_orphan = false;
    let mut has_foreground = false;
    for f in list {
        let Some(f) = f.as_str() else {
            errs.push(FieldError::invalid(
                path,
                super::render(f),
                "must be a string",
            ));
            continue;
        };
        for msg in names::qualified_name(f) {
            errs.push(FieldError::invalid(path, quote(f), msg));
        }
        has_orphan |= f == "orphan";
        has_foreground |= f == "foregroundDeletion";
    }
    if has_orphan && has_foreground {
        errs.push(FieldError::invalid(
            path,
            go_strs(list),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
}

/// The metadata of a pod template: only labels and annotations are checked.
pub(crate) fn template_meta(template: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(m) = get(template, "metadata") {
        labels(
            obj(m, "labels"),
            &child(&child(path, "metadata"), "labels"),
            errs,
        );
        annotations(
            obj(m, "annotations"),
            &child(&child(path, "metadata"), "annotations"),
            errs,
        );
    }
}

/// ValidateLabelSelector.
pub(crate) fn label_selector(sel: &Value, path: &str, errs: &mut Vec<FieldError>) {
    labels(obj(sel, "matchLabels"), &child(path, "matchLabels"), errs);
    let exprs_path = child(path, "matchExpressions");
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = index(&exprs_path, i);
        let values = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                child(&p, "operator"),
                quote(op),
                "not a valid selector operator",
            )),
        }
        let k = s(e, "key");
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid(child(&p, "key"), quote(k), msg));
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for msg in names::label_value(v) {
                errs.push(FieldError::invalid(
                    index(&child(&p, "values"), j),
                    quote(v),
                    msg,
                ));
            }
        }
    }
}

/// Whether a `metav1.LabelSelector` object is empty (selects everything).
pub(crate) fn selector_is_empty(sel: &Value) -> bool {
    obj(sel, "matchLabels").is_none_or(|m| m.is_empty()) && arr(sel, "matchExpressions").is_empty()
}

/// Whether a selector object matches a label set; None when the selector does not parse.
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Map<String, Value>>) -> Option<bool> {
    let parsed = crate::meta::LabelSelector::from_object(sel).ok()?;
    Some(parsed.matches(labels))
}
