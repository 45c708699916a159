//! The kernel fast path: TCP Service ports as iptables NAT rules (DNAT to endpoints), as kube-proxy's iptables mode.
//!
//! Every chain this module creates is named `<prefix>-…`, where the prefix comes from the
//! service interface's name ([`rules_prefix`]), so two proxies on one machine (tests side by
//! side, each with its own interface) never touch each other's rules. One sync is one
//! `iptables-restore --noflush` batch (atomic per table), run only when the rules changed.
//!
//! - nat `<prefix>-SERVICES` (jumped to from PREROUTING and OUTPUT): each frontend (cluster
//!   IP, node port, load balancer) of a Service port with endpoints jumps to its
//!   `<prefix>-SVC-<hash>` chain, which spreads new connections over `<prefix>-SEP-<hash>`
//!   chains with `statistic --probability 1/n, 1/(n-1), …` (and `recent` for ClientIP
//!   affinity); each SEP chain DNATs to its endpoint;
//! - masquerade (mark, then MASQUERADE in `<prefix>-POSTROUTING`) for connections whose
//!   source the endpoint could not answer: from 127.0.0.0/8 to a non-loopback endpoint (which
//!   needs `net.ipv4.conf.all.route_localnet=1`) and hairpin (a pod reaching itself through
//!   its Service);
//! - filter `<prefix>-SERVICES` (jumped to from INPUT, FORWARD and OUTPUT): Service ports
//!   without endpoints REJECT with a TCP reset, so clients fail fast.
//!
//! Established connections stay on their endpoint through conntrack when it leaves the rules
//! (for TCP that only concerns existing flows, which end with the pod). UDP stays on the
//! userspace proxy: stale UDP conntrack entries would need `conntrack -D`, which this machine
//! does not have.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The packet mark bit that asks for masquerading (kube-proxy uses 0x4000; ours is apart).
pub const MASQ_MARK: u32 = 0x40000;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// The chain prefix of the proxy using `service_interface`: `SK-` and a hash of the name,
/// short enough that every chain name stays within iptables' 28 characters.
pub fn rules_prefix(service_interface: &str) -> String {
    format!("SK-{:08X}", fnv1a(service_interface.as_bytes()) as u32)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether the iptables fast path can run here: root and `iptables-restore` installed.
pub fn available() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    root && find_binary("iptables-restore") && find_binary("iptables-save")
}

fn find_binary(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(name).is_file())
}

/// Where a Service port is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Frontend {
    /// One address and port (cluster IP, a specific node or LB address).
    Addr(SocketAddr),
    /// The port on every local address (a wildcard node or LB address).
    AnyLocal(u16),
}

/// One TCP Service port as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// `namespace/name:port`, for comments and chain names.
    pub name: String,
    pub frontends: Vec<Frontend>,
    /// Ready endpoints (IPv4); empty: REJECT.
    pub endpoints: Vec<SocketAddr>,
    /// `Some(timeout)` for `sessionAffinity: ClientIP`.
    pub affinity: Option<Duration>,
}

