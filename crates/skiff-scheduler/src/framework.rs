//! The scheduling framework: pod and node views, the filter/score plugin traits, the profile
//! that assembles plugins from a config, and one scheduling cycle with Kubernetes' fit error.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, Pod, PodAffinityTerm, PreferredSchedulingTerm, Taint, Toleration,
};
use serde_json::{Map, Value};
use skiff_api::meta::LabelSelector;

use crate::plugins;
use crate::resources::{self, DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, Resources};

/// The label every node carries with its own name; the topology of "same node" affinity.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Taints the node lifecycle controller puts on nodes that are not Ready; the scheduler derives
/// them from the Ready condition itself so a NotReady node repels pods even before that happens.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Which namespaces an inter-pod affinity term looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermNamespaces {
    All,
    Only(Vec<String>),
}

/// A parsed required inter-pod (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// `None` when the selector is invalid or absent: such a term matches no pod.
    pub selector: Option<LabelSelector>,
    pub namespaces: TermNamespaces,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, own_namespace: &str) -> Self {
        let selector = term
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| LabelSelector::from_object(&v).ok());
        let mut list = term.namespaces.clone().unwrap_or_default();
        let namespaces = match &term.namespace_selector {
            // An empty namespace selector means every namespace.
            Some(sel)
                if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                    && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
            {
                TermNamespaces::All
            }
            _ => {
                if list.is_empty() {
                    list.push(own_namespace.to_string());
                }
                TermNamespaces::Only(list)
            }
        };
        AffinityTerm {
            selector,
            namespaces,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        let in_ns = match &self.namespaces {
            TermNamespaces::All => true,
            TermNamespaces::Only(list) => list.contains(&pod.namespace),
        };
        in_ns
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(Some(&pod.labels)))
    }
}

/// What the scheduler needs of a pod, parsed once.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Map<String, Value>,
    pub requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_affinity: Option<NodeSelector>,
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Vec<AffinityTerm>,
    pub anti_affinity: Vec<AffinityTerm>,
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let labels = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let spec = pod.spec.clone().unwrap_or_default();
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_aff = affinity.node_affinity.unwrap_or_default();
        let terms = |t: Option<Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            t.unwrap_or_default()
                .iter()
                .map(|t| AffinityTerm::parse(t, &namespace))
                .collect()
        };
        let affinity_terms = terms(
            affinity
                .pod_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution),
        );
        let anti_affinity_terms = terms(
            affinity
                .pod_anti_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution),
        );
        PodInfo {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels,
            requests: resources::pod_requests(&spec),
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: node_aff.required_during_scheduling_ignored_during_execution,
            preferred_node_affinity: node_aff
                .preferred_during_scheduling_ignored_during_execution
                .unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            affinity: affinity_terms,
            anti_affinity: anti_affinity_terms,
            namespace,
        }
    }

    /// `namespace/name`, the key pods are tracked by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// CPU and memory as charged for scoring (zero requests count as the defaults).
    pub fn non_zero_requests(&self) -> (i64, i64) {
        let cpu = if self.requests.milli_cpu == 0 {
            DEFAULT_MILLI_CPU_REQUEST
        } else {
            self.requests.milli_cpu
        };
        let mem = if self.requests.memory == 0 {
            DEFAULT_MEMORY_REQUEST
        } else {
            self.requests.memory
        };
        (cpu, mem)
    }
}

/// What the scheduler needs of a Node object, parsed once per change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub labels: BTreeMap<String, String>,
    /// The node's taints plus the not-ready/unreachable taint derived from its Ready condition.
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
}

impl NodeView {
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut labels = node.metadata.labels.clone().unwrap_or_default();
        // The node agent sets this label; nodes created by hand (or by KWOK-like tools) may not,
        // and hostname-topology affinity must still work for them.
        labels.entry(HOSTNAME_LABEL.to_string()).or_insert(name);
        let spec = node.spec.clone().unwrap_or_default();
        let mut taints = spec.taints.unwrap_or_default();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let implicit = match ready {
            Some("True") => None,
            Some("Unknown") => Some(TAINT_UNREACHABLE),
            _ => Some(TAINT_NOT_READY),
        };
        if let Some(key) = implicit
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_string(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
        let allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .cloned();
        NodeView {
            labels,
            taints,
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable: Resources::from_list(allocatable.as_ref()),
            allowed_pods: resources::allowed_pods(allocatable.as_ref()),
        }
    }
}

