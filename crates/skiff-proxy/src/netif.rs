//! The service interface: a dummy link (or a port-less bridge) carrying cluster IPs, managed with iproute2.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    #[error("running `ip {args}`: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("`ip {args}` printed unexpected output: {detail}")]
    Output { args: String, detail: String },
}

/// Runs `ip` with `args` and returns its standard output.
async fn ip(args: &[&str]) -> Result<String, NetError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| NetError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Linux interface names: at most 15 bytes, no `/`, no whitespace, not `.` or `..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// The proxy's interface. It is dedicated to the proxy: every global address on it is
/// considered the proxy's own (so a restart cleans up after a crash).
#[derive(Debug)]
pub struct ServiceInterface {
    name: String,
    /// We created the link (and so remove it on shutdown).
    created: bool,
    routes: Vec<String>,
}

impl ServiceInterface {
    /// Opens `name`, creating it (a dummy link, or a bridge without ports where the kernel
    /// has no dummy driver) if it does not exist, and brings it up.
    pub async fn ensure(name: &str) -> Result<ServiceInterface, NetError> {
        if !valid_name(name) {
            return Err(NetError::InvalidName(name.to_string()));
        }
        let created = if link_exists(name).await {
            false
        } else {
            create_link(name).await?;
            true
        };
        let iface = ServiceInterface {
            name: name.to_string(),
            created,
            routes: Vec::new(),
        };
        if let Err(e) = ip(&["link", "set", name, "up"]).await {
            if created {
                let _ = iface.delete().await;
            }
            return Err(e);
        }
        Ok(iface)
    }

    /// Recreates the link (and its routes) if someone removed it. Returns whether it had to.
    pub async fn repair(&mut self) -> Result<bool, NetError> {
        if link_exists(&self.name).await {
            return Ok(false);
        }
        create_link(&self.name).await?;
        self.created = true;
        ip(&["link", "set", self.name.as_str(), "up"]).await?;
        for r in &self.routes {
            ip(&["route", "replace", r.as_str(), "dev", self.name.as_str()]).await?;
        }
        Ok(true)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn created(&self) -> bool {
        self.created
    }

    /// The global (non link-local) addresses on the interface.
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>, NetError> {
        let args = ["-j", "addr", "show", "dev", self.name.as_str()];
        let out = ip(&args).await?;
        parse_addresses(&out).map_err(|detail| NetError::Output {
            args: args.join(" "),
            detail,
        })
    }

    pub async fn add(&self, addr: IpAddr) -> Result<(), NetError> {
        let p = prefix(addr);
        let mut args = vec!["addr", "replace", p.as_str(), "dev", self.name.as_str()];
        if addr.is_ipv6() {
            // No duplicate address detection: the address must be usable at once.
            args.push("nodad");
        }
        ip(&args).await.map(drop)
    }

    pub async fn remove(&self, addr: IpAddr) -> Result<(), NetError> {
        let p = prefix(addr);
        ip(&["addr", "del", p.as_str(), "dev", self.name.as_str()])
            .await
            .map(drop)
    }

    /// Routes `cidr` to this interface so unallocated service addresses stay on the machine.
    pub async fn route(&mut self, cidr: (Ipv4Addr, u8)) -> Result<(), NetError> {
        let c = format!("{}/{}", cidr.0, cidr.1);
        ip(&["route", "replace", c.as_str(), "dev", self.name.as_str()]).await?;
        self.routes.push(c);
        Ok(())
    }

    /// Removes what the proxy put on the machine: its routes and addresses, and the link
    /// itself if it created it.
    pub async fn delete(&self) -> Result<(), NetError> {
        for r in &self.routes {
            if let Err(e) = ip(&["route", "del", r.as_str(), "dev", self.name.as_str()]).await {
                tracing::debug!("{e}");
            }
        }
        if self.created {
            return ip(&["link", "del", "dev", self.name.as_str()])
                .await
                .map(drop);
        }
        for a in self.addresses().await? {
            self.remove(a).await?;
        }
        Ok(())
    }
}

async fn link_exists(name: &str) -> bool {
    ip(&["-o", "link", "show", "dev", name]).await.is_ok()
}

/// Creates a dummy link, or a bridge without ports where the kernel has no dummy driver
/// (containers): it holds local addresses just the same and forwards nothing.
async fn create_link(name: &str) -> Result<(), NetError> {
    if let Err(dummy) = ip(&["link", "add", name, "type", "dummy"]).await {
        ip(&["link", "add", name, "type", "bridge"])
            .await
            .inspect_err(|_| tracing::warn!("creating dummy interface {name}: {dummy}"))?;
    }
    // Link-local IPv6 addresses are noise on an interface that never sends a packet.
    let _ = tokio::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1").await;
    Ok(())
}

fn parse_addresses(json: &str) -> Result<BTreeSet<IpAddr>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut out = BTreeSet::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if a.get("scope").and_then(Value::as_str) == Some("link") {
                continue;
            }
            if let Some(ip) = a
                .get("local")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
            {
                out.insert(ip);
            }
        }
    }
    Ok(out)
}

/// Whether `ip` is assigned to some interface of this network namespace (a local address).
pub async fn is_local_address(addr: IpAddr) -> bool {
    let s = addr.to_string();
    match ip(&["-j", "addr", "show", "to", s.as_str()]).await {
        Ok(out) => parse_addresses(&out).is_ok_and(|a| a.contains(&addr)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json_and_skips_link_local() {
        let json = r#"[{"ifindex":9,"ifname":"skiff-svc","addr_info":[
            {"family":"inet","local":"10.43.0.1","prefixlen":32,"scope":"global"},
            {"family":"inet","local":"10.43.0.10","prefixlen":32,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let a = parse_addresses(json).expect("parse");
        let want: BTreeSet<IpAddr> = ["10.43.0.1", "10.43.0.10"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(a, want);
        assert!(parse_addresses("not json").is_err());
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(valid_name("skiff-svc"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-name-that-is-too-long"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a b"));
    }
}
