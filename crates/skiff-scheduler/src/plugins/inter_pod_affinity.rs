//! InterPodAffinity: required pod affinity and anti-affinity terms of the incoming pod, and the
//! required anti-affinity of pods already placed, counted per topology domain once per cycle.

use std::any::Any;
use std::collections::HashMap;

use crate::framework::{CycleState, FilterPlugin, NodeInfo, NodeView, PodInfo, Unfit};

pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";

/// A topology domain: a label key and the value nodes in the domain share.
type Domain = (String, String);

/// Per-cycle counts of matching pods in each topology domain.
#[derive(Debug, Default)]
pub struct State {
    affinity: HashMap<Domain, usize>,
    anti_affinity: HashMap<Domain, usize>,
    existing_anti_affinity: HashMap<Domain, usize>,
    /// The pod matches its own affinity terms (the first pod of a group may then go anywhere).
    matches_own_affinity: bool,
}

pub struct InterPodAffinity;

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_filter(&self, pod: &PodInfo, nodes: &[NodeInfo]) -> CycleState {
        let mut state = State::default();
        let has_own_terms = !pod.affinity.is_empty() || !pod.anti_affinity.is_empty();
        for node in nodes {
            // Placed pods matter only for a pod with terms of its own, or when they carry
            // anti-affinity (rare): the common cycle looks at no pod at all.
            if !has_own_terms && node.pods_with_anti_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                for term in &existing.anti_affinity {
                    if term.matches(pod)
                        && let Some(v) = node.label(&term.topology_key)
                    {
                        *state
                            .existing_anti_affinity
                            .entry((term.topology_key.clone(), v.to_string()))
                            .or_default() += 1;
                    }
                }
                if !has_own_terms {
                    continue;
                }
                for (terms, counts) in [
                    (&pod.affinity, &mut state.affinity),
                    (&pod.anti_affinity, &mut state.anti_affinity),
                ] {
                    for term in terms {
                        if term.matches(existing)
                            && let Some(v) = node.label(&term.topology_key)
                        {
                            *counts
                                .entry((term.topology_key.clone(), v.to_string()))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
        state.matches_own_affinity = pod.affinity.iter().all(|t| t.matches(pod));
        if state.affinity.is_empty()
            && state.anti_affinity.is_empty()
            && state.existing_anti_affinity.is_empty()
            && pod.affinity.is_empty()
        {
            return None;
        }
        Some(Box::new(state))
    }

    fn filter(
        &self,
        state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        _node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit> {
        let Some(state) = state.and_then(|s| s.downcast_ref::<State>()) else {
            return Ok(());
        };
        let in_domain = |counts: &HashMap<Domain, usize>, key: &str| {
            view.labels.get(key).is_some_and(|v| {
                counts
                    .get(&(key.to_string(), v.clone()))
                    .is_some_and(|n| *n > 0)
            })
        };
        if state
            .existing_anti_affinity
            .keys()
            .any(|(k, _)| in_domain(&state.existing_anti_affinity, k))
        {
            return Err(Unfit::one(REASON_EXISTING_ANTI_AFFINITY));
        }
        if pod
            .anti_affinity
            .iter()
            .any(|t| in_domain(&state.anti_affinity, &t.topology_key))
        {
            return Err(Unfit::one(REASON_ANTI_AFFINITY));
        }
        if !pod.affinity.is_empty() {
            if pod
                .affinity
                .iter()
                .any(|t| !view.labels.contains_key(&t.topology_key))
            {
                return Err(Unfit::one(REASON_AFFINITY));
            }
            let pods_exist = pod
                .affinity
                .iter()
                .all(|t| in_domain(&state.affinity, &t.topology_key));
            // No pod anywhere matches: the pod may start its own group if it matches itself.
            let may_start_group = state.affinity.is_empty() && state.matches_own_affinity;
            if !(pods_exist || may_start_group) {
                return Err(Unfit::one(REASON_AFFINITY));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;
    use crate::framework::{HOSTNAME_LABEL, Profile, SchedulerConfig};
    use k8s_openapi::api::core::v1::{
        Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as MetaSelector;
    use std::sync::Arc;

    fn labelled(name: &str, app: &str) -> Pod {
        let mut p = pod(name, "", "");
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        p
    }

    fn term(app: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(MetaSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            topology_key: HOSTNAME_LABEL.into(),
            ..Default::default()
        }
    }

    fn with_anti_affinity(mut p: Pod, app: &str) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app)]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn with_affinity(mut p: Pod, app: &str) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app)]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn cluster() -> Vec<NodeInfo> {
        let mut a = info(&node("a", "4", "4Gi", "10"));
        a.add_pod(Arc::new(PodInfo::from_pod(&labelled("web-0", "web"))));
        vec![a, info(&node("b", "4", "4Gi", "10"))]
    }

    fn place(p: &Pod, nodes: &[NodeInfo]) -> Result<String, String> {
        let profile = Profile::new(&SchedulerConfig::default());
        profile
            .schedule(&PodInfo::from_pod(p), nodes, 0)
            .map(|pl| nodes[pl.node_index].name.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart() {
        let nodes = cluster();
        let p = with_anti_affinity(labelled("web-1", "web"), "web");
        assert_eq!(place(&p, &nodes), Ok("b".into()));
        let mut full = nodes.clone();
        full[1].add_pod(Arc::new(PodInfo::from_pod(&labelled("web-2", "web"))));
        assert_eq!(
            place(&p, &full),
            Err("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.".into())
        );
    }

    #[test]
    fn existing_pods_anti_affinity_is_respected() {
        let mut nodes = cluster();
        nodes[0].pods.clear();
        nodes[0].add_pod(Arc::new(PodInfo::from_pod(&with_anti_affinity(
            labelled("db-0", "db"),
            "web",
        ))));
        let p = labelled("web-1", "web");
        assert_eq!(place(&p, &nodes), Ok("b".into()));
        nodes.truncate(1);
        assert_eq!(
            place(&p, &nodes),
            Err("0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules.".into())
        );
    }

    #[test]
    fn affinity_follows_matching_pods_or_starts_a_group() {
        let nodes = cluster();
        let p = with_affinity(labelled("cache-0", "cache"), "web");
        assert_eq!(place(&p, &nodes), Ok("a".into()));
        // Nothing matches "db" and the pod is not a db itself: nowhere to go.
        let lonely = with_affinity(labelled("x", "cache"), "db");
        assert_eq!(
            place(&lonely, &nodes),
            Err("0/2 nodes are available: 2 node(s) didn't match pod affinity rules.".into())
        );
        // The first pod of a group that selects itself may go anywhere.
        let first = with_affinity(labelled("db-0", "db"), "db");
        assert!(place(&first, &nodes).is_ok());
    }
}
