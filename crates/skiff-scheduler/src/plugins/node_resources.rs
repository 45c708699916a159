//! NodeResourcesFit (filter), LeastAllocated and BalancedAllocation (scores): what a node has
//! allocatable against what the pods bound or assumed on it request.

use std::any::Any;

use crate::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeView, PodInfo, ScorePlugin, Unfit,
};

pub const TOO_MANY_PODS: &str = "Too many pods";

/// Rules out nodes without room for the pod's requests (cpu, memory, pod count and every
/// scalar resource such as `nvidia.com/gpu`).
pub struct Fit;

impl FilterPlugin for Fit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(
        &self,
        _state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit> {
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > view.allowed_pods {
            reasons.push(TOO_MANY_PODS.to_string());
        }
        let req = &pod.requests;
        let alloc = &view.allocatable;
        let used = &node.requested;
        if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu.saturating_sub(used.milli_cpu) {
            reasons.push("Insufficient cpu".into());
        }
        if req.memory > 0 && req.memory > alloc.memory.saturating_sub(used.memory) {
            reasons.push("Insufficient memory".into());
        }
        for (name, &amount) in &req.scalar {
            if amount > 0 && amount > alloc.scalar(name).saturating_sub(used.scalar(name)) {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Unfit(reasons))
        }
    }
}

/// The share of a resource left free after placing the pod, 0..=100.
fn free_score(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// Favours nodes with the most free cpu and memory (spreads pods), equal weights.
pub struct LeastAllocated;

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesLeastAllocated"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64 {
        let (pc, pm) = pod.non_zero_requests();
        let (nc, nm) = node.non_zero_requested;
        (free_score(nc + pc, view.allocatable.milli_cpu)
            + free_score(nm + pm, view.allocatable.memory))
            / 2
    }
}

/// Favours nodes whose cpu and memory would be used in equal shares.
pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64 {
        let fraction = |req: i64, cap: i64| {
            if cap <= 0 {
                1.0
            } else {
                (req as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = fraction(
            node.requested.milli_cpu + pod.requests.milli_cpu,
            view.allocatable.milli_cpu,
        );
        let mem = fraction(
            node.requested.memory + pod.requests.memory,
            view.allocatable.memory,
        );
        // The standard deviation of two values is half their distance.
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;
    use std::sync::Arc;

    #[test]
    fn fit_counts_requests_of_bound_pods() {
        let mut ni = info(&node("a", "2", "2Gi", "110"));
        ni.add_pod(Arc::new(PodInfo::from_pod(&pod("x", "1500m", "1Gi"))));
        let view = ni.node.clone().unwrap();
        let fits = PodInfo::from_pod(&pod("p", "500m", "1Gi"));
        assert_eq!(Fit.filter(None, &fits, &ni, &view), Ok(()));
        let too_big = PodInfo::from_pod(&pod("p", "600m", "2Gi"));
        assert_eq!(
            Fit.filter(None, &too_big, &ni, &view),
            Err(Unfit(vec![
                "Insufficient cpu".into(),
                "Insufficient memory".into()
            ]))
        );
        assert!(ni.remove_pod("default/x"));
        assert_eq!(Fit.filter(None, &too_big, &ni, &view), Ok(()));
    }

    #[test]
    fn fit_checks_pod_count_and_extended_resources() {
        let mut n = node("a", "8", "8Gi", "1");
        n.status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert(
                "nvidia.com/gpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let mut ni = info(&n);
        let view = ni.node.clone().unwrap();
        let mut gpu_pod = PodInfo::from_pod(&pod("g", "", ""));
        gpu_pod.requests.scalar.insert("nvidia.com/gpu".into(), 2);
        assert_eq!(
            Fit.filter(None, &gpu_pod, &ni, &view),
            Err(Unfit::one("Insufficient nvidia.com/gpu"))
        );
        gpu_pod.requests.scalar.insert("nvidia.com/gpu".into(), 1);
        assert_eq!(Fit.filter(None, &gpu_pod, &ni, &view), Ok(()));
        ni.add_pod(Arc::new(PodInfo::from_pod(&pod("x", "", ""))));
        assert_eq!(
            Fit.filter(None, &gpu_pod, &ni, &view),
            Err(Unfit::one(TOO_MANY_PODS))
        );
        let plain = info(&node("b", "8", "8Gi", "10"));
        assert_eq!(
            Fit.filter(None, &gpu_pod, &plain, plain.node.as_ref().unwrap()),
            Err(Unfit::one("Insufficient nvidia.com/gpu"))
        );
    }

    #[test]
    fn least_allocated_prefers_free_nodes_and_charges_empty_pods_defaults() {
        let ni = info(&node("a", "1", "1000Mi", "10"));
        let view = ni.node.clone().unwrap();
        let half = PodInfo::from_pod(&pod("p", "500m", "500Mi"));
        assert_eq!(LeastAllocated.score(&half, &ni, &view), 50);
        let empty = PodInfo::from_pod(&pod("e", "", ""));
        // 100m of 1000m and 200Mi of 1000Mi charged: (90 + 80) / 2.
        assert_eq!(LeastAllocated.score(&empty, &ni, &view), 85);
    }

    #[test]
    fn balanced_allocation_prefers_even_usage() {
        let ni = info(&node("a", "1", "1000Mi", "10"));
        let view = ni.node.clone().unwrap();
        let even = PodInfo::from_pod(&pod("p", "500m", "500Mi"));
        let skewed = PodInfo::from_pod(&pod("p", "1", "0"));
        assert_eq!(BalancedAllocation.score(&even, &ni, &view), 100);
        assert_eq!(BalancedAllocation.score(&skewed, &ni, &view), 50);
    }
}
