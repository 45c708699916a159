//! Builds the OCI runtime spec (`config.json` for runc) from a `ContainerSpec` and the image's
//! defaults, with the namespaces, mounts, capabilities and masked paths Docker/containerd use.

use std::path::Path;

use serde_json::{Value, json};

use crate::process::DEFAULT_PATH;
use crate::runtime::{ContainerSpec, RuntimeError};

/// Docker's default capability set (moby `oci/caps/defaults.go`), also containerd's CRI default.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Paths hidden from the container, as in `runc spec`'s default.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths the container may read but not write, as in `runc spec`'s default.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the image config contributes when the spec leaves it open (as containerd's CRI
/// plugin merges it: image env below the pod's, image working dir and user as defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group`, `uid:gid`, ...
    pub user: Option<String>,
}

impl ImageDefaults {
    pub fn from_config(config: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = config.config() else {
            return Self::default();
        };
        ImageDefaults {
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        }
    }
}

/// The cgroup of a container, absolute from each controller's root (runc reads a relative
/// path as relative to its own cgroup, which is not what `cgroup_parent` means).
pub fn cgroup_path(spec: &ContainerSpec) -> Result<String, RuntimeError> {
    let parent = spec.cgroup_parent.as_deref().unwrap_or("skiff");
    let parent = parent.trim_matches('/');
    let safe = parent.split('/').all(|c| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':'))
    });
    if !safe {
        return Err(RuntimeError::InvalidSpec(format!(
            "cgroup parent {:?}",
            spec.cgroup_parent
        )));
    }
    Ok(format!("/{parent}/{}", spec.id))
}