/// The rules of one proxy: what it installed, to change only what changed and remove it all.
#[derive(Debug)]
pub struct Rules {
    prefix: String,
    /// The last batch applied (without the chains to delete), to skip unchanged syncs.
    applied: Option<String>,
    /// Per-service chains that exist now, per table.
    chains: BTreeSet<(&'static str, String)>,
    jumps_installed: bool,
}

/// The built-in chains that jump to ours, per table.
const JUMPS: &[(&str, &str, &str)] = &[
    ("nat", "PREROUTING", "SERVICES"),
    ("nat", "OUTPUT", "SERVICES"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("filter", "INPUT", "SERVICES"),
    ("filter", "FORWARD", "SERVICES"),
    ("filter", "OUTPUT", "SERVICES"),
];

impl Rules {
    /// Takes over `prefix`: removes what a previous proxy with it left (a crash), and lets
    /// loopback-sourced connections be routed to endpoints off loopback.
    pub fn start(prefix: &str) -> Result<Rules, RulesError> {
        if cleanup_rules(prefix)? {
            tracing::warn!("removed iptables rules {prefix}-* left by a previous proxy");
        }
        // LoadBalancer and NodePort on 127.0.0.1 DNAT to pod IPs: without this the kernel
        // drops a packet with a loopback source leaving another interface. Machine-wide and
        // left on (another proxy may rely on it), as kube-proxy does.
        if let Err(e) = std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1") {
            tracing::warn!("setting net.ipv4.conf.all.route_localnet=1: {e}");
        }
        Ok(Rules {
            prefix: prefix.to_string(),
            applied: None,
            chains: BTreeSet::new(),
            jumps_installed: false,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Makes the kernel's rules those of `services`. Returns whether anything was applied.
    pub fn sync(&mut self, services: &[ServiceRules]) -> Result<bool, RulesError> {
        let (body, chains) = render(&self.prefix, services);
        if self.applied.as_deref() == Some(body.as_str()) && self.jumps_installed {
            return Ok(false);
        }
        let batch = self.batch(&body, &chains);
        match restore(&batch) {
            Ok(()) => {
                self.applied = Some(body);
                self.chains = chains;
                self.jumps_installed = true;
                Ok(true)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    /// `body` split per table, plus deletion of chains no longer used and the jumps from the
    /// built-in chains on the first sync.
    fn batch(&self, body: &str, chains: &BTreeSet<(&'static str, String)>) -> String {
        let mut out = String::new();
        for table in ["nat", "filter"] {
            let _ = writeln!(out, "*{table}");
            let header = format!("#table {table}\n");
            let section = body
                .split_inclusive('\n')
                .skip_while(|l| *l != header)
                .skip(1)
                .take_while(|l| !l.starts_with("#table "));
            for l in section {
                out.push_str(l);
            }
            // Stale chains: all flushed before any is deleted (one may jump to another).
            let stale: Vec<&String> = self
                .chains
                .difference(chains)
                .filter(|(t, _)| *t == table)
                .map(|(_, c)| c)
                .collect();
            for c in &stale {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            for c in &stale {
                let _ = writeln!(out, "-X {c}");
            }
            if !self.jumps_installed {
                for (t, builtin, ours) in JUMPS {
                    if *t == table {
                        let _ = writeln!(
                            out,
                            "-I {builtin} -m comment --comment \"skiff-proxy {p}\" -j {p}-{ours}",
                            p = self.prefix
                        );
                    }
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Removes every rule and chain of this proxy.
    pub fn cleanup(&mut self) -> Result<(), RulesError> {
        self.applied = None;
        self.chains.clear();
        self.jumps_installed = false;
        cleanup_rules(&self.prefix).map(drop)
    }
}

/// Removes every iptables chain named `<prefix>-…` and every jump to one, in the nat and
/// filter tables (what a proxy killed with SIGKILL leaves). Returns whether there was any.
/// `skiff killall` calls it with [`rules_prefix`] of the node's service interface.
pub fn cleanup_rules(prefix: &str) -> Result<bool, RulesError> {
    let mine = format!("{prefix}-");
    let mut batch = String::new();
    let mut found = false;
    for table in ["nat", "filter"] {
        let saved = run("iptables-save", &["-t", table], None)?;
        let mut chains = Vec::new();
        let mut jumps = Vec::new();
        for line in saved.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or("");
                if name.starts_with(&mine) {
                    chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or("");
                let jumps_to_mine = rule
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1].starts_with(&mine));
                if !chain.starts_with(&mine) && jumps_to_mine {
                    jumps.push(rule.to_string());
                }
            }
        }
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        found = true;
        let _ = writeln!(batch, "*{table}");
        for j in &jumps {
            let _ = writeln!(batch, "-D {j}");
        }
        for c in &chains {
            let _ = writeln!(batch, ":{c} - [0:0]");
        }
        for c in &chains {
            let _ = writeln!(batch, "-X {c}");
        }
        batch.push_str("COMMIT\n");
    }
    if found {
        restore(&batch)?;
    }
    Ok(found)
}

fn restore(batch: &str) -> Result<(), RulesError> {
    run("iptables-restore", &["-w", "5", "--noflush"], Some(batch)).map(drop)
}

fn run(cmd: &str, args: &[&str], input: Option<&str>) -> Result<String, RulesError> {
    let what = format!("{cmd} {}", args.join(" "));
    let spawn_err = |source| RulesError::Spawn {
        cmd: what.clone(),
        source,
    };
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(text) = input {
            // iptables-restore names the failing line by number only.
            let _ = write!(stderr, "\n--- batch ---\n{text}");
        }
        return Err(RulesError::Failed { cmd: what, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn short_hash(s: &str) -> String {
    format!("{:010X}", fnv1a(s.as_bytes()) & 0xFF_FFFF_FFFF)
}

/// Quotes a comment for iptables-restore (which splits on spaces, honouring double quotes).
fn comment(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\n' | '\r'))
        .take(200)
        .collect();
    format!("-m comment --comment \"{clean}\"")
}

fn frontend_match(f: &Frontend) -> String {
    match f {
        Frontend::Addr(a) => format!("-d {}/32 -p tcp -m tcp --dport {}", a.ip(), a.port()),
        Frontend::AnyLocal(p) => format!("-m addrtype --dst-type LOCAL -p tcp -m tcp --dport {p}"),
    }
}

/// The rules of `services` as iptables-restore lines, tables marked by `#table <name>` lines
/// (pure: unit-tested), and the per-service chains they use.
pub fn render(
    prefix: &str,
    services: &[ServiceRules],
) -> (String, BTreeSet<(&'static str, String)>) {
    let mut nat_chains = Vec::new();
    let mut nat = Vec::new();
    let mut svc_jumps = Vec::new();
    // Specific addresses first: a wildcard node port must not shadow a cluster IP's port.
    let mut any_local_jumps = Vec::new();
    let mut filter = Vec::new();
    let mut chains = BTreeSet::new();

    for s in services {
        let endpoints: Vec<SocketAddr> = s
            .endpoints
            .iter()
            .copied()
            .filter(|e| e.is_ipv4() && e.port() != 0)
            .collect();
        let frontends: Vec<&Frontend> = s
            .frontends
            .iter()
            .filter(|f| match f {
                Frontend::Addr(a) => a.is_ipv4(),
                Frontend::AnyLocal(_) => true,
            })
            .collect();
        if endpoints.is_empty() {
            for f in &frontends {
                filter.push(format!(
                    "-A {prefix}-SERVICES {} {} -j REJECT --reject-with tcp-reset",
                    comment(&format!("{} has no endpoints", s.name)),
                    frontend_match(f)
                ));
            }
            continue;
        }
        let svc = format!("{prefix}-SVC-{}", short_hash(&s.name));
        nat_chains.push(svc.clone());
        chains.insert(("nat", svc.clone()));
        for f in &frontends {
            let line = format!(
                "-A {prefix}-SERVICES {} {} -j {svc}",
                comment(&s.name),
                frontend_match(f)
            );
            match f {
                Frontend::Addr(_) => svc_jumps.push(line),
                Frontend::AnyLocal(_) => any_local_jumps.push(line),
            }
        }
        let seps: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{prefix}-SEP-{}", short_hash(&format!("{}/{e}", s.name))))
            .collect();
        if let Some(timeout) = s.affinity {
            // A client seen recently goes back to its endpoint, as long as that one is here.
            let secs = timeout.as_secs().clamp(1, u64::from(u32::MAX));
            for sep in &seps {
                nat.push(format!(
                    "-A {svc} -m recent --name {sep} --rcheck --seconds {secs} --reap -j {sep}"
                ));
            }
        }
        let n = seps.len();
        for (i, sep) in seps.iter().enumerate() {
            if i + 1 < n {
                let p = 1.0 / (n - i) as f64;
                nat.push(format!(
                    "-A {svc} -m statistic --mode random --probability {p:.11} -j {sep}"
                ));
            } else {
                nat.push(format!("-A {svc} -j {sep}"));
            }
        }
        for (sep, ep) in seps.iter().zip(&endpoints) {
            nat_chains.push(sep.clone());
            chains.insert(("nat", sep.clone()));
            nat.push(format!("-A {sep} -s {}/32 -j {prefix}-MARK-MASQ", ep.ip()));
            if !ep.ip().is_loopback() {
                nat.push(format!("-A {sep} -s 127.0.0.0/8 -j {prefix}-MARK-MASQ"));
            }
            let recent = if s.affinity.is_some() {
                format!("-m recent --name {sep} --set ")
            } else {
                String::new()
            };
            nat.push(format!(
                "-A {sep} {} -p tcp {recent}-j DNAT --to-destination {ep}",
                comment(&s.name)
            ));
        }
    }

    let mut out = String::from("#table nat\n");
    for c in ["SERVICES", "POSTROUTING", "MARK-MASQ"] {
        let _ = writeln!(out, ":{prefix}-{c} - [0:0]");
    }
    for c in &nat_chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    let m = MASQ_MARK;
    let _ = writeln!(
        out,
        "-A {prefix}-MARK-MASQ -j MARK --or-mark {m:#x}\n\
         -A {prefix}-POSTROUTING -m mark ! --mark {m:#x}/{m:#x} -j RETURN\n\
         -A {prefix}-POSTROUTING -j MARK --xor-mark {m:#x}\n\
         -A {prefix}-POSTROUTING -j MASQUERADE"
    );
    for l in svc_jumps.iter().chain(&any_local_jumps).chain(&nat) {
        out.push_str(l);
        out.push('\n');
    }
    let _ = writeln!(out, "#table filter\n:{prefix}-SERVICES - [0:0]");
    for l in &filter {
        out.push_str(l);
        out.push('\n');
    }
    (out, chains)
}

/// The local addresses a frontend serves, for status: a wildcard port as `0.0.0.0:port`.
pub fn frontend_addr(f: &Frontend) -> SocketAddr {
    match f {
        Frontend::Addr(a) => *a,
        Frontend::AnyLocal(p) => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), *p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn web(endpoints: &[&str], affinity: Option<Duration>) -> ServiceRules {
        ServiceRules {
            name: "default/web:http".into(),
            frontends: vec![
                Frontend::AnyLocal(30080),
                Frontend::Addr(sa("10.43.0.5:80")),
                Frontend::Addr(sa("127.0.0.1:80")),
            ],
            endpoints: endpoints.iter().map(|e| sa(e)).collect(),
            affinity,
        }
    }

    #[test]
    fn prefixes_are_short_and_distinct() {
        let a = rules_prefix("skiff-svc");
        assert_eq!(a.len(), 11);
        assert_ne!(a, rules_prefix("skiff-svc2"));
        assert_eq!(a, rules_prefix("skiff-svc"));
        let (_, chains) = render(&a, &[web(&["10.42.0.2:8080"], None)]);
        assert!(chains.iter().all(|(_, c)| c.len() <= 28), "{chains:?}");
    }

    #[test]
    fn endpoints_are_picked_with_falling_probabilities() {
        let (out, chains) = render(
            "P",
            &[web(
                &["10.42.0.2:8080", "10.42.0.3:8080", "10.42.0.4:8080"],
                None,
            )],
        );
        assert_eq!(chains.len(), 4, "{chains:?}");
        let probs: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("--probability"))
            .map(|l| l.split_whitespace().nth(7).unwrap_or(""))
            .collect();
        assert_eq!(probs, vec!["0.33333333333", "0.50000000000"]);
        assert_eq!(out.matches("-j DNAT --to-destination").count(), 3);
        assert!(out.contains("-j DNAT --to-destination 10.42.0.3:8080"));
        // Specific frontends come before the wildcard node port.
        let cluster = out.find("-d 10.43.0.5/32").expect("cluster ip");
        let node = out.find("--dst-type LOCAL").expect("node port");
        assert!(cluster < node);
        // Loopback clients and hairpin are masqueraded; no REJECT while there are endpoints.
        assert!(out.contains("-A P-SEP-"));
        assert!(out.contains("-s 127.0.0.0/8 -j P-MARK-MASQ"));
        assert!(out.contains("-s 10.42.0.2/32 -j P-MARK-MASQ"));
        assert!(!out.contains("REJECT"));
    }

    #[test]
    fn no_endpoints_reject_in_the_filter_table() {
        let (out, chains) = render("P", &[web(&[], None)]);
        assert!(chains.is_empty());
        let filter = out.split("#table filter").nth(1).expect("filter");
        assert_eq!(filter.matches("REJECT --reject-with tcp-reset").count(), 3);
        assert!(!out.contains("DNAT"));
    }

    #[test]
    fn client_ip_affinity_uses_recent() {
        let (out, _) = render(
            "P",
            &[web(
                &["10.42.0.2:8080", "127.0.0.2:8080"],
                Some(Duration::from_secs(60)),
            )],
        );
        assert_eq!(out.matches("--rcheck --seconds 60 --reap").count(), 2);
        assert_eq!(out.matches("--set -j DNAT").count(), 2);
        // A loopback endpoint needs no masquerade for loopback clients.
        assert_eq!(out.matches("-s 127.0.0.0/8").count(), 1);
    }

    #[test]
    fn batches_flush_ours_delete_stale_chains_and_jump_once() {
        let mut r = Rules {
            prefix: "P".into(),
            applied: None,
            chains: BTreeSet::new(),
            jumps_installed: false,
        };
        let (body, chains) = render("P", &[web(&["10.42.0.2:8080"], None)]);
        let first = r.batch(&body, &chains);
        assert_eq!(first.matches("COMMIT").count(), 2);
        assert_eq!(first.matches("-I ").count(), JUMPS.len());
        assert!(first.starts_with("*nat\n:P-SERVICES - [0:0]"));
        r.chains = chains;
        r.jumps_installed = true;
        let (body, chains) = render("P", &[web(&[], None)]);
        let second = r.batch(&body, &chains);
        assert_eq!(second.matches("-I ").count(), 0);
        assert_eq!(second.matches("-X P-S").count(), 2, "{second}");
        let filter = second.split("*filter").nth(1).expect("filter");
        assert!(filter.contains("REJECT") && !filter.contains("-X"));
    }
}
