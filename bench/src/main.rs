//! tfsandbox-bench (`tfsandbox bench`): the cost of the sandbox boundary, each figure a ratio to a
//! baseline measured in the same run. Writes its tables into BENCHMARKS.md (between markers,
//! keeping the rest) or, with --json, prints the headline figures as one JSON object.

mod bare;
mod concurrency;
mod echo;
mod flood;
mod image_size;
mod memory;
mod raw;
mod report;
mod sandbox;
mod serve;
mod stats;
mod timing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use tfsandbox::{Config, RuntimeKind, Tensor};

#[derive(Parser)]
#[command(
    name = "tfsandbox-bench",
    about = "Measure the cost of the sandbox boundary"
)]
struct Args {
    /// Fewer calls and sizes: under three minutes.
    #[arg(long)]
    quick: bool,
    /// Print the headline figures as one JSON object instead of writing BENCHMARKS.md.
    #[arg(long)]
    json: bool,
    /// The file whose bench section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The fixture models (half_plus_two, identity, busy_loop). Relative, as --out is, to the repository's
    /// root, where the bench runs: a path fixed at build time breaks in any other checkout.
    #[arg(long, default_value = "checks/fixtures")]
    fixtures: PathBuf,
    /// Leave the docker runtime out (its figures are then null).
    #[arg(long)]
    no_docker: bool,
    /// Leave the gvisor runtime out (its figures are then null).
    #[arg(long)]
    no_gvisor: bool,
    /// Be the echo peer of the bare baseline on stdin/stdout (the bench starts itself so).
    #[arg(long, hide = true)]
    serve_echo: bool,
    /// Be the raw pipe peer of the physical limits: copy stdin to stdout.
    #[arg(long, hide = true)]
    serve_cat: bool,
    /// Make only this many round trips to the bare echo (a child process) and print their mean,
    /// for a profiler: `valgrind --tool=callgrind --trace-children=yes`, or perf.
    #[arg(long, value_name = "CALLS")]
    profile_echo: Option<usize>,
    /// The same, to half_plus_two (identity with --profile-mib) in a process sandbox.
    #[arg(long, value_name = "CALLS", conflicts_with = "profile_echo")]
    profile_process: Option<usize>,
    /// With --profile-echo or --profile-process: MiB each way of every round trip (0: the tiny
    /// Predict).
    #[arg(long, default_value_t = 0)]
    profile_mib: usize,
}

struct Plan {
    rtt_calls: usize,
    sizes_mib: Vec<usize>,
    rounds: usize,
    callers: Vec<usize>,
    calls_per_caller: usize,
    starts: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rtt_calls: 300,
                sizes_mib: vec![1, 16, 64],
                rounds: 3,
                callers: vec![1, 8, 64],
                calls_per_caller: 256,
                starts: 3,
            }
        } else {
            Plan {
                rtt_calls: 3000,
                sizes_mib: vec![1, 4, 16, 64, 256],
                rounds: 8,
                callers: vec![1, 8, 64],
                calls_per_caller: 1024,
                starts: 7,
            }
        }
    }

    fn largest_mib(&self) -> usize {
        *self.sizes_mib.iter().max().expect("sizes")
    }
}

fn tiny() -> Tensor {
    Tensor::new(&[1, 1], &[1.0f32]).expect("a 1x1 tensor")
}

/// One uint8 tensor per size, made before anything is timed.
fn byte_tensors(plan: &Plan) -> HashMap<usize, Tensor> {
    plan.sizes_mib
        .iter()
        .map(|&mib| {
            let tensor = Tensor::new(&[mib << 20], &vec![7u8; mib << 20]).expect("a byte vector");
            (mib, tensor)
        })
        .collect()
}

fn config(runtime: RuntimeKind, fixtures: &Path) -> Config {
    Config {
        runtime: runtime.into(),
        worker_log: "warn".into(),
        ..Config::default()
    }
    .with_model(fixtures.join("half_plus_two"))
    .with_model(fixtures.join("identity"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.serve_echo {
        return echo::serve_stdio().await;
    }
    if args.serve_cat {
        return raw::serve_cat();
    }
    if let Some(calls) = args.profile_echo {
        return bare::profile_echo(calls, args.profile_mib).await;
    }
    if let Some(calls) = args.profile_process {
        return sandbox::profile_process(calls, args.profile_mib, &args.fixtures).await;
    }
    let plan = Plan::new(args.quick);
    let fixtures = args
        .fixtures
        .canonicalize()
        .with_context(|| format!("fixtures at {}", args.fixtures.display()))?;
    let began = Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1} s] {what}", began.elapsed().as_secs_f64());

    progress("in-process TensorFlow");
    let in_process = bare::in_process_tf(&plan, &fixtures).await?;
    progress("raw pipe: throughput and round trip");
    let raw = bare::raw_pipe(&plan).await?;
    let inputs = byte_tensors(&plan);
    progress("bare echo: in this process, and in a child process");
    let echo = bare::echo(&plan, &inputs).await?;
    let worker = config(RuntimeKind::Process, &fixtures).resolve_worker_path()?;
    let bare_start = bare::worker_start(&plan, &worker).await?;
    let bare_worker_rss = bare::worker_rss(&worker, &fixtures.join("half_plus_two")).await?;

    progress("process sandbox");
    let process = sandbox::measure(&plan, RuntimeKind::Process, &fixtures, &inputs).await?;
    let docker = if args.no_docker {
        None
    } else {
        progress("docker sandbox");
        sandbox::measure_if_present(&plan, RuntimeKind::Docker, &fixtures, &inputs).await?
    };
    let gvisor = if args.no_gvisor {
        None
    } else {
        progress("gvisor sandbox");
        sandbox::measure_if_present(&plan, RuntimeKind::Gvisor, &fixtures, &inputs).await?
    };

    progress("concurrent callers");
    let concurrency = concurrency::measure(&plan, &fixtures).await?;
    progress("a flood on one tenant's model");
    let flood = flood::measure(&plan, &fixtures).await?;
    progress("the serve path, and batching");
    let serve = serve::measure(&plan, &fixtures).await?;
    progress("image");
    let image = image_size::measure(&worker)?;
    progress("done");

    let figures = report::Figures {
        in_process,
        raw,
        echo,
        bare_start,
        bare_worker_rss,
        process,
        docker,
        gvisor,
        concurrency,
        flood,
        serve,
        image,
    };
    let headline = report::headline(&figures);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&headline)?);
        return Ok(());
    }
    let md = report::markdown(&plan, args.quick, &figures, &headline)?;
    report::write_section(&args.out, &md)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
