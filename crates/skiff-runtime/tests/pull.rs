//! Pulling from a real registry (Debian `docker-registry`) on 127.0.0.1 filled with `skopeo`:
//! tags, digests, dedup, not-found, Basic auth from a pull secret, corrupted blobs and the
//! pull policies. Skipped (with the reason printed) when those programs are missing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use skiff_runtime::images::ImageStore;
use skiff_runtime::images::pull::{
    Credentials, PullError, PullOptions, PullPolicy, credentials_for, ensure_image, pull,
};
use skiff_runtime::testimages::{Layer, TestImage};

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const HTPASSWD: &str = "/usr/bin/htpasswd";

/// A registry process on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    creds: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn have(tool: &str, what: &str) -> bool {
    if Path::new(tool).exists() {
        return true;
    }
    eprintln!("skipping pull test: {tool} not installed ({what})");
    false
}

impl Registry {
    /// Starts a registry; `basic_auth` puts it behind htpasswd Basic auth.
    fn start(basic_auth: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_with(basic_auth, None)
    }

    /// `tls`: (certificate PEM, key PEM) to serve HTTPS with.
    fn start_with(basic_auth: Option<(&str, &str)>, tls: Option<(&str, &str)>) -> Option<Registry> {
        if !have(REGISTRY, "apt-get install docker-registry")
            || !have(SKOPEO, "apt-get install skopeo")
        {
            return None;
        }
        if basic_auth.is_some() && !have(HTPASSWD, "apt-get install apache2-utils") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        let port = free_port();
        let mut auth = String::new();
        if let Some((user, pass)) = basic_auth {
            let out = Command::new(HTPASSWD)
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            );
        }
        let mut tls_config = String::new();
        if let Some((cert, key)) = tls {
            let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&c, cert).expect("write cert");
            std::fs::write(&k, key).expect("write key");
            tls_config = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{tls_config}{auth}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let reg = Registry {
            child,
            port,
            storage,
            creds: basic_auth.map(|(u, p)| (u.to_string(), p.to_string())),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen: {}",
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `image` as `<host>/<name>` with skopeo (plain HTTP).
    fn push(&self, image: &TestImage, name: &str) {
        let archive = self.dir.path().join(format!("{}.tar", rand_suffix()));
        std::fs::write(&archive, image.oci_archive().expect("archive")).expect("write archive");
        let mut cmd = Command::new(SKOPEO);
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.host()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(archive);
    }

    /// Path of a blob's data file in the registry's filesystem storage.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

fn app_image(version: &str) -> TestImage {
    TestImage::new("test/app:v1")
        .layer(Layer::new().gzip().dir("etc", 0o755).file(
            "etc/hello",
            b"hello from the registry\n".to_vec(),
            0o644,
        ))
        .layer(Layer::new().file("version", version.as_bytes().to_vec(), 0o644))
        .cmd(&["/bin/true"])
}

fn store() -> (ImageStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (
        ImageStore::open(dir.path().join("images")).expect("store"),
        dir,
    )
}

/// Every file under the store (path and content), to show a failed pull changed nothing.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                let content = std::fs::read(&p).expect("read");
                out.push((p, content));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn pulls_by_tag_and_digest_without_refetching() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.push(&app_image("v1"), "test/app:v1");
    let (store, dir) = store();
    let opts = PullOptions::default();
    let name = format!("{}/test/app:v1", reg.host());

    let pulled = pull(&store, &name, &opts).await.expect("pull");
    assert_eq!(pulled.reference, name);
    assert_eq!(pulled.blobs_fetched, 3, "config and two layers");
    assert!(pulled.bytes_fetched > 0);
    let rootfs = dir.path().join("rootfs");
    let image = store.unpack(&name, &rootfs).expect("unpack");
    assert_eq!(image.manifest_digest, pulled.manifest_digest);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hello")).expect("etc/hello"),
        "hello from the registry\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).expect("version"),
        "v1"
    );

    let again = pull(&store, &name, &opts).await.expect("second pull");
    assert_eq!((again.blobs_fetched, again.bytes_fetched), (0, 0));
    assert_eq!(again.manifest_digest, pulled.manifest_digest);

    let by_digest = format!("{}/test/app@{}", reg.host(), pulled.manifest_digest);
    let d = pull(&store, &by_digest, &opts)
        .await
        .expect("pull by digest");
    assert_eq!(d.manifest_digest, pulled.manifest_digest);
    assert_eq!(d.blobs_fetched, 0);
    assert_eq!(
        store
            .resolve(&by_digest)
            .expect("resolve by digest")
            .manifest_digest,
        pulled.manifest_digest
    );

