//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log file, streamed.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Response, StatusCode, header};
use http_body_util::BodyExt;
use skiff_runtime::logs::{ExitSignal, LogOptions, Stream, read_log};
use tokio::io::AsyncReadExt;

use super::{Body, Ctx, Query, status_response, stream_error};

/// Parses the kubelet's log query (`PodLogOptions` as query parameters).
fn options(query: &Query) -> Result<LogOptions, String> {
    let mut opts = LogOptions {
        follow: query.flag("follow"),
        timestamps: query.flag("timestamps"),
        ..Default::default()
    };
    if let Some(n) = query.int("tailLines")? {
        if n < 0 {
            return Err(format!("tailLines must be >= 0, got {n}"));
        }
        opts.tail_lines = Some(n as u64);
    }
    if let Some(n) = query.int("limitBytes")? {
        if n < 1 {
            return Err(format!("limitBytes must be > 0, got {n}"));
        }
        opts.limit_bytes = Some(n as u64);
    }
    if let Some(s) = query.int("sinceSeconds")? {
        if s < 1 {
            return Err(format!("sinceSeconds must be > 0, got {s}"));
        }
        opts.since = Some(Utc::now() - chrono::Duration::seconds(s));
    }
    opts.stream = match query.get("stream") {
        None | Some("All") => None,
        Some("Stdout") => Some(Stream::Stdout),
        Some("Stderr") => Some(Stream::Stderr),
        Some(other) => {
            return Err(format!(
                "invalid stream {other:?}: want All, Stdout or Stderr"
            ));
        }
    };
    if let Some(t) = query.get("sinceTime") {
        if opts.since.is_some() {
            return Err("at most one of sinceTime or sinceSeconds may be specified".into());
        }
        let t =
            DateTime::parse_from_rfc3339(t).map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?;
        opts.since = Some(t.with_timezone(&Utc));
    }
    Ok(opts)
}

pub(super) async fn container_logs(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    query: &Query,
) -> Response<Body> {
    let opts = match options(query) {
        Ok(o) => o,
        Err(m) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &m),
    };
    let c = match ctx
        .lookup
        .container(ns, pod, Some(container), query.flag("previous"))
    {
        Ok(c) => c,
        Err(e) => return stream_error(e),
    };
    let path = match c.runtime.log_path(&c.id) {
        Ok(p) => p,
        Err(e) => {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("container {container:?} in pod {pod:?} has no log: {e}"),
            );
        }
    };
    // A missing file is an answer now, not a broken stream later.
    if let Err(e) = tokio::fs::metadata(&path).await {
        return status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("failed to open log of container {container:?} in pod {pod:?}: {e}"),
        );
    }
    let exited: Option<ExitSignal> = opts.follow.then(|| {
        let (rt, id) = (c.runtime.clone(), c.id.clone());
        Box::pin(async move {
            let _ = rt.wait(&id).await;
        }) as ExitSignal
    });
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Err(e) = read_log(&path, &opts, &mut writer, exited).await {
            tracing::warn!(error = %e, "reading container log");
        }
    });
    let stream = futures::stream::unfold(reader, |mut reader| async move {
        let mut buf = vec![0u8; 32 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                let frame = hyper::body::Frame::data(Bytes::from(buf));
                Some((Ok::<_, std::io::Error>(frame), reader))
            }
        }
    });
    let mut r = Response::new(http_body_util::StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}
