//! The small kinds: Events (core and events.k8s.io), Lease, EndpointSlice, ControllerRevision.

use super::meta::object_meta;
use super::names;
use super::pod::protocol;
use super::{arr, child, get, immutable, index, int, nonnegative, quote, s};
use crate::error::FieldError;
use serde_json::Value;

const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// The event fields validation looks at, read from either API's field names.
struct EventView<'a> {
    namespace: &'a str,
    involved_namespace: &'a str,
    event_time: &'a str,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    action: &'a str,
    reason: &'a str,
    message: &'a str,
}

/// legacyValidateEvent: what both Event APIs check.
fn legacy_event(e: &EventView, reporting_field: &str, errs: &mut Vec<FieldError>) {
    if e.event_time.is_empty() {
        let ok = if e.involved_namespace.is_empty() {
            e.namespace.is_empty() || e.namespace == "default"
        } else {
            e.namespace == e.involved_namespace
        };
        if !ok {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                quote(e.involved_namespace),
                "does not match event.namespace",
            ));
        }
    } else {
        if e.involved_namespace.is_empty()
            && e.namespace != "default"
            && e.namespace != "kube-system"
        {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                quote(e.involved_namespace),
                "does not match event.namespace",
            ));
        }
        if e.reporting_controller.is_empty() {
            errs.push(FieldError::required(reporting_field, ""));
        }
        for msg in names::qualified_name(e.reporting_controller) {
            errs.push(FieldError::invalid(
                reporting_field,
                quote(e.reporting_controller),
                msg,
            ));
        }
        for (path, v, max) in [
            (
                "reportingInstance",
                e.reporting_instance,
                REPORTING_INSTANCE_MAX,
            ),
            ("action", e.action, ACTION_MAX),
            ("reason", e.reason, REASON_MAX),
        ] {
            if v.is_empty() {
                errs.push(FieldError::required(path, ""));
            }
            if v.len() > max {
                errs.push(FieldError::invalid(
                    path,
                    quote(""),
                    format!("can have at most {max} characters"),
                ));
            }
        }
        if e.message.len() > NOTE_MAX {
            errs.push(FieldError::invalid(
                "message",
                quote(""),
                format!("can have at most {NOTE_MAX} characters"),
            ));
        }
    }
    for msg in names::dns1123_subdomain(e.namespace) {
        errs.push(FieldError::invalid("namespace", quote(e.namespace), msg));
    }
}

fn meta_str<'a>(o: &'a Value, f: &str) -> &'a str {
    get(o, "metadata").map(|m| s(m, f)).unwrap_or("")
}

/// core/v1 Events get only the legacy checks (old clients depend on that).
pub(crate) fn core_event(o: &Value, errs: &mut Vec<FieldError>) {
    let involved = get(o, "involvedObject");
    let view = EventView {
        namespace: meta_str(o, "namespace"),
        involved_namespace: involved.map(|i| s(i, "namespace")).unwrap_or(""),
        event_time: s(o, "eventTime"),
        reporting_controller: s(o, "reportingComponent"),
        reporting_instance: s(o, "reportingInstance"),
        action: s(o, "action"),
        reason: s(o, "reason"),
        message: s(o, "message"),
    };
    legacy_event(&view, "reportingComponent", errs);
    if meta_str(o, "name").is_empty() && meta_str(o, "generateName").is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
}

/// events.k8s.io/v1 Events: the legacy checks plus the strict ones.
pub(crate) fn events_event(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let regarding = get(o, "regarding");
    let view = EventView {
        namespace: meta_str(o, "namespace"),
        involved_namespace: regarding.map(|i| s(i, "namespace")).unwrap_or(""),
        event_time: s(o, "eventTime"),
        reporting_controller: s(o, "reportingController"),
        reporting_instance: s(o, "reportingInstance"),
        action: s(o, "action"),
        reason: s(o, "reason"),
        message: s(o, "note"),
    };
    legacy_event(&view, "reportingController", errs);
    object_meta(o, true, names::dns1123_subdomain, errs);
    if let Some(series) = get(o, "series") {
        if int(series, "count").unwrap_or(0) < 2 {
            errs.push(FieldError::invalid(
                "series.count",
                int(series, "count").unwrap_or(0),
                "should be at least 2",
            ));
        }
        if s(series, "lastObservedTime").is_empty() {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if view.event_time.is_empty() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = s(o, "type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            quote(""),
            format!("has invalid value: {ty}"),
        ));
    }
    for (f, path) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ] {
        if !s(o, f).is_empty() {
            errs.push(FieldError::invalid(path, quote(""), "needs to be unset"));
        }
    }
    if int(o, "deprecatedCount").unwrap_or(0) != 0 {
        errs.push(FieldError::invalid("count", quote(""), "needs to be unset"));
    }
    if get(o, "deprecatedSource")
        .is_some_and(|src| !s(src, "component").is_empty() || !s(src, "host").is_empty())
    {
        errs.push(FieldError::invalid(
            "source",
            quote(""),
            "needs to be unset",
        ));
    }
    if let Some(old) = old {
        for (f, path) in [
            ("regarding", "involvedObject"),
            ("reason", "reason"),
            ("note", "message"),
            ("reportingController", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("eventTime", "eventTime"),
            ("type", "type"),
            ("related", "related"),
        ] {
            immutable(path.into(), get(o, f), get(old, f), errs);
        }
    }
}

