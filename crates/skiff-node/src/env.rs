//! Container environment like the kubelet builds it: `envFrom`, `env` with `valueFrom`
//! (ConfigMaps, Secrets, the downward API, resource limits) and `$(VAR)` expansion.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};
use kube::Api;
use skiff_client::Client;

/// Why a container's configuration cannot be built (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported field path {0:?}")]
    FieldPath(String),
    #[error("unsupported resource {0:?}")]
    Resource(String),
    #[error("reading {kind} \"{name}\": {message}")]
    Api {
        kind: &'static str,
        name: String,
        message: String,
    },
}

/// What the downward API can tell about a pod.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    /// Node allocatable cpu (millicores) and memory (bytes): what `limits.*` resolve to for
    /// containers without limits.
    pub node_milli_cpu: i128,
    pub node_memory: i128,
}

/// The value of a downward-API `fieldPath`.
pub fn field_value(facts: &PodFacts<'_>, path: &str) -> Result<String, ConfigError> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
        rest.strip_suffix("']").map(str::to_string)
    };
    if let Some(key) = subscript("metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    let ip = facts.pod_ip.map(|i| i.to_string()).unwrap_or_default();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip,
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        other => return Err(ConfigError::FieldPath(other.to_string())),
    })
}

/// `key="value"` lines, sorted, the way downward-API volume files print maps.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The value of a `resourceFieldRef` for `container` (limits fall back to the node's
/// allocatable), divided by its divisor and rounded up like Kubernetes.
pub fn resource_value(
    facts: &PodFacts<'_>,
    container: &Container,
    sel: &ResourceFieldSelector,
) -> Result<String, ConfigError> {
    let r = container.resources.as_ref();
    let (list, name) = match sel.resource.split_once('.') {
        Some(("limits", n)) => (r.and_then(|r| r.limits.as_ref()), n),
        Some(("requests", n)) => (r.and_then(|r| r.requests.as_ref()), n),
        _ => return Err(ConfigError::Resource(sel.resource.clone())),
    };
    let is_cpu = name == "cpu";
    let is_limit = sel.resource.starts_with("limits.");
    let value = match name {
        "cpu" => crate::resources::milli_cpu(list),
        "memory" | "ephemeral-storage" => crate::resources::bytes(list, name),
        _ => return Err(ConfigError::Resource(sel.resource.clone())),
    };
    let value = match (value, is_limit, name) {
        (Some(v), _, _) => v,
        (None, true, "cpu") => facts.node_milli_cpu,
        (None, true, "memory") => facts.node_memory,
        (None, _, _) => 0,
    };
    let divisor = sel
        .divisor
        .as_ref()
        .and_then(|d| skiff_api::quantity::parse_quantity(&d.0).ok());
    // In the unit of the value: millicores for cpu, bytes otherwise.
    let divisor = match divisor {
        Some(d) if is_cpu => d.milli_value(),
        Some(d) => d.value(),
        None if is_cpu => 1000,
        None => 1,
    }
    .max(1);
    let out = (value + divisor - 1) / divisor;
    // Kubernetes never reports less than one cpu unit for a cpu request.
    Ok(if is_cpu { out.max(1) } else { out }.to_string())
}

/// Fetches (once per pod sync) the ConfigMaps and Secrets a container refers to.
pub struct Sources<'a> {
    client: &'a Client,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl<'a> Sources<'a> {
    pub fn new(client: &'a Client, namespace: &str) -> Self {
        Sources {
            client,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// The ConfigMap's data (binary data as lossy text), `None` if it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api.get_opt(name).await.map_err(|e| ConfigError::Api {
                kind: "configmap",
                name: name.to_string(),
                message: e.to_string(),
            })?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self
            .config_maps
            .get(name)
            .and_then(|c| c.as_ref())
            .map(|c| {
                let mut out: BTreeMap<String, Vec<u8>> = c
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect();
                for (k, v) in c.binary_data.iter().flatten() {
                    out.insert(k.clone(), v.0.clone());
                }
                out
            }))
    }

    /// The Secret's decoded data, `None` if it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let got = api.get_opt(name).await.map_err(|e| ConfigError::Api {
                kind: "secret",
                name: name.to_string(),
                message: e.to_string(),
            })?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).and_then(|s| s.as_ref()).map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            for (k, v) in s.string_data.iter().flatten() {
                out.insert(k.clone(), v.clone().into_bytes());
            }
            out
        }))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// A valid environment variable name (Kubernetes' C_IDENTIFIER-ish rule, relaxed like it
/// is since 1.26: printable ASCII without `=`).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_graphic() && c != '=')
}

