//! Pod volumes under `<root>/<pod uid>/volumes/<name>` (emptyDir, configMap, secret,
//! downwardAPI, projected, hostPath), the pod's /etc/hosts, /etc/resolv.conf and
//! /etc/hostname, and the bind mounts a container gets from its `volumeMounts`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, PodSpec, Volume,
};
use skiff_runtime::Mount;

use crate::config::ClusterDns;
use crate::env::{ConfigError, PodFacts, Sources};

/// Why a pod's volumes cannot be set up (a `FailedMount` event; the pod waits).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    SetUp { volume: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn setup_err(volume: &str, message: impl ToString) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_string(),
        message: message.to_string(),
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// `<root>/<uid>`: everything the agent keeps for one pod.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// A file of an atomically written volume: relative path, content, mode.
type Payload = Vec<(PathBuf, Vec<u8>, u32)>;

/// A relative path that stays inside its volume.
fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && !path.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// The files of a configMap/secret volume: every key, or just `items`.
fn key_payload(
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    kind: &str,
    name: &str,
) -> Result<Payload, VolumeError> {
    let mut out = Vec::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    return Err(setup_err(
                        volume,
                        format!("configmap references non-existent config key: {}", item.key)
                            .replace("configmap", kind),
                    ));
                };
                if !safe_relative(&item.path) {
                    return Err(setup_err(volume, format!("invalid path {:?}", item.path)));
                }
                let mode = item.mode.map(|m| m as u32).unwrap_or(default_mode);
                out.push((PathBuf::from(&item.path), v.clone(), mode));
            }
        }
        _ => {
            for (k, v) in data {
                if safe_relative(k) {
                    out.push((PathBuf::from(k), v.clone(), default_mode));
                }
            }
        }
    }
    let _ = name;
    Ok(out)
}

fn downward_payload(
    volume: &str,
    facts: &PodFacts<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Payload, VolumeError> {
    let spec = facts.pod.spec.as_ref();
    let mut out = Vec::new();
    for item in items {
        if !safe_relative(&item.path) {
            return Err(setup_err(volume, format!("invalid path {:?}", item.path)));
        }
        let value = if let Some(f) = &item.field_ref {
            crate::env::field_value(facts, &f.field_path).map_err(|e| setup_err(volume, e))?
        } else if let Some(r) = &item.resource_field_ref {
            let container = spec.and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| Some(&c.name) == r.container_name.as_ref())
                    .or_else(|| s.containers.first())
            });
            let Some(container) = container else {
                return Err(setup_err(volume, "no container for resourceFieldRef"));
            };
            crate::env::resource_value(facts, container, r).map_err(|e| setup_err(volume, e))?
        } else {
            String::new()
        };
        let mode = item.mode.map(|m| m as u32).unwrap_or(default_mode);
        out.push((PathBuf::from(&item.path), value.into_bytes(), mode));
    }
    Ok(out)
}

async fn config_map_data(
    sources: &mut Sources<'_>,
    volume: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    match sources.config_map(name).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(setup_err(volume, format!("configmap \"{name}\" not found"))),
        Err(e) => Err(setup_err(volume, e)),
    }
}

async fn secret_data(
    sources: &mut Sources<'_>,
    volume: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    match sources.secret(name).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(setup_err(volume, format!("secret \"{name}\" not found"))),
        Err(e) => Err(setup_err(volume, e)),
    }
}

/// What a volume becomes on the host.
enum Prepared {
    /// A directory we created (emptyDir), with a tmpfs when `memory`.
    Dir { memory: bool, size: Option<i128> },
    /// Files written atomically into a directory of ours.
    Files(Payload),
    /// A host path, used as is.
    Host(PathBuf),
}

