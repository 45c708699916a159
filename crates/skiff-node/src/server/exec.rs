//! `/exec/{ns}/{pod}/{container}`: runs a command in a container and carries its streams
//! over WebSocket with the Kubernetes channel protocol (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`): each message starts with a channel byte — 0 stdin, 1 stdout,
//! 2 stderr, 3 the final `Status`, 4 terminal resize, 255 (v5) "close this channel".

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use skiff_runtime::{BoxedReader, BoxedWriter, ExecSpec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::websocket::{self, Message};
use super::{
    Body, Ctx, Query, header_list, header_str, status_response, stream_error, wants_upgrade,
};
use crate::streams::ContainerRef;

/// WebSocket subprotocols spoken, most preferred first (v1–v3 predate the JSON status channel).
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// `X-Stream-Protocol-Version`s spoken over SPDY (v5 only adds the close signal, which
/// SPDY has natively as FIN).
pub const SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdout: bool,
    stderr: bool,
}

/// How long a SPDY client has to open the streams it asked for.
const STREAM_CREATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `attach` connects to the container's main process instead of starting a command.
pub(super) async fn exec(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    query: &Query,
    mut req: Request<Incoming>,
    attach: bool,
) -> Response<Body> {
    let bad = |m: &str| status_response(StatusCode::BAD_REQUEST, "BadRequest", m);
    let transport = if wants_upgrade(&req, "websocket") {
        let offered = header_list(&req, "sec-websocket-protocol");
        let Some(protocol) = PROTOCOLS
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .copied()
        else {
            return bad(&format!(
                "none of the offered subprotocols {offered:?} is supported; supported: {PROTOCOLS:?}"
            ));
        };
        let Some(key) = header_str(&req, "sec-websocket-key").map(str::to_string) else {
            return bad("missing Sec-WebSocket-Key");
        };
        Transport::WebSocket { protocol, key }
    } else if wants_upgrade(&req, "SPDY/3.1") {
        let offered = header_list(&req, "x-stream-protocol-version");
        // The client's order decides, as in Kubernetes' handshake.
        let Some(protocol) = offered
            .iter()
            .find_map(|o| SPDY_PROTOCOLS.iter().find(|p| *p == o).copied())
        else {
            return bad(&format!(
                "none of the offered protocols {offered:?} is supported; supported: {SPDY_PROTOCOLS:?}"
            ));
        };
        Transport::Spdy { protocol }
    } else {
        return bad("Upgrade request required");
    };
    let command = query.all("command").to_vec();
    if command.is_empty() && !attach {
        return bad("you must specify at least one command for the container");
    }
    let spec = ExecSpec {
        command,
        tty: query.flag("tty"),
        stdin: query.flag("stdin"),
    };
    let wanted = Wanted {
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr") && !spec.tty,
    };
    if !spec.stdin && !wanted.stdout && !query.flag("stderr") {
        return bad("you must specify at least one of stdin, stdout, stderr");
    }
    let c = match ctx.lookup.container(ns, pod, Some(container), false) {
        Ok(c) => c,
        Err(e) => return stream_error(e),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut r = Response::new(super::full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    match transport {
        Transport::WebSocket { protocol, key } => {
            let v5 = protocol == "v5.channel.k8s.io";
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        session(TokioIo::new(upgraded), c, spec, wanted, v5, attach).await
                    }
                    Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
                }
            });
            h.insert(
                header::UPGRADE,
                header::HeaderValue::from_static("websocket"),
            );
            if let Ok(v) = header::HeaderValue::from_str(&websocket::accept_key(&key)) {
                h.insert("sec-websocket-accept", v);
            }
            h.insert(
                "sec-websocket-protocol",
                header::HeaderValue::from_static(protocol),
            );
        }
        Transport::Spdy { protocol } => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        spdy_session(TokioIo::new(upgraded), c, spec, wanted, attach).await
                    }
                    Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
                }
            });
            h.insert(
                header::UPGRADE,
                header::HeaderValue::from_static("SPDY/3.1"),
            );
            h.insert(
                "x-stream-protocol-version",
                header::HeaderValue::from_static(protocol),
            );
        }
    }
    r
}

/// How the streams travel.
enum Transport {
    WebSocket { protocol: &'static str, key: String },
    Spdy { protocol: &'static str },
}

/// Frames for the single writer task.
fn data_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    websocket::encode_frame(websocket::OP_BINARY, &payload, None)
}

async fn session<IO>(
    io: IO,
    c: ContainerRef,
    spec: ExecSpec,
    wanted: Wanted,
    v5: bool,
    attach: bool,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (tx, writer) = super::spawn_writer(wr, 64);
    let status = match start(&c, &spec, attach).await {
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {e}"),
            "reason": "InternalError",
            "code": 500,
            "details": {"causes": [{"message": format!("error executing command in container: {e}")}]},
        }),
        Ok(mut process) => {
            let reader = tokio::spawn(read_client(
                rd,
                process.stdin.take(),
                process.resize.clone(),
                tx.clone(),
                v5,
            ));
            let out = tokio::spawn(pump(process.stdout, STDOUT, wanted.stdout, tx.clone()));
            let err = process
                .stderr
                .map(|e| tokio::spawn(pump(e, STDERR, wanted.stderr, tx.clone())));
            let _ = out.await;
            if let Some(err) = err {
                let _ = err.await;
            }
            let exit = process.exit.await;
            reader.abort();
            exit_status(&spec.command, exit)
        }
    };
    let _ = tx
        .send(data_frame(
            ERROR,
            &serde_json::to_vec(&status).unwrap_or_default(),
        ))
        .await;
    let _ = tx
        .send(websocket::encode_frame(
            websocket::OP_CLOSE,
            &1000u16.to_be_bytes(),
            None,
        ))
        .await;
    drop(tx);
    let _ = writer.await;
}

