//! Cluster DNS: the record table built from Services and EndpointSlices, and its UDP/TCP server.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

/// Kubernetes' (CoreDNS') TTL for cluster records: short, since pods come and go.
const TTL: u32 = 5;
/// The payload we accept over UDP with EDNS (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(30);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// One record of a name in the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecord {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// ExternalName Services.
    Cname(String),
    /// `_port._proto.<svc>...`: a named port of a Service (or of one headless endpoint).
    Srv {
        port: u16,
        target: String,
    },
    /// Reverse lookups of cluster IPs and named endpoints.
    Ptr(String),
}

impl DnsRecord {
    pub fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => DnsRecord::A(v4),
            IpAddr::V6(v6) => DnsRecord::Aaaa(v6),
        }
    }

    fn record_type(&self) -> RecordType {
        match self {
            DnsRecord::A(_) => RecordType::A,
            DnsRecord::Aaaa(_) => RecordType::AAAA,
            DnsRecord::Cname(_) => RecordType::CNAME,
            DnsRecord::Srv { .. } => RecordType::SRV,
            DnsRecord::Ptr(_) => RecordType::PTR,
        }
    }
}

/// What a name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the cluster domain: someone else's name.
    OutOfZone,
    NxDomain,
    /// The name exists; the records may be empty (an empty non-terminal such as `svc.<domain>`).
    Records(Vec<DnsRecord>),
}

/// Every name of the cluster domain (lower case, no trailing dot) and its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsTable {
    domain: String,
    records: HashMap<String, Vec<DnsRecord>>,
    names: HashSet<String>,
    /// `d.c.b.a.in-addr.arpa` (and ip6.arpa) names of the addresses we know.
    reverse: HashMap<String, Vec<DnsRecord>>,
}

/// The reverse-lookup name of an address.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

