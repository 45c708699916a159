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
    skiff_serving::sched::runtime()?.block_on(skiff_serving::run(cli.serve))
}
