//! Closed-loop gRPC load for `inference.GRPCInferenceService/ModelInfer`, the gRPC counterpart of
//! `wrk` in `bench/serving/run.py`.
//!
//! A Python client (tritonclient in threads) cannot drive more than a few thousand calls per
//! second on two cores, so it measured itself rather than the server. This client speaks gRPC
//! directly over the `h2` crate: `--conc` clients, each with its own connection (as each
//! tritonclient user has its own channel), each sending its next request when the previous answer
//! arrived. Every answer is checked (`grpc-status: 0` and a response that decodes), so a failing
//! server cannot look fast. Prints one JSON line: requests, errors, rps, p50, p99 (ms).
//!
//! A call's HEADERS and DATA frames are queued together and leave in one write, as grpcio (under
//! tritonclient) sends them. hyper's HTTP/2 client flushed them as two TCP segments, which made
//! the server's kernel acknowledge the first on its own: two more packets per call than a real
//! client costs the server.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use prost::Message;
use skiff_serving::grpc::pb;

#[derive(Parser)]
#[command(name = "grpc_load", about = "closed-loop gRPC ModelInfer load")]
struct Cli {
    /// host:port of the gRPC server.
    #[arg(long)]
    target: String,
    #[arg(long)]
    model: String,
    /// Name of the model's input tensor.
    #[arg(long)]
    input: String,
    /// Comma-separated shape of the input, e.g. `1,4`.
    #[arg(long, default_value = "1,4")]
    shape: String,
    #[arg(long, default_value = "FP32")]
    datatype: String,
    /// File with the input's raw little-endian bytes (`raw_input_contents`).
    #[arg(long)]
    data_file: std::path::PathBuf,
    /// Send the data as typed `fp32_contents` instead of `raw_input_contents` (FP32 only).
    #[arg(long)]
    typed: bool,
    /// Concurrent clients, one HTTP/2 connection each.
    #[arg(long, default_value_t = 16)]
    conc: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Worker threads of the client's runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn request_message(cli: &Cli) -> anyhow::Result<Bytes> {
    let shape = cli
        .shape
        .split(',')
        .map(|d| d.trim().parse::<i64>())
        .collect::<Result<Vec<_>, _>>()?;
    let data = std::fs::read(&cli.data_file)?;
    let mut input = pb::InferInputTensor {
        name: cli.input.clone(),
        datatype: cli.datatype.clone(),
        shape,
        ..Default::default()
    };
    let mut raw = Vec::new();
    if cli.typed {
        anyhow::ensure!(cli.datatype == "FP32", "--typed supports FP32 only");
        let fp32_contents = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        input.contents = Some(pb::InferTensorContents {
            fp32_contents,
            ..Default::default()
        });
    } else {
        raw.push(data);
    }
    let msg = pb::ModelInferRequest {
        model_name: cli.model.clone(),
        inputs: vec![input],
        raw_input_contents: raw,
        ..Default::default()
    };
    // gRPC length-prefixed message: uncompressed flag, big-endian length, protobuf.
    let body = msg.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + body.len());
    framed.put_u8(0);
    framed.put_u32(body.len() as u32);
    framed.put_slice(&body);
    Ok(framed.freeze())
}

/// One call; `Ok(())` only for grpc-status 0 with a decodable `ModelInferResponse`.
async fn call(
    sender: &mut h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    body: &Bytes,
) -> anyhow::Result<()> {
    let req = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut stream) = sender.send_request(req, false)?;
    // Queued behind the HEADERS frame before the connection task runs: one write for both.
    stream.send_data(body.clone(), true)?;
    let resp = response.await?;
    anyhow::ensure!(resp.status() == 200, "HTTP {}", resp.status());
    let header_status = resp
        .headers()
        .get("grpc-status")
        .map(|v| v.as_bytes().to_vec());
    let mut recv = resp.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        data.extend_from_slice(&chunk);
        recv.flow_control().release_capacity(chunk.len())?;
    }
    let trailer_status = recv
        .trailers()
        .await?
        .and_then(|t| t.get("grpc-status").map(|v| v.as_bytes().to_vec()));
    let status = trailer_status.or(header_status);
    anyhow::ensure!(
        status.as_deref() == Some(b"0"),
        "grpc-status {:?}",
        status.map(|s| String::from_utf8_lossy(&s).into_owned())
    );
    anyhow::ensure!(data.len() >= 5, "short gRPC frame");
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    anyhow::ensure!(data.len() == 5 + len, "gRPC frame length mismatch");
    let answer = pb::ModelInferResponse::decode(&data[5..])?;
    anyhow::ensure!(!answer.outputs.is_empty(), "no outputs");
    Ok(())
}

async fn client(
    target: String,
    uri: http::Uri,
    body: Bytes,
    deadline: Instant,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let stream = tokio::net::TcpStream::connect(&target).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = h2::client::handshake(stream).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("grpc_load: connection: {e}");
        }
    });
    let mut sender = sender.ready().await?;
    let mut latencies_us = Vec::with_capacity(1 << 16);
    let mut errors = 0u64;
    while Instant::now() < deadline {
        let start = Instant::now();
        match call(&mut sender, &uri, &body).await {
            Ok(()) => latencies_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("grpc_load: {e}");
                }
            }
        }
        sender = match sender.ready().await {
            Ok(ready) => ready,
            Err(e) => anyhow::bail!("connection closed: {e}"),
        };
    }
    Ok((latencies_us, errors))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body = request_message(&cli)?;
    let uri: http::Uri = format!(
        "http://{}/inference.GRPCInferenceService/ModelInfer",
        cli.target
    )
    .parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let (latencies, errors, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(cli.duration);
        let tasks: Vec<_> = (0..cli.conc)
            .map(|_| {
                tokio::spawn(client(
                    cli.target.clone(),
                    uri.clone(),
                    body.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0u64;
        for t in tasks {
            match t.await? {
                Ok((lat, err)) => {
                    all.extend(lat);
                    errors += err;
                }
                Err(e) => {
                    eprintln!("grpc_load: client failed: {e}");
                    errors += 1;
                }
            }
        }
        anyhow::Ok((all, errors, start.elapsed()))
    })?;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let line = serde_json::json!({
        "requests": sorted.len(),
        "errors": errors,
        "rps": sorted.len() as f64 / elapsed.as_secs_f64(),
        "p50": percentile(&sorted, 0.50),
        "p99": percentile(&sorted, 0.99),
    });
    println!("{line}");
    Ok(())
}
