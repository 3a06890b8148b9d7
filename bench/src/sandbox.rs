//! One sandbox runtime: cold starts, model loads, round trips and large tensors.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tfsandbox::{Config, Error, Pool, Predict, RuntimeKind, Sandbox, Tensor};

use crate::memory;
use crate::stats::{median, Samples};
use crate::timing::{sequential, throughput};
use crate::{config, tiny, Plan};

/// Everything measured for one sandbox runtime.
pub struct RuntimeFigures {
    pub rtt: Samples,
    pub gib_s: Vec<(usize, f64)>,
    pub start: Duration,
    pub model_load: Duration,
    /// From asking for a new sandbox to its first answer: start, model load, first Predict.
    pub cold_first_answer: Duration,
    /// From the request to the answer, on a pool whose sandbox is started with the model loaded.
    pub warm_first_answer: Duration,
    /// Resident bytes this process grows by per sandbox started with the model loaded.
    pub host_rss_per_sandbox: u64,
    /// Resident bytes of the worker (and the jailer above it) with half_plus_two loaded; `None`
    /// where the runtime has no host pid to read (docker).
    pub worker_rss: Option<u64>,
}

/// `calls` round trips of `mib` MiB each way (0: the tiny Predict to half_plus_two) to a process
/// sandbox, after one untimed: what a profile of the sandbox's data path runs.
pub async fn profile_process(calls: usize, mib: usize, fixtures: &Path) -> Result<()> {
    let fixtures = fixtures.canonicalize()?;
    let sandbox = Sandbox::start(config(RuntimeKind::Process, &fixtures)).await?;
    let (model, call) = if mib == 0 {
        (
            fixtures.join("half_plus_two"),
            Predict::new([("x", tiny())]),
        )
    } else {
        let bytes = Tensor::new(&[mib << 20], &vec![7u8; mib << 20])?;
        let call = Predict::new([("data", bytes)]).signature("bytes_identity");
        (fixtures.join("identity"), call)
    };
    let model = sandbox.load_model(&model).await?;
    crate::timing::profile(calls, mib, || {
        let (model, call) = (&model, call.clone());
        async move { model.predict_with(call).await.map(drop).map_err(Into::into) }
    })
    .await?;
    sandbox.shutdown().await;
    Ok(())
}

/// Sandboxes started at once to measure what each costs the host.
const RSS_SANDBOXES: usize = 4;

/// As `measure`, but `None` where the runtime is missing from this machine: no engine for
/// docker, no runsc to start for gvisor.
pub async fn measure_if_present(
    plan: &Plan,
    runtime: RuntimeKind,
    fixtures: &Path,
    inputs: &HashMap<usize, Tensor>,
) -> Result<Option<RuntimeFigures>> {
    match measure(plan, runtime, fixtures, inputs).await {
        Ok(figures) => Ok(Some(figures)),
        Err(error) => match (runtime, error.downcast_ref::<Error>()) {
            (RuntimeKind::Docker, Some(Error::Engine { .. })) => {
                eprintln!("docker left out: {error}");
                Ok(None)
            }
            (RuntimeKind::Gvisor, Some(Error::Spawn { .. })) => {
                eprintln!("gvisor left out: {error}");
                Ok(None)
            }
            _ => Err(error),
        },
    }
}

pub async fn measure(
    plan: &Plan,
    runtime: RuntimeKind,
    fixtures: &Path,
    inputs: &HashMap<usize, Tensor>,
) -> Result<RuntimeFigures> {
    let config = config(runtime, fixtures);
    let model = fixtures.join("half_plus_two");
    let (mut starts, mut loads, mut colds, mut warms) = (vec![], vec![], vec![], vec![]);
    for _ in 0..plan.starts {
        let (started, loaded, first) = sandbox_start(&config, &model).await?;
        starts.push(started);
        loads.push(loaded);
        colds.push(started + loaded + first);
        warms.push(warm_first_answer(&config, &model).await?);
    }
    let host_rss_per_sandbox = host_rss_per_sandbox(&config, &model).await?;
    let sandbox = Sandbox::start(config).await?;
    let half = sandbox.load_model(&model).await?;
    let worker_rss = sandbox.host_pid().map(memory::tree_rss_bytes).transpose()?;
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
        cold_first_answer: median(colds),
        warm_first_answer: median(warms),
        host_rss_per_sandbox,
        worker_rss,
    })
}

/// Sandbox start to first answer, the model load after it, and the first Predict after that.
async fn sandbox_start(config: &Config, model: &Path) -> Result<(Duration, Duration, Duration)> {
    let t = Instant::now();
    let sandbox = Sandbox::start(config.clone()).await?;
    let started = t.elapsed();
    let t = Instant::now();
    let half = sandbox.load_model(model).await?;
    let loaded = t.elapsed();
    let t = Instant::now();
    half.predict([("x", tiny())]).await?;
    let first = t.elapsed();
    drop(half);
    sandbox.shutdown().await;
    Ok((started, loaded, first))
}

/// The first answer of a pool started beforehand (its sandbox started, the model loaded), timed
/// from the request: what a caller waits for when a warm spare is ready.
async fn warm_first_answer(config: &Config, model: &Path) -> Result<Duration> {
    let pool = Pool::start(config.clone(), model, 1).await?;
    let t = Instant::now();
    pool.predict([("x", tiny())]).await?;
    let answered = t.elapsed();
    pool.shutdown().await;
    Ok(answered)
}

/// How much this process's resident memory grows per sandbox started with the model loaded.
async fn host_rss_per_sandbox(config: &Config, model: &Path) -> Result<u64> {
    let before = memory::own_rss_bytes()?;
    let pool = Pool::start(config.clone(), model, RSS_SANDBOXES).await?;
    pool.predict([("x", tiny())]).await?;
    let after = memory::own_rss_bytes()?;
    pool.shutdown().await;
    Ok(after.saturating_sub(before) / RSS_SANDBOXES as u64)
}
