//! Container log files in the CRI format the kubelet reads: `<RFC3339Nano> <stream> <F|P> <text>`,
//! and reading them back the way `kubectl logs` asks (tail, since, timestamps, limit, follow).

use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt,
};

/// Longest line written as one record; longer ones are split into partial (`P`) records,
/// as containerd does.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    /// The line continues in the next record of the same stream.
    pub partial: bool,
    pub text: String,
}

/// Formats one record (with its trailing newline).
pub fn format_record(time: DateTime<Utc>, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} ",
        time.to_rfc3339_opts(SecondsFormat::Nanos, true),
        stream.as_str(),
        if partial { "P" } else { "F" }
    )
    .into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Parses one line of a log file (without its newline); `None` if it is not a CRI record.
pub fn parse_record(line: &str) -> Option<LogRecord> {
    let mut parts = line.splitn(4, ' ');
    let time = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(LogRecord {
        time,
        stream,
        partial,
        text: parts.next().unwrap_or("").to_string(),
    })
}

/// Copies a container's output stream into the shared log file, one record per line.
pub(crate) async fn pump(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    log: Arc<Mutex<std::fs::File>>,
) {
    let mut reader = tokio::io::BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_RECORD as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (text, partial) = match buf.strip_suffix(b"\n") {
            Some(text) => (text, false),
            None => (&buf[..], buf.len() == MAX_RECORD),
        };
        let record = format_record(Utc::now(), stream, partial, text);
        let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not kill the container; the output is lost, as with kubelet.
        let _ = file.write_all(&record);
    }
}

/// Which part of a log to return, as the kubelet's `PodLogOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N records (`--tail`).
    pub tail_lines: Option<u64>,
    /// Only records at or after this time (`--since`, `--since-time`).
    pub since: Option<DateTime<Utc>>,
    /// Prefix each record with its RFC 3339 time (`--timestamps`).
    pub timestamps: bool,
    /// Stop after this many bytes (`--limit-bytes`).
    pub limit_bytes: Option<u64>,
    /// Keep reading as the file grows (`-f`), until the container has exited.
    pub follow: bool,
    /// Only the records of one stream (the kubelet's `stream=Stdout|Stderr`); `None` = both.
    pub stream: Option<Stream>,
}

/// Reading a log file failed (the client going away is not an error).
#[derive(Debug, thiserror::Error)]
#[error("reading log {path}: {source}")]
pub struct LogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Resolves once the container has exited; ends a follow after the file is drained.
pub type ExitSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How often a follow looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Writes the log at `path` to `out` as the kubelet does: each record's text (a full line
/// gets its newline back, a partial one does not), optionally prefixed with its time.
/// With `follow`, waits for new records until `exited` resolves and the file is drained;
/// without an `exited` signal a follow only ends when `out` is closed. Returns the bytes
/// written; a closed `out` (the client left) ends the read without error.
pub async fn read_log<W: AsyncWrite + Unpin>(
    path: &Path,
    opts: &LogOptions,
    out: &mut W,
    exited: Option<ExitSignal>,
) -> Result<u64, LogError> {
    let err = |source| LogError {
        path: path.to_path_buf(),
        source,
    };
    let start = match opts.tail_lines {
        Some(n) => {
            let p = path.to_path_buf();
            tokio::task::spawn_blocking(move || tail_offset(&p, n))
                .await
                .map_err(|e| err(std::io::Error::other(e)))?
                .map_err(err)?
        }
        None => 0,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(err)?;
    file.seek(SeekFrom::Start(start)).await.map_err(err)?;
    let mut reader = tokio::io::BufReader::new(file);
    let mut exited = exited;
    let mut exit_seen = false;
    let mut written = 0u64;
    let mut line = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut line).await.map_err(err)?;
        if line.ends_with(b"\n") {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            line.clear();
            let Some(rec) = parse_record(&text) else {
                continue;
            };
            if opts.since.is_some_and(|since| rec.time < since)
                || opts.stream.is_some_and(|s| s != rec.stream)
            {
                continue;
            }
            let mut chunk = Vec::with_capacity(rec.text.len() + 40);
            if opts.timestamps {
                chunk.extend_from_slice(go_rfc3339_nano(rec.time).as_bytes());
                chunk.push(b' ');
            }
            chunk.extend_from_slice(rec.text.as_bytes());
            if !rec.partial {
                chunk.push(b'\n');
            }
            let room = opts.limit_bytes.map(|l| l.saturating_sub(written));
            let take = room.map_or(chunk.len(), |r| chunk.len().min(r as usize));
            if out.write_all(&chunk[..take]).await.is_err() {
                return Ok(written);
            }
            written += take as u64;
            if room.is_some_and(|r| r as usize <= chunk.len()) {
                break;
            }
            continue;
        }
        if n > 0 {
            // Part of a record whose writer is mid-line: keep it and read on.
            continue;
        }
        // End of the file for now.
        if !opts.follow || exit_seen {
            break;
        }
        if out.flush().await.is_err() {
            return Ok(written);
        }
        match exited.as_mut() {
            Some(signal) => tokio::select! {
                _ = signal => {
                    // One more pass drains what was written before the exit.
                    exit_seen = true;
                    exited = None;
                }
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            },
            None if exit_seen => break,
            None => tokio::time::sleep(FOLLOW_POLL).await,
        }
        // A log rotated away (a new file at `path`) or truncated in place is followed
        // from the start of what `path` holds now.
        if let Some(file) = rotated(path, reader.get_mut()).await {
            reader = tokio::io::BufReader::new(file);
            line.clear();
        }
    }
    let _ = out.flush().await;
    Ok(written)
}

