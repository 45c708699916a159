//! Service ClusterIP and NodePort allocation (what kube-apiserver's service REST storage does).

use serde_json::{Value, json};
use skiff_api::{ApiError, FieldError};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Addresses and ports already taken by other Services.
#[derive(Debug, Default)]
pub struct InUse {
    pub ips: HashSet<Ipv4Addr>,
    pub node_ports: HashSet<u16>,
}

impl InUse {
    /// Collects what `services` use, skipping the Service named `skip` (the one being updated).
    pub fn from_services<'a>(
        services: impl Iterator<Item = &'a Value>,
        skip: Option<(&str, &str)>,
    ) -> Self {
        let mut u = InUse::default();
        for s in services {
            let id = (
                skiff_api::meta::namespace(s).unwrap_or_default(),
                skiff_api::meta::name(s).unwrap_or_default(),
            );
            if Some(id) == skip {
                continue;
            }
            if let Some(ip) = s
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|i| i.parse().ok())
            {
                u.ips.insert(ip);
            }
            for p in s
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                    u.node_ports.insert(np as u16);
                }
            }
        }
        u
    }
}

/// The `kubernetes` Service's address: the first address of the range.
pub fn first_service_ip(cidr: (Ipv4Addr, u8)) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.0) + 1)
}

fn in_cidr(ip: Ipv4Addr, cidr: (Ipv4Addr, u8)) -> bool {
    let mask = if cidr.1 == 0 {
        0
    } else {
        u32::MAX << (32 - cidr.1)
    };
    (u32::from(ip) & mask) == (u32::from(cidr.0) & mask)
}

/// Fills in `spec.clusterIP(s)` and node ports of a Service. `old` is the stored Service on
/// update: its allocations are kept unless the type no longer needs them.
pub fn allocate(
    svc: &mut Value,
    old: Option<&Value>,
    in_use: &InUse,
    cidr: (Ipv4Addr, u8),
    node_ports: (u16, u16),
) -> Result<(), ApiError> {
    let name = skiff_api::meta::name(svc).unwrap_or_default().to_string();
    let invalid = |e: FieldError| ApiError::invalid("", "Service", &name, vec![e]);
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        return Ok(());
    }
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(String::from);
    let requested = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from);
    let ip = match (requested, old_ip) {
        (Some(r), Some(o)) if r != o => {
            return Err(invalid(FieldError::invalid(
                "spec.clusterIPs[0]",
                format!("[]string{{\"{r}\"}}"),
                "may not change once set",
            )));
        }
        (Some(r), _) if r == "None" => "None".to_string(),
        (Some(r), old) => {
            let parsed: Ipv4Addr = r.parse().map_err(|_| {
                invalid(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &r,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ))
            })?;
            if old.is_none() {
                if !in_cidr(parsed, cidr) {
                    return Err(invalid(FieldError::invalid(
                        "spec.clusterIPs",
                        &r,
                        format!(
                            "failed to allocate IP {r}: provided IP is not in the valid range. The range of valid IPs is {}/{}",
                            cidr.0, cidr.1
                        ),
                    )));
                }
                if in_use.ips.contains(&parsed) {
                    return Err(invalid(FieldError::invalid(
                        "spec.clusterIPs",
                        &r,
                        format!("failed to allocate IP {r}: provided IP is already allocated"),
                    )));
                }
            }
            r
        }
        (None, Some(o)) => o,
        (None, None) => pick_ip(in_use, cidr)
            .ok_or_else(|| ApiError::internal("failed to allocate a serviceIP: range is full"))?
            .to_string(),
    };
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));

    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut taken = in_use.node_ports.clone();
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            if !wants_node_ports {
                p.remove("nodePort");
                continue;
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                let np = np as u16;
                let was_ours = old_ports
                    .iter()
                    .any(|op| op.get("nodePort").and_then(Value::as_u64) == Some(np as u64));
                if !was_ours && taken.contains(&np) {
                    return Err(invalid(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        np,
                        "provided port is already allocated",
                    )));
                }
                taken.insert(np);
                continue;
            }
            // Keep the node port the same-numbered port had before (kubectl apply does not send it).
            let port = p.get("port").cloned();
            let reuse = old_ports
                .iter()
                .find(|op| op.get("port") == port.as_ref())
                .and_then(|op| op.get("nodePort"))
                .and_then(Value::as_u64);
            let np = match reuse {
                Some(np) => np as u16,
                None => pick_port(&taken, node_ports).ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: range is full")
                })?,
            };
            taken.insert(np);
            p.insert("nodePort".into(), json!(np));
        }
    }
    Ok(())
}

fn pick_ip(in_use: &InUse, cidr: (Ipv4Addr, u8)) -> Option<Ipv4Addr> {
    use rand::Rng;
    let base = u32::from(cidr.0);
    let size = 1u64 << (32 - cidr.1 as u32);
    if size < 4 {
        return None;
    }
    // Skip the network address, the `kubernetes` Service (.1) and the broadcast address.
    let usable = (size - 3) as u32;
    let start = rand::rng().random_range(0..usable);
    (0..usable)
        .map(|i| Ipv4Addr::from(base + 2 + (start + i) % usable))
        .find(|ip| !in_use.ips.contains(ip))
}

fn pick_port(taken: &HashSet<u16>, range: (u16, u16)) -> Option<u16> {
    use rand::Rng;
    let n = (range.1 - range.0) as u32 + 1;
    let start = rand::rng().random_range(0..n);
    (0..n)
        .map(|i| range.0 + ((start + i) % n) as u16)
        .find(|p| !taken.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);

    #[test]
    fn allocates_ip_and_node_ports_and_keeps_them() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate(&mut svc, None, &InUse::default(), CIDR, (30000, 32767)).unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(in_cidr(ip, CIDR) && ip != first_service_ip(CIDR));
        let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np));
        let mut update = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate(
            &mut update,
            Some(&svc),
            &InUse::default(),
            CIDR,
            (30000, 32767),
        )
        .unwrap();
        assert_eq!(update["spec"], svc["spec"]);
    }

    #[test]
    fn rejects_taken_and_out_of_range() {
        let mut in_use = InUse::default();
        in_use.ips.insert("10.43.0.10".parse().unwrap());
        in_use.node_ports.insert(30080);
        let mut a = json!({"spec": {"clusterIP": "10.43.0.10"}});
        assert!(allocate(&mut a, None, &in_use, CIDR, (30000, 32767)).is_err());
        let mut b = json!({"spec": {"clusterIP": "192.168.0.1"}});
        assert!(allocate(&mut b, None, &in_use, CIDR, (30000, 32767)).is_err());
        let mut c =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 30080}]}});
        assert!(allocate(&mut c, None, &in_use, CIDR, (30000, 32767)).is_err());
        let mut d = json!({"spec": {"clusterIP": "None"}});
        allocate(&mut d, None, &in_use, CIDR, (30000, 32767)).unwrap();
        assert_eq!(d["spec"]["clusterIPs"], json!(["None"]));
    }
}
