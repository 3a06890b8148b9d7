//! The bare limits every sandbox figure is a ratio to: TensorFlow in this process, the raw pipe,
//! the transport to an echo, and the worker started with no sandbox.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tfsandbox::Tensor;
use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::{InfoRequest, LoadModelRequest, PredictRequest};
use tfsandbox_worker::model::Model as InProcessModel;
use tonic::transport::Channel;

use crate::stats::{median, Samples};
use crate::timing::{sequential, throughput};
use crate::{echo, memory, raw, tiny, Plan};

/// Round trips of a tiny Predict to half_plus_two loaded in this process: no transport at all.
pub async fn in_process_tf(plan: &Plan, fixtures: &Path) -> Result<Samples> {
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
    .await?
}

/// The raw pipe pair to a child process, at the largest size of the plan.
pub async fn raw_pipe(plan: &Plan) -> Result<raw::Limits> {
    let largest_mib = plan.largest_mib();
    let (rounds, calls) = (plan.rounds, plan.rtt_calls);
    tokio::task::spawn_blocking(move || raw::measure(largest_mib, rounds, calls)).await?
}

/// The echo over the transport, in this process and in a child process.
pub struct Echo {
    pub same_process_rtt: Samples,
    pub rtt: Samples,
    pub gib_s: Vec<(usize, f64)>,
    /// The child echo and its client live on through the rest of the run, so the later figures
    /// are measured beside it as they always were.
    _peer: (WorkerClient<Channel>, tokio::process::Child),
}

pub async fn echo(plan: &Plan, inputs: &HashMap<usize, Tensor>) -> Result<Echo> {
    let rtt_of = |echo: WorkerClient<Channel>| async move {
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
    let (echo, echo_child) = echo::start_child().await?;
    let rtt = rtt_of(echo.clone()).await?;
    let gib_s = throughput(plan, |mib| {
        let mut echo = echo.clone();
        let request = wire_predict(&inputs[&mib], "data");
        async move {
            echo.predict(request).await?;
            Ok(())
        }
    })
    .await?;
    Ok(Echo {
        same_process_rtt,
        rtt,
        gib_s,
        _peer: (echo, echo_child),
    })
}

/// `calls` round trips of `mib` MiB each way (0: the tiny Predict) to the bare echo, after one
/// untimed: what a profile of the transport alone runs.
pub async fn profile_echo(calls: usize, mib: usize) -> Result<()> {
    let (echo, mut child) = echo::start_child().await?;
    let request = if mib == 0 {
        wire_predict(&tiny(), "x")
    } else {
        wire_predict(&Tensor::new(&[mib << 20], &vec![7u8; mib << 20])?, "data")
    };
    crate::timing::profile(calls, mib, || {
        let mut echo = echo.clone();
        let request = request.clone();
        async move { echo.predict(request).await.map(drop).map_err(Into::into) }
    })
    .await?;
    // Not SIGKILL (what dropping it sends): a profiler in the child writes its figures on SIGTERM.
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    }
    child.wait().await?;
    Ok(())
}

fn wire_predict(tensor: &Tensor, key: &str) -> PredictRequest {
    PredictRequest {
        model_id: "echo".into(),
        signature_name: String::new(),
        inputs: HashMap::from([(key.to_string(), tensor.clone().into_wire())]),
        output_filter: vec![],
    }
}

/// The median of the plan's starts of the bare worker.
pub async fn worker_start(plan: &Plan, worker: &Path) -> Result<Duration> {
    let mut starts = Vec::new();
    for _ in 0..plan.starts {
        starts.push(bare_worker_start(worker).await?);
    }
    Ok(median(starts))
}

/// The worker started bare: no sandbox, straight from this process over pipes, to its first answer.
async fn bare_worker_start(worker: &Path) -> Result<Duration> {
    let t = Instant::now();
    let (mut child, mut client) = spawn_bare_worker(worker).await?;
    client.info(InfoRequest {}).await?;
    let elapsed = t.elapsed();
    child.kill().await?;
    Ok(elapsed)
}

/// Resident bytes of the bare worker with `model` loaded and answered once: what a sandbox's
/// worker is compared with.
pub async fn worker_rss(worker: &Path, model: &Path) -> Result<u64> {
    let (mut child, mut client) = spawn_bare_worker(worker).await?;
    client
        .load_model(LoadModelRequest {
            path: model.display().to_string(),
            tags: vec![],
            model_id: "half_plus_two".into(),
            deny_capabilities: vec![],
        })
        .await?;
    let mut predict = wire_predict(&tiny(), "x");
    predict.model_id = "half_plus_two".into();
    client.predict(predict).await?;
    let rss = memory::rss_bytes(child.id().context("the bare worker's pid")?)?;
    child.kill().await?;
    Ok(rss)
}

/// The worker as a child of this process over pipes, and its client.
async fn spawn_bare_worker(
    worker: &Path,
) -> Result<(tokio::process::Child, WorkerClient<Channel>)> {
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
    Ok((child, WorkerClient::new(channel)))
}