pub(crate) fn lease(o: &Value, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let Some(spec) = get(o, "spec") else { return };
    if let Some(d) = int(spec, "leaseDurationSeconds")
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    nonnegative(
        "spec.leaseTransitions".into(),
        int(spec, "leaseTransitions"),
        errs,
    );
    for f in ["acquireTime", "renewTime"] {
        let t = s(spec, f);
        if !t.is_empty() && chrono::DateTime::parse_from_rfc3339(t).is_err() {
            errs.push(FieldError::invalid(
                child("spec", f),
                quote(t),
                "must be an RFC 3339 time with microseconds",
            ));
        }
    }
    if let Some(st) = super::opt_str(spec, "strategy")
        && !st.is_empty()
        && st != "OldestEmulationVersion"
    {
        errs.push(FieldError::not_supported(
            "spec.strategy",
            quote(st),
            &["OldestEmulationVersion"],
        ));
    }
    if !s(spec, "preferredHolder").is_empty() && s(spec, "strategy").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

const MAX_ENDPOINTS: usize = 1000;
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;

pub(crate) fn endpoint_slice(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    let address_type = s(o, "addressType");
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !["FQDN", "IPv4", "IPv6"].contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            quote(address_type),
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
    let endpoints = arr(o, "endpoints");
    if endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(
            "endpoints",
            endpoints.len(),
            MAX_ENDPOINTS,
        ));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let ep_path = index("endpoints", i);
        let ap = child(&ep_path, "addresses");
        let addresses = arr(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                ap.clone(),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            errs.push(FieldError::too_many(
                ap.clone(),
                addresses.len(),
                MAX_ADDRESSES,
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let p = index(&ap, j);
            match address_type {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    errs.push(FieldError::invalid(
                        p,
                        quote(a),
                        "must be a valid IPv4 address",
                    ));
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    errs.push(FieldError::invalid(
                        p,
                        quote(a),
                        "must be a valid IPv6 address",
                    ));
                }
                "FQDN" => {
                    for msg in names::dns1123_subdomain(a) {
                        errs.push(FieldError::invalid(p.clone(), quote(a), msg));
                    }
                }
                _ => {}
            }
        }
        if let Some(n) = super::opt_str(ep, "nodeName") {
            for msg in names::dns1123_subdomain(n) {
                errs.push(FieldError::invalid(
                    child(&ep_path, "nodeName"),
                    quote(n),
                    msg,
                ));
            }
        }
        if let Some(h) = super::opt_str(ep, "hostname") {
            for msg in names::dns1123_label(h) {
                errs.push(FieldError::invalid(
                    child(&ep_path, "hostname"),
                    quote(h),
                    msg,
                ));
            }
        }
    }
    let ports = arr(o, "ports");
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many("ports", ports.len(), MAX_PORTS));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("ports", i);
        let name = s(p, "name");
        if !name.is_empty() {
            for msg in names::dns1123_label(name) {
                errs.push(FieldError::invalid(child(&pp, "name"), quote(name), msg));
            }
        }
        if !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&pp, "name"), quote(name)));
        }
        protocol(s(p, "protocol"), child(&pp, "protocol"), errs);
        if let Some(port) = int(p, "port") {
            for msg in names::port_num(port) {
                errs.push(FieldError::invalid(child(&pp, "port"), port, msg));
            }
        }
        if let Some(ap) = super::opt_str(p, "appProtocol") {
            for msg in names::qualified_name(ap) {
                errs.push(FieldError::invalid(
                    child(&pp, "appProtocol"),
                    quote(ap),
                    msg,
                ));
            }
        }
    }
    if let Some(old) = old {
        immutable(
            "addressType".into(),
            get(o, "addressType"),
            get(old, "addressType"),
            errs,
        );
    }
}

pub(crate) fn controller_revision(o: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(o, true, names::dns1123_subdomain, errs);
    if get(o, "data").is_none() {
        errs.push(FieldError::required("data", "data is mandatory"));
    }
    nonnegative("revision".into(), int(o, "revision"), errs);
    if let Some(old) = old {
        immutable("data".into(), get(o, "data"), get(old, "data"), errs);
    }
}