async fn prepare_one(
    sources: &mut Sources<'_>,
    facts: &PodFacts<'_>,
    v: &Volume,
) -> Result<Prepared, VolumeError> {
    let name = v.name.as_str();
    let mode = |m: Option<i32>| m.map(|m| m as u32).unwrap_or(0o644);
    if let Some(e) = &v.empty_dir {
        let memory = e.medium.as_deref() == Some("Memory");
        let size = e
            .size_limit
            .as_ref()
            .and_then(|q| skiff_api::quantity::parse_quantity(&q.0).ok())
            .map(|q| q.value());
        return Ok(Prepared::Dir { memory, size });
    }
    if let Some(c) = &v.config_map {
        let data = config_map_data(sources, name, &c.name, c.optional == Some(true)).await?;
        let payload = key_payload(
            name,
            &data,
            c.items.as_ref(),
            mode(c.default_mode),
            "configmap",
            &c.name,
        )?;
        return Ok(Prepared::Files(payload));
    }
    if let Some(s) = &v.secret {
        let secret = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(sources, name, &secret, s.optional == Some(true)).await?;
        let payload = key_payload(
            name,
            &data,
            s.items.as_ref(),
            mode(s.default_mode),
            "secret",
            &secret,
        )?;
        return Ok(Prepared::Files(payload));
    }
    if let Some(d) = &v.downward_api {
        let items = d.items.clone().unwrap_or_default();
        return Ok(Prepared::Files(downward_payload(
            name,
            facts,
            &items,
            mode(d.default_mode),
        )?));
    }
    if let Some(p) = &v.projected {
        let default_mode = mode(p.default_mode);
        let mut payload = Payload::new();
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                let data =
                    config_map_data(sources, name, &c.name, c.optional == Some(true)).await?;
                payload.extend(key_payload(
                    name,
                    &data,
                    c.items.as_ref(),
                    default_mode,
                    "configmap",
                    &c.name,
                )?);
            } else if let Some(s) = &src.secret {
                let data = secret_data(sources, name, &s.name, s.optional == Some(true)).await?;
                payload.extend(key_payload(
                    name,
                    &data,
                    s.items.as_ref(),
                    default_mode,
                    "secret",
                    &s.name,
                )?);
            } else if let Some(d) = &src.downward_api {
                let items = d.items.clone().unwrap_or_default();
                payload.extend(downward_payload(name, facts, &items, default_mode)?);
            }
            // serviceAccountToken and clusterTrustBundle sources need the TokenRequest
            // API, which skiff does not serve yet: those files are left out.
        }
        return Ok(Prepared::Files(payload));
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        let kind = h.type_.clone().unwrap_or_default();
        let p2 = path.clone();
        let check = tokio::task::spawn_blocking(move || host_path_check(&p2, &kind))
            .await
            .map_err(|e| setup_err(name, e))?;
        check.map_err(|m| setup_err(name, m))?;
        return Ok(Prepared::Host(path));
    }
    Err(setup_err(name, "unsupported volume type"))
}

/// hostPath `type` checks (and creation for the `*OrCreate` types).
fn host_path_check(path: &Path, kind: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let bad = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => bad("directory"),
            Err(_) => std::fs::create_dir_all(path).map_err(|e| e.to_string()),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => bad("file"),
            Err(_) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::File::create(path)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => bad("directory"),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => bad("file"),
        },
        "Socket" | "CharDevice" | "BlockDevice" => match meta {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "hostPath type check failed: {} does not exist",
                path.display()
            )),
        },
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

/// Sets up every volume of the pod; returns the host path of each by volume name.
pub async fn prepare(
    root: &Path,
    sources: &mut Sources<'_>,
    facts: &PodFacts<'_>,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let uid = facts.pod.metadata.uid.clone().unwrap_or_default();
    let dir = pod_dir(root, &uid).join("volumes");
    let mut paths = HashMap::new();
    let volumes = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        let prepared = prepare_one(sources, facts, v).await?;
        let target = dir.join(&v.name);
        let path = match prepared {
            Prepared::Host(p) => p,
            Prepared::Dir { memory, size } => {
                let t = target.clone();
                tokio::task::spawn_blocking(move || make_empty_dir(&t, memory, size))
                    .await
                    .map_err(|e| setup_err(&v.name, e))??;
                target
            }
            Prepared::Files(payload) => {
                let t = target.clone();
                tokio::task::spawn_blocking(move || write_atomic(&t, &payload))
                    .await
                    .map_err(|e| setup_err(&v.name, e))??;
                target
            }
        };
        paths.insert(v.name.clone(), path);
    }
    Ok(paths)
}

