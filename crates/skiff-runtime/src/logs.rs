//! Container log files in the CRI format the kubelet reads: `<RFC3339Nano> <stream> <F|P> <text>`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};

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

#[cfg(test)]
mod tests {
    use super::*;

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
