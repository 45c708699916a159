//! Resource amounts in scheduler units (milli-CPU, bytes, counts) and a pod's effective requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_api::quantity::parse_quantity;

/// What a pod without requests is charged for scoring only (kube-scheduler's non-zero defaults),
/// so that empty pods still spread instead of piling onto one node.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of every resource the scheduler accounts for. `scalar` holds everything that is not
/// CPU or memory (ephemeral-storage, hugepages, extended resources such as `nvidia.com/gpu`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a resource list; unparsable quantities count as zero (validation rejects them
    /// before they reach the store, and the scheduler must never panic on input).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(parsed) = parse_quantity(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = clamp(parsed.milli_value()),
                "memory" => r.memory = clamp(parsed.value()),
                "pods" => {}
                other => {
                    r.scalar.insert(other.to_string(), clamp(parsed.value()));
                }
            }
        }
        r
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_sub(*v);
        }
        self.scalar.retain(|_, v| *v != 0);
    }

    /// Each resource raised to at least `other`'s amount.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(0, i64::MAX as i128) as i64
}

/// The number of pods a node accepts (`allocatable.pods`); a node without it accepts none,
/// as in Kubernetes.
pub fn allowed_pods(list: Option<&BTreeMap<String, Quantity>>) -> i64 {
    list.and_then(|l| l.get("pods"))
        .and_then(|q| parse_quantity(&q.0).ok())
        .map(|q| clamp(q.value()))
        .unwrap_or(0)
}

/// A container's requests; a resource with only a limit is requested at its limit (the API
/// defaults it so, but a pod written by an older server may lack the default).
fn container_requests(c: &Container) -> Resources {
    let Some(res) = c.resources.as_ref() else {
        return Resources::default();
    };
    let mut merged = res.limits.clone().unwrap_or_default();
    merged.retain(|k, _| k != "pods");
    for (k, v) in res.requests.iter().flatten() {
        merged.insert(k.clone(), v.clone());
    }
    Resources::from_list(Some(&merged))
}

/// The requests the scheduler charges a pod, computed like kube-scheduler: the sum over app
/// containers and sidecars (init containers with `restartPolicy: Always`), at least the largest
/// single regular init container (plus the sidecars started before it), plus the pod overhead.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut reqs = Resources::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
        } else {
            let mut during = r;
            during.add(&sidecars);
            init_max.max_with(&during);
        }
    }
    reqs.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add(&Resources::from_list(Some(overhead)));
    }
    reqs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(cpu: &str, mem: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity(mem.into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_sum_and_init_containers_count_as_max() {
        let spec = PodSpec {
            containers: vec![container("250m", "64Mi"), container("250m", "64Mi")],
            init_containers: Some(vec![container("1", "16Mi"), container("100m", "1Gi")]),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.memory, 1024 * 1024 * 1024);
    }

    #[test]
    fn sidecars_add_to_the_sum() {
        let mut sidecar = container("200m", "10Mi");
        sidecar.restart_policy = Some("Always".into());
        let spec = PodSpec {
            containers: vec![container("500m", "10Mi")],
            init_containers: Some(vec![sidecar, container("600m", "1Mi")]),
            ..Default::default()
        };
        // app + sidecar = 700m; the init container runs beside the sidecar: 800m.
        assert_eq!(pod_requests(&spec).milli_cpu, 800);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_extended_resources_are_scalars() {
        let c = Container {
            name: "gpu".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("nvidia.com/gpu".to_string(), Quantity("2".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![c],
            overhead: Some([("cpu".to_string(), Quantity("10m".into()))].into()),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!(r.scalar("nvidia.com/gpu"), 2);
        assert_eq!(r.milli_cpu, 10);
    }

    #[test]
    fn bad_quantities_count_as_zero() {
        let list = [("cpu".to_string(), Quantity("lots".into()))].into();
        assert_eq!(Resources::from_list(Some(&list)).milli_cpu, 0);
        assert_eq!(allowed_pods(Some(&list)), 0);
    }
}