impl DnsTable {
    pub fn new(domain: &str) -> Self {
        let mut t = DnsTable {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            ..DnsTable::default()
        };
        let d = t.domain.clone();
        t.add_name(&format!("svc.{d}"));
        t.add_name(&format!("pod.{d}"));
        t
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn service_name(&self, namespace: &str, service: &str) -> String {
        format!(
            "{}.{}.svc.{}",
            service.to_ascii_lowercase(),
            namespace.to_ascii_lowercase(),
            self.domain
        )
    }

    /// Records that `name` (and every name between it and the domain) exists.
    pub fn add_name(&mut self, name: &str) {
        let mut n = name.trim_end_matches('.').to_ascii_lowercase();
        loop {
            if !self.names.insert(n.clone()) || n == self.domain {
                break;
            }
            match n.split_once('.') {
                Some((_, parent)) if parent.len() >= self.domain.len() => n = parent.to_string(),
                _ => break,
            }
        }
    }

    pub fn add(&mut self, name: &str, record: DnsRecord) {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        self.add_name(&n);
        let rs = self.records.entry(n).or_default();
        if !rs.contains(&record) {
            rs.push(record);
        }
    }

    /// Answers reverse lookups of `ip` with `name`.
    pub fn add_reverse(&mut self, ip: IpAddr, name: &str) {
        let rs = self.reverse.entry(reverse_name(ip)).or_default();
        let r = DnsRecord::Ptr(name.trim_end_matches('.').to_ascii_lowercase());
        if !rs.contains(&r) {
            rs.push(r);
        }
    }

    fn in_zone(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(&self.domain)
                .is_some_and(|head| head.ends_with('.'))
    }

    pub fn lookup(&self, name: &str) -> Lookup {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rs) = self.reverse.get(&name) {
            return Lookup::Records(rs.clone());
        }
        if !self.in_zone(&name) {
            return Lookup::OutOfZone;
        }
        if let Some(rs) = self.records.get(&name) {
            return Lookup::Records(rs.clone());
        }
        if self.names.contains(&name) {
            return Lookup::Records(Vec::new());
        }
        // Pod records the way CoreDNS' `pods insecure` answers them: `1-2-3-4.<ns>.pod.<domain>`.
        let pod_zone = format!(".pod.{}", self.domain);
        if let Some(head) = name.strip_suffix(&pod_zone)
            && let Some((ip, ns)) = head.split_once('.')
            && !ns.is_empty()
            && !ns.contains('.')
        {
            if let Ok(v4) = ip.replace('-', ".").parse::<Ipv4Addr>() {
                return Lookup::Records(vec![DnsRecord::A(v4)]);
            }
            if let Ok(v6) = ip.replace('-', ":").parse::<Ipv6Addr>() {
                return Lookup::Records(vec![DnsRecord::Aaaa(v6)]);
            }
        }
        Lookup::NxDomain
    }
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Reply(Vec<u8>),
    /// Out of the cluster domain and an upstream is configured.
    Forward,
    /// Not even a header: nothing to answer to.
    Drop,
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

fn soa(domain: &str) -> Option<Record> {
    let rdata = SOA::new(
        fqdn(&format!("ns.dns.{domain}"))?,
        fqdn(&format!("hostmaster.{domain}"))?,
        1,
        7200,
        1800,
        86400,
        TTL,
    );
    Some(Record::from_rdata(fqdn(domain)?, TTL, RData::SOA(rdata)))
}

fn to_record(name: &Name, r: &DnsRecord) -> Option<Record> {
    let rdata = match r {
        DnsRecord::A(ip) => RData::A(A(*ip)),
        DnsRecord::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        DnsRecord::Cname(t) => RData::CNAME(CNAME(fqdn(t)?)),
        DnsRecord::Srv { port, target } => RData::SRV(SRV::new(0, 100, *port, fqdn(target)?)),
        DnsRecord::Ptr(t) => RData::PTR(PTR(fqdn(t)?)),
    };
    Some(Record::from_rdata(name.clone(), TTL, rdata))
}

/// Answers one DNS request from the table. Over UDP an answer larger than 512 bytes (or the
/// client's EDNS payload size) is truncated so that the client retries over TCP.
pub(crate) fn respond(table: &DnsTable, request: &[u8], udp: bool, can_forward: bool) -> Answer {
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) if request.len() >= 2 => {
            let id = u16::from_be_bytes([request[0], request[1]]);
            return encode(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Answer::Drop,
    };
    if req.metadata.message_type != MessageType::Query {
        return Answer::Drop;
    }
    let id = req.metadata.id;
    let mut resp = Message::response(id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = can_forward;
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        resp.set_edns(edns);
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return encode(resp);
    }
    let [q] = req.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return encode(resp);
    };
    resp.add_query(q.clone());
    let qname = q.name().to_ascii();
    let lookup = table.lookup(&qname);
    let zone = if qname.trim_end_matches('.').ends_with(".arpa") {
        // Our reverse records are single names, not a zone of ours.
        qname.trim_end_matches('.').to_string()
    } else {
        table.domain().to_string()
    };
    if lookup == Lookup::OutOfZone {
        if can_forward {
            return Answer::Forward;
        }
        resp.metadata.response_code = ResponseCode::Refused;
        return encode(resp);
    }
    resp.metadata.authoritative = true;
    if q.query_class() != DNSClass::IN {
        resp.metadata.response_code = ResponseCode::Refused;
        return encode(resp);
    }
    match lookup {
        Lookup::OutOfZone => {}
        Lookup::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authorities(soa(&zone));
        }
        Lookup::Records(rs) => {
            let qt = q.query_type();
            // A CNAME answers every type (its target is outside; the client follows it).
            let cname: Vec<&DnsRecord> = rs
                .iter()
                .filter(|r| matches!(r, DnsRecord::Cname(_)))
                .collect();
            let matching: Vec<&DnsRecord> = if !cname.is_empty() {
                cname
            } else {
                rs.iter()
                    .filter(|r| qt == RecordType::ANY || r.record_type() == qt)
                    .collect()
            };
            let apex = qname
                .trim_end_matches('.')
                .eq_ignore_ascii_case(table.domain());
            if apex && matches!(qt, RecordType::SOA | RecordType::ANY) {
                // The cluster domain is our zone: its SOA is ours to give.
                resp.add_answers(soa(table.domain()));
            } else if matching.is_empty() {
                resp.add_authorities(soa(&zone));
            }
            resp.add_answers(matching.iter().filter_map(|r| to_record(q.name(), r)));
            // Help SRV clients: the targets' addresses.
            if qt == RecordType::SRV {
                for r in &matching {
                    if let DnsRecord::Srv { target, .. } = r
                        && let (Lookup::Records(addrs), Some(n)) =
                            (table.lookup(target), fqdn(target))
                    {
                        resp.add_additionals(addrs.iter().filter_map(|a| to_record(&n, a)));
                    }
                }
            }
        }
    }
    let limit = if udp {
        req.edns
            .as_ref()
            .map_or(512, |e| e.max_payload().clamp(512, EDNS_PAYLOAD)) as usize
    } else {
        usize::MAX
    };
    match resp.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Answer::Reply(bytes),
        Ok(_) => encode(resp.truncate()),
        Err(_) => encode(Message::error_msg(
            id,
            OpCode::Query,
            ResponseCode::ServFail,
        )),
    }
}

