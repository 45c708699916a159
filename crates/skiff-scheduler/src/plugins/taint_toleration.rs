//! TaintToleration: NoSchedule/NoExecute taints a pod does not tolerate rule the node out;
//! untolerated PreferNoSchedule taints only lower its score.

use std::any::Any;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{
    FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeView, PodInfo, ScorePlugin, Unfit,
};

pub struct TaintToleration;

/// Whether a toleration tolerates a taint (Kubernetes' `ToleratesTaint`): an empty effect
/// matches every effect, an empty key with `Exists` matches every key.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(
        &self,
        _state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        _node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit> {
        let untolerated = view.taints.iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Ok(()),
            Some(taint) => Err(Unfit::one(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// The number of PreferNoSchedule taints the pod does not tolerate (fewer is better).
    fn score(&self, pod: &PodInfo, _node: &NodeInfo, view: &NodeView) -> i64 {
        let prefer: Vec<&Toleration> = pod
            .tolerations
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        view.taints
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule" && !prefer.iter().any(|t| tolerates(t, taint))
            })
            .count() as i64
    }

    /// Reverses the counts: the node with the most untolerated taints scores 0.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores {
            *s = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE - *s * MAX_NODE_SCORE / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let t = taint("gpu", "true", "NoSchedule");
        assert!(tolerates(
            &toleration("gpu", "Equal", "true", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("gpu", "", "true", ""), &t));
        assert!(tolerates(&toleration("gpu", "Exists", "", ""), &t));
        assert!(tolerates(&toleration("", "Exists", "", ""), &t));
        assert!(!tolerates(&toleration("gpu", "Equal", "false", ""), &t));
        assert!(!tolerates(
            &toleration("gpu", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
    }

    #[test]
    fn filter_names_the_first_untolerated_hard_taint() {
        let mut n = node("a", "1", "1Gi", "10");
        n.spec.as_mut().unwrap().taints = Some(vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("dedicated", "ml", "NoExecute"),
        ]);
        let ni = info(&n);
        let view = ni.node.clone().unwrap();
        let mut p = PodInfo::default();
        assert_eq!(
            TaintToleration.filter(None, &p, &ni, &view),
            Err(Unfit::one("node(s) had untolerated taint {dedicated: ml}"))
        );
        p.tolerations
            .push(toleration("dedicated", "Equal", "ml", "NoExecute"));
        assert_eq!(TaintToleration.filter(None, &p, &ni, &view), Ok(()));
    }

    #[test]
    fn prefer_no_schedule_only_lowers_the_score() {
        let mut soft = node("soft", "1", "1Gi", "10");
        soft.spec.as_mut().unwrap().taints = Some(vec![taint("soft", "x", "PreferNoSchedule")]);
        let a = info(&soft);
        let b = info(&node("b", "1", "1Gi", "10"));
        let p = PodInfo::default();
        let mut scores = vec![
            TaintToleration.score(&p, &a, a.node.as_ref().unwrap()),
            TaintToleration.score(&p, &b, b.node.as_ref().unwrap()),
        ];
        assert_eq!(scores, vec![1, 0]);
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![0, 100]);
        let mut tolerant = PodInfo::default();
        tolerant
            .tolerations
            .push(toleration("soft", "Exists", "", "PreferNoSchedule"));
        assert_eq!(
            TaintToleration.score(&tolerant, &a, a.node.as_ref().unwrap()),
            0
        );
    }
}
