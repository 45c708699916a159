//! Runs the model server from the command line (`skiff serve` without the rest of skiff), for tests and benchmarks.

use clap::Parser;

#[derive(Parser)]
#[command(name = "skiff-serve", about = "skiff's model server")]
struct Cli {
    #[command(flatten)]
    serve: skiff_serving::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Async workers follow the cgroup CPU quota too, not the host's core count.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(skiff_serving::backend::cpu_quota())
        .enable_all()
        .build()?
        .block_on(skiff_serving::run(cli.serve))
}
