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
    /// Solve a ToolBench query file with α-UMi roles and DFSDT (the main job).
    Run(Box<cli::run::RunArgs>),
    /// Serve one α-UMi role over gRPC.
    Worker(Box<cli::worker::WorkerArgs>),
    /// Solve submitted tasks with DFSDT over discovered role workers, over gRPC.
    Coordinator(Box<cli::coordinator::CoordinatorArgs>),
    /// A local cluster: etcd, role workers and a coordinator.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Generate text from a prompt with one model.
    Generate(cli::generate::GenerateArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Model file utilities.
    #[command(subcommand)]
    Model(cli::model::ModelCommand),
    /// α-UMi evaluations.
    #[command(subcommand)]
    Eval(cli::eval::EvalCommand),
    /// Tool backends by hand.
    #[command(subcommand)]
    Tools(cli::tools::ToolsCommand),
}

impl Command {
    /// How this process appears in traces: umi-coordinator, umi-planner, ...
    fn service_name(&self) -> String {
        match self {
            Command::Worker(a) => format!("umi-{}", a.role.kind().as_str()),
            Command::Coordinator(_) => "umi-coordinator".into(),
            _ => "umi".into(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pin_thread_count();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _telemetry = telemetry::init(&args.command.service_name())?;
        match args.command {
            Command::Run(a) => cli::run::run(*a).await,
            Command::Generate(a) => cli::generate::run(a).await,
            Command::Worker(a) => cli::worker::run(*a).await,
            Command::Coordinator(a) => cli::coordinator::run(*a).await,
            Command::Cluster(c) => cli::cluster::run(c).await,
            Command::Bench(b) => cli::bench::run(b).await,
            Command::Model(m) => cli::model::run(m),
            Command::Eval(e) => cli::eval::run(e).await,
            Command::Tools(t) => cli::tools::run(t).await,
        }
    })
}

/// candle asks for the thread count on every matmul and, unless `RAYON_NUM_THREADS` is
/// set, re-reads /proc/cpuinfo to answer (about 40 reads per decoded token, ~15% of decode
/// time for SmolLM2). Setting the variable once, before any thread exists, makes it free.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", cores.to_string());
    }
}
