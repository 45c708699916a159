//! Container `resources` turned into cgroup settings the way the kubelet does, and the pod's
//! QoS class.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_runtime::Resources;

/// Smallest cpu.shares value (the kernel's minimum), given to best-effort containers.
const MIN_SHARES: u64 = 2;
/// CFS period the kubelet uses, in microseconds.
const CFS_PERIOD: u64 = 100_000;
/// Smallest CFS quota the kernel accepts, in microseconds.
const MIN_QUOTA: i64 = 1_000;

fn quantity(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<i128> {
    let q = list?.get(name)?;
    skiff_api::quantity::parse_quantity(&q.0).ok().map(|q| {
        if name == "cpu" {
            q.milli_value()
        } else {
            q.value()
        }
    })
}

/// Millicores of a cpu quantity / bytes of other quantities in `list`.
pub fn milli_cpu(list: Option<&BTreeMap<String, Quantity>>) -> Option<i128> {
    quantity(list, "cpu")
}

pub fn bytes(list: Option<&BTreeMap<String, Quantity>>, name: &str) -> Option<i128> {
    quantity(list, name)
}

/// requests.cpu -> shares (millicores * 1024 / 1000, at least 2), limits.cpu -> quota over
/// a 100 ms period, limits.memory -> memory limit. A missing request takes the limit, as
/// the API server's defaulting would have.
pub fn container_resources(c: &Container) -> Resources {
    let r = c.resources.as_ref();
    let requests = r.and_then(|r| r.requests.as_ref());
    let limits = r.and_then(|r| r.limits.as_ref());
    let cpu_request = milli_cpu(requests).or_else(|| milli_cpu(limits));
    let shares = cpu_request
        .map(|m| (m.max(0) as u64).saturating_mul(1024) / 1000)
        .unwrap_or(MIN_SHARES)
        .max(MIN_SHARES);
    let (quota, period) = match milli_cpu(limits) {
        Some(m) if m > 0 => {
            let q = (m as i64).saturating_mul(CFS_PERIOD as i64) / 1000;
            (Some(q.max(MIN_QUOTA)), Some(CFS_PERIOD))
        }
        _ => (None, None),
    };
    let memory = bytes(limits, "memory")
        .filter(|b| *b > 0)
        .map(|b| b.min(i64::MAX as i128) as i64);
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        cpu_period: period,
        memory_limit: memory,
    }
}

/// `status.qosClass`: Guaranteed when every container limits cpu and memory with requests
/// equal to limits, BestEffort when none asks for anything, else Burstable.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.as_ref();
        let requests = r.and_then(|r| r.requests.as_ref());
        let limits = r.and_then(|r| r.limits.as_ref());
        for name in ["cpu", "memory"] {
            let req = quantity(requests, name);
            let lim = quantity(limits, name);
            if req.is_some_and(|v| v != 0) || lim.is_some_and(|v| v != 0) {
                any = true;
            }
            match (req.or(lim), lim) {
                (Some(a), Some(b)) if a == b => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(resources: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "resources": resources})).expect("container")
    }

    #[test]
    fn converts_like_the_kubelet() {
        let c = container(json!({
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"}
        }));
        assert_eq!(
            container_resources(&c),
            Resources {
                cpu_shares: Some(102),
                cpu_quota: Some(20_000),
                cpu_period: Some(100_000),
                memory_limit: Some(256 * 1024 * 1024),
            }
        );
        let none = container(json!({}));
        assert_eq!(container_resources(&none).cpu_shares, Some(2));
        assert_eq!(container_resources(&none).memory_limit, None);
        let tiny = container(json!({"limits": {"cpu": "1m"}}));
        let r = container_resources(&tiny);
        assert_eq!((r.cpu_shares, r.cpu_quota), (Some(2), Some(1000)));
    }

    #[test]
    fn qos_classes() {
        let spec = |res: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [{"name": "c", "resources": res}]}))
                .expect("spec")
        };
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
    }
}