/// A node with the pods bound (or assumed) to it and what they request.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods name a node whose Node object the scheduler has not seen.
    pub node: Option<NodeView>,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    /// CPU and memory requested with zero requests counted as the defaults (for scoring).
    pub non_zero_requested: (i64, i64),
    /// How many of `pods` have required anti-affinity terms, so cycles for pods without
    /// affinity of their own skip the nodes where none do.
    pub pods_with_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(name: impl Into<String>, node: Option<NodeView>) -> Self {
        NodeInfo {
            name: name.into(),
            node,
            ..Default::default()
        }
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        let (c, m) = pod.non_zero_requests();
        self.non_zero_requested.0 += c;
        self.non_zero_requested.1 += m;
        if !pod.anti_affinity.is_empty() {
            self.pods_with_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Removes the pod with this key; returns whether it was there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.key() == key) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        let (c, m) = pod.non_zero_requests();
        self.non_zero_requested.0 -= c;
        self.non_zero_requested.1 -= m;
        if !pod.anti_affinity.is_empty() {
            self.pods_with_anti_affinity -= 1;
        }
        true
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .as_ref()
            .and_then(|n| n.labels.get(key))
            .map(String::as_str)
    }
}

/// Why a node does not fit a pod: Kubernetes' reason phrases ("Insufficient cpu").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit(pub Vec<String>);

impl Unfit {
    pub fn one(reason: impl Into<String>) -> Self {
        Unfit(vec![reason.into()])
    }
}

/// State a plugin computes once per scheduling cycle (before filtering any node).
pub type CycleState = Option<Box<dyn Any + Send + Sync>>;

/// A plugin that rules nodes out.
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Computes per-pod state once over all nodes (inter-pod affinity needs it).
    fn pre_filter(&self, _pod: &PodInfo, _nodes: &[NodeInfo]) -> CycleState {
        None
    }
    fn filter(
        &self,
        state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit>;
}

/// A plugin that ranks feasible nodes.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64;
    /// Brings the raw scores of all feasible nodes to 0..=100 (default: they already are).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// Which plugins a profile runs and how much each score counts (0 turns a score plugin off).
/// The defaults are kube-scheduler's default profile for the plugins skiff implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub node_unschedulable: bool,
    pub taint_toleration: bool,
    pub node_affinity: bool,
    pub node_resources_fit: bool,
    pub inter_pod_affinity: bool,
    pub least_allocated_weight: i64,
    pub balanced_allocation_weight: i64,
    pub node_affinity_weight: i64,
    pub taint_toleration_weight: i64,
    /// Stop looking for feasible nodes after this share of a large cluster (`None`: adaptive,
    /// 50% minus 1% per 125 nodes, at least 5%, as kube-scheduler).
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            node_unschedulable: true,
            taint_toleration: true,
            node_affinity: true,
            node_resources_fit: true,
            inter_pod_affinity: true,
            least_allocated_weight: 1,
            balanced_allocation_weight: 1,
            node_affinity_weight: 2,
            taint_toleration_weight: 3,
            percentage_of_nodes_to_score: None,
        }
    }
}

/// Builds one filter plugin of a profile.
type MakeFilter = fn() -> Box<dyn FilterPlugin>;

/// Below this many nodes every node is evaluated.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;

/// The plugins of one scheduler, in kube-scheduler's filter order (the first failing filter
/// decides a node's reason).
pub struct Profile {
    filters: Vec<Box<dyn FilterPlugin>>,
    scorers: Vec<(Box<dyn ScorePlugin>, i64)>,
    percentage_of_nodes_to_score: Option<u32>,
}

