//! Imports `docker save` and OCI image-layout tar archives into the store, verifying digests.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::unpack::{decompressed, remove_nofollow};
use super::{
    CONTAINERD_NAME_ANNOTATION, ImageError, ImageStore, REF_NAME_ANNOTATION, Reference, host_arch,
    is_sha256_hex, write_atomic,
};

/// What one import added: the names and the manifest they point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub references: Vec<String>,
    pub manifest_digest: String,
    /// The image ID (config digest).
    pub image_id: String,
}

/// A regular file of the archive, copied to the staging dir and hashed on the way.
#[derive(Debug, Clone)]
struct Staged {
    path: PathBuf,
    digest: String,
    size: u64,
}

/// The archive's files by normalised path; symlinks (old `docker save` dedups layers that
/// way) are kept aside and followed on lookup.
struct Staging {
    dir: PathBuf,
    files: HashMap<String, Staged>,
    links: HashMap<String, String>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_nofollow(&self.dir);
    }
}

impl Staging {
    fn get(&self, path: &str) -> Result<&Staged, ImageError> {
        let mut p = normalize(path)
            .ok_or_else(|| ImageError::InvalidArchive(format!("bad path {path:?}")))?;
        for _ in 0..8 {
            if let Some(s) = self.files.get(&p) {
                return Ok(s);
            }
            match self.links.get(&p) {
                Some(target) => p = target.clone(),
                None => break,
            }
        }
        Err(ImageError::InvalidArchive(format!("{path:?} is missing")))
    }
}

/// Normalises an in-archive path (`./a//b` -> `a/b`); `None` when it climbs out with `..`.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn stage(store: &ImageStore, reader: impl Read) -> Result<Staging, ImageError> {
    let dir = store
        .root()
        .join("tmp")
        .join(format!("import-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&dir).map_err(|e| ImageError::io("creating staging dir", e))?;
    let mut staging = Staging {
        dir,
        files: HashMap::new(),
        links: HashMap::new(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| ImageError::InvalidArchive(e.to_string()))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| ImageError::InvalidArchive(e.to_string()))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            return Err(ImageError::InvalidArchive(format!(
                "path {raw:?} escapes the archive"
            )));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = staging.dir.join(n.to_string());
                let mut out =
                    File::create(&file).map_err(|e| ImageError::io("writing staging file", e))?;
                let (digest, size) = copy_hashing(&mut entry, &mut out)
                    .map_err(|e| ImageError::InvalidArchive(format!("reading {raw:?}: {e}")))?;
                staging.files.insert(
                    path,
                    Staged {
                        path: file,
                        digest,
                        size,
                    },
                );
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                    format!("{parent}/{target}")
                } else {
                    target
                };
                if let Some(t) = normalize(&joined) {
                    staging.links.insert(path, t);
                }
            }
            _ => {}
        }
    }
    Ok(staging)
}

/// Copies while hashing; returns (`sha256:<hex>`, bytes).
fn copy_hashing(from: &mut impl Read, to: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), total))
}

/// The `diff_id` of a layer: the digest of its uncompressed tar stream.
fn diff_id(staged: &Staged) -> Result<String, ImageError> {
    let f = File::open(&staged.path).map_err(|e| ImageError::io("reading staged layer", e))?;
    let mut reader = decompressed(f)?;
    copy_hashing(&mut reader, &mut io::sink())
        .map(|(d, _)| d)
        .map_err(|e| ImageError::InvalidArchive(format!("corrupt layer {}: {e}", staged.digest)))
}

fn is_gzip(staged: &Staged) -> Result<bool, ImageError> {
    let mut head = [0u8; 2];
    let mut f = File::open(&staged.path).map_err(|e| ImageError::io("reading staged layer", e))?;
    let n = f
        .read(&mut head)
        .map_err(|e| ImageError::io("reading staged layer", e))?;
    Ok(n == 2 && head == [0x1f, 0x8b])
}

fn check_digest(what: &str, expected: &str, staged: &Staged) -> Result<(), ImageError> {
    if expected != staged.digest {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: staged.digest.clone(),
        });
    }
    Ok(())
}

fn parse_config(staged: &Staged) -> Result<ImageConfiguration, ImageError> {
    let f = File::open(&staged.path).map_err(|e| ImageError::io("reading config", e))?;
    ImageConfiguration::from_reader(io::BufReader::new(f))
        .map_err(|e| ImageError::malformed("image config", e))
}

