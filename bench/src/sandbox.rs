//! One sandbox runtime: cold starts, model loads, round trips and large tensors.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tfsandbox::{Config, Error, Predict, RuntimeKind, Sandbox, Tensor};

use crate::stats::{median, Samples};
use crate::timing::{sequential, throughput};
use crate::{config, tiny, Plan};

/// Everything measured for one sandbox runtime.
pub struct RuntimeFigures {
    pub rtt: Samples,
    pub gib_s: Vec<(usize, f64)>,
    pub start: Duration,
    pub model_load: Duration,
}

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
