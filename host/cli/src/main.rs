//! The `tfsandbox` command: parses the command line and hands each subcommand to its module in
//! `commands/`.

mod commands;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use commands::{bench, image, inspect, run, scan, serve, soak};

/// Prints a line to stdout; a reader that has gone (`| head`) ends the command quietly
/// instead of the panic `println!` would raise.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

#[derive(Parser)]
#[command(
    name = "tfsandbox",
    version,
    about = "Run TensorFlow SavedModels in a sandbox"
)]
struct Cli {
    /// More log lines on stderr (-v: info, -vv: debug), the worker's included.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one signature of a SavedModel and print its outputs as JSON.
    Run(run::RunArgs),
    /// Build the worker image, or list what goes into it.
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Start a sandbox and print how it is confined, as the worker sees it from inside.
    InspectSandbox(inspect::InspectSandboxArgs),
    /// Start and stop, drop, and crash sandboxes in turn, then count what they left behind in
    /// this process: the last line reads `soak <runtime>: N cycles, leaked processes P,
    /// containers C, fds F, host RSS growth K KiB`.
    Soak(soak::SoakArgs),
    /// Measure the sandbox boundary against the bare limits (runs tfsandbox-bench, beside this
    /// program; `tfsandbox bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve models over TensorFlow Serving's gRPC API (PredictionService, ModelService), each
    /// model version in its own sandbox. Prints `listening on ADDRESS` lines once every model is
    /// loaded. Flags named like tensorflow_model_server's take the same values.
    Serve(Box<serve::ServeArgs>),
    /// List what a SavedModel's ops can do (files, network, ...), read from its graph and every
    /// function in its library without running anything; fails if --deny-ops denies any of it.
    Scan(scan::ScanArgs),
    /// Print the signatures of a SavedModel, as loaded in a sandbox.
    Inspect(inspect::InspectArgs),
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Image { command } => image::run(command).await,
        Command::InspectSandbox(args) => inspect::inspect_sandbox(args).await,
        Command::Soak(args) => soak::run(args).await,
        Command::Bench { args } => bench::run(args).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Scan(args) => scan::run(args),
        Command::Inspect(args) => inspect::inspect(args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TFSANDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let outcome = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                // serve stops on a signal by itself: it finishes the calls in flight first.
                if matches!(cli.command, Command::Serve { .. }) {
                    return run(cli.command).await;
                }
                // Interrupted, the sandbox is still shut down and its files removed on the way out.
                tokio::select! {
                    outcome = run(cli.command) => outcome,
                    signal = commands::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
                }
            })
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if reader_gone(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` is stdout's reader having gone away.
fn reader_gone(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
