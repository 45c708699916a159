//! Picks the endpoint for a new connection: round-robin, or sticky per client with ClientIP affinity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Past this many remembered clients, expired affinity entries are swept on the next pick.
const AFFINITY_SWEEP: usize = 4096;

/// The endpoints of one Service port and the state to spread connections over them. Shared
/// by every listener of that port (cluster IP, node port, load balancer), so a client keeps
/// its endpoint whichever address it uses, as with kube-proxy.
#[derive(Debug, Default)]
pub struct Balancer {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    endpoints: Vec<SocketAddr>,
    next: usize,
    affinity: Option<Duration>,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    pub fn new(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Self {
        let b = Balancer::default();
        b.update(endpoints, affinity);
        b
    }

    /// Replaces the endpoints that get new connections. Clients stuck to an endpoint that is
    /// gone (or no longer ready) are moved on their next connection.
    pub fn update(&self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        let mut s = self.lock();
        if affinity.is_none() {
            s.sticky.clear();
        } else {
            s.sticky.retain(|_, (ep, _)| endpoints.contains(ep));
        }
        s.endpoints = endpoints;
        s.affinity = affinity;
    }

    /// Whether `endpoint` still takes new traffic.
    pub fn contains(&self, endpoint: SocketAddr) -> bool {
        self.lock().endpoints.contains(&endpoint)
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.lock().endpoints.clone()
    }

    /// The endpoint for a new connection from `client`, skipping `exclude` (endpoints that
    /// already refused this connection). `None` when no endpoint is left.
    pub fn pick(&self, client: IpAddr, exclude: &[SocketAddr], now: Instant) -> Option<SocketAddr> {
        let mut s = self.lock();
        if let Some(timeout) = s.affinity {
            if s.sticky.len() > AFFINITY_SWEEP {
                s.sticky
                    .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
            }
            let current = s.sticky.get(&client).copied();
            if let Some((ep, last)) = current
                && now.saturating_duration_since(last) < timeout
                && !exclude.contains(&ep)
                && s.endpoints.contains(&ep)
            {
                s.sticky.insert(client, (ep, now));
                return Some(ep);
            }
        }
        let n = s.endpoints.len();
        let start = s.next;
        let chosen = (0..n)
            .map(|i| (start + i) % n.max(1))
            .find(|&i| !exclude.contains(&s.endpoints[i]))?;
        s.next = (chosen + 1) % n;
        let ep = s.endpoints[chosen];
        if s.affinity.is_some() {
            s.sticky.insert(client, (ep, now));
        }
        Some(ep)
    }

    /// Forgets `client`'s endpoint (it refused the connection), so the next pick moves on.
    pub fn unstick(&self, client: IpAddr, endpoint: SocketAddr) {
        let mut s = self.lock();
        if s.sticky.get(&client).is_some_and(|(ep, _)| *ep == endpoint) {
            s.sticky.remove(&client);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is always consistent between statements, so a panic elsewhere while the
        // lock was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn client(i: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, i])
    }

    #[test]
    fn round_robin_over_endpoints() {
        let b = Balancer::new(vec![ep("1.1.1.1:80"), ep("2.2.2.2:80")], None);
        let now = Instant::now();
        let picks: Vec<_> = (0..4).filter_map(|_| b.pick(client(1), &[], now)).collect();
        assert_eq!(
            picks,
            vec![
                ep("1.1.1.1:80"),
                ep("2.2.2.2:80"),
                ep("1.1.1.1:80"),
                ep("2.2.2.2:80")
            ]
        );
    }

    #[test]
    fn no_endpoint_means_no_pick_and_exclusions_are_skipped() {
        let b = Balancer::new(vec![], None);
        assert_eq!(b.pick(client(1), &[], Instant::now()), None);
        b.update(vec![ep("1.1.1.1:80"), ep("2.2.2.2:80")], None);
        let now = Instant::now();
        assert_eq!(
            b.pick(client(1), &[ep("1.1.1.1:80")], now),
            Some(ep("2.2.2.2:80"))
        );
        assert_eq!(
            b.pick(client(1), &[ep("1.1.1.1:80"), ep("2.2.2.2:80")], now),
            None
        );
    }

    #[test]
    fn client_ip_affinity_sticks_until_timeout_or_endpoint_leaves() {
        let t = Duration::from_secs(10);
        let b = Balancer::new(vec![ep("1.1.1.1:80"), ep("2.2.2.2:80")], Some(t));
        let now = Instant::now();
        let first = b.pick(client(1), &[], now).expect("pick");
        for i in 1..5 {
            assert_eq!(
                b.pick(client(1), &[], now + Duration::from_secs(i)),
                Some(first)
            );
        }
        // Another client gets the next endpoint.
        let other = b.pick(client(2), &[], now).expect("pick");
        assert_ne!(other, first);
        // Idle past the timeout: round-robin again.
        let later = now + Duration::from_secs(30);
        let again = b.pick(client(1), &[], later).expect("pick");
        assert_eq!(b.pick(client(1), &[], later), Some(again));
        // The endpoint goes away: the client moves.
        let remaining: Vec<_> = [ep("1.1.1.1:80"), ep("2.2.2.2:80")]
            .into_iter()
            .filter(|e| *e != again)
            .collect();
        b.update(remaining.clone(), Some(t));
        assert_eq!(b.pick(client(1), &[], later), Some(remaining[0]));
    }

    #[test]
    fn turning_affinity_off_forgets_clients() {
        let b = Balancer::new(
            vec![ep("1.1.1.1:80"), ep("2.2.2.2:80")],
            Some(Duration::from_secs(100)),
        );
        let now = Instant::now();
        let first = b.pick(client(1), &[], now).expect("pick");
        b.update(b.endpoints(), None);
        assert_ne!(b.pick(client(1), &[], now), Some(first));
    }
}
