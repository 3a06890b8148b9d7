//! Concurrent callers of one process sandbox, and of a pool of two.

use std::path::Path;

use anyhow::Result;
use tfsandbox::{Pool, RuntimeKind, Sandbox};

use crate::stats::Samples;
use crate::timing::concurrent;
use crate::{config, tiny, Plan};

/// (callers, one sandbox, pool of two) for each number of callers in the plan.
pub type Concurrency = Vec<(usize, Samples, Samples)>;

pub async fn measure(plan: &Plan, fixtures: &Path) -> Result<Concurrency> {
    let mut concurrency = Vec::new();
    let config = config(RuntimeKind::Process, fixtures);
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
    Ok(concurrency)
}
