//! Builds self-contained OCI image-layout archives from a host binary, the shared libraries it
//! loads and extra files (e.g. the `skiff serve` image of the running `skiff` binary).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::testimages::{Layer, TestImage};

/// The runtime configuration written into the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// `8080/tcp` style.
    pub exposed_ports: Vec<String>,
    pub working_dir: Option<String>,
}

/// One path of the image filesystem being assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir(u32),
    File { host: PathBuf, mode: u32 },
    Symlink(String),
}

/// Symlink hops followed for one path before giving up (as the kernel's ELOOP limit).
const MAX_SYMLINKS: usize = 40;

/// An OCI image-layout tar of `binary` at `/usr/bin/<its file name>`, every shared library it
/// and the ELF files among `extra_files` need (found with `ldd`, including the dynamic loader,
/// with the host's symlinks along each path reproduced), `extra_files` as
/// (host path, absolute path in the image), `/tmp`, and minimal `/etc/passwd` and `/etc/group`.
pub fn image_from_binary(
    reference: &str,
    binary: &Path,
    extra_files: &[(PathBuf, String)],
    config: ImageConfig,
) -> io::Result<Vec<u8>> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(format!("{} has no file name", binary.display())))?;
    build_image(
        reference,
        binary,
        &format!("usr/bin/{name}"),
        extra_files,
        config,
    )
}

/// [`image_from_binary`] with the binary at `binary_in_image` (relative).
fn build_image(
    reference: &str,
    binary: &Path,
    binary_in_image: &str,
    extra_files: &[(PathBuf, String)],
    config: ImageConfig,
) -> io::Result<Vec<u8>> {
    let mut tree = Tree::default();
    tree.dir("tmp", 0o1777);
    tree.dir("etc", 0o755);
    tree.place(binary, binary_in_image)?;
    for lib in shared_libraries(binary, true)? {
        tree.add_host_path(&lib)?;
    }
    for (host, in_image) in extra_files {
        let rel = in_image.trim_start_matches('/');
        if rel.is_empty()
            || Path::new(rel)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(invalid(format!("bad image path {in_image:?}")));
        }
        tree.place(host, rel)?;
        for lib in shared_libraries(host, false)? {
            tree.add_host_path(&lib)?;
        }
    }

    let mut layer = Layer::new().gzip();
    for (path, node) in &tree.nodes {
        layer = match node {
            Node::Dir(mode) => layer.dir(path, *mode),
            Node::Symlink(target) => layer.symlink(path, target),
            Node::File { host, mode } => layer.file(path, std::fs::read(host)?, *mode),
        };
    }
    layer = layer
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);

    let image = TestImage {
        reference: reference.into(),
        layers: vec![layer],
        entrypoint: config.entrypoint,
        cmd: config.cmd,
        env: config.env,
        working_dir: config.working_dir,
        exposed_ports: config.exposed_ports,
    };
    image.oci_archive()
}

/// The host paths of the shared libraries `file` loads, as `ldd` prints them. A file that is
/// not dynamically linked has none; `ldd` failing on it is an error only if `required`.
fn shared_libraries(file: &Path, required: bool) -> io::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(file).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let text = format!("{stdout}{stderr}");
        if !required || text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(io::Error::other(format!(
            "ldd {}: {}",
            file.display(),
            text.trim()
        )));
    }
    parse_ldd(&stdout).map_err(|line| io::Error::other(format!("ldd {}: {line}", file.display())))
}