    for missing in [
        format!("{}/test/app:nope", reg.host()),
        format!("{}/test/other:v1", reg.host()),
    ] {
        match pull(&store, &missing, &opts).await {
            Err(e @ PullError::NotFound { .. }) => {
                assert!(e.to_string().contains("not found"), "{e}");
                assert_eq!(e.reason(), "ErrImagePull");
            }
            other => panic!("{missing}: expected not found, got {other:?}"),
        }
    }
    let wrong_digest = format!("{}/test/app@sha256:{}", reg.host(), "0".repeat(64));
    assert!(matches!(
        pull(&store, &wrong_digest, &opts).await,
        Err(PullError::NotFound { .. })
    ));
}

#[tokio::test]
async fn basic_auth_with_credentials_from_a_pull_secret() {
    let Some(reg) = Registry::start(Some(("puller", "s3cret"))) else {
        return;
    };
    reg.push(&app_image("auth"), "private/app:v1");
    let (store, _dir) = store();
    let name = format!("{}/private/app:v1", reg.host());

    let anonymous = pull(&store, &name, &PullOptions::default()).await;
    match anonymous {
        Err(e @ PullError::Unauthorized(_)) => assert!(e.to_string().starts_with("unauthorized:")),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    let wrong = PullOptions {
        credentials: Some(Credentials {
            username: "puller".into(),
            password: "wrong".into(),
        }),
        ..Default::default()
    };
    assert!(matches!(
        pull(&store, &name, &wrong).await,
        Err(PullError::Unauthorized(_))
    ));
    assert!(store.list().expect("list").is_empty());

    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret");
    let secret = serde_json::json!({"auths": {
        "other.example:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("x:y")},
        format!("http://{}/v1/", reg.host()): {"auth": auth},
    }})
    .to_string();
    let creds = credentials_for(secret.as_bytes(), &reg.host()).expect("credentials match");
    let opts = PullOptions {
        credentials: Some(creds),
        ..Default::default()
    };
    let pulled = pull(&store, &name, &opts)
        .await
        .expect("pull with credentials");
    assert_eq!(pulled.blobs_fetched, 3);
    assert_eq!(
        store.resolve(&name).expect("resolve").manifest_digest,
        pulled.manifest_digest
    );
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_store_unchanged() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    // Something already stored, so "unchanged" means more than "empty".
    let (store, _dir) = store();
    store
        .import(std::io::Cursor::new(
            TestImage::new("local/keep:v1")
                .layer(Layer::new().file("keep", b"keep".to_vec(), 0o644))
                .oci_archive()
                .expect("archive"),
        ))
        .expect("import");
    reg.push(&app_image("corrupt"), "test/app:v1");
    let name = format!("{}/test/app:v1", reg.host());

    // Find the layers through a throwaway pull, then flip bytes of one in the registry.
    let (probe, _probe_dir) = store_probe();
    let pulled = pull(&probe, &name, &PullOptions::default())
        .await
        .expect("probe pull");
    let image = probe.resolve(&name).expect("resolve");
    let layer = image.manifest.layers()[1].digest().to_string();
    let data = reg.blob_data(&layer);
    let mut bytes = std::fs::read(&data).expect("registry blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).expect("tamper");
    assert!(pulled.blobs_fetched > 0);

    let before = snapshot(store.root());
    match pull(&store, &name, &PullOptions::default()).await {
        Err(PullError::Image(e)) => assert!(e.to_string().contains("digest mismatch"), "{e}"),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(
        snapshot(store.root()),
        before,
        "a failed pull changed the store"
    );
}

fn store_probe() -> (ImageStore, tempfile::TempDir) {
    store()
}

#[tokio::test]
async fn pull_policies_follow_the_kubelet() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let (store, _dir) = store();
    let opts = PullOptions::default();
    let name = format!("{}/test/app:v1", reg.host());

    match ensure_image(&store, &name, PullPolicy::Never, &opts).await {
        Err(e @ PullError::NeverPull(_)) => assert_eq!(e.reason(), "ErrImageNeverPull"),
        other => panic!("expected ErrImageNeverPull, got {other:?}"),
    }
    // Not in the registry yet either: IfNotPresent has to ask it, and fails.
    assert!(matches!(
        ensure_image(&store, &name, PullPolicy::IfNotPresent, &opts).await,
        Err(PullError::NotFound { .. })
    ));

    reg.push(&app_image("one"), "test/app:v1");
    let first = ensure_image(&store, &name, PullPolicy::IfNotPresent, &opts)
        .await
        .expect("IfNotPresent pulls a missing image");
    let never = ensure_image(&store, &name, PullPolicy::Never, &opts)
        .await
        .expect("Never uses the local image");
    assert_eq!(never.manifest_digest, first.manifest_digest);

    // The tag moves in the registry: IfNotPresent keeps the local image, Always follows.
    reg.push(&app_image("two"), "test/app:v1");
    let kept = ensure_image(&store, &name, PullPolicy::IfNotPresent, &opts)
        .await
        .expect("IfNotPresent");
    assert_eq!(kept.manifest_digest, first.manifest_digest);
    let updated = ensure_image(&store, &name, PullPolicy::Always, &opts)
        .await
        .expect("Always");
    assert_ne!(updated.manifest_digest, first.manifest_digest);
    assert_eq!(
        store.resolve(&name).expect("resolve").manifest_digest,
        updated.manifest_digest
    );
    let same = ensure_image(&store, &name, PullPolicy::Always, &opts)
        .await
        .expect("Always, unchanged");
    assert_eq!(same.manifest_digest, updated.manifest_digest);

    // Always needs the registry: with it gone, the pull fails even though the image is here.
    drop(reg);
    assert!(matches!(
        ensure_image(&store, &name, PullPolicy::Always, &opts).await,
        Err(PullError::Transport { .. })
    ));
    ensure_image(&store, &name, PullPolicy::IfNotPresent, &opts)
        .await
        .expect("IfNotPresent works offline");
}

#[test]
fn cli_pull_then_ls() {
    use skiff_runtime::cli::{ImagesCommand, run_images};
    let Some(reg) = Registry::start(None) else {
        return;
    };
    reg.push(&app_image("cli"), "test/app:v1");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("images");
    let pull = |reference: String| ImagesCommand::Pull {
        reference,
        insecure: false,
        ca_file: None,
        username: None,
        password: None,
    };
    run_images(&root, pull(format!("{}/test/app:v1", reg.host()))).expect("images pull");
    let listed = ImageStore::open(&root)
        .expect("store")
        .list()
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, format!("{}/test/app:v1", reg.host()));
    assert!(run_images(&root, pull(format!("{}/test/app:v9", reg.host()))).is_err());
}

#[tokio::test]
async fn https_with_a_ca_file() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pull-test-ca");
    let ca_cert = ca_params.self_signed(&key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, key);
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::default();
    leaf.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("sign");
    let Some(reg) = Registry::start_with(None, Some((&leaf_cert.pem(), &leaf_key.serialize_pem())))
    else {
        return;
    };
    reg.push(&app_image("tls"), "test/app:v1");
    let (store, dir) = store();
    let name = format!("{}/test/app:v1", reg.host());
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write ca");

    // Unknown CA: the TLS handshake fails.
    let untrusted = PullOptions {
        plain_http_for_loopback: false,
        ..Default::default()
    };
    match pull(&store, &name, &untrusted).await {
        Err(e @ PullError::Transport { .. }) => assert!(e.to_string().contains("TLS"), "{e}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    let trusted = PullOptions {
        plain_http_for_loopback: false,
        ca_file: Some(ca_file),
        ..Default::default()
    };
    let pulled = pull(&store, &name, &trusted)
        .await
        .expect("pull over HTTPS");
    assert_eq!(pulled.blobs_fetched, 3);
}

/// A registry in this process that wants the Bearer token flow, redirects blob GETs and
/// serves a multi-platform index, an oversized manifest and a redirect loop.
mod fake {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    pub const TOKEN: &str = "tok-123";

    pub struct Fake {
        pub port: u16,
        /// Tag or digest -> (media type, body).
        pub manifests: HashMap<String, (String, Vec<u8>)>,
        pub blobs: HashMap<String, Vec<u8>>,
        pub basic: String,
        pub token_requests: AtomicUsize,
        pub scopes: std::sync::Mutex<Vec<String>>,
    }

    fn authorized(headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|a| a.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }

    pub async fn v2(
        State(st): State<Arc<Fake>>,
        headers: HeaderMap,
        Path(rest): Path<String>,
    ) -> Response {
        if !authorized(&headers) {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\",scope=\"repository:team/app:pull\"",
                st.port
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
                .into_response();
        }
        if let Some(reference) = rest.strip_prefix("team/app/manifests/") {
            if reference == "loop" {
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/v2/team/app/manifests/loop")],
                )
                    .into_response();
            }
            return match st.manifests.get(reference) {
                Some((mt, body)) => {
                    ([(header::CONTENT_TYPE, mt.clone())], body.clone()).into_response()
                }
                None => (
                    StatusCode::NOT_FOUND,
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                )
                    .into_response(),
            };
        }
        if let Some(digest) = rest.strip_prefix("team/app/blobs/") {
            // Like registries backed by object storage: the blob lives on another origin.
            return (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    header::LOCATION,
                    format!("http://localhost:{}/storage/{digest}", st.port),
                )],
            )
                .into_response();
        }
        StatusCode::NOT_FOUND.into_response()
    }

    pub async fn storage(
        State(st): State<Arc<Fake>>,
        headers: HeaderMap,
        Path(digest): Path<String>,
    ) -> Response {
        // The registry's token must not leak to the storage it redirects to.
        if headers.contains_key(header::AUTHORIZATION) {
            return StatusCode::BAD_REQUEST.into_response();
        }
        match st.blobs.get(&digest) {
            Some(b) => b.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }

    pub async fn token(
        State(st): State<Arc<Fake>>,
        headers: HeaderMap,
        axum::extract::RawQuery(query): axum::extract::RawQuery,
    ) -> Response {
        st.token_requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut s) = st.scopes.lock() {
            s.push(query.unwrap_or_default());
        }
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|a| a.to_str().ok())
            == Some(st.basic.as_str());
        if !ok {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        axum::Json(serde_json::json!({"token": TOKEN})).into_response()
    }
}