/// The `Status` sent on the error channel when the command has ended.
fn exit_status(command: &[String], exit: Result<i32, skiff_runtime::RuntimeError>) -> Value {
    match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// Copies one output stream into frames of `channel` (or drains it if not wanted).
async fn pump(mut from: BoxedReader, channel: u8, wanted: bool, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if wanted => {
                if tx.send(data_frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

/// Handles what the client sends: stdin, resizes, stream closes, pings.
async fn read_client<R: AsyncRead + Unpin>(
    rd: R,
    mut stdin: Option<BoxedWriter>,
    resize: Option<mpsc::Sender<(u16, u16)>>,
    tx: mpsc::Sender<Vec<u8>>,
    v5: bool,
) {
    let mut reader = websocket::Reader::new(rd);
    loop {
        let data = match reader.next().await {
            Ok(Some(Message::Binary(d) | Message::Text(d))) => d,
            Ok(Some(Message::Ping(p))) => {
                let _ = tx
                    .send(websocket::encode_frame(websocket::OP_PONG, &p, None))
                    .await;
                continue;
            }
            Ok(Some(Message::Pong(_))) => continue,
            Ok(Some(Message::Close(_)) | None) | Err(_) => break,
        };
        let Some((&channel, rest)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(rest).await.is_err() || w.flush().await.is_err())
                {
                    stdin = None;
                }
            }
            RESIZE => {
                if let (Some(tx), Ok(size)) = (&resize, serde_json::from_slice::<Value>(rest)) {
                    let dim = |k: &str| size.get(k).and_then(Value::as_u64).unwrap_or(0) as u16;
                    let _ = tx.send((dim("Width"), dim("Height"))).await;
                }
            }
            CLOSE if v5 => {
                if rest.first() == Some(&STDIN)
                    && let Some(mut w) = stdin.take()
                {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    }
    if let Some(mut w) = stdin.take() {
        let _ = w.shutdown().await;
    }
}

/// The stream ids a SPDY exec client opened, by `streamType`.
#[derive(Debug, Default, Clone, Copy)]
struct SpdyStreams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
}

impl SpdyStreams {
    fn complete(&self, spec: &ExecSpec, wanted: Wanted) -> bool {
        self.error.is_some()
            && (!spec.stdin || self.stdin.is_some())
            && (!wanted.stdout || self.stdout.is_some())
            && (!wanted.stderr || self.stderr.is_some())
    }
}

/// Exec over SPDY/3.1: the client opens one stream per `streamType` (error, stdin, stdout,
/// stderr, resize); the final `Status` goes on the error stream.
async fn spdy_session<IO>(io: IO, c: ContainerRef, spec: ExecSpec, wanted: Wanted, attach: bool)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    use super::spdy::{FLAG_FIN, Frame, FrameReader, FrameWriter};
    let (rd, wr) = tokio::io::split(io);
    let (tx, writer) = super::spawn_writer(wr, 64);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SpdyStreams>();
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, mut resize_rx) = mpsc::channel::<(u16, u16)>(4);
    let reader = {
        let tx = tx.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut frames = FrameReader::new(rd);
            let mut replies = FrameWriter::new();
            let mut streams = SpdyStreams::default();
            let mut resize_stream = None;
            let mut ready_tx = Some(ready_tx);
            let mut stdin_tx = Some(stdin_tx);
            while let Ok(Some(frame)) = frames.next().await {
                match frame {
                    Frame::SynStream {
                        stream_id, headers, ..
                    } => {
                        let kind = Frame::header(&headers, "streamtype").unwrap_or_default();
                        match kind.as_str() {
                            "error" => streams.error = Some(stream_id),
                            "stdin" => streams.stdin = Some(stream_id),
                            "stdout" => streams.stdout = Some(stream_id),
                            "stderr" => streams.stderr = Some(stream_id),
                            "resize" => resize_stream = Some(stream_id),
                            _ => {
                                let _ = tx
                                    .send(FrameWriter::rst_stream(
                                        stream_id,
                                        super::spdy::RST_PROTOCOL_ERROR,
                                    ))
                                    .await;
                                continue;
                            }
                        }
                        let _ = tx.send(replies.syn_reply(stream_id, 0, &[])).await;
                        if streams.complete(&spec, wanted)
                            && let Some(r) = ready_tx.take()
                        {
                            let _ = r.send(streams);
                        }
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        if Some(stream_id) == streams.stdin {
                            if !data.is_empty()
                                && let Some(s) = &stdin_tx
                                && s.send(data).await.is_err()
                            {
                                stdin_tx = None;
                            }
                            if flags & FLAG_FIN != 0 {
                                stdin_tx = None;
                            }
                        } else if Some(stream_id) == resize_stream {
                            // A stream of JSON objects: {"Width":80,"Height":24}...
                            for size in serde_json::Deserializer::from_slice(&data)
                                .into_iter::<Value>()
                                .map_while(Result::ok)
                            {
                                let dim = |k: &str| {
                                    size.get(k).and_then(Value::as_u64).unwrap_or(0) as u16
                                };
                                let _ = resize_tx.try_send((dim("Width"), dim("Height")));
                            }
                        }
                    }
                    Frame::RstStream { stream_id, .. } if Some(stream_id) == streams.stdin => {
                        stdin_tx = None;
                    }
                    Frame::Ping(id) => {
                        let _ = tx.send(FrameWriter::ping(id)).await;
                    }
                    Frame::GoAway { .. } => break,
                    _ => {}
                }
            }
        })
    };
    let streams = match tokio::time::timeout(STREAM_CREATION_TIMEOUT, ready_rx).await {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!("exec client did not open its streams");
            reader.abort();
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let error_stream = streams.error.unwrap_or_default();
    let status = match start(&c, &spec, attach).await {
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: error executing command in container: {e}"),
            "reason": "InternalError",
            "code": 500,
        }),
        Ok(mut process) => {
            let stdin_task = process.stdin.take().map(|mut w| {
                tokio::spawn(async move {
                    while let Some(chunk) = stdin_rx.recv().await {
                        if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = w.shutdown().await;
                })
            });
            let resize_task = process.resize.clone().map(|r| {
                tokio::spawn(async move {
                    while let Some(size) = resize_rx.recv().await {
                        if r.send(size).await.is_err() {
                            return;
                        }
                    }
                })
            });
            let out = tokio::spawn(spdy_pump(process.stdout, streams.stdout, tx.clone()));
            let err = process
                .stderr
                .map(|e| tokio::spawn(spdy_pump(e, streams.stderr, tx.clone())));
            let _ = out.await;
            if let Some(err) = err {
                let _ = err.await;
            }
            let exit = process.exit.await;
            for t in [stdin_task, resize_task].into_iter().flatten() {
                t.abort();
            }
            exit_status(&spec.command, exit)
        }
    };
    let body = serde_json::to_vec(&status).unwrap_or_default();
    let _ = tx.send(FrameWriter::data(error_stream, 0, &body)).await;
    for id in [streams.error, streams.stdout, streams.stderr]
        .into_iter()
        .flatten()
    {
        let _ = tx.send(FrameWriter::data(id, FLAG_FIN, &[])).await;
    }
    let _ = tx.send(FrameWriter::goaway(0)).await;
    reader.abort();
    drop(tx);
    let _ = writer.await;
}

