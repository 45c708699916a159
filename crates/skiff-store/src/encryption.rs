//! Encryption at rest: a `Store` wrapper that seals the values of chosen keys (Secrets) with
//! AES-256-GCM in Kubernetes' `k8s:enc:aesgcm:v1:<key name>:` envelope.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use rand::RngCore;

use crate::{
    Capabilities, Event, KeyValue, RangeOptions, RangeResult, Result, Revision, Store, StoreError,
    WatchStream,
};

/// What every sealed value starts with, before the key name.
const ENVELOPE: &[u8] = b"k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;
/// The name `load_or_create` gives its key.
pub const DEFAULT_KEY_NAME: &str = "key1";
/// The prefix encrypted by default, as in a typical EncryptionConfiguration.
pub const SECRETS_PREFIX: &str = "/registry/secrets/";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} does not hold a base64-encoded 32-byte key")]
    Invalid { path: PathBuf },
    #[error("key name {0:?} must be non-empty and must not contain ':'")]
    InvalidName(String),
}

/// One AES-256 key and the name written into every value it seals.
#[derive(Clone)]
pub struct EncryptionKey {
    name: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    pub fn new(name: &str, secret: [u8; 32]) -> std::result::Result<Self, KeyFileError> {
        if name.is_empty() || name.contains(':') {
            return Err(KeyFileError::InvalidName(name.to_string()));
        }
        Ok(EncryptionKey {
            name: name.to_string(),
            secret,
        })
    }

    /// A fresh random key.
    pub fn generate(name: &str) -> std::result::Result<Self, KeyFileError> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        EncryptionKey::new(name, secret)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key as written to a key file (standard base64, like an EncryptionConfiguration secret).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.secret)
    }

    /// Reads the key file at `path`, or creates it (mode 0600) with a new random key.
    pub fn load_or_create(path: &Path) -> std::result::Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::parse(path, &text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io(err)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let key = EncryptionKey::generate(DEFAULT_KEY_NAME)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                    .map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                Self::parse(path, &text)
            }
            Err(err) => Err(io(err)),
        }
    }

    fn parse(path: &Path, text: &str) -> std::result::Result<Self, KeyFileError> {
        let invalid = || KeyFileError::Invalid {
            path: path.to_path_buf(),
        };
        let bytes = BASE64.decode(text.trim()).map_err(|_| invalid())?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| invalid())?;
        EncryptionKey::new(DEFAULT_KEY_NAME, secret)
    }
}

/// Which keys are sealed, with which key; `old_keys` can still open values sealed before a
/// key rotation.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    pub prefixes: Vec<String>,
    pub key: EncryptionKey,
    pub old_keys: Vec<EncryptionKey>,
}

impl EncryptionConfig {
    /// Seals Secrets only, the usual Kubernetes set-up.
    pub fn secrets(key: EncryptionKey) -> Self {
        EncryptionConfig {
            prefixes: vec![SECRETS_PREFIX.to_string()],
            key,
            old_keys: Vec::new(),
        }
    }
}

/// Wraps a store so that values under the configured prefixes are sealed before they reach it
/// and opened on every way out (get, range, delete, watch). The storage key is bound into each
/// seal (GCM associated data), so a sealed value copied to another key does not open.
pub struct EncryptingStore<S> {
    inner: S,
    prefixes: Vec<String>,
    key_name: String,
    cipher: Aes256Gcm,
    opener: Arc<Opener>,
}

/// Every key that can open sealed values, by name; shared with watch streams.
struct Opener {
    keys: HashMap<String, Aes256Gcm>,
}

fn cipher(key: &EncryptionKey) -> Aes256Gcm {
    Aes256Gcm::new(&key.secret.into())
}

