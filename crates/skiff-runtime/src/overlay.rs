//! Overlayfs root filesystems: each layer extracted once under `<store>/layers/<diff_id>`,
//! mounted read-only below a per-container writable upper directory. Needs root.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::images::{ImageError, ImageStore, decompressed, extract_layer_for_overlay};

/// The mount data of one `mount(2)` call is a single page.
const MAX_MOUNT_DATA: usize = 4000;

impl ImageStore {
    /// Directory an extracted layer lives in, by its diff_id.
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        let hex = diff_id
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ImageError::Unsupported(format!("diff_id {diff_id:?}")))?;
        Ok(self.root().join("layers").join(hex))
    }

    /// Extracts every layer of the image not yet extracted (once per diff_id, shared by
    /// all images and containers) and returns the layer directories, bottom layer first.
    pub fn extract_layers(&self, reference: &str) -> Result<Vec<PathBuf>, ImageError> {
        let image = self.resolve(reference)?;
        let _lock = self.lock()?;
        let diff_ids = image.config.rootfs().diff_ids();
        if diff_ids.len() != image.manifest.layers().len() {
            return Err(ImageError::malformed(
                "image",
                "config and manifest disagree on the layer count",
            ));
        }
        std::fs::create_dir_all(self.root().join("layers"))
            .map_err(|e| ImageError::io("creating layers dir", e))?;
        let mut dirs = Vec::new();
        for (layer, diff_id) in image.manifest.layers().iter().zip(diff_ids) {
            let dir = self.layer_dir(diff_id)?;
            if !dir.exists() {
                // Extracted aside and renamed, so a crash never leaves a half layer in place.
                let tmp = self
                    .root()
                    .join("tmp")
                    .join(format!("layer-{:016x}", rand::random::<u64>()));
                std::fs::create_dir(&tmp).map_err(|e| ImageError::io("creating layer dir", e))?;
                let result = (|| {
                    let blob = self.blob_path(layer.digest().as_ref())?;
                    let f = File::open(&blob)
                        .map_err(|e| ImageError::io(format!("opening {}", layer.digest()), e))?;
                    extract_layer_for_overlay(decompressed(f)?, &tmp)?;
                    std::fs::rename(&tmp, &dir)
                        .map_err(|e| ImageError::io(format!("storing layer {diff_id}"), e))
                })();
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                result?;
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }
}

/// A mounted container root filesystem; unmounted on drop if not explicitly.
#[derive(Debug)]
pub struct OverlayRootfs {
    rootfs: PathBuf,
    upper: PathBuf,
    mounted: bool,
}

impl OverlayRootfs {
    /// Where the container sees `/`.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// The container's writes (kept after unmount until the container dir is removed).
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Unmounts; on failure the drop still detaches the mount lazily.
    pub fn unmount(mut self) -> Result<(), ImageError> {
        rustix::mount::unmount(&self.rootfs, rustix::mount::UnmountFlags::empty()).map_err(
            |e| ImageError::io(format!("unmounting {}", self.rootfs.display()), e.into()),
        )?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for OverlayRootfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.rootfs, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Mounts `lowers` (bottom first, as [`ImageStore::extract_layers`] returns them) with
/// `container_dir/{upper,work}` on `container_dir/rootfs`.
pub fn mount_rootfs(lowers: &[PathBuf], container_dir: &Path) -> Result<OverlayRootfs, ImageError> {
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    let rootfs = container_dir.join("rootfs");
    let empty = container_dir.join("empty");
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d)
            .map_err(|e| ImageError::io(format!("creating {}", d.display()), e))?;
    }
    let mut lower: Vec<&Path> = lowers.iter().rev().map(PathBuf::as_path).collect();
    if lower.is_empty() {
        // overlayfs needs a lower directory even for an image without layers.
        std::fs::create_dir_all(&empty).map_err(|e| ImageError::io("creating empty lower", e))?;
        lower.push(&empty);
    }
    let mut parts = Vec::new();
    for p in lower
        .iter()
        .copied()
        .chain([upper.as_path(), work.as_path()])
    {
        let s = p.to_str().filter(|s| !s.contains([',', ':', '\\']));
        parts.push(s.ok_or_else(|| ImageError::UnsafePath {
            path: p.display().to_string(),
            reason: "not usable in overlayfs mount options".into(),
        })?);
    }
    let (dirs, rest) = parts.split_at(lower.len());
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dirs.join(":"),
        rest[0],
        rest[1]
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(ImageError::Unsupported(format!(
            "{} layers do not fit in one overlayfs mount",
            lower.len()
        )));
    }
    let data = CString::new(data).map_err(|e| ImageError::malformed("mount options", e))?;
    rustix::mount::mount(
        "overlay",
        &rootfs,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| {
        ImageError::io(
            format!("mounting overlay on {}", rootfs.display()),
            e.into(),
        )
    })?;
    Ok(OverlayRootfs {
        rootfs,
        upper,
        mounted: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testimages::{Layer, TestImage};

    /// overlayfs needs root and a kernel that allows it here; elsewhere there is nothing to test.
    fn overlay_works(dir: &Path) -> bool {
        let probe = dir.join("probe");
        let lower = probe.join("l");
        if std::fs::create_dir_all(&lower).is_err() {
            return false;
        }
        match mount_rootfs(&[lower], &probe) {
            Ok(m) => m.unmount().is_ok(),
            Err(e) => {
                eprintln!("skipping overlay test: {e}");
                false
            }
        }
    }

    #[test]
    fn overlay_rootfs_shows_merged_layers_and_keeps_writes_in_upper() {
        let dir = tempfile::tempdir().expect("tempdir");
        if !overlay_works(dir.path()) {
            return;
        }
        let store = ImageStore::open(dir.path().join("images")).expect("store");
        let base = Layer::new()
            .file("a", "a", 0o644)
            .dir("d", 0o755)
            .file("d/old", "old", 0o644)
            .file("keep", "keep", 0o644);
        let top = Layer::new()
            .whiteout("a")
            .dir("d", 0o755)
            .opaque("d")
            .file("d/new", "new", 0o644);
        let image = TestImage::new("ov:1").layer(base).layer(top.gzip());
        store
            .import(image.oci_archive().expect("oci").as_slice())
            .expect("import");
        let lowers = store.extract_layers("ov:1").expect("extract");
        assert_eq!(lowers.len(), 2);
        // Extraction happens once: a second call reuses the directories.
        assert_eq!(store.extract_layers("ov:1").expect("again"), lowers);

        let mount = mount_rootfs(&lowers, &dir.path().join("c1")).expect("mount");
        let root = mount.rootfs().to_path_buf();
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .expect("rootfs")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "keep"]);
        // Counted, not collected: a kept DirEntry holds the directory open (EBUSY on unmount).
        assert_eq!(std::fs::read_dir(root.join("d")).expect("d").count(), 1);
        assert_eq!(std::fs::read(root.join("d/new")).expect("new"), b"new");
        std::fs::write(root.join("keep"), "changed").expect("write");
        assert_eq!(
            std::fs::read(lowers[0].join("keep")).expect("lower"),
            b"keep"
        );
        assert_eq!(
            std::fs::read(mount.upper().join("keep")).expect("upper"),
            b"changed"
        );
        mount.unmount().expect("unmount");
        assert!(!root.join("keep").exists());
        store.remove("ov:1").expect("rm");
        assert!(
            lowers.iter().all(|l| !l.exists()),
            "extracted layers outlived the image"
        );
    }
}