impl Profile {
    pub fn new(cfg: &SchedulerConfig) -> Self {
        let mut filters: Vec<Box<dyn FilterPlugin>> = Vec::new();
        let enabled: [(bool, MakeFilter); 5] = [
            (cfg.node_unschedulable, || {
                Box::new(plugins::node_unschedulable::NodeUnschedulable)
            }),
            (cfg.taint_toleration, || {
                Box::new(plugins::taint_toleration::TaintToleration)
            }),
            (cfg.node_affinity, || {
                Box::new(plugins::node_affinity::NodeAffinity)
            }),
            (cfg.node_resources_fit, || {
                Box::new(plugins::node_resources::Fit)
            }),
            (cfg.inter_pod_affinity, || {
                Box::new(plugins::inter_pod_affinity::InterPodAffinity)
            }),
        ];
        for (on, make) in enabled {
            if on {
                filters.push(make());
            }
        }
        let scorers: Vec<(Box<dyn ScorePlugin>, i64)> = vec![
            (
                Box::new(plugins::node_resources::LeastAllocated),
                cfg.least_allocated_weight,
            ),
            (
                Box::new(plugins::node_resources::BalancedAllocation),
                cfg.balanced_allocation_weight,
            ),
            (
                Box::new(plugins::node_affinity::NodeAffinity),
                cfg.node_affinity_weight,
            ),
            (
                Box::new(plugins::taint_toleration::TaintToleration),
                cfg.taint_toleration_weight,
            ),
        ];
        Profile {
            filters,
            scorers: scorers.into_iter().filter(|(_, w)| *w > 0).collect(),
            percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score,
        }
    }