/// Copies an output stream into data frames of `stream` (drained if the client did not
/// open that stream).
async fn spdy_pump(mut from: BoxedReader, stream: Option<u32>, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(id) = stream {
                    let frame = super::spdy::FrameWriter::data(id, 0, &buf[..n]);
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Starts the command, or for `attach` connects to the main process: its output as the
/// runtime logs it from now on, until it exits (the runtimes keep no stdin for it).
async fn start(
    c: &ContainerRef,
    spec: &ExecSpec,
    attach: bool,
) -> Result<skiff_runtime::ExecProcess, skiff_runtime::RuntimeError> {
    if !attach {
        return c.runtime.exec(&c.id, spec).await;
    }
    let status = c.runtime.status(&c.id).await?;
    if status.state != skiff_runtime::ContainerState::Running {
        return Err(skiff_runtime::RuntimeError::InvalidState {
            id: c.id.clone(),
            state: status.state,
            action: "attach",
        });
    }
    let path = c.runtime.log_path(&c.id)?;
    let follow = |stream: skiff_runtime::logs::Stream| -> BoxedReader {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let (rt, id, path) = (c.runtime.clone(), c.id.clone(), path.clone());
        tokio::spawn(async move {
            let opts = skiff_runtime::logs::LogOptions {
                follow: true,
                tail_lines: Some(0),
                stream: Some(stream),
                ..Default::default()
            };
            let exited: skiff_runtime::logs::ExitSignal = Box::pin(async move {
                let _ = rt.wait(&id).await;
            });
            let _ = skiff_runtime::logs::read_log(&path, &opts, &mut w, Some(exited)).await;
        });
        Box::pin(r)
    };
    let (rt, id) = (c.runtime.clone(), c.id.clone());
    Ok(skiff_runtime::ExecProcess {
        stdin: None,
        stdout: follow(skiff_runtime::logs::Stream::Stdout),
        stderr: (!spec.tty).then(|| follow(skiff_runtime::logs::Stream::Stderr)),
        // Attach ends when the container does; its exit code is the pod status's business.
        exit: Box::pin(async move { rt.wait(&id).await.map(|_| 0) }),
        resize: None,
    })
}
