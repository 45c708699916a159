//! Applies image layers to a rootfs directory: whiteouts, links, and no write ever outside it.

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Like Linux's MAXSYMLINKS: a symlink loop inside a rootfs must end in an error, not a hang.
const MAX_SYMLINK_HOPS: usize = 40;

/// Wraps a layer blob in a decompressor chosen by its magic bytes, so that a layer whose
/// media type lies about compression still unpacks (what containerd does too).
pub fn decompressed(reader: impl Read + 'static) -> Result<Box<dyn Read>, ImageError> {
    let mut buf = BufReader::new(reader);
    let head = buf
        .fill_buf()
        .map_err(|e| ImageError::io("reading layer", e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(ImageError::Unsupported("zstd-compressed layers".into()))
    } else {
        Ok(Box::new(buf))
    }
}

/// Applies one (uncompressed) layer tar stream on top of `root`.
pub fn apply_layer(reader: impl Read, root: &Path) -> Result<(), ImageError> {
    apply(reader, root, false)
}

/// Extracts one layer on its own into `root` for use as an overlayfs lower directory:
/// whiteouts become what overlayfs understands (a 0:0 character device for `.wh.<name>`,
/// the `trusted.overlay.opaque` xattr for `.wh..wh..opq`), which needs root.
pub fn extract_layer_for_overlay(reader: impl Read, root: &Path) -> Result<(), ImageError> {
    apply(reader, root, true)
}

fn apply(reader: impl Read, root: &Path, overlay: bool) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    // Ownership can only be restored by root; without it files belong to the caller.
    archive.set_preserve_ownerships(rustix::process::geteuid().is_root());
    archive.set_overwrite(true);
    // Paths this layer wrote: an opaque whiteout hides the lower layers only, never them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| ImageError::io("reading layer", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::io("reading layer entry", e))?;
        let raw = entry.path_bytes().into_owned();
        let Some((parent, name)) = split_clean(&raw)? else {
            continue; // the layer's own root directory
        };
        let name_str = name.to_string_lossy();
        if overlay && name_str == OPAQUE_WHITEOUT {
            let dir = resolve_in_root(root, &parent, true)?
                .ok_or_else(|| unsafe_path(&raw, "parent could not be created"))?;
            rustix::fs::lsetxattr(
                &dir,
                "trusted.overlay.opaque",
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| ImageError::io(format!("marking {} opaque", dir.display()), e.into()))?;
            continue;
        }
        if name_str == OPAQUE_WHITEOUT {
            if let Some(dir) = resolve_in_root(root, &parent, false)? {
                clear_dir_except(&dir, &written)?;
            }
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(unsafe_path(&raw, "malformed whiteout"));
            }
            if overlay {
                let dir = resolve_in_root(root, &parent, true)?
                    .ok_or_else(|| unsafe_path(&raw, "parent could not be created"))?;
                let target = dir.join(hidden);
                remove_nofollow(&target)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .map_err(|e| ImageError::io(format!("whiteout {}", target.display()), e.into()))?;
                written.insert(target);
                continue;
            }
            if let Some(dir) = resolve_in_root(root, &parent, false)? {
                remove_nofollow(&dir.join(hidden))?;
            }
            continue;
        }
        let dir = resolve_in_root(root, &parent, true)?
            .ok_or_else(|| unsafe_path(&raw, "parent could not be created"))?;
        let target = dir.join(&name);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                if !is_real_dir(&target) {
                    remove_nofollow(&target)?;
                }
                entry
                    .unpack(&target)
                    .map_err(|e| ImageError::io(format!("unpacking {}", target.display()), e))?;
            }
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Symlink
            | tar::EntryType::Fifo => {
                remove_nofollow(&target)?;
                entry
                    .unpack(&target)
                    .map_err(|e| ImageError::io(format!("unpacking {}", target.display()), e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| unsafe_path(&raw, "hard link without target"))?;
                let (lparent, lname) =
                    split_clean(&link)?.ok_or_else(|| unsafe_path(&link, "hard link to root"))?;
                let source = resolve_in_root(root, &lparent, false)?
                    .map(|d| d.join(lname))
                    .filter(|p| p.symlink_metadata().is_ok_and(|m| !m.is_dir()))
                    .ok_or_else(|| unsafe_path(&link, "hard link target missing"))?;
                remove_nofollow(&target)?;
                std::fs::hard_link(&source, &target)
                    .map_err(|e| ImageError::io(format!("linking {}", target.display()), e))?;
            }
            // Device nodes come from the runtime's /dev, never from images.
            _ => continue,
        }
        written.insert(target);
    }
    Ok(())
}

fn unsafe_path(raw: &[u8], reason: &str) -> ImageError {
    ImageError::UnsafePath {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: reason.to_string(),
    }
}

/// Splits an archive path into (parent components, file name); `..` anywhere is refused
/// because a well-formed layer never needs it, and a leading `/` means the rootfs root.
fn split_clean(raw: &[u8]) -> Result<Option<(Vec<OsString>, OsString)>, ImageError> {
    let mut parts = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(unsafe_path(raw, "path escapes the root with ..")),
            c => {
                if c.contains(&0) {
                    return Err(unsafe_path(raw, "NUL in path"));
                }
                parts.push(OsStr::from_bytes(c).to_os_string())
            }
        }
    }
    Ok(parts.pop().map(|name| (parts, name)))
}

fn is_real_dir(p: &Path) -> bool {
    p.symlink_metadata().is_ok_and(|m| m.is_dir())
}

/// Resolves `components` under `root` following symlinks as if `root` were `/` (absolute
/// targets restart at `root`, `..` stops at it), so a symlink planted by an earlier entry
/// can never redirect a write outside. Missing directories are created when `create`.
pub(crate) fn resolve_in_root(
    root: &Path,
    components: &[OsString],
    create: bool,
) -> Result<Option<PathBuf>, ImageError> {
    let mut current: Vec<OsString> = Vec::new();
    let mut queue: VecDeque<OsString> = components.iter().cloned().collect();
    let mut hops = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            current.pop();
            continue;
        }
        if comp.is_empty() || comp == "." {
            continue;
        }
        let mut path = root.to_path_buf();
        path.extend(&current);
        path.push(&comp);
        match path.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ImageError::UnsafePath {
                        path: path.display().to_string(),
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                let target = std::fs::read_link(&path)
                    .map_err(|e| ImageError::io(format!("reading link {}", path.display()), e))?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    current.clear();
                }
                for c in bytes.split(|b| *b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(c).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => current.push(comp),
            Ok(_) => {
                return Err(ImageError::UnsafePath {
                    path: path.display().to_string(),
                    reason: "a path component is not a directory".into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                std::fs::create_dir(&path)
                    .map_err(|e| ImageError::io(format!("creating {}", path.display()), e))?;
                current.push(comp);
            }
            Err(e) => return Err(ImageError::io(format!("inspecting {}", path.display()), e)),
        }
    }
    let mut path = root.to_path_buf();
    path.extend(&current);
    Ok(Some(path))
}

/// Removes a file, symlink or directory tree without following symlinks; absent is fine.
pub(crate) fn remove_nofollow(p: &Path) -> Result<(), ImageError> {
    let res = match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| ImageError::io(format!("removing {}", p.display()), e))
}

fn clear_dir_except(dir: &Path, keep: &HashSet<PathBuf>) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ImageError::io(format!("reading {}", dir.display()), e))?;
    for child in entries {
        let child = child.map_err(|e| ImageError::io(format!("reading {}", dir.display()), e))?;
        let path = child.path();
        if !keep.contains(&path) {
            remove_nofollow(&path)?;
        }
    }
    Ok(())
}
