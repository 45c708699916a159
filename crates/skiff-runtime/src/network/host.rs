//! Host-side plumbing for pod networking: catch-all routes, IP forwarding, the uplink MTU.

use std::fs;
use std::process::Command;

use super::{Ipv4Cidr, NetworkError};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Routes `cidr` to nowhere (`unreachable`: senders get EHOSTUNREACH at once instead of a
/// timeout). More specific routes (a node bridge's subnet) and local addresses (service
/// IPs on the proxy's dummy interface) still win, so only addresses nothing of ours owns
/// hit it — and none of them can leak to the default gateway.
pub(crate) fn route_unreachable(cidr: &Ipv4Cidr) -> Result<(), NetworkError> {
    ip(&["route", "replace", "unreachable", &cidr.to_string()])
}

/// Removes a route `route_unreachable` added; a missing one is fine.
pub(crate) fn delete_unreachable(cidr: &Ipv4Cidr) -> Result<(), NetworkError> {
    match ip(&["route", "del", "unreachable", &cidr.to_string()]) {
        Err(NetworkError::Setup { message, .. }) if message.contains("No such process") => Ok(()),
        other => other,
    }
}

/// Deletes a link (the node bridge); a missing one is fine.
pub(crate) fn delete_link(name: &str) -> Result<(), NetworkError> {
    if !std::path::Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    match ip(&["link", "del", name]) {
        Err(NetworkError::Setup { message, .. }) if message.contains("Cannot find device") => {
            Ok(())
        }
        other => other,
    }
}

/// The nat rule that hides pod addresses behind the node's address for traffic leaving the
/// cluster CIDR (traffic between pods, also of other nodes, keeps its source address).
fn masquerade_rule(pod_subnet: &Ipv4Cidr, cluster_cidr: &Ipv4Cidr, network: &str) -> Vec<String> {
    [
        "POSTROUTING",
        "-s",
        &pod_subnet.to_string(),
        "!",
        "-d",
        &cluster_cidr.to_string(),
        "-m",
        "comment",
        "--comment",
        &format!("skiff {network}: pod traffic leaving the cluster"),
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Adds the masquerade rule unless it is there.
pub(crate) fn ensure_masquerade(
    pod_subnet: &Ipv4Cidr,
    cluster_cidr: &Ipv4Cidr,
    network: &str,
) -> Result<(), NetworkError> {
    let rule = masquerade_rule(pod_subnet, cluster_cidr, network);
    if iptables_nat("-C", &rule).is_ok() {
        return Ok(());
    }
    iptables_nat("-A", &rule)
}

/// Removes the masquerade rule; a missing one is fine.
pub(crate) fn delete_masquerade(
    pod_subnet: &Ipv4Cidr,
    cluster_cidr: &Ipv4Cidr,
    network: &str,
) -> Result<(), NetworkError> {
    let rule = masquerade_rule(pod_subnet, cluster_cidr, network);
    while iptables_nat("-C", &rule).is_ok() {
        iptables_nat("-D", &rule)?;
    }
    Ok(())
}

fn iptables_nat(op: &str, rule: &[String]) -> Result<(), NetworkError> {
    let mut args = vec!["-w", "-t", "nat", op];
    args.extend(rule.iter().map(String::as_str));
    run("iptables", &args)
}

/// Turns on IPv4 forwarding (pods reach beyond the node through it); returns the value it
/// had, `true` if it was already on.
pub(crate) fn enable_ip_forward() -> Result<bool, NetworkError> {
    let io_err = |source| NetworkError::Io {
        context: format!("enable {IP_FORWARD}"),
        source,
    };
    let before = fs::read_to_string(IP_FORWARD).map_err(io_err)?;
    if before.trim() == "1" {
        return Ok(true);
    }
    fs::write(IP_FORWARD, b"1").map_err(io_err)?;
    Ok(false)
}

/// The MTU of the interface holding the IPv4 default route: pods must not send bigger
/// packets than the uplink carries (1500 when there is no default route).
pub(crate) fn uplink_mtu() -> u32 {
    fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|table| default_route_interface(&table))
        .and_then(|dev| fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).ok())
        .and_then(|mtu| mtu.trim().parse().ok())
        .unwrap_or(1500)
}

/// The device of the first `0.0.0.0/0` entry of `/proc/net/route`.
fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        match fields.as_slice() {
            [iface, "00000000", _, _, _, _, _, "00000000", ..] => Some(iface.to_string()),
            _ => None,
        }
    })
}

fn ip(args: &[&str]) -> Result<(), NetworkError> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), NetworkError> {
    let context = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetworkError::Io {
            context: context.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Setup {
            context,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_default_route_interface() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
        assert_eq!(default_route_interface(""), None);
    }

    #[test]
    fn uplink_mtu_is_sane() {
        let mtu = uplink_mtu();
        assert!((68..=65536).contains(&mtu), "{mtu}");
    }
}
