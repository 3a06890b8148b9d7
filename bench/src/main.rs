//! tfsandbox-bench (`tfsandbox bench`): the cost of the sandbox boundary, each figure a ratio to a
//! baseline measured in the same run. Writes its tables into BENCHMARKS.md (between markers,
//! keeping the rest) or, with --json, prints the headline figures as one JSON object.

mod echo;
mod raw;
mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures::future::join_all;
use serde_json::{json, Value};
use tfsandbox::closure::{self, Closure, Variant};
use tfsandbox::image;
use tfsandbox::{Config, Error, Pool, Predict, RuntimeKind, Sandbox, Tensor};
use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::{InfoRequest, PredictRequest};
use tfsandbox_worker::model::Model as InProcessModel;

use stats::{median, micros, millis, Samples};

const BEGIN: &str = "<!-- tfsandbox bench: begin -->";
const END: &str = "<!-- tfsandbox bench: end -->";

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
    /// The fixture models (half_plus_two, identity). Relative, as --out is, to the repository's
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
        runtime,
        worker_log: "warn".into(),
        ..Config::default()
    }
    .with_model(fixtures.join("half_plus_two"))
    .with_model(fixtures.join("identity"))
}

/// Times `calls` sequential calls of `call`.
async fn sequential<F, Fut>(calls: usize, mut call: F) -> Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for _ in 0..calls.min(20) {
        call().await?;
    }
    let mut samples = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        call().await?;
        samples.push(t.elapsed());
    }
    Ok(Samples::new(samples, start.elapsed()))
}

/// GiB/s of bytes in plus out, per size, for one way of making a round trip.
async fn throughput<F, Fut>(plan: &Plan, mut round_trip: F) -> Result<Vec<(usize, f64)>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut figures = Vec::new();
    for &mib in &plan.sizes_mib {
        round_trip(mib).await?;
        let mut times = Vec::new();
        for _ in 0..plan.rounds {
            let t = Instant::now();
            round_trip(mib).await?;
            times.push(t.elapsed());
        }
        let gib = (2 * (mib << 20)) as f64 / (1u64 << 30) as f64;
        figures.push((mib, gib / median(times).as_secs_f64()));
    }
    Ok(figures)
}

/// `callers` concurrent callers of `model`, each making `calls` calls.
async fn concurrent<F, Fut>(callers: usize, calls: usize, call: F) -> Result<Samples>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let start = Instant::now();
    let per_caller = join_all((0..callers).map(|_| async {
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            call().await?;
            samples.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(samples)
    }))
    .await;
    let mut samples = Vec::new();
    for caller in per_caller {
        samples.extend(caller?);
    }
    Ok(Samples::new(samples, start.elapsed()))
}

fn wire_predict(tensor: &Tensor, key: &str) -> PredictRequest {
    PredictRequest {
        model_id: "echo".into(),
        signature_name: String::new(),
        inputs: HashMap::from([(key.to_string(), tensor.clone().into_wire())]),
        output_filter: vec![],
    }
}

/// The worker started bare: no sandbox, straight from this process over pipes, to its first answer.
async fn bare_worker_start(worker: &Path) -> Result<Duration> {
    let t = Instant::now();
    let mut child = tokio::process::Command::new(worker)
        .env("TFSANDBOX_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the bare worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let (channel, _driver) = transport::connect(stdout, stdin).await?;
    WorkerClient::new(channel).info(InfoRequest {}).await?;
    let elapsed = t.elapsed();
    child.kill().await?;
    Ok(elapsed)
}

/// Sandbox start to first answer, and the model load after it.
async fn sandbox_start(config: &Config, model: &Path) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let sandbox = Sandbox::start(config.clone()).await?;
    let started = t.elapsed();
    let t = Instant::now();
    sandbox.load_model(model).await?;
    let loaded = t.elapsed();
    sandbox.shutdown().await;
    Ok((started, loaded))
}

/// Everything measured for one sandbox runtime.
struct RuntimeFigures {
    rtt: Samples,
    gib_s: Vec<(usize, f64)>,
    start: Duration,
    model_load: Duration,
}

