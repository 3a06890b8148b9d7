//! Ways of timing calls: one after another, by size, and from many callers at once.

use std::time::Instant;

use anyhow::Result;
use futures::future::join_all;

use crate::stats::{median, Samples};
use crate::Plan;

/// Times `calls` sequential calls of `call`.
pub async fn sequential<F, Fut>(calls: usize, mut call: F) -> Result<Samples>
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

/// `calls` round trips of `mib` MiB each way, after one untimed, and their mean printed: what
/// `--profile-echo` and `--profile-process` run under a profiler.
pub async fn profile<F, Fut>(calls: usize, mib: usize, mut round_trip: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    round_trip().await?;
    let start = Instant::now();
    for _ in 0..calls {
        round_trip().await?;
    }
    let mean = start.elapsed() / calls.max(1) as u32;
    let gib_s = (2 * (mib << 20)) as f64 / (1u64 << 30) as f64 / mean.as_secs_f64();
    println!("{calls} round trips of {mib} MiB each way: {mean:?} each, {gib_s:.3} GiB/s");
    Ok(())
}

/// GiB/s of bytes in plus out, per size, for one way of making a round trip.
pub async fn throughput<F, Fut>(plan: &Plan, mut round_trip: F) -> Result<Vec<(usize, f64)>>
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
pub async fn concurrent<F, Fut>(callers: usize, calls: usize, call: F) -> Result<Samples>
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