/// Docker-links-style variables for the Services a pod sees (`<NAME>_SERVICE_HOST`,
/// `<NAME>_PORT_<port>_TCP`, ...): those of its namespace when `enableServiceLinks` is on,
/// and always the `kubernetes` Service, so in-cluster clients find the API.
pub async fn service_env(client: &Client, namespace: &str, links: bool) -> Vec<(String, String)> {
    use k8s_openapi::api::core::v1::Service;
    let mut services: Vec<Service> = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), namespace);
        match api.list(&Default::default()).await {
            Ok(l) => services.extend(l.items),
            Err(e) => tracing::debug!(error = %e, "listing services for pod environment"),
        }
    }
    if namespace != "default" || !links {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        if let Ok(Some(k)) = api.get_opt("kubernetes").await {
            services.push(k);
        }
    }
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
            continue;
        };
        let name = svc
            .metadata
            .name
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_ref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let pr = proto(p);
            let prefix = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), pr.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The container's `envFrom` then `env`, resolved and expanded, in Kubernetes' order (later
/// names override earlier ones but keep their first position).
pub async fn container_env(
    sources: &mut Sources<'_>,
    facts: &PodFacts<'_>,
    container: &Container,
    services: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = services;
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| match env
        .iter_mut()
        .find(|(n, _)| *n == k)
    {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(ConfigError::NotFound {
                        kind: "configmap",
                        name: r.name.clone(),
                    });
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(ConfigError::NotFound {
                        kind: "secret",
                        name: r.name.clone(),
                    });
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if valid_env_name(&name) {
                set(&mut env, name, String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match sources.config_map(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                kind: "ConfigMap",
                                namespace: sources.namespace().to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(ConfigError::NotFound {
                            kind: "configmap",
                            name: r.name.clone(),
                        });
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match sources.secret(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError::MissingKey {
                                kind: "Secret",
                                namespace: sources.namespace().to_string(),
                                name: r.name.clone(),
                                key: r.key.clone(),
                            });
                        }
                    },
                    None if optional => continue,
                    None => {
                        return Err(ConfigError::NotFound {
                            kind: "secret",
                            name: r.name.clone(),
                        });
                    }
                }
            } else if let Some(f) = &from.field_ref {
                field_value(facts, &f.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(facts, container, r)?
            } else {
                String::new()
            }
        } else {
            let defined: HashMap<&str, &str> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(var.value.as_deref().unwrap_or_default(), &defined)
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: a defined `$(VAR)` becomes its value, `$$` becomes `$`
/// (so `$$(VAR)` stays literal), anything else is left as written.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < input.len() {
        if bytes[i] == b'$' && i + 1 < input.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        // Copy one whole character (the input may be any UTF-8).
        let ch_len = input[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&input[i..i + ch_len]);
        i += ch_len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_like_kubernetes() {
        let vars: HashMap<&str, &str> = [("A", "1"), ("B", "two")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$$", &vars), "$");
        assert_eq!(expand("a$", &vars), "a$");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("é$(A)ü", &vars), "é1ü");
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1",
                         "labels": {"app": "web", "tier": "a"}, "annotations": {"x": "y"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [
                {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
            ]}
        }))
        .expect("pod")
    }

    #[test]
    fn downward_api_fields() {
        let p = pod();
        let facts = PodFacts {
            pod: &p,
            pod_ip: Some("10.42.0.5".parse().expect("ip")),
            host_ip: "127.0.0.1".parse().expect("ip"),
            node_milli_cpu: 2000,
            node_memory: 1 << 30,
        };
        assert_eq!(
            field_value(&facts, "metadata.name").ok().as_deref(),
            Some("p")
        );
        assert_eq!(
            field_value(&facts, "metadata.labels['app']")
                .ok()
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            field_value(&facts, "metadata.labels").ok().as_deref(),
            Some("app=\"web\"\ntier=\"a\"")
        );
        assert_eq!(
            field_value(&facts, "status.podIP").ok().as_deref(),
            Some("10.42.0.5")
        );
        assert_eq!(
            field_value(&facts, "spec.nodeName").ok().as_deref(),
            Some("n1")
        );
        assert!(field_value(&facts, "spec.bogus").is_err());

        let c = &p.spec.as_ref().expect("spec").containers[0];
        let sel = |res: &str, div: Option<&str>| ResourceFieldSelector {
            container_name: None,
            resource: res.into(),
            divisor: div.map(|d| Quantity(d.into())),
        };
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        assert_eq!(
            resource_value(&facts, c, &sel("limits.cpu", None))
                .ok()
                .as_deref(),
            Some("1")
        );
        assert_eq!(
            resource_value(&facts, c, &sel("limits.cpu", Some("1m")))
                .ok()
                .as_deref(),
            Some("500")
        );
        assert_eq!(
            resource_value(&facts, c, &sel("limits.memory", Some("1Mi")))
                .ok()
                .as_deref(),
            Some("64")
        );
        assert_eq!(
            resource_value(&facts, c, &sel("requests.memory", None))
                .ok()
                .as_deref(),
            Some("0")
        );
    }
}