fn make_empty_dir(path: &Path, memory: bool, size: Option<i128>) -> Result<(), VolumeError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))?;
    // tmpfs needs CAP_SYS_ADMIN; without it the volume is a plain directory.
    if memory && rustix::process::geteuid().is_root() && !is_mount_point(path) {
        let data = match size {
            Some(s) if s > 0 => format!("mode=0777,size={s}"),
            _ => "mode=0777".to_string(),
        };
        let data = std::ffi::CString::new(data).map_err(|e| setup_err("tmpfs", e))?;
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| io_err(format!("mounting tmpfs on {}", path.display()))(e.into()))?;
    } else {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777));
    }
    Ok(())
}

/// Mount points at or below `path`, deepest first, from /proc/self/mountinfo.
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(path))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

fn is_mount_point(path: &Path) -> bool {
    mounts_below(path).iter().any(|m| m == path)
}

/// Writes `payload` like the kubelet's atomic writer: into a fresh timestamped directory,
/// then one rename of the `..data` symlink switches readers over, and the top-level names
/// are symlinks through `..data`. Unchanged content is not rewritten.
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let data_link = dir.join("..data");
    let unchanged = std::fs::read_link(&data_link).is_ok()
        && payload.iter().all(|(p, content, mode)| {
            let f = data_link.join(p);
            std::fs::read(&f).ok().as_ref() == Some(content)
                && std::fs::metadata(&f)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .ok()
                    == Some(*mode)
        })
        && top_level(payload) == existing_top_level(dir);
    if unchanged {
        return Ok(());
    }
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let new_dir = dir.join(&stamp);
    std::fs::create_dir_all(&new_dir).map_err(io_err(format!("creating {}", new_dir.display())))?;
    for (rel, content, mode) in payload {
        let f = new_dir.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&f, content).map_err(io_err(format!("writing {}", f.display())))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode))
            .map_err(io_err(format!("chmod {}", f.display())))?;
    }
    let old = std::fs::read_link(&data_link).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io_err("linking ..data_tmp"))?;
    std::fs::rename(&tmp_link, &data_link).map_err(io_err("renaming ..data"))?;
    let wanted = top_level(payload);
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)
                .map_err(io_err(format!("linking {}", link.display())))?;
        }
    }
    for name in existing_top_level(dir) {
        if !wanted.contains(&name) {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn top_level(payload: &Payload) -> std::collections::BTreeSet<String> {
    payload
        .iter()
        .filter_map(|(p, _, _)| p.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

fn existing_top_level(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with(".."))
                .collect()
        })
        .unwrap_or_default()
}

/// Unmounts what the agent mounted for the pod and removes its directory.
pub fn cleanup(root: &Path, uid: &str) -> Result<(), VolumeError> {
    let dir = pod_dir(root, uid);
    for m in mounts_below(&dir) {
        let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", dir.display()))(e)),
    }
}

/// The pod's /etc/hosts, resolv.conf and hostname files, written under its directory.
pub struct PodFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// Writes the pod's /etc/hosts (the pod's IP and name, hostAliases), resolv.conf (cluster
/// DNS for `ClusterFirst`, else the host's) and hostname.
pub fn write_pod_files(
    root: &Path,
    pod: &Pod,
    pod_ip: Option<std::net::IpAddr>,
    dns: Option<&ClusterDns>,
) -> Result<PodFiles, VolumeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = pod_dir(root, &uid);
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let domain = dns.map(|d| d.domain.as_str()).unwrap_or("cluster.local");

    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        match &spec.subdomain {
            Some(sub) if !sub.is_empty() => hosts.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{ns}.svc.{domain}\t{hostname}\n"
            )),
            _ => hosts.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    for alias in spec.host_aliases.iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        hosts.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{names}\n",
            alias.ip
        ));
    }

    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network == Some(true);
    let cluster = match (policy, dns) {
        ("ClusterFirst", Some(d)) if !host_network => Some(d),
        ("ClusterFirstWithHostNet", Some(d)) => Some(d),
        _ => None,
    };
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    if let Some(d) = cluster {
        nameservers.extend(d.nameservers.iter().map(|n| n.to_string()));
        searches.extend([
            format!("{ns}.svc.{}", d.domain),
            format!("svc.{}", d.domain),
            d.domain.clone(),
        ]);
        options.push("ndots:5".into());
    } else if policy != "None" {
        let host = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
            .or_else(|_| std::fs::read_to_string("/etc/resolv.conf"))
            .unwrap_or_default();
        for line in host.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => nameservers.extend(words.map(str::to_string)),
                Some("search") | Some("domain") => searches.extend(words.map(str::to_string)),
                Some("options") => options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
    }
    if let Some(c) = &spec.dns_config {
        nameservers.extend(c.nameservers.iter().flatten().cloned());
        searches.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(n) = &o.name else { continue };
            options.retain(|x| x.split(':').next() != Some(n.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{n}:{v}"),
                None => n.clone(),
            });
        }
    }
    let mut resolv = String::new();
    if !searches.is_empty() {
        resolv.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for n in nameservers.iter().take(3) {
        resolv.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        resolv.push_str(&format!("options {}\n", options.join(" ")));
    }

    let files = PodFiles {
        hosts: dir.join("etc-hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    };
    for (path, content) in [
        (&files.hosts, hosts),
        (&files.resolv_conf, resolv),
        (&files.hostname, format!("{hostname}\n")),
    ] {
        std::fs::write(path, content).map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(files)
}

/// The bind mounts of `container`: its `volumeMounts` (with `subPath`) and the pod files.
pub fn container_mounts(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
    files: &PodFiles,
    read_only_volumes: &[String],
) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let Some(base) = volumes.get(&m.name) else {
            return Err(format!("volume {:?} not found", m.name));
        };
        let source = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => {
                if !safe_relative(sub) {
                    return Err(format!("invalid subPath {sub:?}"));
                }
                let p = base.join(sub);
                if std::fs::symlink_metadata(&p).is_err() {
                    std::fs::create_dir_all(&p)
                        .map_err(|e| format!("creating subPath {sub:?}: {e}"))?;
                }
                p
            }
            _ => base.clone(),
        };
        out.push(Mount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || read_only_volumes.contains(&m.name),
        });
    }
    for (dest, src) in [
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
        ("/etc/hostname", &files.hostname),
    ] {
        if !out.iter().any(|m: &Mount| m.destination == dest) {
            out.push(Mount {
                source: src.clone(),
                destination: dest.to_string(),
                read_only: false,
            });
        }
    }
    Ok(out)
}

