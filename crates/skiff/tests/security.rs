//! End-to-end security: every request needs a valid credential, HTTPS only, client
//! certificates from the cluster CA only, and Secrets never in plain text on disk.

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skiff_testkit::{TestCluster, kubectl_bin, stderr, stdout};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

fn cluster() -> TestCluster {
    TestCluster::start(env!("CARGO_BIN_EXE_skiff"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A kubeconfig for the cluster with the given `user:` block (YAML, indented 4).
fn kubeconfig_with_user(c: &TestCluster, name: &str, user: &str) -> PathBuf {
    let path = c.data_dir().join(format!("{name}.kubeconfig"));
    let ca = b64(read(&c.ca_path()).as_bytes());
    let server = &c.server;
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    std::fs::write(&path, yaml).expect("writing kubeconfig");
    path
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Output {
    std::process::Command::new(kubectl_bin())
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(args)
        .output()
        .expect("running kubectl")
}

fn assert_unauthorized(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "{what}: kubectl succeeded: {}",
        stdout(out)
    );
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{what}: unexpected error: {err}"
    );
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .expect("PEM key")
        .expect("a private key")
}

/// A TLS client trusting only the cluster CA, optionally presenting a client certificate.
fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, k)) => builder
            .with_client_auth_cert(certs(cert), key(k))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// An HTTP/1.1 GET over TLS to the cluster as `host`; the status code and raw response, or
/// the TLS/IO error (e.g. a refused handshake).
fn https_get(
    port: u16,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let name = ServerName::try_from(host.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    tls.flush()?;
    let mut buf = Vec::new();
    // The server may close without close_notify; what arrived before that is the answer.
    let mut chunk = [0u8; 8192];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Ok((code, text))
}

fn assert_status_401(resp: &(u16, String), what: &str) {
    assert_eq!(resp.0, 401, "{what}: {}", resp.1);
    let body = &resp.1;
    assert!(
        body.contains("\"kind\":\"Status\"") && body.contains("\"code\":401"),
        "{what}: no Status body: {body}"
    );
    assert!(body.contains("Unauthorized"), "{what}: {body}");
}

#[test]
fn no_credential_or_wrong_token_is_401() {
    let c = cluster();
    // kubectl prompts for a password when the user entry is empty; a blank token file is how
    // it can be made to send a request that carries no usable credential.
    let blank = c.data_dir().join("blank.token");
    std::fs::write(&blank, " ").expect("writing the blank token file");
    let anon = kubeconfig_with_user(&c, "anon", &format!("    tokenFile: {}", blank.display()));
    assert_unauthorized(&kubectl_with(&anon, &["get", "pods"]), "no credential");
    let wrong = kubeconfig_with_user(&c, "wrong", "    token: not-the-token-0123456789");
    assert_unauthorized(&kubectl_with(&wrong, &["get", "namespaces"]), "wrong token");

    let tls = tls_client(&read(&c.ca_path()), None);
    for path in ["/api", "/api/v1/namespaces/default/secrets", "/apis"] {
        let resp = https_get(c.port, "127.0.0.1", tls.clone(), path, None).expect("HTTPS request");
        assert_status_401(&resp, &format!("anonymous GET {path}"));
    }
    let resp = https_get(
        c.port,
        "127.0.0.1",
        tls.clone(),
        "/api/v1/secrets",
        Some("wrong"),
    )
    .expect("HTTPS request");
    assert_status_401(&resp, "wrong token");
    // The same request with the real token works: the 401s above are about the credential.
    let resp = https_get(
        c.port,
        "127.0.0.1",
        tls,
        "/api/v1/namespaces",
        Some(&c.token()),
    )
    .expect("HTTPS request");
    assert_eq!(resp.0, 200, "{}", resp.1);
    assert!(resp.1.contains("kube-system"));
}

#[test]
fn plain_http_is_refused() {
    let c = cluster();
    let mut tcp = TcpStream::connect(("127.0.0.1", c.port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)
        .expect("the server answers and closes");
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(
        answer.contains("Client sent an HTTP request to an HTTPS server."),
        "{answer:?}"
    );
    assert!(
        !answer.contains("apiVersion") && !answer.contains("versions"),
        "data leaked over plain HTTP: {answer:?}"
    );
}

#[test]
fn client_certificates_from_the_cluster_ca_only() {
    let c = cluster();
    let pki = c.data_dir().join("pki");
    let (cert, k) = (read(&pki.join("admin.crt")), read(&pki.join("admin.key")));
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}",
        b64(cert.as_bytes()),
        b64(k.as_bytes())
    );
    let good = kubeconfig_with_user(&c, "cert", &user);
    let out = kubectl_with(&good, &["get", "namespaces", "-o", "name"]);
    assert!(
        out.status.success(),
        "admin client certificate refused: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("namespace/kube-system"));
    let resp = https_get(
        c.port,
        "localhost",
        tls_client(&read(&c.ca_path()), Some((&cert, &k))),
        "/api/v1/namespaces",
        None,
    )
    .expect("HTTPS with the admin certificate");
    assert_eq!(resp.0, 200, "{}", resp.1);

    // The same identity (CN admin, O system:masters) from a CA the cluster never heard of.
    let foreign_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "skiff-ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let foreign_ca = rcgen::Issuer::new(ca_params, foreign_key);
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::default();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    leaf.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &foreign_ca).expect("signing");
    // And a plain self-signed one with that identity.
    let self_key = rcgen::KeyPair::generate().expect("key");
    let mut self_params = rcgen::CertificateParams::default();
    self_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    self_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    let self_signed = self_params.self_signed(&self_key).expect("self-signing");
    for (label, cert, key) in [
        ("foreign-ca", leaf_cert.pem(), leaf_key.serialize_pem()),
        ("self-signed", self_signed.pem(), self_key.serialize_pem()),
    ] {
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}",
            b64(cert.as_bytes()),
            b64(key.as_bytes())
        );
        let kc = kubeconfig_with_user(&c, label, &user);
        let out = kubectl_with(&kc, &["get", "namespaces"]);
        assert!(
            !out.status.success(),
            "a {label} client certificate was accepted: {}",
            stdout(&out)
        );
        // Either the handshake is refused or the request is anonymous; never data.
        match https_get(
            c.port,
            "localhost",
            tls_client(&read(&c.ca_path()), Some((&cert, &key))),
            "/api/v1/namespaces",
            None,
        ) {
            Err(_) => {}
            Ok(resp) => assert_status_401(&resp, label),
        }
    }
}

