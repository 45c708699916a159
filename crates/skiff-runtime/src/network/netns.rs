//! Named network namespaces as bind-mounted files, and running code inside one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

/// `f_type` of a file on the namespace filesystem (`NSFS_MAGIC`): what a live bind-mounted
/// namespace looks like.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Runs `f` on a dedicated thread that has joined the network namespace at `netns` (a
/// bind-mounted namespace file such as `PodNetworkStatus::netns`).
///
/// Sockets created by `f` stay in that namespace after it returns, so a listener bound or
/// a stream connected here can be used from any thread (port-forward, probes). The thread
/// ends with `f`, so no other code ever runs in the wrong namespace. Blocking: call it
/// from `spawn_blocking` on an async runtime. A panic in `f` is resumed in the caller.
pub fn run_in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = File::open(netns)?;
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn_scoped(scope, move || -> io::Result<T> {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )?;
                Ok(f())
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Opens a TCP connection from inside the network namespace at `netns` (port-forward to
/// `127.0.0.1:<port>` of a pod, probes): the socket is created and connected on a thread
/// in the namespace, then handed to tokio. Must be called within a tokio runtime.
pub async fn connect_in_netns(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let netns = netns.to_path_buf();
    let stream = tokio::task::spawn_blocking(move || {
        run_in_netns(&netns, || {
            std::net::TcpStream::connect_timeout(&addr, timeout)
        })
    })
    .await
    .map_err(io::Error::other)???;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Creates a new network namespace and pins it at `path` (which must not exist).
pub(crate) fn create(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;
    let target = path.to_path_buf();
    // unshare() moves only the calling thread; doing it on a throw-away thread leaves the
    // rest of the process in the host namespace, and the bind mount keeps the new one
    // alive after the thread exits.
    let pinned = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> io::Result<()> {
            // SAFETY: only a new network namespace is requested; the file descriptor table
            // stays shared, which is what `unshare_unsafe` asks callers to consider.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = pinned {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Whether `path` is a pinned namespace (and not a leftover empty file).
pub(crate) fn is_pinned(path: &Path) -> bool {
    rustix::fs::statfs(path)
        .map(|st| st.f_type as u64 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Unpins and removes the namespace file; the namespace goes away (with its interfaces)
/// once no process is left in it. Missing or unmounted files are fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) => {}
        // EINVAL: not a mount point (a leftover empty file).
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes `dir` a shared mount point (bind-mounting it onto itself if needed) so that
/// unmounting a namespace file also unmounts the copies that later mount namespaces
/// (containers) got of it; otherwise those copies would keep the namespace alive.
/// Returns whether a bind mount was created (to undo it in tests).
pub(crate) fn make_shared_dir(dir: &Path) -> io::Result<bool> {
    fs::create_dir_all(dir)?;
    let shared = MountPropagationFlags::SHARED;
    match rustix::mount::mount_change(dir, shared) {
        Ok(()) => Ok(false),
        Err(e) if e == rustix::io::Errno::INVAL => {
            rustix::mount::mount_bind(dir, dir)?;
            rustix::mount::mount_change(dir, shared)?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Undoes the bind mount `make_shared_dir` created.
pub(crate) fn unshare_dir(dir: &Path) -> io::Result<()> {
    match rustix::mount::unmount(dir, UnmountFlags::DETACH) {
        Err(e) if e != rustix::io::Errno::INVAL && e != rustix::io::Errno::NOENT => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_in_missing_namespace_fails() {
        let err = run_in_netns(Path::new("/nonexistent/netns"), || ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn plain_file_is_not_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ns");
        fs::write(&f, b"").unwrap();
        assert!(!is_pinned(&f));
        assert!(!is_pinned(&dir.path().join("missing")));
        // Removing an unmounted leftover works, twice.
        remove(&f).unwrap();
        remove(&f).unwrap();
        assert!(!f.exists());
    }

    #[test]
    fn create_enter_remove() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to create network namespaces");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns1");
        create(&path).unwrap();
        assert!(is_pinned(&path));
        assert!(
            create(&path).is_err(),
            "an existing namespace file is not replaced"
        );
        let host = fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside = run_in_netns(&path, || fs::read_link("/proc/thread-self/ns/net"))
            .unwrap()
            .unwrap();
        assert_ne!(host, inside);
        // This thread is still in the host namespace.
        assert_eq!(fs::read_link("/proc/thread-self/ns/net").unwrap(), host);
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
    }
}
