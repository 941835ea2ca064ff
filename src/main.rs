//! `umi`: the command-line entry point. Each subcommand lives in its own module under
//! `cli/`; this file only parses arguments and wires logging.

mod cli;
mod telemetry;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "umi", version, about = "Serve α-UMi multi-LLM tool agents")]
struct Args {
    /// A TOML file of settings: flag names as keys, at the top level or under a
    /// subcommand's table (`[run]`, `[eval.static]`). Precedence: flag > environment
    /// (`UMI_<FLAG>`) > file > default; `umi config show run` prints the outcome.
    #[arg(long, global = true, env = "UMI_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines as text, or as one JSON object per line (with the span fields: task,
    /// node, role call) for a log stack.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "UMI_LOG_FORMAT"
    )]
    log_format: telemetry::LogFormat,
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
    /// Training data: GLPFT's role files from ToolBench's answer files.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
    /// Tool backends by hand.
    #[command(subcommand)]
    Tools(cli::tools::ToolsCommand),
    /// One self-contained HTML page of a run's or a static evaluation's results.
    Report(cli::run_report::ReportArgs),
    /// Settings from --config and the environment.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Shell completions for bash, zsh, fish, elvish or powershell, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages: umi.1 and one per subcommand (umi-run.1, ...) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// The effective settings of a subcommand (e.g. `umi config show run`), each with
    /// where it came from (flag, $UMI_…, the file, default); secrets masked.
    Show {
        #[arg(required = true, value_name = "SUBCOMMAND")]
        subcommand: Vec<String>,
    },
}

/// `umi --version`: the version, the commit and the enabled features.
fn long_version() -> String {
    let cuda = if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "no cuda"
    };
    #[cfg(target_arch = "x86_64")]
    let cpu = match umi_engine::gemm::kernel() {
        umi_engine::gemm::Kernel::Avx512Bf16 => "avx512 with bf16",
        umi_engine::gemm::Kernel::Avx512 => "avx512",
        umi_engine::gemm::Kernel::None if umi_engine::gemm_avx2::available() => "avx2",
        umi_engine::gemm::Kernel::None => "candle's cpu kernels",
    };
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = "portable CPU kernels";
    format!(
        "{} (commit {}; {cuda}; {cpu})",
        env!("CARGO_PKG_VERSION"),
        cli::COMMIT
    )
}

/// The command line, completed from the environment and --config, parsed.
fn parse(argv: Vec<OsString>) -> anyhow::Result<Args> {
    let root = Args::command().long_version(long_version());
    let completed = cli::config::complete(&root, argv)?;
    let matches = root.get_matches_from(completed.args);
    Ok(Args::from_arg_matches(&matches)?)
}

impl Command {
    /// How this process appears in traces: umi-coordinator, umi-planner, ...
    fn service_name(&self) -> String {
        match self {
            Command::Worker(a) => {
                let roles: Vec<&str> = a.role.iter().map(|r| r.as_str()).collect();
                format!("umi-{}", roles.join("+"))
            }
            Command::Coordinator(_) => "umi-coordinator".into(),
            _ => "umi".into(),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            cli::report::print(&e);
            return ExitCode::from(2);
        }
    };
    pin_thread_count();
    let result = run(args);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report::print(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _telemetry = telemetry::init(&args.command.service_name(), args.log_format)?;
        let result = match args.command {
            Command::Run(a) => cli::run::run(*a).await,
            Command::Generate(a) => cli::generate::run(a).await,
            Command::Worker(a) => cli::worker::run(*a).await,
            Command::Coordinator(a) => cli::coordinator::run(*a).await,
            Command::Cluster(c) => cli::cluster::run(c).await,
            Command::Bench(b) => cli::bench::run(b).await,
            Command::Model(m) => cli::model::run(m),
            Command::Eval(e) => cli::eval::run(e).await,
            Command::Data(d) => cli::data::run(d),
            Command::Tools(t) => cli::tools::run(t).await,
            Command::Report(a) => cli::run_report::run(a),
            Command::Config(ConfigCommand::Show { subcommand }) => {
                let root = Args::command();
                print!(
                    "{}",
                    cli::config::show(&root, &subcommand, args.config.as_deref())?
                );
                Ok(())
            }
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Args::command(), "umi", &mut std::io::stdout());
                Ok(())
            }
            Command::Man { dir } => cli::man::write_pages(Args::command(), &dir),
        };
        // The whole chain for operators who ask (RUST_LOG=debug), while logging still runs.
        if let Err(e) = &result {
            tracing::debug!(error = ?e, "command failed");
        }
        result
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