fn encode(m: Message) -> Answer {
    match m.to_vec() {
        Ok(b) => Answer::Reply(b),
        Err(e) => {
            tracing::warn!("encoding a DNS answer: {e}");
            Answer::Drop
        }
    }
}

fn servfail(request: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

/// Sends the request to the upstream server over UDP and returns its answer (SERVFAIL when
/// it does not answer in time).
async fn forward(upstream: SocketAddr, request: Vec<u8>) -> Option<Vec<u8>> {
    let attempt = async {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(upstream).await?;
        sock.send(&request).await?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = sock.recv(&mut buf).await?;
            if n >= 2 && buf[..2] == request[..2] {
                return Ok::<_, std::io::Error>(buf[..n].to_vec());
            }
        }
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(e)) => {
            tracing::debug!("DNS upstream {upstream}: {e}");
            servfail(&request)
        }
        Err(_) => servfail(&request),
    }
}

/// The DNS server's sockets, serving whatever table is current.
pub(crate) struct DnsServer {
    pub udp: tokio::task::JoinHandle<()>,
    pub tcp: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start(
        addr: SocketAddr,
        table: watch::Receiver<Arc<DnsTable>>,
        upstream: Option<SocketAddr>,
    ) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        let udp_task = tokio::spawn(serve_udp(Arc::new(udp), table.clone(), upstream));
        let tcp_task = tokio::spawn(serve_tcp(tcp, table, upstream));
        Ok(DnsServer {
            udp: udp_task,
            tcp: tcp_task,
        })
    }

    pub fn abort(&self) {
        self.udp.abort();
        self.tcp.abort();
    }
}

async fn serve_udp(
    sock: Arc<UdpSocket>,
    table: watch::Receiver<Arc<DnsTable>>,
    upstream: Option<SocketAddr>,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!("DNS UDP receive: {e}");
                continue;
            }
        };
        let request = &buf[..n];
        let current = table.borrow().clone();
        match respond(&current, request, true, upstream.is_some()) {
            Answer::Reply(bytes) => {
                if let Err(e) = sock.send_to(&bytes, peer).await {
                    tracing::debug!("DNS UDP answer to {peer}: {e}");
                }
            }
            Answer::Forward => {
                if let Some(up) = upstream {
                    let sock = sock.clone();
                    let request = request.to_vec();
                    tokio::spawn(async move {
                        if let Some(answer) = forward(up, request).await {
                            let _ = sock.send_to(&answer, peer).await;
                        }
                    });
                }
            }
            Answer::Drop => {}
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    table: watch::Receiver<Arc<DnsTable>>,
    upstream: Option<SocketAddr>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_tcp_conn(stream, table.clone(), upstream));
            }
            Err(e) => {
                tracing::debug!("DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_tcp_conn(
    mut stream: TcpStream,
    table: watch::Receiver<Arc<DnsTable>>,
    upstream: Option<SocketAddr>,
) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut request = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let current = table.borrow().clone();
        let answer = match respond(&current, &request, false, upstream.is_some()) {
            Answer::Reply(b) => Some(b),
            Answer::Forward => match upstream {
                Some(up) => forward(up, request).await,
                None => None,
            },
            Answer::Drop => None,
        };
        let Some(answer) = answer else { return };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Builds a query (for tests and the bench tools).
pub fn query_bytes(id: u16, name: &str, rtype: RecordType) -> Option<Vec<u8>> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(fqdn(name)?, rtype));
    m.to_vec().ok()
}