/// Names of volumes Kubernetes always mounts read-only (configMap, secret, downwardAPI,
/// projected).
pub fn read_only_volumes(spec: &PodSpec) -> Vec<String> {
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        })
        .map(|v| v.name.clone())
        .collect()
}

impl From<ConfigError> for VolumeError {
    fn from(e: ConfigError) -> Self {
        setup_err("", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vol = dir.path().join("v");
        let p1: Payload = vec![
            (PathBuf::from("a"), b"1".to_vec(), 0o644),
            (PathBuf::from("sub/b"), b"2".to_vec(), 0o600),
        ];
        write_atomic(&vol, &p1).expect("write");
        assert_eq!(std::fs::read(vol.join("a")).expect("a"), b"1");
        assert_eq!(std::fs::read(vol.join("sub/b")).expect("b"), b"2");
        let first = std::fs::read_link(vol.join("..data")).expect("link");
        write_atomic(&vol, &p1).expect("rewrite");
        assert_eq!(std::fs::read_link(vol.join("..data")).expect("link"), first);
        let p2: Payload = vec![(PathBuf::from("a"), b"3".to_vec(), 0o644)];
        write_atomic(&vol, &p2).expect("update");
        assert_eq!(std::fs::read(vol.join("a")).expect("a"), b"3");
        assert!(std::fs::symlink_metadata(vol.join("sub")).is_err());
        assert!(!vol.join(first).exists());
    }

    #[test]
    fn rejects_escaping_paths() {
        assert!(safe_relative("a/b"));
        assert!(!safe_relative("../x"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative("a/../../b"));
        assert!(!safe_relative(""));
    }
}
