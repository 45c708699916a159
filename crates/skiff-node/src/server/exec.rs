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

/// Subprotocols spoken, most preferred first (v1–v3 predate the JSON status channel).
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

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

pub(super) async fn exec(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    query: &Query,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let bad = |m: &str| status_response(StatusCode::BAD_REQUEST, "BadRequest", m);
    if !wants_upgrade(&req, "websocket") {
        return bad("exec needs a WebSocket upgrade with a channel.k8s.io subprotocol");
    }
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
    let command = query.all("command").to_vec();
    if command.is_empty() {
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
    let v5 = protocol == "v5.channel.k8s.io";
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(TokioIo::new(upgraded), c, spec, wanted, v5).await,
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    let mut r = Response::new(super::full(""));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&websocket::accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    h.insert(
        "sec-websocket-protocol",
        header::HeaderValue::from_static(protocol),
    );
    r
}

/// Frames for the single writer task.
fn data_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    websocket::encode_frame(websocket::OP_BINARY, &payload, None)
}

async fn session<IO>(io: IO, c: ContainerRef, spec: ExecSpec, wanted: Wanted, v5: bool)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let status = match c.runtime.exec(&c.id, &spec).await {
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
