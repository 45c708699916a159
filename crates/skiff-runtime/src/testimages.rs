//! Builds small test images from host files and hand-made entries, written as `docker save`
//! archives or OCI image-layout archives (for this crate's tests and the node agent's, and the
//! archive writer behind [`crate::binimage`]).

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub use crate::images::host_arch;

/// One entry of a layer. Paths are written verbatim (even `..` or absolute ones), so tests
/// can build malicious layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
}

/// A layer: its entries in order; whiteouts are files named `.wh.<name>` / `.wh..wh..opq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub entries: Vec<Entry>,
    /// Store the layer gzip-compressed in OCI archives (`docker save` never compresses).
    pub gzip: bool,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entries.push(Entry::File {
            path: path.into(),
            data: data.into(),
            mode,
        });
        self
    }
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode,
        });
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }
    /// Hides `path` of the lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, Vec::new(), 0o644)
    }
    /// Hides everything the lower layers had in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), Vec::new(), 0o644)
    }
    /// Copies a host file (content and permission bits) to `path` in the image.
    pub fn host_file(self, host: &Path, path: &str) -> io::Result<Self> {
        let data = std::fs::read(host)?;
        let mode = std::fs::metadata(host)?.permissions().mode() & 0o7777;
        Ok(self.file(path, data, mode))
    }

    /// The uncompressed layer tar.
    pub fn to_tar(&self) -> io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let (path, kind, mode, link, data): (&str, tar::EntryType, u32, Option<&str>, &[u8]) =
                match e {
                    Entry::File { path, data, mode } => {
                        (path, tar::EntryType::Regular, *mode, None, data)
                    }
                    Entry::Dir { path, mode } => {
                        (path, tar::EntryType::Directory, *mode, None, &[])
                    }
                    Entry::Symlink { path, target } => {
                        (path, tar::EntryType::Symlink, 0o777, Some(target), &[])
                    }
                    Entry::Hardlink { path, target } => {
                        (path, tar::EntryType::Link, 0o644, Some(target), &[])
                    }
                };
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            // Raw name fields: the tar crate's setters refuse `..`, which tests need.
            put_raw(&mut h.as_old_mut().name, path)?;
            if let Some(l) = link {
                put_raw(&mut h.as_old_mut().linkname, l)?;
            }
            h.set_cksum();
            b.append(&h, data)?;
        }
        b.into_inner()
    }

    fn blob(&self) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let tar = self.to_tar()?;
        if !self.gzip {
            return Ok((tar.clone(), tar));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        Ok((gz.finish()?, tar))
    }
}

fn put_raw(slot: &mut [u8], s: &str) -> io::Result<()> {
    let bytes = s.as_bytes();
    if bytes.len() >= slot.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "test image path too long",
        ));
    }
    slot[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A layer as stored in an archive, and whether it is gzip-compressed.
type LayerBlob = (Vec<u8>, bool);

/// An image to write as an archive.
#[derive(Debug, Clone, Default)]
pub struct TestImage {
    pub reference: String,
    pub layers: Vec<Layer>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub exposed_ports: Vec<String>,
}

/// Archive files as (path in archive, content), for tests that tamper before writing.
pub type ArchiveFiles = Vec<(String, Vec<u8>)>;

impl TestImage {
    pub fn new(reference: &str) -> Self {
        TestImage {
            reference: reference.into(),
            env: vec![format!("PATH={}", crate::process::DEFAULT_PATH)],
            ..Default::default()
        }
    }

    /// `/bin/busybox` from the host (Debian `busybox-static`), `/bin/sh` linking to it, `/tmp`.
    pub fn busybox(reference: &str) -> io::Result<Self> {
        let layer = Layer::new()
            .dir("bin", 0o755)
            .host_file(Path::new("/bin/busybox"), "bin/busybox")?
            .symlink("bin/sh", "busybox")
            .dir("tmp", 0o1777);
        Ok(TestImage::new(reference).layer(layer).cmd(&["/bin/sh"]))
    }

    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.into());
        self
    }
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.into());
        self
    }

    /// (layer blobs as stored with their gzip flag, the image config JSON).
    fn build(&self) -> io::Result<(Vec<LayerBlob>, Vec<u8>)> {
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in &self.layers {
            let (blob, tar) = l.blob()?;
            diff_ids.push(format!("sha256:{}", sha256(&tar)));
            blobs.push((blob, l.gzip));
        }
        let mut config = serde_json::json!({
            "Env": self.env,
            "Cmd": self.cmd,
        });
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = serde_json::json!(self.entrypoint);
        }
        if let Some(wd) = &self.working_dir {
            config["WorkingDir"] = serde_json::json!(wd);
        }
        if !self.exposed_ports.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect();
            config["ExposedPorts"] = serde_json::Value::Object(ports);
        }
        let arch = host_arch();
        let doc = serde_json::json!({
            "created": "2026-01-02T03:04:05Z",
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        Ok((blobs, serde_json::to_vec(&doc)?))
    }

    /// The files of a `docker save` archive: `manifest.json`, `<id>.json`, `<id>/layer.tar`.
    pub fn docker_archive_files(&self) -> io::Result<ArchiveFiles> {
        let (blobs, config) = self.build()?;
        let config_hex = sha256(&config);
        let mut files = Vec::new();
        let mut layer_paths = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let tar = l.to_tar()?;
            // Keyed by position too: identical layers would otherwise share a directory.
            let path = format!("{}{i}/layer.tar", &sha256(&tar)[..32]);
            layer_paths.push(path.clone());
            files.push((path, tar));
        }
        drop(blobs);
        files.push((format!("{config_hex}.json"), config));
        let manifest = serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": [self.reference],
            "Layers": layer_paths,
        }]);
        files.push(("manifest.json".into(), serde_json::to_vec(&manifest)?));
        Ok(files)
    }

    /// The files of an OCI image-layout archive.
    pub fn oci_archive_files(&self) -> io::Result<ArchiveFiles> {
        let (blobs, config) = self.build()?;
        let mut files = Vec::new();
        let mut layers = Vec::new();
        for (blob, gz) in blobs {
            let hex = sha256(&blob);
            layers.push(serde_json::json!({
                "mediaType": if gz {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else {
                    "application/vnd.oci.image.layer.v1.tar"
                },
                "digest": format!("sha256:{hex}"),
                "size": blob.len(),
            }));
            files.push((format!("blobs/sha256/{hex}"), blob));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", sha256(&config)),
                "size": config.len(),
            },
            "layers": layers,
        }))?;
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", sha256(&manifest)),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": self.reference},
            }],
        }))?;
        files.push((format!("blobs/sha256/{}", sha256(&config)), config));
        files.push((format!("blobs/sha256/{}", sha256(&manifest)), manifest));
        files.push((
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ));
        files.push(("index.json".into(), index));
        Ok(files)
    }

    pub fn docker_archive(&self) -> io::Result<Vec<u8>> {
        tar_of(&self.docker_archive_files()?)
    }

    pub fn oci_archive(&self) -> io::Result<Vec<u8>> {
        tar_of(&self.oci_archive_files()?)
    }

    pub fn write_docker_archive(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(&self.docker_archive()?)
    }

    pub fn write_oci_archive(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(&self.oci_archive()?)
    }
}

/// Packs archive files into a tar (regular files, mode 0644).
pub fn tar_of(files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data.as_slice())?;
    }
    b.into_inner()
}
