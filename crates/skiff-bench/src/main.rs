//! `skiff-bench`: starts `skiff up` and measures start-up time, memory, create/get/list
//! throughput and watch fan-out against the control plane's targets, printing one table.

mod client;
mod load;
mod server;
mod stats;

use anyhow::{Result, bail};
use clap::Parser;
use server::Server;
use stats::{Row, median, ms, percentile, rate};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "skiff-bench",
    about = "Benchmark of the skiff control plane (127.0.0.1 only)"
)]
struct Args {
    /// The skiff binary to benchmark (a release build).
    #[arg(long)]
    skiff: PathBuf,
    /// Measurements to run, comma separated: startup, create, get, list, watch.
    #[arg(
        long,
        default_value = "startup,create,get,list,watch",
        value_delimiter = ','
    )]
    only: Vec<String>,
    /// Starts per start-up figure (the median is reported).
    #[arg(long, default_value_t = 10)]
    startup_runs: usize,
    /// ConfigMaps created in the create test.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent clients (requests in flight) for creates and gets.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds of gets (and of lists).
    #[arg(long, default_value_t = 5)]
    read_secs: u64,
    /// ConfigMaps in the namespace that is listed.
    #[arg(long, default_value_t = 1_000)]
    list_objects: usize,
    /// Concurrent list requests.
    #[arg(long, default_value_t = 8)]
    list_clients: usize,
    /// Concurrent watchers in the fan-out test.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// HTTP/2 connections the watchers share.
    #[arg(long, default_value_t = 10)]
    watch_connections: usize,
    /// Writes in the fan-out burst.
    #[arg(long, default_value_t = 1_000)]
    burst: usize,
    /// Concurrent writers of the burst.
    #[arg(long, default_value_t = 16)]
    burst_clients: usize,
    /// Where data dirs and server logs go (default: a temporary directory, removed after).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

impl Args {
    fn runs(&self, what: &str) -> bool {
        self.only.iter().any(|o| o.trim() == what)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = rt.block_on(run(&args))?;
    println!("{}", stats::markdown(&rows));
    Ok(())
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[skiff-bench] {}", msg.as_ref());
}

async fn run(args: &Args) -> Result<Vec<Row>> {
    if !args.skiff.is_file() {
        bail!("no skiff binary at {}", args.skiff.display());
    }
    let temp;
    let work: &Path = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d
        }
        None => {
            temp = tempfile::Builder::new().prefix("skiff-bench-").tempdir()?;
            temp.path()
        }
    };
    let mut rows = Vec::new();
    if args.runs("startup") {
        startup(args, work, &mut rows).await?;
    }
    if ["create", "get", "list", "watch"]
        .iter()
        .any(|w| args.runs(w))
    {
        under_load(args, work, &mut rows).await?;
    }
    Ok(rows)
}

/// Start-up time on fresh data dirs, then again on an existing (initialised) one.
async fn startup(args: &Args, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let log = work.join("startup.log");
    let mut fresh = Vec::new();
    let mut fresh_reported = Vec::new();
    for i in 0..args.startup_runs.max(1) {
        let s = Server::start(&args.skiff, &work.join(format!("fresh-{i}")), &log).await?;
        fresh.push(s.ready_after);
        fresh_reported.extend(s.reported_ms.map(Duration::from_millis));
        s.stop()?;
    }
    rows.push(ready_row("ready: fresh data dir", &fresh, &fresh_reported));
    let existing = work.join("fresh-0");
    let (times, reported) = restarts(args, &existing, &log).await?;
    rows.push(ready_row("ready: existing data dir", &times, &reported));
    Ok(())
}

async fn restarts(args: &Args, dir: &Path, log: &Path) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut times = Vec::new();
    let mut reported = Vec::new();
    for _ in 0..args.startup_runs.max(1) {
        let s = Server::start(&args.skiff, dir, log).await?;
        times.push(s.ready_after);
        reported.extend(s.reported_ms.map(Duration::from_millis));
        s.stop()?;
    }
    Ok((times, reported))
}

