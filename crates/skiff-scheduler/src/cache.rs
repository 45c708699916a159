//! The scheduler's view of the cluster: nodes and the pods bound or assumed on each, updated
//! incrementally from watch events so a scheduling cycle never lists anything.

use std::collections::HashMap;
use std::sync::Arc;

use crate::framework::{NodeInfo, NodeView, PodInfo};

/// Nodes (in a stable order the scheduler rotates through) and where each placed pod is.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pod key -> node name, for every bound or assumed pod.
    placed: HashMap<String, String>,
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Nodes that have a Node object (what "0/N nodes" counts).
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.node.is_some()).count()
    }

    fn entry(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.nodes.push(NodeInfo::new(name, None));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    /// Adds or updates a node; returns whether anything the filters look at changed.
    pub fn upsert_node(&mut self, name: &str, view: NodeView) -> bool {
        let info = self.entry(name);
        if info.node.as_ref() == Some(&view) {
            return false;
        }
        info.node = Some(view);
        true
    }

    /// Removes a node; pods still naming it keep an entry without a Node object until they go.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        if self.nodes[i].pods.is_empty() {
            self.remove_index(i);
        } else {
            self.nodes[i].node = None;
        }
    }

    fn remove_index(&mut self, i: usize) {
        let gone = self.nodes.swap_remove(i);
        self.index.remove(&gone.name);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    /// Where a pod is placed, if anywhere.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.placed.get(key).map(String::as_str)
    }

    /// Charges a pod to a node (a bound pod seen in a watch, or one the scheduler assumes while
    /// its binding is in flight). Re-adding a pod moves it.
    pub fn add_pod(&mut self, node: &str, pod: Arc<PodInfo>) {
        let key = pod.key();
        if self.placed.get(&key).map(String::as_str) == Some(node) {
            // Already charged here; refresh labels etc. without double counting.
            let info = self.entry(node);
            info.remove_pod(&key);
            info.add_pod(pod);
            return;
        }
        self.remove_pod(&key);
        self.entry(node).add_pod(pod);
        self.placed.insert(key, node.to_string());
    }

    /// Releases a pod's resources; returns whether it was placed.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(node) = self.placed.remove(key) else {
            return false;
        };
        if let Some(&i) = self.index.get(&node) {
            self.nodes[i].remove_pod(key);
            if self.nodes[i].node.is_none() && self.nodes[i].pods.is_empty() {
                self.remove_index(i);
            }
        }
        true
    }

    /// Every placed pod's key (to drop the ones a relist no longer has).
    pub fn placed_keys(&self) -> Vec<String> {
        self.placed.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testutil::*;

    #[test]
    fn pods_charge_and_release_their_node() {
        let mut c = Cache::default();
        assert!(c.upsert_node("a", NodeView::from_node(&node("a", "2", "2Gi", "10"))));
        assert!(!c.upsert_node("a", NodeView::from_node(&node("a", "2", "2Gi", "10"))));
        let p = Arc::new(PodInfo::from_pod(&pod("p", "1", "1Gi")));
        c.add_pod("a", p.clone());
        c.add_pod("a", p.clone());
        assert_eq!(c.nodes()[0].requested.milli_cpu, 1000);
        // A pod bound to a node not seen yet waits there without counting as a node.
        c.add_pod("b", p);
        assert_eq!(c.nodes()[0].requested.milli_cpu, 0);
        assert_eq!(c.node_count(), 1);
        assert_eq!(c.node_of("default/p"), Some("b"));
        assert!(c.remove_pod("default/p"));
        assert_eq!(c.nodes().len(), 1);
        c.remove_node("a");
        assert!(c.nodes().is_empty());
    }
}
