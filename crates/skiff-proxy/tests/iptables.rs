//! The iptables rules on the machine: they follow the endpoints, survive a crash only until the next start, and two proxies keep to their own chains.
//!
//! Needs root and iptables; rules only name addresses of 127.0.0.0/8 and 10.96.255.0/24 (no
//! traffic is sent here: the proxy tests send it).

use std::net::SocketAddr;
use std::time::Duration;

use skiff_proxy::iptables::{Frontend, Rules, ServiceRules, available, cleanup_rules};

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Everything of `prefix` in the nat and filter tables.
fn rules_of(prefix: &str) -> Vec<String> {
    let mine = format!("{prefix}-");
    let mut out = Vec::new();
    for table in ["nat", "filter"] {
        let saved = std::process::Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .expect("iptables-save");
        out.extend(
            String::from_utf8_lossy(&saved.stdout)
                .lines()
                .filter(|l| l.contains(&mine))
                .map(|l| format!("{table} {l}")),
        );
    }
    out
}

/// A per-test prefix (tests and test processes run side by side).
fn prefix(test: &str) -> String {
    skiff_proxy::iptables::rules_prefix(&format!("{test}-{}", std::process::id()))
}

/// Removes the test's rules even when it fails.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = cleanup_rules(&self.0);
    }
}

fn service(name: &str, port: u16, endpoints: &[&str], affinity: bool) -> ServiceRules {
    ServiceRules {
        name: format!("default/{name}:http"),
        frontends: vec![
            Frontend::Addr(SocketAddr::new([10, 96, 255, 7].into(), port)),
            Frontend::Addr(SocketAddr::new([127, 0, 0, 1].into(), port)),
            Frontend::AnyLocal(port + 30000),
        ],
        endpoints: endpoints.iter().map(|e| sa(e)).collect(),
        affinity: affinity.then_some(Duration::from_secs(60)),
    }
}

fn skip() -> bool {
    if !available() {
        eprintln!("skipped: needs root and iptables-restore");
        return true;
    }
    false
}

#[test]
fn rules_follow_the_endpoints_and_leave_on_cleanup() {
    if skip() {
        return;
    }
    let p = prefix("follow");
    let _g = Guard(p.clone());
    let mut r = Rules::start(&p).expect("start");
    let two = [service(
        "web",
        8080,
        &["127.0.0.2:80", "10.42.7.3:80"],
        true,
    )];
    assert!(r.sync(&two).expect("sync"));
    let have = rules_of(&p);
    let dnat: Vec<_> = have.iter().filter(|l| l.contains("-j DNAT")).collect();
    assert_eq!(dnat.len(), 2, "{have:#?}");
    assert!(
        have.iter()
            .any(|l| l.contains("--to-destination 10.42.7.3:80"))
    );
    assert!(
        have.iter()
            .any(|l| l.contains("-A PREROUTING") && l.contains(&p))
    );
    assert!(
        have.iter()
            .any(|l| l.contains("-A OUTPUT") && l.contains(&p))
    );
    assert!(
        have.iter()
            .any(|l| l.contains("-A POSTROUTING") && l.contains(&p))
    );
    assert!(have.iter().any(|l| l.contains("--rcheck")));
    assert!(!have.iter().any(|l| l.contains("REJECT")));
    // Nothing changed: nothing applied.
    assert!(!r.sync(&two).expect("sync"));

    // One endpoint leaves: its chain goes.
    let one = [service("web", 8080, &["10.42.7.3:80"], false)];
    assert!(r.sync(&one).expect("sync"));
    let have = rules_of(&p);
    assert!(
        !have.iter().any(|l| l.contains("127.0.0.2:80")),
        "{have:#?}"
    );
    assert_eq!(have.iter().filter(|l| l.contains("-j DNAT")).count(), 1);
    assert_eq!(have.iter().filter(|l| l.starts_with("nat :")).count(), 5);

    // None left: REJECT instead, no DNAT, the service chains gone; jumps stay single.
    assert!(r.sync(&[service("web", 8080, &[], false)]).expect("sync"));
    let have = rules_of(&p);
    assert!(!have.iter().any(|l| l.contains("DNAT")), "{have:#?}");
    assert_eq!(
        have.iter()
            .filter(|l| l.contains("REJECT --reject-with tcp-reset"))
            .count(),
        3
    );
    assert_eq!(
        have.iter().filter(|l| l.contains("-A PREROUTING")).count(),
        1
    );
    assert_eq!(have.iter().filter(|l| l.starts_with("nat :")).count(), 3);

    r.cleanup().expect("cleanup");
    assert_eq!(rules_of(&p), Vec::<String>::new());
}

#[test]
fn a_crashed_proxys_rules_are_removed_by_the_next_start() {
    if skip() {
        return;
    }
    let p = prefix("crash");
    let _g = Guard(p.clone());
    let mut r = Rules::start(&p).expect("start");
    r.sync(&[service("old", 8081, &["10.42.7.4:80"], false)])
        .expect("sync");
    // A kill -9: no cleanup runs.
    drop(r);
    assert!(!rules_of(&p).is_empty());
    let mut again = Rules::start(&p).expect("start");
    assert_eq!(rules_of(&p), Vec::<String>::new(), "leftovers kept");
    again
        .sync(&[service("new", 8082, &["10.42.7.5:80"], false)])
        .expect("sync");
    let have = rules_of(&p);
    assert!(!have.iter().any(|l| l.contains("10.42.7.4")), "{have:#?}");
    assert_eq!(
        have.iter().filter(|l| l.contains("-A PREROUTING")).count(),
        1
    );
    // `skiff killall` does the same without a proxy.
    assert!(cleanup_rules(&p).expect("cleanup"));
    assert_eq!(rules_of(&p), Vec::<String>::new());
    assert!(!cleanup_rules(&p).expect("cleanup"));
}

#[test]
fn two_proxies_keep_to_their_own_chains() {
    if skip() {
        return;
    }
    let (pa, pb) = (prefix("two-a"), prefix("two-b"));
    let (_ga, _gb) = (Guard(pa.clone()), Guard(pb.clone()));
    let mut a = Rules::start(&pa).expect("start a");
    let mut b = Rules::start(&pb).expect("start b");
    a.sync(&[service("a", 8083, &["10.42.7.6:80"], false)])
        .expect("sync a");
    b.sync(&[service("b", 8084, &["10.42.7.7:80"], false)])
        .expect("sync b");
    let before_b = rules_of(&pb);
    // A resync and a restart of one leave the other alone.
    a.sync(&[service("a", 8083, &[], false)]).expect("sync a");
    let mut a = Rules::start(&pa).expect("restart a");
    a.sync(&[service("a", 8083, &["10.42.7.8:80"], false)])
        .expect("sync a");
    assert_eq!(rules_of(&pb), before_b);
    a.cleanup().expect("cleanup a");
    assert_eq!(rules_of(&pa), Vec::<String>::new());
    assert_eq!(rules_of(&pb), before_b);
    b.cleanup().expect("cleanup b");
    assert_eq!(rules_of(&pb), Vec::<String>::new());
}