fn ready_row(name: &str, times: &[Duration], reported: &[Duration]) -> Row {
    let med = median(times).unwrap_or_default();
    let max = percentile(times, 1.0).unwrap_or_default();
    let mut note = format!(
        "spawn to first 200 from /readyz, median of {}; max {:.0} ms",
        times.len(),
        ms(max)
    );
    if let Some(r) = median(reported) {
        note.push_str(&format!("; skiff's own figure {:.0} ms", ms(r)));
    }
    Row::new(name, ms(med), "ms").below(1000.0).note(note)
}

/// Memory, creates, gets, lists and watch fan-out against one server.
async fn under_load(args: &Args, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let dir = work.join("load");
    let server = Server::start(&args.skiff, &dir, &work.join("load.log")).await?;
    // Let start-up work (controllers' first lists, allocator warm-up) settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(
        Row::new("idle RSS after start", server.rss_mib()?, "MiB")
            .below(50.0)
            .note("VmRSS, 2 s after ready"),
    );
    let endpoint = server.endpoint()?;
    let pool = client::Pool::connect(&endpoint, args.connections).await?;
    for ns in ["bench", "bench-list", "bench-watch"] {
        load::ensure_namespace(&pool, ns).await?;
    }
    let mut created = 0;
    if args.runs("create") || args.runs("get") {
        progress(format!(
            "create: {} ConfigMaps from {} clients over {} HTTP/2 connections",
            args.objects, args.clients, args.connections
        ));
        let cpu0 = server.cpu_time()?;
        let w = load::create(&pool, "bench", "cm", args.objects, args.clients).await;
        let cpu = server.cpu_time()?.saturating_sub(cpu0);
        check_errors("create", w.errors, &w.first_error)?;
        created = w.revisions.len();
        let r = rate(created, w.elapsed);
        rows.push(
            Row::new("create throughput", r, "obj/s")
                .at_least(2000.0)
                .note(format!(
                    "{created} ConfigMaps, {} clients, {} conns, {:.2} s; {}",
                    args.clients,
                    args.connections,
                    w.elapsed.as_secs_f64(),
                    cpu_note(cpu, w.elapsed, created)
                )),
        );
        latency_rows(rows, "create latency", &w.latencies, None);
    }
    if args.runs("get") && created > 0 {
        progress(format!(
            "get: {} streams for {} s",
            args.clients, args.read_secs
        ));
        let cpu0 = server.cpu_time()?;
        let r = load::get(
            &pool,
            "bench",
            "cm",
            args.objects,
            args.clients,
            Duration::from_secs(args.read_secs),
        )
        .await;
        let cpu = server.cpu_time()?.saturating_sub(cpu0);
        check_errors("get", r.errors, &r.first_error)?;
        rows.push(
            Row::new("get throughput", rate(r.ok, r.elapsed), "gets/s")
                .at_least(10_000.0)
                .note(format!(
                    "GET by name of {created} ConfigMaps, {} streams, {} conns, {} gets; {}",
                    args.clients,
                    args.connections,
                    r.ok,
                    cpu_note(cpu, r.elapsed, r.ok)
                )),
        );
        latency_rows(rows, "get latency", &r.latencies, None);
    }
    if args.runs("list") {
        progress(format!(
            "list: namespace of {} ConfigMaps",
            args.list_objects
        ));
        let w = load::create(&pool, "bench-list", "cm", args.list_objects, args.clients).await;
        check_errors("create for list", w.errors, &w.first_error)?;
        let cpu0 = server.cpu_time()?;
        let r = load::list(
            &pool,
            "bench-list",
            args.list_objects,
            args.list_clients,
            Duration::from_secs(args.read_secs),
        )
        .await;
        let cpu = server.cpu_time()?.saturating_sub(cpu0);
        check_errors("list", r.errors, &r.first_error)?;
        rows.push(
            Row::new("list throughput", rate(r.ok, r.elapsed), "lists/s").note(format!(
                "LIST of a namespace with {} ConfigMaps, {} concurrent; = {:.0} objects/s; p99 {:.1} ms; {}",
                args.list_objects,
                args.list_clients,
                rate(r.ok * args.list_objects, r.elapsed),
                ms(percentile(&r.latencies, 0.99).unwrap_or_default()),
                cpu_note(cpu, r.elapsed, r.ok)
            )),
        );
    }
    if args.runs("watch") {
        progress(format!(
            "watch: {} watchers over {} connections, burst of {} writes from {} clients",
            args.watchers, args.watch_connections, args.burst, args.burst_clients
        ));
        let cpu0 = server.cpu_time()?;
        let f = load::fan_out(
            &endpoint,
            load::FanOutSpec {
                ns: "bench-watch",
                watchers: args.watchers,
                watch_connections: args.watch_connections,
                writes: args.burst,
                writers: args.burst_clients,
                write_connections: 2,
                limit: Duration::from_secs(120),
            },
        )
        .await?;
        let cpu = server.cpu_time()?.saturating_sub(cpu0);
        check_errors("burst write", f.writes.errors, &f.writes.first_error)?;
        let verdict = format!(
            "{}/{} watchers saw all {} events in revision order",
            f.complete,
            f.watchers,
            f.writes.revisions.len()
        );
        match f.delivered_after {
            Some(d) => rows.push(
                Row::new("watch fan-out: all events at all watchers", ms(d), "ms").note(format!(
                    "{verdict}; {:.0} events delivered/s; writes acked after {:.0} ms; {} (per event delivered, watches opened too)",
                    rate(f.complete * f.writes.revisions.len(), d),
                    ms(f.writes_elapsed),
                    cpu_note(cpu, d, f.complete * f.writes.revisions.len())
                )),
            ),
            None => {
                progress(format!(
                    "watch fan-out INCOMPLETE: {verdict}: {}",
                    f.first_problem.as_deref().unwrap_or("?")
                ));
                rows.push(
                    Row::new("watch fan-out: watchers complete", f.complete as f64, "")
                        .at_least(f.watchers as f64)
                        .note(format!(
                            "{verdict}; first problem: {}",
                            f.first_problem.as_deref().unwrap_or("?")
                        )),
                );
            }
        }
        latency_rows(
            rows,
            "mutating latency during fan-out",
            &f.writes.latencies,
            Some(50.0),
        );
    }
    drop(pool);
    // Connections closed; give the server a moment to drop per-connection state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rows.push(
        Row::new("RSS after the load", server.rss_mib()?, "MiB")
            .below(50.0)
            .note("VmRSS, 3 s after the last client disconnected"),
    );
    server.stop()?;
    // Live data alone: the loaded data dir after a restart, without the load's garbage.
    let restarted = Server::start(&args.skiff, &dir, &work.join("restart.log")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push(
        Row::new(
            "idle RSS after restart on the loaded data dir",
            restarted.rss_mib()?,
            "MiB",
        )
        .below(50.0)
        .note("VmRSS, 2 s after ready"),
    );
    restarted.stop()?;
    if args.runs("startup") {
        let (times, reported) = restarts(args, &dir, &work.join("restart.log")).await?;
        rows.push(ready_row(
            "ready: data dir after the load",
            &times,
            &reported,
        ));
    }
    Ok(())
}

/// Server CPU over a phase: share of one core and time per operation (what the machine's
/// other load cannot distort).
fn cpu_note(cpu: Duration, elapsed: Duration, ops: usize) -> String {
    format!(
        "server CPU {:.0}% of one core, {:.1} µs/op",
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
        cpu.as_secs_f64() * 1e6 / ops.max(1) as f64
    )
}

fn check_errors(what: &str, errors: usize, first: &Option<String>) -> Result<()> {
    if errors > 0 {
        bail!(
            "{what}: {errors} requests failed; first: {}",
            first.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn latency_rows(rows: &mut Vec<Row>, name: &str, samples: &[Duration], p99_target: Option<f64>) {
    let p50 = percentile(samples, 0.5).unwrap_or_default();
    let p99 = percentile(samples, 0.99).unwrap_or_default();
    rows.push(
        Row::new(format!("{name} p50"), ms(p50), "ms").note(format!("{} requests", samples.len())),
    );
    let mut row = Row::new(format!("{name} p99"), ms(p99), "ms").note(format!(
        "max {:.1} ms",
        ms(percentile(samples, 1.0).unwrap_or_default())
    ));
    if let Some(t) = p99_target {
        row = row.below(t);
    }
    rows.push(row);
}