/// Checks the layers against the config's `rootfs.diff_ids`, which is what ties the
/// (possibly compressed) blobs to the image ID.
fn check_diff_ids(config: &ImageConfiguration, layers: &[&Staged]) -> Result<(), ImageError> {
    let want = config.rootfs().diff_ids();
    if want.len() != layers.len() {
        return Err(ImageError::InvalidArchive(format!(
            "config lists {} layers, manifest {}",
            want.len(),
            layers.len()
        )));
    }
    for (i, (w, l)) in want.iter().zip(layers).enumerate() {
        let got = diff_id(l)?;
        if *w != got {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {i} (diff_id)"),
                expected: w.clone(),
                actual: got,
            });
        }
    }
    Ok(())
}

/// An image found in the archive, verified and ready to be committed to the store.
struct Candidate<'a> {
    references: Vec<String>,
    /// The manifest blob to keep (OCI archives), or `None` to synthesise one (docker save).
    manifest: Option<&'a Staged>,
    config: &'a Staged,
    layers: Vec<&'a Staged>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker_candidates(staging: &Staging) -> Result<Vec<Candidate<'_>>, ImageError> {
    let manifest = staging.get("manifest.json")?;
    let f = File::open(&manifest.path).map_err(|e| ImageError::io("reading manifest.json", e))?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_reader(io::BufReader::new(f))
        .map_err(|e| ImageError::malformed("manifest.json", e))?;
    let mut out = Vec::new();
    for entry in entries {
        let config = staging.get(&entry.config)?;
        // The config's file name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
        let stem = entry.config.rsplit('/').next().unwrap_or("");
        let stem = stem.strip_suffix(".json").unwrap_or(stem);
        if is_sha256_hex(stem) {
            check_digest("image config", &format!("sha256:{stem}"), config)?;
        }
        let layers = entry
            .layers
            .iter()
            .map(|l| staging.get(l))
            .collect::<Result<Vec<_>, _>>()?;
        check_diff_ids(&parse_config(config)?, &layers)?;
        let references = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Candidate {
            references,
            manifest: None,
            config,
            layers,
        });
    }
    Ok(out)
}

fn blob<'a>(staging: &'a Staging, d: &Descriptor, what: &str) -> Result<&'a Staged, ImageError> {
    let hex = d
        .as_digest_sha256()
        .ok_or_else(|| ImageError::Unsupported(format!("{what} digest {}", d.digest())))?;
    let staged = staging.get(&format!("blobs/sha256/{hex}"))?;
    check_digest(what, d.digest().as_ref(), staged)?;
    if staged.size != d.size() {
        return Err(ImageError::InvalidArchive(format!(
            "{what} {} is {} bytes, descriptor says {}",
            d.digest(),
            staged.size,
            d.size()
        )));
    }
    Ok(staged)
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || mt.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Picks the manifest for this machine's platform out of a multi-platform index.
fn pick_platform(staging: &Staging, d: &Descriptor) -> Result<Descriptor, ImageError> {
    let staged = blob(staging, d, "image index")?;
    let f = File::open(&staged.path).map_err(|e| ImageError::io("reading index", e))?;
    let index = ImageIndex::from_reader(io::BufReader::new(f))
        .map_err(|e| ImageError::malformed("image index", e))?;
    let matching = |m: &&Descriptor| {
        m.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
        })
    };
    let chosen = index
        .manifests()
        .iter()
        .find(matching)
        .or(if index.manifests().len() == 1 {
            index.manifests().first()
        } else {
            None
        })
        .ok_or_else(|| {
            ImageError::InvalidArchive(format!("no manifest for linux/{}", host_arch()))
        })?;
    Ok(chosen.clone())
}