async fn measure_runtime(
    plan: &Plan,
    runtime: RuntimeKind,
    fixtures: &Path,
    inputs: &HashMap<usize, Tensor>,
) -> Result<RuntimeFigures> {
    let config = config(runtime, fixtures);
    let mut starts = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..plan.starts {
        let (started, loaded) = sandbox_start(&config, &fixtures.join("half_plus_two")).await?;
        starts.push(started);
        loads.push(loaded);
    }
    let sandbox = Sandbox::start(config).await?;
    let half = sandbox.load_model(fixtures.join("half_plus_two")).await?;
    let rtt = sequential(plan.rtt_calls, || async {
        half.predict([("x", tiny())]).await?;
        Ok(())
    })
    .await?;
    let identity = sandbox.load_model(fixtures.join("identity")).await?;
    let gib_s = throughput(plan, |mib| {
        let identity = identity.clone();
        async move {
            let call = Predict::new([("data", inputs[&mib].clone())]).signature("bytes_identity");
            identity.predict_with(call).await?;
            Ok(())
        }
    })
    .await?;
    sandbox.shutdown().await;
    Ok(RuntimeFigures {
        rtt,
        gib_s,
        start: median(starts),
        model_load: median(loads),
    })
}

fn at(figures: &[(usize, f64)], mib: usize) -> Option<f64> {
    figures.iter().find(|(m, _)| *m == mib).map(|(_, g)| *g)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
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
    let plan = Plan::new(args.quick);
    let fixtures = args
        .fixtures
        .canonicalize()
        .with_context(|| format!("fixtures at {}", args.fixtures.display()))?;
    let began = Instant::now();
    let progress = |what: &str| eprintln!("[{:>5.1} s] {what}", began.elapsed().as_secs_f64());

    // The bare limits: TensorFlow in this process, and the transport to an echo.
    progress("in-process TensorFlow");
    let in_process = {
        let dir = fixtures.join("half_plus_two").display().to_string();
        let calls = plan.rtt_calls;
        tokio::task::spawn_blocking(move || -> Result<Samples> {
            let model = InProcessModel::load("half_plus_two", &dir, &["serve".to_string()])?;
            let inputs = HashMap::from([("x".to_string(), tiny().into_wire())]);
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..20 {
                model.predict("", &inputs, &[], None)?;
            }
            let start = Instant::now();
            for _ in 0..calls {
                let t = Instant::now();
                model.predict("", &inputs, &[], None)?;
                samples.push(t.elapsed());
            }
            Ok(Samples::new(samples, start.elapsed()))
        })
        .await??
    };
    progress("raw pipe: throughput and round trip");
    let largest_mib = *plan.sizes_mib.iter().max().expect("sizes");
    let raw = {
        let (rounds, calls) = (plan.rounds, plan.rtt_calls);
        tokio::task::spawn_blocking(move || raw::measure(largest_mib, rounds, calls)).await??
    };
    let inputs = byte_tensors(&plan);
    progress("bare echo: in this process, and in a child process");
    let rtt_of = |echo: WorkerClient<tonic::transport::Channel>| async move {
        sequential(plan.rtt_calls, || {
            let mut echo = echo.clone();
            async move {
                echo.predict(wire_predict(&tiny(), "x")).await?;
                Ok(())
            }
        })
        .await
    };
    let same_process_rtt = rtt_of(echo::start().await?).await?;
    let (echo, _echo_child) = echo::start_child().await?;
    let bare_rtt = rtt_of(echo.clone()).await?;
    let bare_gib_s = throughput(&plan, |mib| {
        let mut echo = echo.clone();
        let request = wire_predict(&inputs[&mib], "data");
        async move {
            echo.predict(request).await?;
            Ok(())
        }
    })
    .await?;
    let worker = config(RuntimeKind::Process, &fixtures).resolve_worker_path()?;
    let mut bare_starts = Vec::new();
    for _ in 0..plan.starts {
        bare_starts.push(bare_worker_start(&worker).await?);
    }
    let bare_start = median(bare_starts);

    progress("process sandbox");
    let process = measure_runtime(&plan, RuntimeKind::Process, &fixtures, &inputs).await?;
    let docker = if args.no_docker {
        None
    } else {
        progress("docker sandbox");
        match measure_runtime(&plan, RuntimeKind::Docker, &fixtures, &inputs).await {
            Ok(figures) => Some(figures),
            Err(error) => match error.downcast_ref::<Error>() {
                Some(Error::Engine { .. }) => {
                    eprintln!("docker left out: {error}");
                    None
                }
                _ => return Err(error),
            },
        }
    };

    let gvisor = if args.no_gvisor {
        None
    } else {
        progress("gvisor sandbox");
        match measure_runtime(&plan, RuntimeKind::Gvisor, &fixtures, &inputs).await {
            Ok(figures) => Some(figures),
            // No runsc to start.
            Err(error) => match error.downcast_ref::<Error>() {
                Some(Error::Spawn { .. }) => {
                    eprintln!("gvisor left out: {error}");
                    None
                }
                _ => return Err(error),
            },
        }
    };

    progress("concurrent callers");
    let mut concurrency = Vec::new();
    {
        let config = config(RuntimeKind::Process, &fixtures);
        let sandbox = Sandbox::start(config.clone()).await?;
        let half = sandbox.load_model(fixtures.join("half_plus_two")).await?;
        let pool = Pool::start(config, fixtures.join("half_plus_two"), 2).await?;
        for &callers in &plan.callers {
            let calls = plan.calls_per_caller / callers.min(plan.calls_per_caller);
            let one = concurrent(callers, calls.max(4), || async {
                half.predict([("x", tiny())]).await?;
                Ok(())
            })
            .await?;
            let pooled = concurrent(callers, calls.max(4), || async {
                pool.predict([("x", tiny())]).await?;
                Ok(())
            })
            .await?;
            concurrency.push((callers, one, pooled));
        }
        sandbox.shutdown().await;
        pool.shutdown().await;
    }

    progress("image");
    // As the docker runtime builds it: the worker and the container's init.
    let closure = Closure::resolve(&worker, Variant::Cpu, &[])?
        .with_init(&closure::init_beside(&worker), &[])?;
    let archive = tempfile::NamedTempFile::new()?;
    let built = image::build_archive(&closure, &image::reference(&closure), archive.path(), None)?;
    let worker_bytes = std::fs::metadata(&worker)?.len();
    progress("done");

    let one_calls = |callers: usize| {
        concurrency
            .iter()
            .find(|(c, _, _)| *c == callers)
            .map(|(_, one, _)| one.per_second())
    };
    let process_gib_s = at(&process.gib_s, 64);
    let headline = json!({
        "raw_pipe_gib_s": raw.gib_s,
        "raw_pipe_rtt_us": micros(raw.rtt.p50()),
        "rtt_us_process": micros(process.rtt.p50()),
        "rtt_us_bare": micros(bare_rtt.p50()),
        "rtt_us_in_process_tf": micros(in_process.p50()),
        "rtt_ratio_bare_vs_raw_pipe": ratio(micros(bare_rtt.p50()), micros(raw.rtt.p50())),
        "rtt_ratio_process_vs_bare_plus_tf": ratio(micros(process.rtt.p50()), micros(bare_rtt.p50()) + micros(in_process.p50())),
        "gib_ratio_process_vs_raw_pipe_64mib": process_gib_s.map(|p| ratio(p, raw.gib_s)),
        "gib_ratio_docker_vs_process_64mib": docker.as_ref().and_then(|d| at(&d.gib_s, 64)).zip(process_gib_s).map(|(d, p)| ratio(d, p)),
        "rtt_ratio_process_vs_bare": ratio(micros(process.rtt.p50()), micros(bare_rtt.p50())),
        "rtt_ratio_docker_vs_process": docker.as_ref().map(|d| ratio(micros(d.rtt.p50()), micros(process.rtt.p50()))),
        "gib_s_process_64mib": at(&process.gib_s, 64),
        "gib_s_docker_64mib": docker.as_ref().and_then(|d| at(&d.gib_s, 64)),
        "speedup_64_concurrent": one_calls(64).zip(one_calls(1)).map(|(a, b)| ratio(a, b)),
        "setup_ms_process": millis(process.start.saturating_sub(bare_start)),
        "setup_ms_docker": docker.as_ref().map(|d| millis(d.start.saturating_sub(bare_start))),
        "rtt_us_gvisor": gvisor.as_ref().map(|g| micros(g.rtt.p50())),
        "rtt_ratio_gvisor_vs_process": gvisor.as_ref().map(|g| ratio(micros(g.rtt.p50()), micros(process.rtt.p50()))),
        "gib_s_gvisor_64mib": gvisor.as_ref().and_then(|g| at(&g.gib_s, 64)),
        "gib_ratio_gvisor_vs_process_64mib": gvisor.as_ref().and_then(|g| at(&g.gib_s, 64)).zip(process_gib_s).map(|(g, p)| ratio(g, p)),
        "start_ms_gvisor": gvisor.as_ref().map(|g| millis(g.start)),
        "start_ratio_gvisor_vs_process": gvisor.as_ref().map(|g| ratio(millis(g.start), millis(process.start))),
        "image_minus_closure_bytes": built.archive_size as i64 - closure.total_size() as i64,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&headline)?);
        return Ok(());
    }

    let mut md = String::new();
    let machine = machine();
    md.push_str(&format!(
        "Measured {} on {machine}, commit {}, {} build, `{}`. Every ratio is to a baseline of the same run.\n\n",
        today(),
        commit(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        if args.quick { "tfsandbox bench --quick" } else { "tfsandbox bench" },
    ));
    md.push_str("### 1. Round trip of a tiny Predict (half_plus_two, 1×1 float32)\n\n");
    md.push_str("| path | p50 µs | p99 µs | calls/s | p50 vs bare echo |\n|---|---|---|---|---|\n");
    let bare_p50 = micros(bare_rtt.p50());
    let mut rtt_row = |name: &str, s: &Samples| {
        md.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2}× |\n",
            micros(s.p50()),
            micros(s.p99()),
            s.per_second(),
            ratio(micros(s.p50()), bare_p50)
        ));
    };
    rtt_row(
        "raw pipe pair to a child process: 1 byte there and back, no framing",
        &raw.rtt,
    );
    rtt_row("TensorFlow in this process (no transport)", &in_process);
    rtt_row(
        "echo in this process over a pipe pair (yamux + HTTP/2 + gRPC)",
        &same_process_rtt,
    );
    rtt_row(
        "**bare**: the same echo in a child process over its stdin/stdout",
        &bare_rtt,
    );
    rtt_row("process sandbox", &process.rtt);
    if let Some(d) = &docker {
        rtt_row("docker sandbox", &d.rtt);
    }
    if let Some(g) = &gvisor {
        rtt_row("gvisor sandbox", &g.rtt);
    }
    md.push_str(&format!(
        "\nBare echo vs raw pipe: **{:.2}×** (goal ≤ 2×); process sandbox vs bare echo + in-process TensorFlow: **{:.2}×** (goal ≤ 1.2×); docker vs process: **{}** (goal ≤ 1.2×); gvisor vs process: **{}** (no goal: the cost of gVisor's kernel).\n\n",
        headline["rtt_ratio_bare_vs_raw_pipe"].as_f64().unwrap_or(f64::NAN),
        headline["rtt_ratio_process_vs_bare_plus_tf"].as_f64().unwrap_or(f64::NAN),
        fmt_ratio(&headline["rtt_ratio_docker_vs_process"]),
        fmt_ratio(&headline["rtt_ratio_gvisor_vs_process"]),
    ));

    md.push_str("### 2. Large tensors (identity, uint8; GiB/s of bytes in + out)\n\n");
    md.push_str("| MiB each way | bare echo (child process) | process | process vs bare | docker | docker vs bare | gvisor | gvisor vs bare |\n|---|---|---|---|---|---|---|---|\n");
    for &mib in &plan.sizes_mib {
        let bare = at(&bare_gib_s, mib).unwrap_or(f64::NAN);
        let p = at(&process.gib_s, mib).unwrap_or(f64::NAN);
        let d = docker.as_ref().and_then(|d| at(&d.gib_s, mib));
        let g = gvisor.as_ref().and_then(|g| at(&g.gib_s, mib));
        md.push_str(&format!(
            "| {mib} | {bare:.2} | {p:.2} | {:.2}× | {} | {} | {} | {} |\n",
            p / bare,
            d.map_or("n/a".into(), |d| format!("{d:.2}")),
            d.map_or("n/a".into(), |d| format!("{:.2}×", d / bare)),
            g.map_or("n/a".into(), |g| format!("{g:.2}")),
            g.map_or("n/a".into(), |g| format!("{:.2}×", g / bare)),
        ));
    }
    md.push_str(&format!(
        "\nRaw pipe pair to a child process, {largest_mib} MiB each way in {} KiB writes, no framing: **{:.2} GiB/s**. \
         Process at 64 MiB vs raw pipe: **{}** (goal ≥ 0.5×); docker vs process: **{}** (goal ≥ 0.9×); gvisor vs process: **{}**.\n\n",
        raw::WRITE_BYTES >> 10,
        raw.gib_s,
        fmt_ratio(&headline["gib_ratio_process_vs_raw_pipe_64mib"]),
        fmt_ratio(&headline["gib_ratio_docker_vs_process_64mib"]),
        fmt_ratio(&headline["gib_ratio_gvisor_vs_process_64mib"]),
    ));

    md.push_str("### 3. Concurrent callers (process runtime, half_plus_two)\n\n");
    md.push_str("| callers | one sandbox calls/s | p99 ms | vs 1 caller | pool of 2 calls/s | p99 ms | pool vs one |\n|---|---|---|---|---|---|---|\n");
    let single = one_calls(1).unwrap_or(f64::NAN);
    for (callers, one, pooled) in &concurrency {
        md.push_str(&format!(
            "| {callers} | {:.0} | {:.2} | {:.2}× | {:.0} | {:.2} | {:.2}× |\n",
            one.per_second(),
            millis(one.p99()),
            one.per_second() / single,
            pooled.per_second(),
            millis(pooled.p99()),
            pooled.per_second() / one.per_second()
        ));
    }

    md.push_str("\n### 4. Cold start: start → first answer → model loaded (medians)\n\n");
    md.push_str("| | start to first answer ms | sandbox setup ms (vs bare worker) | model load ms |\n|---|---|---|---|\n");
    md.push_str(&format!(
        "| bare worker (no sandbox): exec, loading libtensorflow, first answer | {:.0} | — | — |\n",
        millis(bare_start)
    ));
    let mut start_row = |name: &str, f: &RuntimeFigures, goal: Option<&str>| {
        md.push_str(&format!(
            "| {name} | {:.0} | **{:.0}**{} | {:.0} |\n",
            millis(f.start),
            millis(f.start.saturating_sub(bare_start)),
            goal.map_or(String::new(), |g| format!(" (goal ≤ {g})")),
            millis(f.model_load)
        ));
    };
    start_row("process sandbox", &process, Some("150"));
    if let Some(d) = &docker {
        start_row("docker sandbox", d, Some("400"));
    }
    if let Some(g) = &gvisor {
        start_row("gvisor sandbox", g, None);
    }
    md.push_str(&format!(
        "\ngvisor vs process, start to first answer: **{}**.\n",
        fmt_ratio(&headline["start_ratio_gvisor_vs_process"])
    ));

    md.push_str("\n### 5. Image\n\n| | bytes | vs closure |\n|---|---|---|\n");
    md.push_str(&format!(
        "| closure (worker + every library it loads) | {} | 1 |\n| image archive | {} | +{} bytes |\n| worker alone | {} | {:.3} |\n",
        closure.total_size(),
        built.archive_size,
        built.archive_size as i64 - closure.total_size() as i64,
        worker_bytes,
        worker_bytes as f64 / closure.total_size() as f64
    ));
    md.push_str(&format!(
        "\nHeadline (`--json`): `{}`\n",
        serde_json::to_string(&headline)?
    ));
    write_section(&args.out, &md)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn fmt_ratio(value: &Value) -> String {
    value
        .as_f64()
        .map_or("n/a (runtime left out)".into(), |r| format!("{r:.2}×"))
}

/// Replaces the bench section of `path` (created if missing), keeping everything around it.
fn write_section(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let section = format!("{BEGIN}\n{body}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{hash} (with uncommitted changes)"),
            _ => hash,
        },
        None => "unknown".into(),
    }
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