impl<S: Store> EncryptingStore<S> {
    pub fn new(inner: S, config: EncryptionConfig) -> Self {
        let mut openers: HashMap<String, Aes256Gcm> = config
            .old_keys
            .iter()
            .map(|k| (k.name.clone(), cipher(k)))
            .collect();
        openers.insert(config.key.name.clone(), cipher(&config.key));
        EncryptingStore {
            inner,
            prefixes: config.prefixes,
            key_name: config.key.name.clone(),
            cipher: cipher(&config.key),
            opener: Arc::new(Opener { keys: openers }),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn sealed(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        if !self.sealed(key) {
            return Ok(value);
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &value,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Backend(format!("cannot encrypt {key:?}")))?;
        let mut out = Vec::with_capacity(
            ENVELOPE.len() + self.key_name.len() + 1 + NONCE_LEN + ciphertext.len(),
        );
        out.extend_from_slice(ENVELOPE);
        out.extend_from_slice(self.key_name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }
}

impl Opener {
    /// Opens a sealed value; a value without the envelope was written before encryption was
    /// enabled and is returned as it is.
    fn open(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        let Some(rest) = value.strip_prefix(ENVELOPE) else {
            return Ok(value);
        };
        let bad = |why: &str| StoreError::Backend(format!("cannot decrypt {key:?}: {why}"));
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("no key name"))?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| bad("bad key name"))?;
        let opener = self
            .keys
            .get(name)
            .ok_or_else(|| bad(&format!("unknown key {name:?}")))?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(bad("truncated"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        opener
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| bad("authentication failed"))
    }

    fn open_kv(&self, mut kv: KeyValue) -> Result<KeyValue> {
        kv.value = self.open(&kv.key, std::mem::take(&mut kv.value))?;
        Ok(kv)
    }

    fn open_event(&self, event: Event) -> Result<Event> {
        Ok(match event {
            Event::Put { kv, prev } => Event::Put {
                kv: self.open_kv(kv)?,
                prev: prev.map(|p| self.open_kv(p)).transpose()?,
            },
            Event::Delete { prev, revision } => Event::Delete {
                prev: self.open_kv(prev)?,
                revision,
            },
        })
    }
}

#[async_trait]
impl<S: Store> Store for EncryptingStore<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.opener.open_kv(kv))
            .transpose()
    }

    async fn range(&self, prefix: &str, opts: RangeOptions) -> Result<RangeResult> {
        let mut result = self.inner.range(prefix, opts).await?;
        result.kvs = result
            .kvs
            .into_iter()
            .map(|kv| self.opener.open_kv(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(result)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        let value = self.seal(key, value)?;
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<Revision> {
        let value = self.seal(key, value)?;
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<(KeyValue, Revision)> {
        let (prev, revision) = self.inner.delete(key, expected).await?;
        Ok((self.opener.open_kv(prev)?, revision))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let stream = self.inner.watch(prefix, after).await?;
        // The stream outlives `&self`, so it carries its own copy of the openers.
        let opener = self.opener.clone();
        Ok(stream
            .map(move |item| item.and_then(|event| opener.open_event(event)))
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{SqliteOptions, SqliteStore};

    type Sealed = EncryptingStore<Arc<SqliteStore>>;

    fn sqlite(dir: &Path) -> Arc<SqliteStore> {
        SqliteStore::open(&dir.join("store.db"), SqliteOptions::default()).expect("open")
    }

    fn key(name: &str) -> EncryptionKey {
        EncryptionKey::generate(name).expect("key")
    }

    /// Seals every key, so the whole conformance suite runs through encryption.
    fn sealed_store() -> (Arc<Sealed>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EncryptionConfig {
            prefixes: vec!["/".into()],
            key: key("k1"),
            old_keys: vec![],
        };
        (
            Arc::new(EncryptingStore::new(sqlite(dir.path()), config)),
            dir,
        )
    }

    mod conformance {
        crate::store_conformance_tests!(super::sealed_store);
    }

    fn file_bytes(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        for name in ["store.db", "store.db-wal", "store.db-shm"] {
            if let Ok(mut b) = std::fs::read(dir.join(name)) {
                bytes.append(&mut b);
            }
        }
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn secret_plaintext_never_reaches_the_database_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = sqlite(dir.path());
        let store = EncryptingStore::new(inner.clone(), EncryptionConfig::secrets(key("key1")));
        let secret = br#"{"kind":"Secret","data":{"password":"aHVudGVyMi1zd29yZGZpc2g="}}"#;
        let plain = br#"{"kind":"ConfigMap","data":{"color":"blue-whale-marker"}}"#;
        let rev = store
            .create("/registry/secrets/default/db", secret.to_vec())
            .await
            .expect("create");
        store
            .update("/registry/secrets/default/db", secret.to_vec(), rev)
            .await
            .expect("update");
        store
            .create("/registry/configmaps/default/cm", plain.to_vec())
            .await
            .expect("create");

        let on_disk = file_bytes(dir.path());
        assert!(
            contains(&on_disk, b"blue-whale-marker"),
            "the scan must see unencrypted values"
        );
        assert!(
            !contains(&on_disk, b"aHVudGVyMi1zd29yZGZpc2g="),
            "secret plaintext is on disk"
        );
        assert!(contains(&on_disk, b"k8s:enc:aesgcm:v1:key1:"));

        let stored = inner
            .get("/registry/secrets/default/db")
            .await
            .expect("get")
            .expect("present");
        assert!(stored.value.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        let read = store
            .get("/registry/secrets/default/db")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(read.value, secret);
        let listed = store
            .range("/registry/secrets/", RangeOptions::default())
            .await
            .expect("range");
        assert_eq!(listed.kvs[0].value, secret);
        let (deleted, _) = store
            .delete("/registry/secrets/default/db", 0)
            .await
            .expect("delete");
        assert_eq!(deleted.value, secret);
    }

    #[tokio::test]
    async fn values_written_before_encryption_read_as_plaintext() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = sqlite(dir.path());
        inner
            .create("/registry/secrets/ns/old", b"legacy".to_vec())
            .await
            .expect("create");
        let store = EncryptingStore::new(inner.clone(), EncryptionConfig::secrets(key("key1")));
        let kv = store
            .get("/registry/secrets/ns/old")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(kv.value, b"legacy");
        store
            .update(
                "/registry/secrets/ns/old",
                b"legacy".to_vec(),
                kv.mod_revision,
            )
            .await
            .expect("update");
        let raw = inner
            .get("/registry/secrets/ns/old")
            .await
            .expect("get")
            .expect("present");
        assert!(raw.value.starts_with(ENVELOPE), "a rewrite seals the value");
    }

    #[tokio::test]
    async fn a_sealed_value_does_not_open_under_another_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = sqlite(dir.path());
        let store = EncryptingStore::new(inner.clone(), EncryptionConfig::secrets(key("key1")));
        store
            .create("/registry/secrets/ns/a", b"for a".to_vec())
            .await
            .expect("create");
        let sealed = inner
            .get("/registry/secrets/ns/a")
            .await
            .expect("get")
            .expect("present");
        inner
            .create("/registry/secrets/ns/b", sealed.value.clone())
            .await
            .expect("create");
        assert!(matches!(
            store.get("/registry/secrets/ns/b").await,
            Err(StoreError::Backend(_))
        ));

        let mut tampered = sealed.value;
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        inner
            .update("/registry/secrets/ns/a", tampered, 0)
            .await
            .expect("update");
        assert!(matches!(
            store.get("/registry/secrets/ns/a").await,
            Err(StoreError::Backend(_))
        ));
    }

    #[tokio::test]
    async fn rotated_keys_still_open_old_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = sqlite(dir.path());
        let (old, new) = (key("old"), key("new"));
        let before = EncryptingStore::new(inner.clone(), EncryptionConfig::secrets(old.clone()));
        before
            .create("/registry/secrets/ns/a", b"one".to_vec())
            .await
            .expect("create");

        let config = EncryptionConfig {
            old_keys: vec![old],
            ..EncryptionConfig::secrets(new)
        };
        let after = EncryptingStore::new(inner.clone(), config);
        let kv = after
            .get("/registry/secrets/ns/a")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(kv.value, b"one");
        after
            .create("/registry/secrets/ns/b", b"two".to_vec())
            .await
            .expect("create");
        let raw = inner
            .get("/registry/secrets/ns/b")
            .await
            .expect("get")
            .expect("present");
        assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:new:"));
        // Without the old key the old value cannot be read.
        let forgetful = EncryptingStore::new(inner, EncryptionConfig::secrets(key("new")));
        assert!(forgetful.get("/registry/secrets/ns/a").await.is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/encryption.key");
        let created = EncryptionKey::load_or_create(&path).expect("create");
        let loaded = EncryptionKey::load_or_create(&path).expect("load");
        assert_eq!(created.to_base64(), loaded.to_base64());
        assert_eq!(loaded.name(), DEFAULT_KEY_NAME);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(BASE64.decode(text.trim()).expect("base64").len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_ne!(created.to_base64(), key("other").to_base64());
    }

    #[test]
    fn bad_key_files_and_names_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short.key");
        std::fs::write(&path, BASE64.encode([1u8; 16])).expect("write");
        assert!(matches!(
            EncryptionKey::load_or_create(&path),
            Err(KeyFileError::Invalid { .. })
        ));
        std::fs::write(&path, "not base64!").expect("write");
        assert!(matches!(
            EncryptionKey::load_or_create(&path),
            Err(KeyFileError::Invalid { .. })
        ));
        assert!(matches!(
            EncryptionKey::new("a:b", [0; 32]),
            Err(KeyFileError::InvalidName(_))
        ));
        assert!(matches!(
            EncryptionKey::new("", [0; 32]),
            Err(KeyFileError::InvalidName(_))
        ));
    }
}