#[test]
fn serving_certificate_verifies_for_loopback_names() {
    let c = cluster();
    let tls = tls_client(&read(&c.ca_path()), None);
    for host in ["127.0.0.1", "localhost"] {
        let resp = https_get(c.port, host, tls.clone(), "/readyz", Some(&c.token()))
            .unwrap_or_else(|e| panic!("TLS to {host} did not verify against the cluster CA: {e}"));
        assert_eq!(resp.0, 200, "{}", resp.1);
    }
    // A name the certificate does not carry must fail: verification is really happening.
    let err = https_get(c.port, "skiff.invalid", tls, "/readyz", None);
    assert!(
        err.is_err(),
        "certificate accepted for a name it does not carry"
    );
}

/// Whether `needle` occurs anywhere in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading the data dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn secrets_are_not_readable_in_plain_text_in_the_data_file() {
    let c = cluster();
    let secret = "skiff-canary-s3cr3t-9f2c41d7";
    let visible = "skiff-canary-configmap-5b8e03a6";
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "canary",
        &format!("--from-literal=password={secret}"),
    ]);
    c.kubectl_ok(&[
        "create",
        "configmap",
        "canary",
        &format!("--from-literal=note={visible}"),
    ]);
    // Updates go through the same path: the new value must not leak either.
    let secret2 = "skiff-canary-rotated-77e1aa09";
    let patch = format!(
        "{{\"data\":{{\"password\":\"{}\"}}}}",
        b64(secret2.as_bytes())
    );
    c.kubectl_ok(&["patch", "secret", "canary", "--type=merge", "-p", &patch]);
    let got = c.kubectl_ok(&["get", "secret", "canary", "-o", "jsonpath={.data.password}"]);
    assert_eq!(
        got.trim(),
        b64(secret2.as_bytes()),
        "the Secret does not read back through the API"
    );

    let all = files(c.data_dir());
    let names: Vec<String> = all
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        names.iter().any(|n| n == "state.db"),
        "no state.db in {names:?}"
    );
    let mut found_visible = false;
    for path in &all {
        let bytes = std::fs::read(path).expect("reading a data file");
        for s in [secret, secret2] {
            for needle in [s.to_string(), b64(s.as_bytes())] {
                assert!(
                    !contains(&bytes, needle.as_bytes()),
                    "{needle:?} is readable in {}",
                    path.display()
                );
            }
        }
        found_visible |= contains(&bytes, visible.as_bytes());
    }
    assert!(
        found_visible,
        "the ConfigMap marker is in no data file ({names:?}): the scan proves nothing"
    );
}

#[test]
fn data_dir_and_key_files_are_private() {
    let c = cluster();
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(c.data_dir()), 0o700, "data dir mode");
    let d = c.data_dir();
    for f in [
        "encryption.key",
        "tokens.csv",
        "kubeconfig.yaml",
        "pki/ca.key",
        "pki/admin.key",
    ] {
        let p = d.join(f);
        assert_eq!(mode(&p), 0o600, "{} mode", p.display());
    }
    for f in files(&d.join("pki")) {
        if f.extension().is_some_and(|e| e == "key") {
            assert_eq!(mode(&f), 0o600, "{} mode", f.display());
        }
    }
}