    fn nodes_to_find(&self, total: usize) -> usize {
        if total < MIN_FEASIBLE_NODES_TO_FIND {
            return total;
        }
        let pct = match self.percentage_of_nodes_to_score {
            Some(p) => p.clamp(1, 100) as usize,
            None => 50usize.saturating_sub(total / 125).max(5),
        };
        (total * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Runs one scheduling cycle: filters nodes (from `start`, wrapping, until enough feasible
    /// ones are found), scores the feasible ones and picks the best (the first on ties).
    pub fn schedule(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
        start: usize,
    ) -> Result<Placement, FitError> {
        let total = nodes.iter().filter(|n| n.node.is_some()).count();
        if total == 0 {
            return Err(FitError::default());
        }
        let states: Vec<CycleState> = self
            .filters
            .iter()
            .map(|f| f.pre_filter(pod, nodes))
            .collect();
        let want = self.nodes_to_find(total);
        let mut feasible: Vec<usize> = Vec::with_capacity(want.min(nodes.len()));
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let mut examined = 0;
        let len = nodes.len();
        for offset in 0..len {
            if feasible.len() >= want {
                break;
            }
            examined += 1;
            let i = (start + offset) % len;
            let node = &nodes[i];
            let Some(view) = node.node.as_ref() else {
                continue;
            };
            let verdict = self
                .filters
                .iter()
                .zip(&states)
                .try_for_each(|(f, s)| f.filter(s.as_deref(), pod, node, view));
            match verdict {
                Ok(()) => feasible.push(i),
                Err(Unfit(rs)) => {
                    for r in rs {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
            }
        }
        if feasible.is_empty() {
            return Err(FitError {
                num_nodes: total,
                reasons,
            });
        }
        let best = if feasible.len() == 1 {
            feasible[0]
        } else {
            let mut totals = vec![0i64; feasible.len()];
            let mut scratch = vec![0i64; feasible.len()];
            for (plugin, weight) in &self.scorers {
                for (s, &i) in scratch.iter_mut().zip(&feasible) {
                    let node = &nodes[i];
                    *s = node
                        .node
                        .as_ref()
                        .map_or(0, |view| plugin.score(pod, node, view));
                }
                plugin.normalize(&mut scratch);
                for (t, s) in totals.iter_mut().zip(&scratch) {
                    *t += s * weight;
                }
            }
            let mut best = 0;
            for (k, t) in totals.iter().enumerate() {
                if *t > totals[best] {
                    best = k;
                }
            }
            feasible[best]
        };
        Ok(Placement {
            node_index: best,
            examined,
        })
    }
}

/// Where a pod goes, and how many nodes were looked at (the next cycle starts after them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node_index: usize,
    pub examined: usize,
}

/// No node fits: how many nodes there were and how often each reason ruled one out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    pub reasons: HashMap<String, usize>,
}

impl fmt::Display for FitError {
    /// kube-scheduler's wording: `0/3 nodes are available: 1 node(s) had untolerated taint
    /// {k: v}, 2 Insufficient cpu.` — each "count reason" string sorted as text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(f, "0/{} nodes are available:", self.num_nodes)?;
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for pods and nodes in plugin tests.
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    pub fn node(name: &str, cpu: &str, mem: &str, pods: &str) -> Node {
        let alloc: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
            ("pods".to_string(), Quantity(pods.into())),
        ]
        .into();
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(alloc.clone()),
                capacity: Some(alloc),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    pub fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !mem.is_empty() {
            requests.insert("memory".to_string(), Quantity(mem.into()));
        }
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn info(node: &Node) -> NodeInfo {
        NodeInfo::new(
            node.metadata.name.clone().unwrap_or_default(),
            Some(NodeView::from_node(node)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn fit_error_sorts_counted_reasons_like_kube_scheduler() {
        let err = FitError {
            num_nodes: 3,
            reasons: [
                ("Insufficient cpu".to_string(), 2),
                ("node(s) had untolerated taint {key: value}".to_string(), 1),
            ]
            .into(),
        };
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
        );
        assert_eq!(
            FitError::default().to_string(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn schedule_reports_every_node_reason() {
        let profile = Profile::new(&SchedulerConfig::default());
        let mut tainted = node("a", "4", "4Gi", "110");
        tainted.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "key".into(),
            value: Some("value".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let nodes = vec![
            info(&tainted),
            info(&node("b", "1", "4Gi", "110")),
            info(&node("c", "1", "4Gi", "110")),
        ];
        let pod = PodInfo::from_pod(&pod("p", "2", "1Gi"));
        let err = profile.schedule(&pod, &nodes, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
        );
    }

    #[test]
    fn schedule_prefers_the_least_allocated_node() {
        let profile = Profile::new(&SchedulerConfig::default());
        let mut busy = info(&node("busy", "4", "8Gi", "110"));
        busy.add_pod(Arc::new(PodInfo::from_pod(&pod("x", "3", "6Gi"))));
        let nodes = vec![busy, info(&node("idle", "4", "8Gi", "110"))];
        let pod = PodInfo::from_pod(&pod("p", "500m", "512Mi"));
        let placed = profile.schedule(&pod, &nodes, 0).unwrap();
        assert_eq!(nodes[placed.node_index].name, "idle");
    }

    #[test]
    fn large_clusters_stop_after_enough_feasible_nodes() {
        let profile = Profile::new(&SchedulerConfig::default());
        let nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| info(&node(&format!("n{i}"), "4", "8Gi", "110")))
            .collect();
        let pod = PodInfo::from_pod(&pod("p", "100m", "1Mi"));
        let placed = profile.schedule(&pod, &nodes, 990).unwrap();
        // 50% - 1000/125 % = 42% of 1000 nodes.
        assert_eq!(placed.examined, 420);
        assert_eq!(profile.nodes_to_find(50), 50);
    }

    #[test]
    fn not_ready_nodes_carry_the_not_ready_taint() {
        let mut n = node("a", "1", "1Gi", "10");
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let view = NodeView::from_node(&n);
        assert!(view.taints.iter().any(|t| t.key == TAINT_NOT_READY));
        assert_eq!(
            view.labels.get(HOSTNAME_LABEL).map(String::as_str),
            Some("a")
        );
        let profile = Profile::new(&SchedulerConfig::default());
        let err = profile
            .schedule(&PodInfo::from_pod(&pod("p", "", "")), &[info(&n)], 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        );
    }
}
