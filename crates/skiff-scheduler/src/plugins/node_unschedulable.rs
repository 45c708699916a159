//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods that tolerate it.

use std::any::Any;

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{FilterPlugin, NodeInfo, NodeView, PodInfo, TAINT_UNSCHEDULABLE, Unfit};
use crate::plugins::taint_toleration::tolerates;

pub const REASON: &str = "node(s) were unschedulable";

pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(
        &self,
        _state: Option<&(dyn Any + Send + Sync)>,
        pod: &PodInfo,
        _node: &NodeInfo,
        view: &NodeView,
    ) -> Result<(), Unfit> {
        if !view.unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
            Ok(())
        } else {
            Err(Unfit::one(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn cordoned_nodes_refuse_pods_without_the_toleration() {
        let mut n = node("a", "1", "1Gi", "10");
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let ni = info(&n);
        let view = ni.node.clone().unwrap();
        let mut p = PodInfo::from_pod(&pod("p", "", ""));
        assert_eq!(
            NodeUnschedulable.filter(None, &p, &ni, &view),
            Err(Unfit::one(REASON))
        );
        p.tolerations.push(Toleration {
            key: Some(TAINT_UNSCHEDULABLE.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        });
        assert_eq!(NodeUnschedulable.filter(None, &p, &ni, &view), Ok(()));
        let plain = info(&node("b", "1", "1Gi", "10"));
        let v = plain.node.clone().unwrap();
        assert_eq!(
            NodeUnschedulable.filter(None, &PodInfo::default(), &plain, &v),
            Ok(())
        );
    }
}
