//! The pod subresources the node serves — `log`, `exec`, `attach`, `portforward` — proxied
//! like kube-apiserver does to the kubelet: find the pod's node, connect to its streaming
//! server with the API server's client certificate, and relay the answer (streamed, or
//! spliced byte for byte after a protocol upgrade).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;
use skiff_api::ApiError;
use skiff_api::registry;

use crate::ApiServer;
use crate::request::ResourcePath;
use crate::response::{self, Failure, HandlerResult};

/// Common name of the API server's client certificate towards nodes (as Kubernetes').
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The kubelet's default port, used when a Node does not publish its own.
pub const DEFAULT_NODE_PORT: u16 = 10250;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `sub` is a pod subresource served by the node.
pub fn is_node_subresource(sub: &str) -> bool {
    matches!(sub, "log" | "exec" | "attach" | "portforward")
}

/// Query parameters the node understands, per subresource (the rest, e.g. `container` or
/// `pretty`, is for the API server).
fn forwarded_param(sub: &str, key: &str) -> bool {
    match sub {
        "log" => matches!(
            key,
            "follow"
                | "previous"
                | "timestamps"
                | "sinceSeconds"
                | "sinceTime"
                | "tailLines"
                | "limitBytes"
                | "stream"
        ),
        "exec" | "attach" => matches!(key, "command" | "stdin" | "stdout" | "stderr" | "tty"),
        "portforward" => key == "ports",
        _ => false,
    }
}

/// Headers of an upgrade handshake passed to the node and back.
fn upgrade_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "connection"
        || n == "upgrade"
        || n.starts_with("sec-websocket-")
        || n.starts_with("x-stream-protocol-")
}

/// Serves `GET pods/log` and the upgrade requests of exec, attach and portforward.
pub async fn serve(api: Arc<ApiServer>, rp: &ResourcePath, req: Request) -> HandlerResult {
    let sub = rp.subresource.as_deref().unwrap_or_default();
    let (Some(ns), Some(name)) = (rp.namespace.as_deref(), rp.name.as_deref()) else {
        return Err(ApiError::NoRoute.into());
    };
    match (sub, req.method().as_str()) {
        ("log", "GET") | ("exec" | "attach" | "portforward", "GET" | "POST") => {}
        _ => return Err(ApiError::MethodNotAllowed.into()),
    }
    let pod = load(&api, rp.def, Some(ns), name).await?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let query = req.uri().query().unwrap_or_default().to_string();
    let node_path = match sub {
        "portforward" => format!("/portForward/{ns}/{name}"),
        _ => {
            let container = pick_container(&pod, name, &query)?;
            let prefix = match sub {
                "log" => "containerLogs",
                other => other,
            };
            format!("/{prefix}/{ns}/{name}/{container}")
        }
    };
    let forwarded: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| forwarded_param(sub, k))
        .collect();
    let uri = if forwarded.is_empty() {
        node_path
    } else {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(forwarded)
            .finish();
        format!("{node_path}?{q}")
    };
    let node_def = registry::lookup("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let node = load(&api, node_def, None, node_name).await?;
    let addr = node_address(&node).ok_or_else(|| ApiError::ServiceUnavailable {
        message: format!("node {node_name:?} has no address to reach it by"),
    })?;
    let tls = api.kubelet_tls().map_err(Failure)?;
    if sub == "log" {
        return proxy_plain(addr, tls, uri, req).await;
    }
    proxy_upgrade(addr, tls, uri, req).await
}

async fn load(
    api: &ApiServer,
    def: &'static registry::ResourceDef,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, Failure> {
    match api.store.get(&def.key(ns, name)).await {
        Ok(Some(kv)) => Ok(crate::storage::decode(&kv)?),
        Ok(None) => Err(ApiError::not_found(def.group, def.plural, name).into()),
        Err(e) => Err(crate::storage::store_error(def, name, e).into()),
    }
}

/// The container a log/exec/attach request is about, checked against the pod spec and
/// worded like kube-apiserver when it is missing or unknown.
fn pick_container(pod: &Value, pod_name: &str, query: &str) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (containers, init, ephemeral) = (
        names("containers"),
        names("initContainers"),
        names("ephemeralContainers"),
    );
    let requested = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    match requested {
        Some(c) if containers.contains(&c) || init.contains(&c) || ephemeral.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The node's `InternalIP` (else any address) and its `daemonEndpoints` port.
fn node_address(node: &Value) -> Option<SocketAddr> {
    let addresses = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?;
    let by_type = |t: &str| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .find_map(|a| {
                a.get("address")
                    .and_then(Value::as_str)?
                    .parse::<IpAddr>()
                    .ok()
            })
    };
    let ip = by_type("InternalIP").or_else(|| by_type("ExternalIP"))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_NODE_PORT);
    Some(SocketAddr::new(ip, port))
}

type NodeSender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<NodeSender, ApiError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| ApiError::ServiceUnavailable {
        message: format!("error dialing backend: {what} {addr}: {e}"),
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| unavailable("connecting to", &e))?
        .map_err(|e| unavailable("connecting to", &e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp),
    )
    .await
    .map_err(|e| unavailable("TLS handshake with", &e))?
    .map_err(|e| unavailable("TLS handshake with", &e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable("HTTP handshake with", &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node connection ended");
        }
    });
    Ok(sender)
}