async fn start_fake() -> (
    std::sync::Arc<fake::Fake>,
    tokio::task::JoinHandle<()>,
    String,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let files = app_image("bearer").oci_archive_files().expect("files");
    let mut blobs = std::collections::HashMap::new();
    for (path, body) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), body.clone());
        }
    }
    let index: serde_json::Value = files
        .iter()
        .find(|(p, _)| p == "index.json")
        .map(|(_, b)| serde_json::from_slice(b).expect("index"))
        .expect("index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let manifest = blobs[&manifest_digest].clone();
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json".to_string();
    let other_arch = if skiff_runtime::images::host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let multi = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci_manifest, "size": 10,
             "digest": format!("sha256:{}", "e".repeat(64)),
             "platform": {"os": "linux", "architecture": other_arch}},
            {"mediaType": oci_manifest, "size": manifest.len(), "digest": manifest_digest,
             "platform": {"os": "linux", "architecture": skiff_runtime::images::host_arch()}},
        ],
    }))
    .expect("index");
    let mut huge = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": oci_manifest,
        "annotations": {"pad": "x".repeat(5 << 20)},
    }))
    .expect("huge");
    huge.push(b'\n');
    let mut manifests = std::collections::HashMap::new();
    manifests.insert("v1".to_string(), (oci_manifest.clone(), manifest.clone()));
    manifests.insert(manifest_digest.clone(), (oci_manifest.clone(), manifest));
    manifests.insert(
        "multi".to_string(),
        ("application/vnd.oci.image.index.v1+json".to_string(), multi),
    );
    manifests.insert("huge".to_string(), (oci_manifest, huge));
    let state = std::sync::Arc::new(fake::Fake {
        port,
        manifests,
        blobs,
        basic: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        ),
        token_requests: Default::default(),
        scopes: Default::default(),
    });
    let app = axum::Router::new()
        .route("/v2/{*rest}", axum::routing::get(fake::v2))
        .route("/storage/{digest}", axum::routing::get(fake::storage))
        .route("/token", axum::routing::get(fake::token))
        .with_state(state.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, server, format!("127.0.0.1:{port}"))
}

