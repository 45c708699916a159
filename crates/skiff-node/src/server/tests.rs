//! The node server over real TLS: who gets in, the log endpoint's answers, and
//! port-forward into a network namespace the test creates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skiff_runtime::process::ProcessRuntime;
use skiff_runtime::{ContainerSpec, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter};
use super::*;
use crate::streams::ContainerRef;

/// A CA for the test, signing the node's serving certificate and the clients'.
struct TestCa {
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let cert = params.self_signed(&key).expect("ca");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn issue(&self, cn: &str, orgs: &[&str], server: bool) -> ServingCert {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        if server {
            params.subject_alt_names =
                vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// One pod "p" in namespace "ns" with container "c" (one instance), optionally in a netns.
struct OnePod {
    runtime: Arc<ProcessRuntime>,
    netns: Option<PathBuf>,
}

impl ContainerLookup for OnePod {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<ContainerRef, StreamError> {
        if (namespace, pod) != ("ns", "p") {
            return Err(StreamError::NotFound(format!(
                "pod {namespace}/{pod} not found"
            )));
        }
        if container.is_some_and(|c| c != "c") {
            return Err(StreamError::NotFound("container not found".into()));
        }
        if previous {
            return Err(StreamError::BadRequest(
                "previous terminated container \"c\" in pod \"p\" not found".into(),
            ));
        }
        Ok(ContainerRef {
            runtime: self.runtime.clone(),
            id: "c1".into(),
        })
    }

    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, StreamError> {
        if (namespace, pod) != ("ns", "p") {
            return Err(StreamError::NotFound(format!(
                "pod {namespace}/{pod} not found"
            )));
        }
        Ok(self.netns.clone())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    ca: TestCa,
    server: NodeServer,
}

async fn start(netns: Option<PathBuf>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Arc::new(ProcessRuntime::new(dir.path().join("rt")).expect("runtime"));
    runtime
        .create(&ContainerSpec {
            id: "c1".into(),
            command: vec!["sh".into(), "-c".into(), "echo alpha; echo beta".into()],
            ..Default::default()
        })
        .await
        .expect("create");
    runtime.start("c1").await.expect("start");
    runtime.wait("c1").await.expect("wait");
    let ca = TestCa::new();
    let server = NodeServer::start(
        NodeServerConfig {
            bind: "127.0.0.1:0".parse().expect("addr"),
            serving: Some(ca.issue("node", &[], true)),
            ..NodeServerConfig::new(ca.cert_pem.clone())
        },
        Arc::new(OnePod { runtime, netns }),
    )
    .await
    .expect("server");
    Fixture {
        _dir: dir,
        ca,
        server,
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&ServingCert>,
) -> std::io::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let certs: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut c.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("certs");
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut c.key_pem.as_bytes())
                    .expect("key")
                    .expect("a key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    tls.flush().await?;
    Ok(tls)
}

/// Sends a GET and returns (status code, body) of a `Connection: close` answer.
async fn get(
    fx: &Fixture,
    client: Option<&ServingCert>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut tls = connect(fx.server.addr(), &fx.ca.cert_pem, client).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok((
        code,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Undoes chunked transfer encoding (bodies here are small and well-formed).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test]
async fn only_the_api_server_and_admins_get_in() {
    let fx = start(None).await;
    let path = "/containerLogs/ns/p/c";
    let (code, body) = get(&fx, None, path).await.expect("anonymous");
    assert_eq!(code, 401, "{body}");
    let alice = fx.ca.issue("alice", &["devs"], false);
    let (code, body) = get(&fx, Some(&alice), path).await.expect("alice");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("user=alice"), "{body}");
    let admin = fx.ca.issue("bob", &[SYSTEM_MASTERS], false);
    assert_eq!(get(&fx, Some(&admin), path).await.expect("admin").0, 200);
    // A certificate from another CA does not even complete the handshake.
    let other = TestCa::new().issue(API_SERVER_CLIENT_CN, &[], false);
    assert!(get(&fx, Some(&other), path).await.is_err());
    fx.server.shutdown().await;
}

#[tokio::test]
async fn container_logs_answers() {
    let fx = start(None).await;
    let api = fx.ca.issue(API_SERVER_CLIENT_CN, &[], false);
    let (code, body) = get(&fx, Some(&api), "/containerLogs/ns/p/c")
        .await
        .expect("logs");
    assert_eq!((code, body.as_str()), (200, "alpha\nbeta\n"));
    let (code, body) = get(
        &fx,
        Some(&api),
        "/containerLogs/ns/p/c?tailLines=1&follow=true",
    )
    .await
    .expect("tail");
    assert_eq!((code, body.as_str()), (200, "beta\n"));
    let (code, body) = get(&fx, Some(&api), "/containerLogs/ns/p/c?tailLines=x")
        .await
        .expect("bad");
    assert_eq!(code, 400, "{body}");
    let (code, body) = get(&fx, Some(&api), "/containerLogs/ns/p/c?previous=true")
        .await
        .expect("prev");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("previous terminated container"), "{body}");
    let (code, body) = get(&fx, Some(&api), "/containerLogs/ns/nope/c")
        .await
        .expect("404");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("\"kind\":\"Status\""), "{body}");
    let (code, _) = get(&fx, Some(&api), "/containerLogs/ns/p/c/../x")
        .await
        .expect("path");
    assert_eq!(code, 404);
    let (code, body) = get(&fx, Some(&api), "/exec/ns/p/c?command=true")
        .await
        .expect("exec");
    assert_eq!(code, 400, "{body}");
    fx.server.shutdown().await;
}

/// A network namespace for the test, removed on drop.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("skiff-nodetest-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let ns = Netns(name);
        let up = std::process::Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        up.then_some(ns)
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test]
async fn port_forward_reaches_into_the_pod_network_namespace() {
    let Some(netns) = Netns::create() else {
        // Needs root (CAP_SYS_ADMIN) to create a network namespace.
        eprintln!("skipping: cannot create a network namespace");
        return;
    };
    // An echo server listening on 127.0.0.1 inside the namespace only.
    let path = netns.path();
    let listener = std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
        let ns = std::fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        std::net::TcpListener::bind("127.0.0.1:0")
    })
    .join()
    .expect("thread")
    .expect("listener in netns");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let echo = tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    // Nothing listens on that port on the host's loopback.
    let fx = start(Some(netns.path())).await;
    let api = fx.ca.issue(API_SERVER_CLIENT_CN, &[], false);
    let mut tls = connect(fx.server.addr(), &fx.ca.cert_pem, Some(&api))
        .await
        .expect("connect");
    tls.write_all(
        b"POST /portForward/ns/p HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .expect("request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.expect("response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (rd, mut wr) = tokio::io::split(tls);
    let mut frames = FrameReader::new(rd);
    let mut w = FrameWriter::new();
    let p = port.to_string();
    wr.write_all(&w.syn_stream(
        1,
        0,
        &[("streamtype", "error"), ("port", &p), ("requestid", "0")],
    ))
    .await
    .expect("error stream");
    wr.write_all(&w.syn_stream(
        3,
        0,
        &[("streamtype", "data"), ("port", &p), ("requestid", "0")],
    ))
    .await
    .expect("data stream");
    wr.write_all(&FrameWriter::data(
        3,
        FLAG_FIN,
        b"ping through the namespace",
    ))
    .await
    .expect("data");
    let mut echoed = Vec::new();
    let mut error = Vec::new();
    let mut fins = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fins < 2 {
        let frame = tokio::time::timeout_at(deadline, frames.next())
            .await
            .expect("in time")
            .expect("frame")
            .expect("open");
        match frame {
            Frame::Data {
                stream_id: 3,
                flags,
                data,
            } => {
                echoed.extend(data);
                fins += usize::from(flags & FLAG_FIN != 0);
            }
            Frame::Data {
                stream_id: 1,
                flags,
                data,
            } => {
                error.extend(data);
                fins += usize::from(flags & FLAG_FIN != 0);
            }
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&error), "");
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        "ping through the namespace"
    );
    // A port nothing listens on: the reason comes on the error stream.
    wr.write_all(&w.syn_stream(
        5,
        0,
        &[("streamtype", "error"), ("port", "1"), ("requestid", "1")],
    ))
    .await
    .expect("error stream");
    wr.write_all(&w.syn_stream(
        7,
        0,
        &[("streamtype", "data"), ("port", "1"), ("requestid", "1")],
    ))
    .await
    .expect("data stream");
    let mut error = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, frames.next())
            .await
            .expect("in time")
            .expect("frame")
            .expect("open");
        if let Frame::Data {
            stream_id: 5,
            flags,
            data,
        } = frame
        {
            error.extend(data);
            if flags & FLAG_FIN != 0 {
                break;
            }
        }
    }
    let error = String::from_utf8_lossy(&error);
    assert!(
        error.contains("error forwarding port 1 to pod ns/p"),
        "{error}"
    );
    echo.abort();
    fx.server.shutdown().await;
}
