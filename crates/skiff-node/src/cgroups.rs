//! Pod-level cgroups (`skiff/pod<uid>`, the parent the runtime puts a pod's containers
//! under): removed with the pod, and at start for pods that no longer exist.

use std::path::{Path, PathBuf};

/// Parent of every pod cgroup, relative to each hierarchy's root.
const PARENT: &str = "skiff";

/// `skiff/pod<uid>`, the `cgroup_parent` of the pod's containers.
pub fn pod_cgroup(uid: &str) -> String {
    format!("{PARENT}/pod{uid}")
}

/// The hierarchies' roots: `/sys/fs/cgroup` on pure cgroup v2, else every directory in it
/// (the v1 controllers, and `unified` on a hybrid layout).
fn hierarchies(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes a cgroup directory and its (empty) children; a cgroup still holding processes
/// stays (rmdir fails with EBUSY) and is reported.
fn remove_tree(dir: &Path) -> Result<(), std::io::Error> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the pod's cgroup in every hierarchy (after its containers are gone).
pub fn remove_pod(uid: &str) {
    remove_pod_under(Path::new("/sys/fs/cgroup"), uid);
}

fn remove_pod_under(root: &Path, uid: &str) {
    for h in hierarchies(root) {
        let dir = h.join(pod_cgroup(uid));
        if dir.exists()
            && let Err(e) = remove_tree(&dir)
        {
            tracing::warn!(cgroup = %dir.display(), error = %e, "removing a pod cgroup");
        }
    }
}

/// Removes pod cgroups whose pod is not in `known`.
pub fn remove_orphans(known: &std::collections::HashSet<String>) {
    remove_orphans_under(Path::new("/sys/fs/cgroup"), known);
}

fn remove_orphans_under(root: &Path, known: &std::collections::HashSet<String>) {
    for h in hierarchies(root) {
        let Ok(rd) = std::fs::read_dir(h.join(PARENT)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(uid) = name.strip_prefix("pod")
                && !known.contains(uid)
                && let Err(err) = remove_tree(&e.path())
            {
                // Busy: another agent on this machine may run that pod.
                tracing::debug!(cgroup = %e.path().display(), error = %err, "leaving a pod cgroup");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_pod_trees_in_every_hierarchy() {
        // Plain directories stand in for the cgroup filesystems.
        let root = tempfile::tempdir().expect("tempdir");
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(root.path().join(h).join("skiff/podA/c1")).expect("mkdir");
            std::fs::create_dir_all(root.path().join(h).join("skiff/podB")).expect("mkdir");
            std::fs::create_dir_all(root.path().join(h).join("skiff/podC")).expect("mkdir");
        }
        remove_pod_under(root.path(), "A");
        assert!(!root.path().join("cpu/skiff/podA").exists());
        assert!(!root.path().join("memory/skiff/podA").exists());
        let known = ["B".to_string()].into_iter().collect();
        remove_orphans_under(root.path(), &known);
        assert!(root.path().join("cpu/skiff/podB").exists());
        assert!(!root.path().join("cpu/skiff/podC").exists());
        assert!(!root.path().join("memory/skiff/podC").exists());
    }
}