/// Library paths from `ldd` output; a library it could not find is returned as the error.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((_, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(line.to_string());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            // The dynamic loader (`/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has no path.
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The image filesystem by relative path; sorted order puts parents before children.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    fn dir(&mut self, path: &str, mode: u32) {
        self.nodes
            .entry(path.to_string())
            .or_insert(Node::Dir(mode));
    }

    /// `host`'s content (symlinks followed) at `rel`, parent directories 0755.
    fn place(&mut self, host: &Path, rel: &str) -> io::Result<()> {
        let meta = std::fs::metadata(host)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
        if !meta.is_file() {
            return Err(invalid(format!("{} is not a regular file", host.display())));
        }
        let mut parent = Path::new(rel).parent();
        let mut parents = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            parents.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for p in parents.into_iter().rev() {
            self.dir(&p, 0o755);
        }
        self.nodes.insert(
            rel.to_string(),
            Node::File {
                host: host.to_path_buf(),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    /// Adds the absolute host path `path` at the same place in the image: each directory with
    /// its mode, each symlink met on the way as a symlink and then its target, the file itself.
    fn add_host_path(&mut self, path: &Path) -> io::Result<()> {
        let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
        let mut hops = 0;
        'paths: while let Some(path) = pending.pop() {
            let parts: Vec<String> = normalize(&path)
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            let mut current = PathBuf::from("/");
            for (i, part) in parts.iter().enumerate() {
                current.push(part);
                let rel = current
                    .to_string_lossy()
                    .trim_start_matches('/')
                    .to_string();
                let meta = std::fs::symlink_metadata(&current)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", current.display())))?;
                if meta.file_type().is_symlink() {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(invalid(format!("too many symlinks at {}", path.display())));
                    }
                    let target = std::fs::read_link(&current)?;
                    self.nodes
                        .insert(rel, Node::Symlink(target.to_string_lossy().into_owned()));
                    let mut next = if target.is_absolute() {
                        target
                    } else {
                        current.parent().unwrap_or(Path::new("/")).join(target)
                    };
                    for rest in &parts[i + 1..] {
                        next.push(rest);
                    }
                    pending.push(next);
                    continue 'paths;
                }
                let mode = meta.permissions().mode() & 0o7777;
                if meta.is_dir() {
                    self.dir(&rel, mode);
                } else if i + 1 == parts.len() && meta.is_file() {
                    self.nodes.insert(
                        rel,
                        Node::File {
                            host: current.clone(),
                            mode,
                        },
                    );
                } else {
                    return Err(invalid(format!(
                        "{} is neither a directory nor a regular file",
                        current.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Resolves `.` and `..` lexically; right here because every prefix was already checked to
/// be a real directory, not a symlink.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Where `ORT_DYLIB_PATH` points inside the serve image.
pub const SERVE_ONNXRUNTIME_PATH: &str = "/usr/lib/libonnxruntime.so";

/// The `skiff serve` image: `skiff` (normally `std::env::current_exe()`) at `/usr/bin/skiff`
/// with entrypoint `skiff serve` serving `/models` on all addresses (ports 8080 HTTP and 8081
/// gRPC), and libonnxruntime (with `libonnxruntime_providers_shared.so` if it sits next to it)
/// at [`SERVE_ONNXRUNTIME_PATH`], which `ORT_DYLIB_PATH` names.
pub fn serve_image(reference: &str, skiff: &Path, onnxruntime: &Path) -> io::Result<Vec<u8>> {
    let stripped = without_debug_info(skiff)?;
    let skiff = stripped.as_ref().map_or(skiff, |t| t.path());
    let mut extra = vec![(
        onnxruntime.to_path_buf(),
        SERVE_ONNXRUNTIME_PATH.to_string(),
    )];
    let shared = onnxruntime.with_file_name("libonnxruntime_providers_shared.so");
    if shared.is_file() {
        extra.push((shared, "/usr/lib/libonnxruntime_providers_shared.so".into()));
    }
    build_image(
        reference,
        skiff,
        "usr/bin/skiff",
        &extra,
        ImageConfig {
            entrypoint: vec!["/usr/bin/skiff".into(), "serve".into()],
            cmd: ["--model-repository", "/models", "--host", "0.0.0.0"]
                .map(String::from)
                .to_vec(),
            env: vec![
                format!("PATH={}", crate::process::DEFAULT_PATH),
                format!("ORT_DYLIB_PATH={SERVE_ONNXRUNTIME_PATH}"),
            ],
            exposed_ports: vec!["8080/tcp".into(), "8081/tcp".into()],
            working_dir: Some("/".into()),
        },
    )
}

/// A copy of the ELF file `binary` without its debug sections (`objcopy --strip-debug`; binutils
/// comes with gcc), or `None` when objcopy is missing or refuses the file (it then goes into the
/// image whole). The line tables of a release `skiff` are four fifths of its size, and a
/// container has no use for them; the symbols stay, so backtraces keep their function names.
fn without_debug_info(binary: &Path) -> io::Result<Option<tempfile::NamedTempFile>> {
    let copy = tempfile::Builder::new()
        .prefix(".skiff-image-")
        .tempfile()?;
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(copy.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        return Ok(None);
    }
    let mode = std::fs::metadata(binary)?.permissions().mode();
    std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(mode))?;
    Ok(Some(copy))
}

/// Finds libonnxruntime on this host: `ORT_DYLIB_PATH`, else the `onnxruntime` Python
/// package (`capi/libonnxruntime.so*`) of a `.venv` in or above the working directory or the
/// executable's directory (the places `skiff serve` looks, minus running Python).
pub fn find_onnxruntime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    venv_search_starts()
        .into_iter()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .find_map(|dir| venv_onnxruntime(&dir.join(".venv")))
}

/// Where [`find_onnxruntime`] starts looking for a `.venv` (it also tries their parents): the
/// working directory and the executable's directory.
pub fn venv_search_starts() -> Vec<PathBuf> {
    [
        std::env::current_dir().ok(),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `<venv>/lib*/python*/site-packages/onnxruntime/capi/libonnxruntime.so*`.
fn venv_onnxruntime(venv: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    for lib in std::fs::read_dir(venv).ok()?.flatten() {
        if !lib.file_name().to_string_lossy().starts_with("lib") {
            continue;
        }
        for py in std::fs::read_dir(lib.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let capi = py.path().join("site-packages/onnxruntime/capi");
            for f in std::fs::read_dir(capi).into_iter().flatten().flatten() {
                if f.file_name()
                    .to_string_lossy()
                    .starts_with("libonnxruntime.so")
                {
                    candidates.push(f.path());
                }
            }
        }
    }
    candidates.sort();
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageStore;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f89)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f8b)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn reproduces_symlinks_along_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("libx.so.1.2"), b"elf").unwrap();
        std::os::unix::fs::symlink("real", dir.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", real.join("libx.so.1")).unwrap();
        let mut tree = Tree::default();
        tree.add_host_path(&dir.path().join("lib/libx.so.1"))
            .unwrap();
        let base = dir
            .path()
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        assert_eq!(
            tree.nodes.get(&format!("{base}/lib")),
            Some(&Node::Symlink("real".into()))
        );
        assert_eq!(
            tree.nodes.get(&format!("{base}/real/libx.so.1")),
            Some(&Node::Symlink("libx.so.1.2".into()))
        );
        assert!(matches!(
            tree.nodes.get(&format!("{base}/real/libx.so.1.2")),
            Some(Node::File { .. })
        ));
    }

    #[test]
    fn rejects_escaping_image_paths() {
        let err = image_from_binary(
            "x:1",
            Path::new("/bin/ls"),
            &[(PathBuf::from("/etc/hostname"), "/../x".into())],
            ImageConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// The image of a dynamically linked host binary runs inside its own unpacked rootfs.
    #[test]
    fn image_of_ls_runs_in_a_chroot() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("greeting");
        std::fs::write(&extra, b"hello\n").unwrap();
        let archive = image_from_binary(
            "example.com/ls:1",
            Path::new("/bin/ls"),
            &[(extra, "/srv/greeting".into())],
            ImageConfig {
                entrypoint: vec!["/usr/bin/ls".into()],
                exposed_ports: vec!["8080/tcp".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        store.import(archive.as_slice()).unwrap();
        let rootfs = dir.path().join("rootfs");
        let image = store.unpack("example.com/ls:1", &rootfs).unwrap();
        let cfg = image.config.config().clone().unwrap();
        assert_eq!(cfg.entrypoint().clone().unwrap(), ["/usr/bin/ls"]);
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(["/usr/bin/ls", "-l", "/srv", "/"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("greeting") && stdout.contains("tmp"),
            "{stdout}"
        );
        let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    }

    /// The serve image carries the binary, libonnxruntime and the image config `skiff serve`
    /// needs; the binary (this test executable) runs inside it.
    #[test]
    fn serve_image_is_self_contained() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Content does not matter for the layout; a real library also brings its own needs.
        let ort = find_onnxruntime().unwrap_or_else(|| {
            let fake = dir.path().join("libonnxruntime.so.1.0.0");
            std::fs::write(&fake, b"not elf").unwrap();
            fake
        });
        let exe = std::env::current_exe().unwrap();
        let archive = serve_image("skiff-serve:test", &exe, &ort).unwrap();
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        store.import(archive.as_slice()).unwrap();
        let rootfs = dir.path().join("rootfs");
        let image = store.unpack("skiff-serve:test", &rootfs).unwrap();
        let cfg = image.config.config().clone().unwrap();
        assert_eq!(
            cfg.entrypoint().clone().unwrap(),
            ["/usr/bin/skiff", "serve"]
        );
        assert_eq!(
            cfg.cmd().clone().unwrap(),
            ["--model-repository", "/models", "--host", "0.0.0.0"]
        );
        let env = cfg.env().clone().unwrap();
        assert!(env.contains(&"ORT_DYLIB_PATH=/usr/lib/libonnxruntime.so".to_string()));
        let mut ports = cfg.exposed_ports().clone().unwrap();
        ports.sort();
        assert_eq!(ports, ["8080/tcp", "8081/tcp"]);
        assert_eq!(
            std::fs::read(rootfs.join("usr/lib/libonnxruntime.so")).unwrap(),
            std::fs::read(&ort).unwrap()
        );
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(["/usr/bin/skiff", "--list", "parses_ldd_output"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("parses_ldd_output: test"), "{stdout}");
        // The test executable has line tables (profile `debug = "line-tables-only"`); the
        // image's copy runs without them.
        let in_image = std::fs::metadata(rootfs.join("usr/bin/skiff"))
            .unwrap()
            .len();
        let host = std::fs::metadata(&exe).unwrap().len();
        assert!(
            in_image < host,
            "{in_image} bytes in the image, {host} on the host"
        );
    }
}
