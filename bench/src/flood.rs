//! One tenant floods its model while another calls its own: the other's tail latency, unloaded
//! and under the flood. Each is a sandbox of its own (its cgroup's CPU quota and its own call
//! limits), as `tfsandbox serve` runs each model version.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use futures::future::join_all;
use tfsandbox::{Predict, RuntimeKind, Sandbox, Tensor};

use crate::stats::Samples;
use crate::timing::sequential;
use crate::{config, tiny, Plan};

/// Concurrent callers of the flooded model, each calling again the moment it is answered.
pub const FLOOD_CALLERS: usize = 32;
/// busy_loop iterations per flooding call: tens of milliseconds of CPU each.
const FLOOD_ITERATIONS: i64 = 200_000;

/// The other tenant's round trips: alone, then while the first floods.
pub struct Flood {
    pub unloaded: Samples,
    pub flooded: Samples,
}

pub async fn measure(plan: &Plan, fixtures: &Path) -> Result<Flood> {
    let flooded_model = fixtures.join("busy_loop");
    let noisy =
        Sandbox::start(config(RuntimeKind::Process, fixtures).with_model(&flooded_model)).await?;
    let quiet = Sandbox::start(config(RuntimeKind::Process, fixtures)).await?;
    let busy = noisy.load_model(&flooded_model).await?;
    let half = quiet.load_model(fixtures.join("half_plus_two")).await?;
    let calls = plan.rtt_calls / 3;
    let unloaded = sequential(calls, || async {
        half.predict([("x", tiny())]).await?;
        Ok(())
    })
    .await?;

    let stop = AtomicBool::new(false);
    let flood = join_all((0..FLOOD_CALLERS).map(|_| async {
        while !stop.load(Ordering::Relaxed) {
            let call = Predict::new([("n", Tensor::scalar(FLOOD_ITERATIONS))]);
            busy.predict_with(call).await?;
        }
        Ok::<_, tfsandbox::Error>(())
    }));
    let measured = async {
        // The flood first fills the noisy sandbox's worker.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let flooded = sequential(calls, || async {
            half.predict([("x", tiny())]).await?;
            Ok(())
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        flooded
    };
    let (flooded, flood) = tokio::join!(measured, flood);
    for caller in flood {
        caller?;
    }
    noisy.shutdown().await;
    quiet.shutdown().await;
    Ok(Flood {
        unloaded,
        flooded: flooded?,
    })
}
