//! The HTTP floor of the engine-efficiency benchmark (`bench/serving/run.py`): a server on the
//! same stack as `skiff serve` (the same runtime builder and scheduling class, and the same
//! `serve_router`: axum on hyper with `TCP_NODELAY`) that reads each request's body in full and answers with `?bytes=N` bytes and
//! does nothing else. Its CPU time per request is what any server on this stack pays to move a
//! request and its answer, with no decoding, no batching and no engine; the benchmark uses it to
//! tell which of its points a server could reach at all.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Query;
use clap::Parser;
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "http_floor",
    about = "answers every request with ?bytes=N bytes, after reading its body"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    bytes: usize,
}

/// Largest answer it gives, so that a typo in a benchmark cannot make it allocate gigabytes.
const MAX_ANSWER: usize = 64 << 20;

async fn answer(Query(q): Query<Answer>, body: Bytes) -> Vec<u8> {
    // The body is read in full by the extractor; keep it alive until the answer is built.
    let _ = std::hint::black_box(body);
    vec![b' '; q.bytes.min(MAX_ANSWER)]
}

/// The allocator of `skiff serve`, so that this example measures the same server.
#[global_allocator]
static ALLOCATOR: skiff_serving::alloc::ServingAllocator = skiff_serving::alloc::ServingAllocator;

fn main() -> anyhow::Result<()> {
    skiff_serving::alloc::serve_with_mimalloc();
    let cli = Cli::parse();
    skiff_serving::sched::runtime()?.block_on(async move {
        let app = Router::new().fallback(answer);
        let listener = tokio::net::TcpListener::bind((cli.host.as_str(), cli.port)).await?;
        println!("listening on {}", listener.local_addr()?);
        skiff_serving::serve_router(listener, app, std::future::pending()).await?;
        Ok(())
    })
}
