//! The HTTP endpoint closes connections that send nothing, or half their headers, for the
//! header-read timeout (idle keep-alive connections included), keeps serving the others, and
//! drains on shutdown.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads until the server closes the connection; `None` if it has not within `within`.
async fn closed_within(mut s: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut got))
        .await
        .ok()
        .map(|_| got)
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(skiff_serving::serve_router_with(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_millis(300),
    ));

    let silent = TcpStream::connect(addr).await.expect("connect");
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 256];
    let n = kept.read(&mut answer).await.expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{answer:?}");

    // Longer than the timeout, well short of what a hung server would take.
    let within = Duration::from_secs(5);
    for (what, conn) in [("silent", silent), ("half-sent", half), ("idle", kept)] {
        assert!(
            closed_within(conn, within).await.is_some(),
            "the {what} connection is still open"
        );
    }

    // New requests are served all along, and shutdown returns.
    let mut fresh = TcpStream::connect(addr).await.expect("connect");
    fresh
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = closed_within(fresh, within)
        .await
        .expect("answered and closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    let _ = stop.send(());
    tokio::time::timeout(within, server)
        .await
        .expect("shutdown finishes")
        .expect("server task")
        .expect("server");
}