/// The file now at `path` if it is not the one being read (rotation), or the same file
/// rewound if it shrank below the read position (truncation); `None` if nothing changed.
async fn rotated(path: &Path, current: &mut tokio::fs::File) -> Option<tokio::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let now = tokio::fs::metadata(path).await.ok()?;
    let ours = current.metadata().await.ok()?;
    if now.ino() != ours.ino() || now.dev() != ours.dev() {
        return tokio::fs::File::open(path).await.ok();
    }
    let pos = current.stream_position().await.ok()?;
    if now.len() < pos {
        let mut file = tokio::fs::File::open(path).await.ok()?;
        file.seek(SeekFrom::Start(0)).await.ok()?;
        return Some(file);
    }
    None
}

/// The offset of the last `n` records of the file (0 when it has fewer), found by reading
/// backwards so a long log is not read whole.
pub fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    // The file's last byte ends the last record; it does not start a new one.
    let mut skip_last = true;
    while pos > 0 {
        let chunk = (pos as usize).min(buf.len());
        pos -= chunk as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] != b'\n' {
                skip_last = false;
                continue;
            }
            if skip_last {
                skip_last = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(pos + i as u64 + 1);
            }
        }
    }
    Ok(0)
}

/// A time as Go's `time.RFC3339Nano` prints it (trailing zeros of the fraction dropped),
/// which is what kubelet's `--timestamps` output looks like.
pub fn go_rfc3339_nano(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((secs, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{digits}Z")
            }
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(path: &Path, records: &[(i64, Stream, bool, &str)]) {
        let base = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("log");
        for (secs, stream, partial, text) in records {
            let t = base + chrono::Duration::seconds(*secs);
            f.write_all(&format_record(t, *stream, *partial, text.as_bytes()))
                .expect("write");
        }
    }

    async fn read(path: &Path, opts: LogOptions) -> String {
        let mut out = Vec::new();
        read_log(path, &opts, &mut out, None).await.expect("read");
        String::from_utf8(out).expect("utf8")
    }

    #[tokio::test]
    async fn reads_with_tail_since_timestamps_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        write_log(
            &path,
            &[
                (0, Stream::Stdout, false, "one"),
                (1, Stream::Stderr, false, "two"),
                (2, Stream::Stdout, true, "thr"),
                (2, Stream::Stdout, false, "ee"),
                (3, Stream::Stdout, false, "four"),
            ],
        );
        assert_eq!(
            read(&path, LogOptions::default()).await,
            "one\ntwo\nthree\nfour\n"
        );
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(&path, tail(1)).await, "four\n");
        assert_eq!(read(&path, tail(2)).await, "ee\nfour\n");
        assert_eq!(read(&path, tail(0)).await, "");
        assert_eq!(read(&path, tail(99)).await, "one\ntwo\nthree\nfour\n");
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z")
            .expect("time")
            .with_timezone(&Utc);
        let opts = LogOptions {
            since: Some(since),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(&path, opts).await,
            "2026-01-01T00:00:01Z two\n2026-01-01T00:00:02Z thr2026-01-01T00:00:02Z ee\n2026-01-01T00:00:03Z four\n"
        );
        let opts = LogOptions {
            stream: Some(Stream::Stderr),
            ..Default::default()
        };
        assert_eq!(read(&path, opts).await, "two\n");
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(&path, opts).await, "one\ntw");
    }

    #[tokio::test]
    async fn follow_survives_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        write_log(&path, &[(0, Stream::Stdout, false, "before")]);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let (mut client, mut server) = tokio::io::duplex(1024);
        let p = path.clone();
        let reader = tokio::spawn(async move {
            let opts = LogOptions {
                follow: true,
                ..Default::default()
            };
            let signal: ExitSignal = Box::pin(async move {
                let _ = exit_rx.await;
            });
            read_log(&p, &opts, &mut server, Some(signal)).await
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"before\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "follow ended early");
            got.extend_from_slice(&buf[..n]);
        }
        std::fs::rename(&path, dir.path().join("log.1")).expect("rotate");
        write_log(&path, &[(1, Stream::Stdout, false, "after")]);
        while !got.ends_with(b"after\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "follow ended early");
            got.extend_from_slice(&buf[..n]);
        }
        exit_tx.send(()).expect("send");
        client.read_to_end(&mut got).await.expect("read to end");
        assert_eq!(String::from_utf8_lossy(&got), "before\nafter\n");
        reader.await.expect("join").expect("read_log");
    }

    #[test]
    fn go_time_format_drops_trailing_zeros() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.120000000Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(go_rfc3339_nano(t), "2026-01-01T00:00:00.12Z");
    }

    #[tokio::test]
    async fn follow_reads_new_records_and_stops_after_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        write_log(&path, &[(0, Stream::Stdout, false, "first")]);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let (mut client, mut server) = tokio::io::duplex(1024);
        let p = path.clone();
        let reader = tokio::spawn(async move {
            let opts = LogOptions {
                follow: true,
                ..Default::default()
            };
            let signal: ExitSignal = Box::pin(async move {
                let _ = exit_rx.await;
            });
            read_log(&p, &opts, &mut server, Some(signal)).await
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"first\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "follow ended early");
            got.extend_from_slice(&buf[..n]);
        }
        write_log(&path, &[(1, Stream::Stdout, false, "second")]);
        while !got.ends_with(b"second\n") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "follow ended early");
            got.extend_from_slice(&buf[..n]);
        }
        // Written before the exit is announced: must still be delivered.
        write_log(&path, &[(2, Stream::Stdout, false, "last")]);
        exit_tx.send(()).expect("send");
        client.read_to_end(&mut got).await.expect("read to end");
        assert_eq!(String::from_utf8_lossy(&got), "first\nsecond\nlast\n");
        assert_eq!(reader.await.expect("join").expect("read_log"), 18);
    }

    #[test]
    fn records_round_trip() {
        let t = Utc::now();
        let rec = format_record(t, Stream::Stderr, true, b"a b  c");
        let line = String::from_utf8(rec).expect("utf8");
        let parsed = parse_record(line.trim_end_matches('\n')).expect("parse");
        assert_eq!(
            parsed,
            LogRecord {
                time: t,
                stream: Stream::Stderr,
                partial: true,
                text: "a b  c".into()
            }
        );
        assert!(parse_record("garbage").is_none());
        assert!(parse_record("2026-01-01T00:00:00Z stdin F x").is_none());
    }

    #[tokio::test]
    async fn long_lines_are_split_into_partial_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let log = Arc::new(Mutex::new(std::fs::File::create(&path).expect("log")));
        let mut input = vec![b'x'; MAX_RECORD + 10];
        input.extend_from_slice(b"\nlast-without-newline");
        pump(input.as_slice(), Stream::Stdout, log).await;
        let text = std::fs::read_to_string(&path).expect("read");
        let recs: Vec<LogRecord> = text
            .lines()
            .map(|l| parse_record(l).expect("record"))
            .collect();
        let shape: Vec<(bool, usize)> = recs.iter().map(|r| (r.partial, r.text.len())).collect();
        assert_eq!(shape, [(true, MAX_RECORD), (false, 10), (false, 20)]);
    }
}