fn node_request(
    addr: SocketAddr,
    uri: &str,
    req: &Request,
    pass_upgrade: bool,
) -> Result<http::Request<http_body_util::Empty<bytes::Bytes>>, ApiError> {
    let mut b = http::Request::builder()
        .method(req.method().clone())
        .uri(uri)
        .header(header::HOST, addr.to_string());
    if pass_upgrade {
        for (k, v) in req.headers() {
            if upgrade_header(k.as_str()) {
                b = b.header(k, v);
            }
        }
    }
    b.body(http_body_util::Empty::new())
        .map_err(|e| ApiError::internal(format!("building the node request: {e}")))
}

/// A node error answer as a `Status` (the node sends one; plain text is wrapped).
async fn node_failure(resp: http::Response<hyper::body::Incoming>) -> Response {
    let code = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    if let Ok(status) = serde_json::from_slice::<Value>(&body)
        && status.get("kind").and_then(Value::as_str) == Some("Status")
    {
        return response::json(code, &status);
    }
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let e = match code.as_u16() {
        400 => ApiError::bad_request(message),
        401 | 403 => ApiError::Forbidden { message },
        404 => ApiError::NotFound {
            group: String::new(),
            resource: "pods/log".into(),
            name: message,
        },
        _ => ApiError::internal(message),
    };
    response::error(e)
}

/// `pods/log`: the node's answer streamed back as it comes (`kubectl logs -f`).
async fn proxy_plain(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    uri: String,
    req: Request,
) -> HandlerResult {
    let mut sender = connect(addr, tls).await?;
    let node_req = node_request(addr, &uri, &req, false)?;
    let resp = sender
        .send_request(node_req)
        .await
        .map_err(|e| ApiError::ServiceUnavailable {
            message: format!("error talking to node {addr}: {e}"),
        })?;
    if !resp.status().is_success() {
        return Ok(node_failure(resp).await);
    }
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}

/// exec / attach / portforward: the client's upgrade request goes to the node; on `101`
/// both connections are upgraded and spliced, so the client and the node speak their
/// protocol (WebSocket channels, SPDY) end to end.
async fn proxy_upgrade(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    uri: String,
    mut req: Request,
) -> HandlerResult {
    if req.version() != http::Version::HTTP_11 {
        return Err(ApiError::bad_request(
            "exec, attach and portforward need an HTTP/1.1 connection upgrade",
        )
        .into());
    }
    let mut sender = connect(addr, tls).await?;
    let node_req = node_request(addr, &uri, &req, true)?;
    let mut resp =
        sender
            .send_request(node_req)
            .await
            .map_err(|e| ApiError::ServiceUnavailable {
                message: format!("error talking to node {addr}: {e}"),
            })?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(node_failure(resp).await);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let node_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if upgrade_header(k.as_str()) {
            out.headers_mut().append(k, v.clone());
        }
    }
    tokio::spawn(async move {
        let (client, node) = match tokio::join!(client_upgrade, node_upgrade) {
            (Ok(c), Ok(n)) => (c, n),
            (c, n) => {
                tracing::debug!(client = ?c.err(), node = ?n.err(), "stream upgrade failed");
                return;
            }
        };
        let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
            tracing::debug!(error = %e, "stream proxy ended");
        }
    });
    Ok(out)
}

/// The TLS client configuration towards nodes: the API server's client certificate; the
/// node's self-signed serving certificate is not checked against a CA (kube-apiserver
/// without `--kubelet-certificate-authority` does the same), but its handshake signature is.
pub fn kubelet_client_config(
    client: &crate::pki::CertAndKey,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("parsing the kubelet client certificate: {e}"))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
        .map_err(|e| format!("parsing the kubelet client key: {e}"))?
        .ok_or("no private key in the kubelet client key")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServingCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("loading the kubelet client certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any node serving certificate but verifies the handshake signature with it.
#[derive(Debug)]
struct NodeServingCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NodeServingCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_choice_is_worded_like_kubernetes() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "init"}]}});
        assert_eq!(pick_container(&pod, "p", "container=b").unwrap(), "b");
        assert_eq!(pick_container(&pod, "p", "container=init").unwrap(), "init");
        assert_eq!(
            pick_container(&pod, "p", "container=zz")
                .unwrap_err()
                .to_string(),
            "container zz is not valid for pod p"
        );
        assert_eq!(
            pick_container(&pod, "p", "follow=true")
                .unwrap_err()
                .to_string(),
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [init]"
        );
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&single, "p", "").unwrap(), "only");
    }

    #[test]
    fn node_address_prefers_internal_ip_and_published_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"},
                          {"type": "ExternalIP", "address": "127.0.0.2"},
                          {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}}}});
        assert_eq!(node_address(&node), Some("127.0.0.1:4321".parse().unwrap()));
        let bare =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(node_address(&bare), Some("10.0.0.1:10250".parse().unwrap()));
        assert_eq!(node_address(&json!({})), None);
    }

    #[test]
    fn only_node_parameters_are_forwarded() {
        assert!(forwarded_param("log", "tailLines"));
        assert!(!forwarded_param("log", "container"));
        assert!(forwarded_param("exec", "command"));
        assert!(!forwarded_param("exec", "pretty"));
        assert!(forwarded_param("portforward", "ports"));
    }
}