/// The answer's response code and the addresses/targets it carries (for tests and tools).
pub fn parse_answer(bytes: &[u8]) -> Option<(ResponseCode, Vec<String>)> {
    let m = Message::from_vec(bytes).ok()?;
    let data = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::CNAME(c) => c.0.to_ascii(),
            RData::SRV(s) => format!("{} {}", s.port, s.target.to_ascii()),
            RData::PTR(p) => p.0.to_ascii(),
            other => other.to_string(),
        })
        .collect();
    Some((m.metadata.response_code, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DnsTable {
        let mut t = DnsTable::new("cluster.local");
        let web = t.service_name("default", "web");
        t.add(&web, DnsRecord::A(Ipv4Addr::new(10, 43, 0, 5)));
        t.add(
            &format!("_http._tcp.{web}"),
            DnsRecord::Srv {
                port: 80,
                target: web.clone(),
            },
        );
        let ext = t.service_name("default", "ext");
        t.add(&ext, DnsRecord::Cname("example.com".into()));
        t
    }

    fn ask(t: &DnsTable, name: &str, rt: RecordType) -> (ResponseCode, Vec<String>) {
        let q = query_bytes(7, name, rt).expect("query");
        match respond(t, &q, true, false) {
            Answer::Reply(b) => parse_answer(&b).expect("answer"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn answers_service_names_case_insensitively() {
        let t = table();
        assert_eq!(
            ask(&t, "web.default.svc.cluster.local", RecordType::A),
            (ResponseCode::NoError, vec!["10.43.0.5".to_string()])
        );
        assert_eq!(
            ask(&t, "WEB.Default.svc.cluster.local.", RecordType::A).1,
            vec!["10.43.0.5".to_string()]
        );
    }

    #[test]
    fn existing_name_without_that_type_is_nodata_not_nxdomain() {
        let t = table();
        assert_eq!(
            ask(&t, "web.default.svc.cluster.local", RecordType::AAAA),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            ask(&t, "default.svc.cluster.local", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            ask(&t, "cluster.local", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn the_cluster_domain_has_an_soa() {
        let t = table();
        let q = query_bytes(3, "cluster.local", RecordType::SOA).expect("query");
        let Answer::Reply(b) = respond(&t, &q, true, false) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&b).expect("message");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_foreign_names_refused() {
        let t = table();
        assert_eq!(
            ask(&t, "nope.default.svc.cluster.local", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(
                &t,
                "web.default.svc.cluster.local.default.svc.cluster.local",
                RecordType::A
            )
            .0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&t, "example.com", RecordType::A).0,
            ResponseCode::Refused
        );
        // A name that merely ends like the domain is not in it.
        assert_eq!(
            ask(&t, "notcluster.local", RecordType::A).0,
            ResponseCode::Refused
        );
        let q = query_bytes(9, "example.com", RecordType::A).expect("query");
        assert_eq!(respond(&t, &q, true, true), Answer::Forward);
    }

    #[test]
    fn srv_cname_and_pod_records() {
        let t = table();
        assert_eq!(
            ask(
                &t,
                "_http._tcp.web.default.svc.cluster.local",
                RecordType::SRV
            )
            .1,
            vec!["80 web.default.svc.cluster.local.".to_string()]
        );
        assert_eq!(
            ask(&t, "ext.default.svc.cluster.local", RecordType::A).1,
            vec!["example.com.".to_string()]
        );
        assert_eq!(
            ask(&t, "10-42-0-7.default.pod.cluster.local", RecordType::A).1,
            vec!["10.42.0.7".to_string()]
        );
        assert_eq!(
            ask(&t, "10-42-0.default.pod.cluster.local", RecordType::A).0,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn reverse_lookups_of_known_addresses() {
        let mut t = table();
        t.add_reverse(
            IpAddr::V4(Ipv4Addr::new(10, 43, 0, 5)),
            "web.default.svc.cluster.local",
        );
        assert_eq!(
            ask(&t, "5.0.43.10.in-addr.arpa", RecordType::PTR),
            (
                ResponseCode::NoError,
                vec!["web.default.svc.cluster.local.".to_string()]
            )
        );
        assert_eq!(
            ask(&t, "6.0.43.10.in-addr.arpa", RecordType::PTR).0,
            ResponseCode::Refused
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().expect("ip")),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let t = table();
        assert_eq!(respond(&t, &[1], true, false), Answer::Drop);
        match respond(&t, &[0x12, 0x34, 0xff], true, false) {
            Answer::Reply(b) => {
                let m = Message::from_vec(&b).expect("message");
                assert_eq!(m.metadata.id, 0x1234);
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn large_udp_answers_are_truncated() {
        let mut t = DnsTable::new("cluster.local");
        let name = t.service_name("default", "many");
        for i in 0..100u8 {
            t.add(&name, DnsRecord::A(Ipv4Addr::new(10, 42, 1, i)));
        }
        let q = query_bytes(1, &name, RecordType::A).expect("query");
        let Answer::Reply(b) = respond(&t, &q, true, false) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&b).expect("message");
        assert!(m.metadata.truncation);
        assert!(b.len() <= 512);
        let Answer::Reply(b) = respond(&t, &q, false, false) else {
            panic!("no reply")
        };
        assert_eq!(parse_answer(&b).expect("answer").1.len(), 100);
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;

    /// A fake upstream on loopback that answers every query with 127.0.0.99.
    async fn fake_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                if let Some(q) = req.queries.first() {
                    resp.add_query(q.clone());
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(Ipv4Addr::new(127, 0, 0, 99))),
                    ));
                }
                let _ = sock.send_to(&resp.to_vec().expect("encode"), peer).await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn forwards_foreign_names_to_the_upstream() {
        let (up, task) = fake_upstream().await;
        let q = query_bytes(77, "example.com", RecordType::A).expect("query");
        let answer = forward(up, q).await.expect("answer");
        let (code, data) = parse_answer(&answer).expect("parse");
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(data, vec!["127.0.0.99".to_string()]);
        task.abort();
    }

    #[tokio::test]
    async fn silent_upstream_gives_servfail() {
        // Bound but never answering.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let q = query_bytes(78, "example.com", RecordType::A).expect("query");
        let answer = forward(silent.local_addr().expect("addr"), q)
            .await
            .expect("answer");
        assert_eq!(
            parse_answer(&answer).expect("parse").0,
            ResponseCode::ServFail
        );
    }

    #[tokio::test]
    async fn server_answers_over_udp_and_tcp() {
        // The server binds one address for both protocols: find a port free for both.
        let (udp, tcp) = loop {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            let port = u.local_addr().expect("addr").port();
            if let Ok(t) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                break (u, t);
            }
        };
        let addr = udp.local_addr().expect("addr");
        drop((udp, tcp));
        let mut t = DnsTable::new("cluster.local");
        t.add(
            "web.default.svc.cluster.local",
            DnsRecord::A(Ipv4Addr::new(10, 43, 0, 5)),
        );
        let (tx, rx) = watch::channel(Arc::new(t));
        let server = DnsServer::start(addr, rx, None).await.expect("start");
        let q = query_bytes(5, "web.default.svc.cluster.local", RecordType::A).expect("query");

        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client.send_to(&q, addr).await.expect("send");
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        assert_eq!(
            parse_answer(&buf[..n]).expect("parse").1,
            vec!["10.43.0.5".to_string()]
        );

        // A new table is served at once, and TCP serves several queries on one connection.
        tx.send_replace(Arc::new(DnsTable::new("cluster.local")));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        for _ in 0..2 {
            let mut msg = (q.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&q);
            s.write_all(&msg).await.expect("send");
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.expect("len");
            let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut answer).await.expect("answer");
            assert_eq!(
                parse_answer(&answer).expect("parse").0,
                ResponseCode::NXDomain
            );
        }
        server.abort();
    }
}
