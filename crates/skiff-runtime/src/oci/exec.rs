//! Spawning `runc exec` with pipes, or with a terminal: runc is given a pty's slave side as
//! its stdio and controlling terminal, so it proxies to the container's own console, copies
//! our window size at start and again on every SIGWINCH a resize of our master triggers.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use rustix::pty::OpenptFlags;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, Command};

use crate::runtime::{BoxedReader, BoxedWriter, ExecProcess};

/// The exit future is filled in by the caller.
fn pending_exit()
-> Pin<Box<dyn std::future::Future<Output = Result<i32, crate::runtime::RuntimeError>> + Send>> {
    Box::pin(std::future::pending())
}

pub(super) fn spawn_pipes(mut cmd: Command, stdin: bool) -> io::Result<(Child, ExecProcess)> {
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().map(|s| Box::pin(s) as BoxedWriter);
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::pin(s) as BoxedReader)
        .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
    let stderr = child.stderr.take().map(|s| Box::pin(s) as BoxedReader);
    Ok((
        child,
        ExecProcess {
            stdin,
            stdout,
            stderr,
            exit: pending_exit(),
            resize: None,
        },
    ))
}

fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    Ok((master, slave))
}

pub(super) fn spawn_tty(mut cmd: Command, stdin: bool) -> io::Result<(Child, ExecProcess)> {
    let (master, slave) = open_pty()?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: between fork and exec only async-signal-safe raw syscalls run (setsid and
    // the TIOCSCTTY ioctl), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            let fd0 = std::os::fd::BorrowedFd::borrow_raw(0);
            rustix::process::ioctl_tiocsctty(fd0)?;
            Ok(())
        });
    }
    let child = cmd.spawn();
    // The Command holds our copies of the slave: without them, the master reads EOF (EIO)
    // once runc exits.
    drop(cmd);
    let child = child?;
    let resize_fd = master.try_clone()?;
    let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    let reader = tokio::fs::File::from_std(std::fs::File::from(master));
    let (resize, mut sizes) = tokio::sync::mpsc::channel::<(u16, u16)>(8);
    tokio::spawn(async move {
        while let Some((cols, rows)) = sizes.recv().await {
            let ws = rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // A TIOCSWINSZ ioctl: does not block.
            let _ = rustix::termios::tcsetwinsize(&resize_fd, ws);
        }
    });
    Ok((
        child,
        ExecProcess {
            stdin: stdin.then(|| Box::pin(writer) as BoxedWriter),
            stdout: Box::pin(PtyReader(reader)),
            stderr: None,
            exit: pending_exit(),
            resize: Some(resize),
        },
    ))
}

/// A pty master reads EIO once the last slave is closed: that is its end of file.
struct PtyReader(tokio::fs::File);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e))
                if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) =>
            {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