/// Environment: image entries, overridden by the spec's; `PATH` and `HOSTNAME` if missing.
pub fn merged_env(spec: &ContainerSpec, image: &ImageDefaults, hostname: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Resolves an image `User` (`name`, `uid`, `name:group`, `uid:gid`) against the rootfs's
/// `/etc/passwd` and `/etc/group`, like runc's `user.GetExecUser`.
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), RuntimeError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    // name:x:uid:gid:...
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
        let uid: u32 = uid.parse().ok()?;
        let gid: u32 = gid.parse().ok()?;
        (*name == u || u.parse::<u32>().ok() == Some(uid)).then_some((uid, gid))
    });
    let uid = match (u.parse::<u32>(), entry) {
        (Ok(uid), _) => uid,
        (Err(_), Some((uid, _))) => uid,
        (Err(_), None) => {
            return Err(RuntimeError::InvalidSpec(format!(
                "user {u:?} not found in the image's /etc/passwd"
            )));
        }
    };
    let gid = match g {
        None => entry.map(|e| e.1).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                group
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.first() == Some(&g)).then(|| f.get(2)?.parse().ok())?
                    })
                    .ok_or_else(|| {
                        RuntimeError::InvalidSpec(format!(
                            "group {g:?} not found in the image's /etc/group"
                        ))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// The OCI runtime spec for `spec`; the rootfs is `rootfs` relative to the bundle.
pub fn runtime_spec(
    spec: &ContainerSpec,
    image: &ImageDefaults,
    user: (u32, u32),
) -> Result<Value, RuntimeError> {
    let args: Vec<&String> = spec.command.iter().chain(&spec.args).collect();
    if args.is_empty() {
        return Err(RuntimeError::InvalidSpec("no command".into()));
    }
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(RuntimeError::InvalidSpec(format!(
            "working dir {cwd:?} is not absolute"
        )));
    }
    // Kubernetes makes the pod name the hostname; without one, the id (cut to the 63
    // bytes a hostname may have) like Docker's short container id.
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| spec.id.chars().take(63).collect());
    let caps = DEFAULT_CAPABILITIES;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &spec.mounts {
        if !m.destination.starts_with('/') {
            return Err(RuntimeError::InvalidSpec(format!(
                "mount destination {:?} is not absolute",
                m.destination
            )));
        }
        let source = m.source.to_str().ok_or_else(|| {
            RuntimeError::InvalidSpec(format!("mount source {:?} is not UTF-8", m.source))
        })?;
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }],
        }));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    namespaces.push(match &spec.network_namespace {
        Some(path) => {
            let path = path.to_str().ok_or_else(|| {
                RuntimeError::InvalidSpec(format!("network namespace {path:?} is not UTF-8"))
            })?;
            json!({"type": "network", "path": path})
        }
        // runc brings loopback up in a namespace it creates.
        None => json!({"type": "network"}),
    });
    let r = &spec.resources;
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let mut cpu = serde_json::Map::new();
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = r.cpu_quota {
        cpu.insert("quota".into(), json!(q));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    } else if let Some(p) = r.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = r.memory_limit {
        if limit <= 0 {
            return Err(RuntimeError::InvalidSpec(format!("memory limit {limit}")));
        }
        // Memory+swap equal to the limit: no swap, so the limit is what the container gets
        // (the kubelet does the same on nodes with swap).
        resources["memory"] = json!({"limit": limit, "swap": limit});
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.0, "gid": user.1},
            "args": args,
            "env": merged_env(spec, image, &hostname),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup_path(spec)?,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Mount, Resources};

    fn base() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            image: "busybox".into(),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["true".into()],
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn spec_carries_process_namespaces_mounts_and_limits() {
        let mut spec = base();
        spec.env = vec![("A".into(), "pod".into())];
        spec.hostname = Some("web-0".into());
        spec.network_namespace = Some("/run/netns/pod1".into());
        spec.cgroup_parent = Some("skiff/pod42".into());
        spec.mounts = vec![Mount {
            source: "/host/data".into(),
            destination: "/data".into(),
            read_only: true,
        }];
        spec.resources = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: None,
            memory_limit: Some(64 << 20),
        };
        let image = ImageDefaults {
            env: vec!["A=image".into(), "B=image".into(), "PATH=/bin".into()],
            working_dir: Some("/srv".into()),
            user: None,
        };
        let v = runtime_spec(&spec, &image, (1000, 100)).expect("spec");
        assert_eq!(v["process"]["args"], json!(["/bin/sh", "-c", "true"]));
        assert_eq!(
            v["process"]["env"],
            json!(["A=pod", "B=image", "PATH=/bin", "HOSTNAME=web-0"])
        );
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"], json!({"uid": 1000, "gid": 100}));
        assert_eq!(v["hostname"], "web-0");
        assert_eq!(v["linux"]["cgroupsPath"], "/skiff/pod42/c1");
        assert_eq!(
            v["linux"]["resources"]["cpu"],
            json!({"shares": 512, "quota": 50_000, "period": 100_000})
        );
        assert_eq!(
            v["linux"]["resources"]["memory"],
            json!({"limit": 64 << 20, "swap": 64 << 20})
        );
        let ns = v["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/pod1"})));
        assert!(ns.contains(&json!({"type": "pid"})));
        let bind = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/data")
            .expect("bind mount");
        assert_eq!(bind["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .map(Vec::len),
            Some(14)
        );
    }

    #[test]
    fn defaults_and_bad_input() {
        let v = runtime_spec(&base(), &ImageDefaults::default(), (0, 0)).expect("spec");
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(v["hostname"], "c1");
        assert_eq!(v["linux"]["cgroupsPath"], "/skiff/c1");
        assert!(v["linux"]["resources"].get("memory").is_none());
        assert!(
            v["linux"]["namespaces"]
                .as_array()
                .expect("ns")
                .contains(&json!({"type": "network"}))
        );
        let env = v["process"]["env"].as_array().expect("env");
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));

        let mut s = base();
        s.cgroup_parent = Some("../../etc".into());
        assert!(runtime_spec(&s, &ImageDefaults::default(), (0, 0)).is_err());
        let mut s = base();
        s.working_dir = Some("relative".into());
        assert!(runtime_spec(&s, &ImageDefaults::default(), (0, 0)).is_err());
        let mut s = base();
        s.command.clear();
        s.args.clear();
        assert!(runtime_spec(&s, &ImageDefaults::default(), (0, 0)).is_err());
    }

    #[test]
    fn users_resolve_against_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:app\n").expect("group");
        let r = |u: &str| resolve_user(u, dir.path());
        assert_eq!(r("app").expect("app"), (1001, 1002));
        assert_eq!(r("1001").expect("uid"), (1001, 1002));
        assert_eq!(r("app:staff").expect("app:staff"), (1001, 50));
        assert_eq!(r("4242:7").expect("numeric"), (4242, 7));
        assert_eq!(r("4242").expect("unknown uid"), (4242, 0));
        assert!(r("nobody-here").is_err());
        assert!(r("app:nogroup").is_err());
    }
}
