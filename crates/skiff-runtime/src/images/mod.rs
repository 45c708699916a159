//! Content-addressed local image store (an OCI image layout on disk): import, list, remove, unpack.
//!
//! Layout under the store root: `oci-layout`, `index.json` (an OCI image index whose
//! descriptors carry the normalised reference in `org.opencontainers.image.ref.name`),
//! `blobs/sha256/<hex>`, `tmp/` for staging imports and `lock` serialising writers.

mod import;
pub mod pull;
mod reference;
mod unpack;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

pub use import::ImportedImage;
pub use reference::{DEFAULT_DOMAIN, DEFAULT_TAG, Reference};
pub use unpack::{apply_layer, decompressed, extract_layer_for_overlay};

/// Annotation the OCI image layout uses to name an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Annotation Docker and containerd put on `index.json` entries with the full image name.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image reference {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("unsafe path {path:?} in layer: {reason}")]
    UnsafePath { path: String, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("malformed {what}: {message}")]
    Malformed { what: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn malformed(what: impl Into<String>, message: impl ToString) -> Self {
        ImageError::Malformed {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// One row of `images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalised reference, e.g. `docker.io/library/ml-api:v1`.
    pub reference: String,
    pub repository: String,
    pub tag: Option<String>,
    /// Digest of the image manifest (`sha256:...`).
    pub manifest_digest: String,
    /// Digest of the image config, what Docker calls the image ID.
    pub image_id: String,
    /// Bytes the image's blobs take in the store (manifest, config, layers as stored).
    pub size: u64,
    /// `created` from the image config (RFC 3339), if the image says.
    pub created: Option<String>,
}

/// A reference resolved to its manifest and config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub reference: String,
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// The store. Cheap to open; every mutation holds an exclusive `flock` on `<root>/lock`, so
/// several processes (the CLI and a running node) may share one root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// Exclusive lock on the store, released on drop (closing the file releases the flock).
pub(crate) struct StoreLock(#[allow(dead_code)] File);

impl ImageStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .map_err(|e| ImageError::io(format!("creating {}", blobs.display()), e))?;
        std::fs::create_dir_all(root.join("tmp"))
            .map_err(|e| ImageError::io("creating tmp dir", e))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(ImageStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob by digest (`sha256:<hex>`); only sha256 is stored.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
            .ok_or_else(|| ImageError::Unsupported(format!("digest {digest:?}")))?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    pub(crate) fn lock(&self) -> Result<StoreLock, ImageError> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io("opening store lock", e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| ImageError::io("locking store", e.into()))?;
        Ok(StoreLock(file))
    }

    fn read_index(&self) -> Result<ImageIndex, ImageError> {
        let path = self.root.join("index.json");
        match File::open(&path) {
            Ok(f) => ImageIndex::from_reader(io::BufReader::new(f))
                .map_err(|e| ImageError::malformed("store index.json", e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => empty_index(),
            Err(e) => Err(ImageError::io("reading store index", e)),
        }
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), ImageError> {
        let body = index
            .to_string_pretty()
            .map_err(|e| ImageError::malformed("store index", e))?;
        write_atomic(&self.root.join("index.json"), body.as_bytes())
    }

    fn read_blob_json<T>(
        &self,
        digest: &str,
        parse: impl FnOnce(io::BufReader<File>) -> oci_spec::Result<T>,
    ) -> Result<T, ImageError> {
        let path = self.blob_path(digest)?;
        let f =
            File::open(&path).map_err(|e| ImageError::io(format!("opening blob {digest}"), e))?;
        parse(io::BufReader::new(f)).map_err(|e| ImageError::malformed(format!("blob {digest}"), e))
    }

    fn manifest(&self, digest: &str) -> Result<ImageManifest, ImageError> {
        self.read_blob_json(digest, ImageManifest::from_reader)
    }

    fn config(&self, manifest: &ImageManifest) -> Result<ImageConfiguration, ImageError> {
        self.read_blob_json(
            manifest.config().digest().as_ref(),
            ImageConfiguration::from_reader,
        )
    }

    /// Imports a `docker save` or OCI image-layout tar archive, verifying every digest.
    /// Importing the same archive twice changes nothing.
    pub fn import(&self, reader: impl io::Read) -> Result<Vec<ImportedImage>, ImageError> {
        let _lock = self.lock()?;
        import::import(self, reader)
    }

    /// Records `reference -> manifest` in the index, replacing what the reference named.
    fn tag(&self, index: &mut ImageIndex, reference: &str, manifest: &Descriptor) {
        // A name replaces what it named before, and an unnamed entry of the same image.
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| match ref_name(d) {
                Some(name) => name != reference,
                None => d.digest() != manifest.digest(),
            })
            .cloned()
            .collect();
        let mut d = Descriptor::new(
            MediaType::ImageManifest,
            manifest.size(),
            manifest.digest().clone(),
        );
        d.set_annotations(Some(
            [(REF_NAME_ANNOTATION.to_string(), reference.to_string())].into(),
        ));
        manifests.push(d);
        index.set_manifests(manifests);
    }

    /// Keeps an image imported without a name (so GC spares it) unless already indexed.
    fn keep_unnamed(&self, index: &mut ImageIndex, manifest: &Descriptor) {
        if index
            .manifests()
            .iter()
            .any(|d| d.digest() == manifest.digest())
        {
            return;
        }
        let mut manifests = index.manifests().clone();
        manifests.push(Descriptor::new(
            MediaType::ImageManifest,
            manifest.size(),
            manifest.digest().clone(),
        ));
        index.set_manifests(manifests);
    }

    /// Lists the images, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        for d in index.manifests() {
            let manifest = self.manifest(d.digest().as_ref())?;
            let config = self.config(&manifest)?;
            // Unnamed images (imported without a tag) are listed by digest, like `<none>`.
            let name = ref_name(d)
                .map(str::to_string)
                .unwrap_or_else(|| d.digest().to_string());
            let parsed = ref_name(d).and_then(|n| Reference::parse(n).ok());
            out.push(ImageSummary {
                reference: name.clone(),
                repository: parsed
                    .as_ref()
                    .map(|r| r.repository())
                    .unwrap_or_else(|| "<none>".to_string()),
                tag: parsed.and_then(|r| r.tag),
                manifest_digest: d.digest().to_string(),
                image_id: manifest.config().digest().to_string(),
                size: d.size()
                    + manifest.config().size()
                    + manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
                created: config.created().clone(),
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Index entries a user-given reference names: by normalised name, or else by a prefix
    /// (at least 4 hex digits, `sha256:` optional) of the image ID or manifest digest.
    fn matching(&self, index: &ImageIndex, input: &str) -> Result<Vec<usize>, ImageError> {
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() >= 4 && hex.len() <= 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut hits = Vec::new();
            for (i, d) in index.manifests().iter().enumerate() {
                let manifest = self.manifest(d.digest().as_ref())?;
                let id = manifest.config().digest().digest().to_string();
                if id.starts_with(hex) || d.digest().digest().starts_with(hex) {
                    hits.push(i);
                }
            }
            if !hits.is_empty() {
                return Ok(hits);
            }
        }
        let wanted = Reference::parse(input)?.to_string();
        Ok(index
            .manifests()
            .iter()
            .enumerate()
            .filter(|(_, d)| ref_name(d) == Some(wanted.as_str()))
            .map(|(i, _)| i)
            .collect())
    }

    /// Resolves a reference (`ml-api:v1`, `docker.io/library/ml-api:v1`, an image ID prefix).
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let index = self.read_index()?;
        let hits = self.matching(&index, reference)?;
        let d = match hits.as_slice() {
            [] => return Err(ImageError::NotFound(reference.to_string())),
            [i] => &index.manifests()[*i],
            many => {
                // Several names for one image are fine; several images are not.
                let first = index.manifests()[many[0]].digest();
                if many.iter().any(|i| index.manifests()[*i].digest() != first) {
                    return Err(ImageError::Ambiguous(reference.to_string()));
                }
                &index.manifests()[many[0]]
            }
        };
        let manifest = self.manifest(d.digest().as_ref())?;
        let config = self.config(&manifest)?;
        Ok(ResolvedImage {
            reference: ref_name(d).unwrap_or_default().to_string(),
            manifest_digest: d.digest().to_string(),
            manifest,
            config,
        })
    }

    /// Removes the references `reference` matches (all names of an image when given its ID),
    /// then garbage-collects the blobs nothing references any more. Returns the removed names.
    pub fn remove(&self, reference: &str) -> Result<Vec<String>, ImageError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let hits: HashSet<usize> = self.matching(&index, reference)?.into_iter().collect();
        if hits.is_empty() {
            return Err(ImageError::NotFound(reference.to_string()));
        }
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for (i, d) in index.manifests().iter().enumerate() {
            if hits.contains(&i) {
                removed.push(ref_name(d).unwrap_or_default().to_string());
            } else {
                kept.push(d.clone());
            }
        }
        index.set_manifests(kept);
        self.write_index(&index)?;
        self.gc_locked(&index)?;
        Ok(removed)
    }

    /// Deletes blobs no index entry reaches, and leftovers of interrupted imports.
    /// Returns how many blobs were deleted.
    pub fn gc(&self) -> Result<usize, ImageError> {
        let _lock = self.lock()?;
        let index = self.read_index()?;
        self.gc_locked(&index)
    }

    fn gc_locked(&self, index: &ImageIndex) -> Result<usize, ImageError> {
        let mut live: HashSet<String> = HashSet::new();
        let mut live_layers: HashSet<String> = HashSet::new();
        for d in index.manifests() {
            live.insert(d.digest().digest().to_string());
            let manifest = self.manifest(d.digest().as_ref())?;
            live.insert(manifest.config().digest().digest().to_string());
            for l in manifest.layers() {
                live.insert(l.digest().digest().to_string());
            }
            let config = self.config(&manifest)?;
            for diff_id in config.rootfs().diff_ids() {
                live_layers.insert(diff_id.trim_start_matches("sha256:").to_string());
            }
        }
        // Layers extracted for overlayfs (see `crate::overlay`) of images no longer stored.
        // The node agent must not remove images its containers still run from.
        if let Ok(entries) = std::fs::read_dir(self.root.join("layers")) {
            for entry in entries.flatten() {
                if !live_layers.contains(entry.file_name().to_string_lossy().as_ref()) {
                    unpack::remove_nofollow(&entry.path())?;
                }
            }
        }
        let dir = self.root.join("blobs").join("sha256");
        let mut deleted = 0;
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("listing blobs", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("listing blobs", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                unpack::remove_nofollow(&entry.path())?;
                deleted += 1;
            }
        }
        // Under the lock no import is running, so everything staged is stale.
        let tmp = self.root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                unpack::remove_nofollow(&entry.path())?;
            }
        }
        Ok(deleted)
    }

    /// Builds a rootfs directory at `dest` from the image's layers in order (whiteouts
    /// honoured, nothing written outside `dest`).
    pub fn unpack(&self, reference: &str, dest: &Path) -> Result<ResolvedImage, ImageError> {
        let image = self.resolve(reference)?;
        std::fs::create_dir_all(dest)
            .map_err(|e| ImageError::io(format!("creating {}", dest.display()), e))?;
        for layer in image.manifest.layers() {
            let path = self.blob_path(layer.digest().as_ref())?;
            let f = File::open(&path)
                .map_err(|e| ImageError::io(format!("opening layer {}", layer.digest()), e))?;
            apply_layer(decompressed(f)?, dest)?;
        }
        Ok(image)
    }
}

fn empty_index() -> Result<ImageIndex, ImageError> {
    oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .map_err(|e| ImageError::malformed("empty index", e))
}

/// This machine's architecture in OCI spelling (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Replaces `path` atomically so a crash never leaves a half-written index.
pub(crate) fn write_atomic(path: &Path, body: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| ImageError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests;