#[tokio::test]
async fn bearer_token_flow_redirects_index_and_limits() {
    let (fake, server, host) = start_fake().await;
    let (store, dir) = store();
    let alice = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "pw".into(),
        }),
        ..Default::default()
    };
    let name = format!("{host}/team/app:v1");

    match pull(&store, &name, &PullOptions::default()).await {
        Err(e @ PullError::Unauthorized(_)) => assert!(e.to_string().contains("token"), "{e}"),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    let pulled = pull(&store, &name, &alice)
        .await
        .expect("pull with a token");
    assert_eq!(pulled.blobs_fetched, 3);
    let scopes = fake.scopes.lock().expect("scopes").clone();
    assert!(
        scopes
            .iter()
            .all(|q| q.contains("service=fake")
                && q.contains("scope=repository%3Ateam%2Fapp%3Apull")),
        "{scopes:?}"
    );
    let rootfs = dir.path().join("rootfs");
    store.unpack(&name, &rootfs).expect("unpack");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("version")).expect("version"),
        "bearer"
    );

    // A multi-platform index resolves to this machine's manifest.
    let multi = pull(&store, &format!("{host}/team/app:multi"), &alice)
        .await
        .expect("pull index");
    assert_eq!(multi.manifest_digest, pulled.manifest_digest);
    assert_eq!(multi.blobs_fetched, 0);

    let before = snapshot(store.root());
    assert!(matches!(
        pull(&store, &format!("{host}/team/app:huge"), &alice).await,
        Err(PullError::ManifestTooLarge { .. })
    ));
    match pull(&store, &format!("{host}/team/app:loop"), &alice).await {
        Err(e @ PullError::Registry { .. }) => assert!(e.to_string().contains("redirects"), "{e}"),
        other => panic!("expected too many redirects, got {other:?}"),
    }
    assert!(matches!(
        pull(&store, &format!("{host}/team/app:gone"), &alice).await,
        Err(PullError::NotFound { .. })
    ));
    assert_eq!(snapshot(store.root()), before);
    assert!(
        fake.token_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    server.abort();
}
