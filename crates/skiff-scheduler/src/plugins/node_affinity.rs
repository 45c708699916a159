//! NodeAffinity: `nodeSelector` and required node affinity rule nodes out; preferred node
//! affinity terms add their weights to a node's score.

use std::any::Any;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeView, PodInfo, ScorePlugin, Unfit,
};

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

/// One `matchExpressions` requirement against the node's labels.
fn label_requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let label = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => label.is_some_and(|v| values.contains(v)),
        "NotIn" => label.is_none_or(|v| !values.contains(v)),
        "Exists" => label.is_some(),
        "DoesNotExist" => label.is_none(),
        op @ ("Gt" | "Lt") => {
            // Exactly one integer value, compared with the label read as an integer.
            let (Some(l), [bound]) = (label.and_then(|l| l.parse::<i64>().ok()), values) else {
                return false;
            };
            let Ok(bound) = bound.parse::<i64>() else {
                return false;
            };
            if op == "Gt" { l > bound } else { l < bound }
        }
        _ => false,
    }
}

/// One `matchFields` requirement: only `metadata.name` with In/NotIn exists in Kubernetes.
fn field_requirement_matches(req: &NodeSelectorRequirement, node_name: &str) -> bool {
    if req.key != "metadata.name" {
        return false;
    }
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => values.iter().any(|v| v == node_name),
        "NotIn" => !values.iter().any(|v| v == node_name),
        _ => false,
    }
}

/// A term matches when all its requirements do; a term with none matches no node.
pub fn term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| label_requirement_matches(r, labels))
        && fields
            .iter()
            .all(|r| field_requirement_matches(r, node_name))
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(
        &self,
        _state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit> {
        let selector_ok = pod
            .node_selector
            .iter()
            .all(|(k, v)| view.labels.get(k) == Some(v));
        // Terms are ORed.
        let affinity_ok = pod.required_node_affinity.as_ref().is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, &node.name, &view.labels))
        });
        if selector_ok && affinity_ok {
            Ok(())
        } else {
            Err(Unfit::one(REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The summed weights of the preferred terms the node matches.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64 {
        pod.preferred_node_affinity
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.name, &view.labels))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        if max > 0 {
            for s in scores {
                *s = *s * MAX_NODE_SCORE / max;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;
    use k8s_openapi::api::core::v1::{NodeSelector, PreferredSchedulingTerm};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expression_operators() {
        let l = labels(&[("zone", "a"), ("gpus", "4")]);
        assert!(label_requirement_matches(
            &req("zone", "In", &["a", "b"]),
            &l
        ));
        assert!(!label_requirement_matches(
            &req("zone", "NotIn", &["a"]),
            &l
        ));
        assert!(label_requirement_matches(&req("rack", "NotIn", &["a"]), &l));
        assert!(label_requirement_matches(&req("zone", "Exists", &[]), &l));
        assert!(label_requirement_matches(
            &req("rack", "DoesNotExist", &[]),
            &l
        ));
        assert!(label_requirement_matches(&req("gpus", "Gt", &["2"]), &l));
        assert!(!label_requirement_matches(&req("gpus", "Lt", &["2"]), &l));
        assert!(!label_requirement_matches(&req("zone", "Gt", &["2"]), &l));
        assert!(!label_requirement_matches(&req("gpus", "Gt", &["x"]), &l));
        assert!(!label_requirement_matches(
            &req("zone", "Bogus", &["a"]),
            &l
        ));
    }

    #[test]
    fn terms_are_ored_and_match_fields_use_the_node_name() {
        let l = labels(&[("zone", "a")]);
        let by_name = NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
            ..Default::default()
        };
        assert!(term_matches(&by_name, "n1", &l));
        assert!(!term_matches(&by_name, "n2", &l));
        assert!(!term_matches(&NodeSelectorTerm::default(), "n1", &l));

        let ni = info(&node("n2", "1", "1Gi", "10"));
        let view = ni.node.clone().unwrap();
        let mut p = PodInfo {
            required_node_affinity: Some(NodeSelector {
                node_selector_terms: vec![by_name.clone()],
            }),
            ..Default::default()
        };
        assert_eq!(
            NodeAffinity.filter(None, &p, &ni, &view),
            Err(Unfit::one(REASON))
        );
        p.required_node_affinity = Some(NodeSelector {
            node_selector_terms: vec![
                by_name,
                NodeSelectorTerm {
                    match_expressions: Some(vec![req("kubernetes.io/hostname", "In", &["n2"])]),
                    ..Default::default()
                },
            ],
        });
        assert_eq!(NodeAffinity.filter(None, &p, &ni, &view), Ok(()));
    }

    #[test]
    fn node_selector_needs_every_label() {
        let mut n = node("a", "1", "1Gi", "10");
        n.metadata.labels = Some(labels(&[("disktype", "ssd")]));
        let ni = info(&n);
        let view = ni.node.clone().unwrap();
        let mut p = PodInfo {
            node_selector: labels(&[("disktype", "ssd")]),
            ..Default::default()
        };
        assert_eq!(NodeAffinity.filter(None, &p, &ni, &view), Ok(()));
        p.node_selector = labels(&[("disktype", "ssd"), ("gpu", "a100")]);
        assert_eq!(
            NodeAffinity.filter(None, &p, &ni, &view),
            Err(Unfit::one(REASON))
        );
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let mut n = node("a", "1", "1Gi", "10");
        n.metadata.labels = Some(labels(&[("zone", "a")]));
        let a = info(&n);
        let b = info(&node("b", "1", "1Gi", "10"));
        let p = PodInfo {
            preferred_node_affinity: vec![PreferredSchedulingTerm {
                weight: 30,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![req("zone", "In", &["a"])]),
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        let mut scores = vec![
            NodeAffinity.score(&p, &a, a.node.as_ref().unwrap()),
            NodeAffinity.score(&p, &b, b.node.as_ref().unwrap()),
        ];
        assert_eq!(scores, vec![30, 0]);
        NodeAffinity.normalize(&mut scores);
        assert_eq!(scores, vec![100, 0]);
    }
}
