//! `umi`: the command-line entry point. Each subcommand lives in its own module under
//! `cli/`; this file only parses arguments and wires logging.

mod cli;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "umi", version, about = "Serve α-UMi multi-LLM tool agents")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt with one model.
    Generate(cli::generate::GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Model file utilities.
    #[command(subcommand)]
    Model(cli::model::ModelCommand),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.command {
            Command::Generate(a) => cli::generate::run(a).await,
            Command::Bench(b) => cli::bench::run(b).await,
            Command::Model(m) => cli::model::run(m),
        }
    })
}
