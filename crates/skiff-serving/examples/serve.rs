//! Runs the model server from the command line (`skiff serve` without the rest of skiff), for tests and benchmarks.

use clap::Parser;

#[derive(Parser)]
#[command(name = "skiff-serve", about = "skiff's model server")]
struct Cli {
    #[command(flatten)]
    serve: skiff_serving::ServeArgs,
}

/// The allocator of `skiff serve`, so that this example measures the same server.
#[global_allocator]
static ALLOCATOR: skiff_serving::alloc::ServingAllocator = skiff_serving::alloc::ServingAllocator;

fn main() -> anyhow::Result<()> {
    skiff_serving::alloc::serve_with_mimalloc();
    let cli = Cli::parse();
    skiff_serving::sched::runtime()?.block_on(skiff_serving::run(cli.serve))
}