fn oci_candidates(staging: &Staging) -> Result<Vec<Candidate<'_>>, ImageError> {
    let index_file = staging.get("index.json")?;
    let f = File::open(&index_file.path).map_err(|e| ImageError::io("reading index.json", e))?;
    let index = ImageIndex::from_reader(io::BufReader::new(f))
        .map_err(|e| ImageError::malformed("index.json", e))?;
    let mut out = Vec::new();
    for d in index.manifests() {
        let annotations = d.annotations().clone().unwrap_or_default();
        // Docker 25+ writes the full name in the containerd annotation and only the tag in
        // ref.name; skopeo and buildah write the full name in ref.name.
        let name = annotations
            .get(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| annotations.get(REF_NAME_ANNOTATION));
        let references = match name {
            Some(n) => vec![Reference::parse(n)?.to_string()],
            None => Vec::new(),
        };
        let d = if is_index(d.media_type()) {
            pick_platform(staging, d)?
        } else {
            d.clone()
        };
        let manifest = blob(staging, &d, "image manifest")?;
        let f = File::open(&manifest.path).map_err(|e| ImageError::io("reading manifest", e))?;
        let parsed = ImageManifest::from_reader(io::BufReader::new(f))
            .map_err(|e| ImageError::malformed("image manifest", e))?;
        let config = blob(staging, parsed.config(), "image config")?;
        let layers = parsed
            .layers()
            .iter()
            .map(|l| blob(staging, l, "layer"))
            .collect::<Result<Vec<_>, _>>()?;
        check_diff_ids(&parse_config(config)?, &layers)?;
        out.push(Candidate {
            references,
            manifest: Some(manifest),
            config,
            layers,
        });
    }
    Ok(out)
}

/// Moves a verified staged file to its content address (no-op when already stored).
fn commit_blob(store: &ImageStore, staged: &Staged) -> Result<(), ImageError> {
    let dest = store.blob_path(&staged.digest)?;
    if dest.exists() {
        return Ok(());
    }
    std::fs::rename(&staged.path, &dest)
        .or_else(|_| std::fs::copy(&staged.path, &dest).map(|_| ()))
        .map_err(|e| ImageError::io(format!("storing blob {}", staged.digest), e))
}

fn synthesize_manifest(c: &Candidate<'_>) -> Result<Vec<u8>, ImageError> {
    let mut layers = Vec::new();
    for l in &c.layers {
        let mt = if is_gzip(l)? {
            MediaType::ImageLayerGzip
        } else {
            MediaType::ImageLayer
        };
        layers.push(Descriptor::new(mt, l.size, digest_of(&l.digest)?));
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            c.config.size,
            digest_of(&c.config.digest)?,
        ))
        .layers(layers)
        .build()
        .map_err(|e| ImageError::malformed("manifest", e))?;
    manifest
        .to_string()
        .map(String::into_bytes)
        .map_err(|e| ImageError::malformed("manifest", e))
}

fn digest_of(s: &str) -> Result<oci_spec::image::Digest, ImageError> {
    s.parse().map_err(|e| ImageError::malformed("digest", e))
}

pub(super) fn import(
    store: &ImageStore,
    reader: impl Read,
) -> Result<Vec<ImportedImage>, ImageError> {
    let staging = stage(store, reader)?;
    let candidates = if staging.files.contains_key("manifest.json") {
        docker_candidates(&staging)?
    } else if staging.files.contains_key("index.json") {
        oci_candidates(&staging)?
    } else {
        return Err(ImageError::InvalidArchive(
            "neither a docker save archive (manifest.json) nor an OCI layout (index.json)".into(),
        ));
    };
    if candidates.is_empty() {
        return Err(ImageError::InvalidArchive(
            "no images in the archive".into(),
        ));
    }
    let mut index = store.read_index()?;
    let mut imported = Vec::new();
    for c in &candidates {
        // Synthesised before the staged layers move: it sniffs their compression.
        let manifest = match c.manifest {
            Some(m) => Ok(m),
            None => Err(synthesize_manifest(c)?),
        };
        for l in &c.layers {
            commit_blob(store, l)?;
        }
        commit_blob(store, c.config)?;
        let (digest, size) = match manifest {
            Ok(m) => {
                commit_blob(store, m)?;
                (m.digest.clone(), m.size)
            }
            Err(body) => {
                let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
                let dest = store.blob_path(&digest)?;
                if !dest.exists() {
                    write_atomic(&dest, &body)?;
                }
                (digest, body.len() as u64)
            }
        };
        let descriptor = Descriptor::new(MediaType::ImageManifest, size, digest_of(&digest)?);
        for r in &c.references {
            store.tag(&mut index, r, &descriptor);
        }
        if c.references.is_empty() {
            store.keep_unnamed(&mut index, &descriptor);
        }
        imported.push(ImportedImage {
            references: c.references.clone(),
            manifest_digest: digest,
            image_id: c.config.digest.clone(),
        });
    }
    store.write_index(&index)?;
    Ok(imported)
}
