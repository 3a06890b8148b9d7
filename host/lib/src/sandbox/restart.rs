//! Keeping a sandbox's worker alive: replacing one that died, with bounded backoff and a limit
//! on restarts in a window (a crash loop ends in `State::Failed`), and killing one whose run
//! outlived its deadline.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

// tokio's clock, so paused time in the tests moves the restart window too.
use tokio::time::Instant;

use tfsandbox_proto::v1::InfoRequest;
use tokio::sync::mpsc;
use tonic::Request;

use super::worker::{Exited, Worker};
use super::{Inner, State};
use crate::error::Error;
use crate::events::Event;

/// Replaces the sandbox's worker each time it dies, until the sandbox goes or gives up.
///
/// Only a worker that started and then died counts toward `RestartPolicy::max_restarts`: a
/// start that fails (no descriptors left, the runtime refusing) says nothing about the model,
/// so it is retried with growing waits (up to `max_backoff`) for as long as it takes.
pub(super) async fn keep(sandbox: Weak<Inner>, mut exits: mpsc::UnboundedReceiver<Exited>) {
    // When each restart in the current window began.
    let mut recent: VecDeque<Instant> = VecDeque::new();
    while let Some(exited) = exits.recv().await {
        let Some(inner) = sandbox.upgrade() else {
            return;
        };
        // Only the current worker's death matters: a worker that failed to start, or one
        // already replaced, has been dealt with.
        let current =
            matches!(&*inner.state.borrow(), State::Ready(w) if w.generation == exited.generation);
        if !current || inner.closing.load(Ordering::SeqCst) {
            continue;
        }
        tracing::warn!(sandbox = %inner.id, status = %exited.status, "worker died; restarting it");
        // The last death, and what callers are told (it may add a start that failed since).
        let first_exit = exited.status.clone();
        let mut death = exited.status.to_string();
        let mut last_exit = death.clone();
        drop(inner);
        // One death, counted; `None` once the sandbox gave up.
        let mut backoff = match count_death(&sandbox, &mut recent, &last_exit) {
            Some(backoff) => backoff,
            None => continue,
        };
        loop {
            let Some(inner) = sandbox.upgrade() else {
                return;
            };
            inner.state.send_replace(State::Restarting {
                last_exit: last_exit.clone(),
            });
            // The wait must not keep a dropped sandbox alive.
            drop(inner);
            tokio::time::sleep(backoff).await;
            let Some(inner) = sandbox.upgrade() else {
                return;
            };
            if inner.closing.load(Ordering::SeqCst) {
                break;
            }
            let failure = match start_and_reload(&inner).await {
                Ok(worker) => {
                    tracing::info!(sandbox = %inner.id, generation = worker.generation, "worker restarted");
                    inner.config.events.emit(Event::WorkerRestarted {
                        sandbox: inner.id.clone(),
                        generation: worker.generation,
                        exit: first_exit.clone(),
                    });
                    inner.state.send_replace(State::Ready(worker));
                    break;
                }
                Err(failure) => failure,
            };
            let max_backoff = inner.config.restart.max_backoff;
            let id = inner.id.clone();
            drop(inner);
            match failure {
                Restart::StartFailed(error) => {
                    backoff = backoff.saturating_mul(2).min(max_backoff);
                    tracing::warn!(sandbox = %id, %error, "a new worker failed to start; trying again in {backoff:?}");
                    last_exit = format!("{death}; a new worker then failed to start: {error}");
                }
                Restart::DiedReloading(error) => {
                    death = error.to_string();
                    last_exit = death.clone();
                    backoff = match count_death(&sandbox, &mut recent, &last_exit) {
                        Some(backoff) => backoff,
                        None => break,
                    };
                }
            }
        }
    }
}

/// Counts a worker's death in the window: the wait before the next start, or `None` when this
/// death makes a crash loop (the sandbox is then `Failed`).
fn count_death(
    sandbox: &Weak<Inner>,
    recent: &mut VecDeque<Instant>,
    last_exit: &str,
) -> Option<Duration> {
    let inner = sandbox.upgrade()?;
    let policy = &inner.config.restart;
    let now = Instant::now();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.window)
    {
        recent.pop_front();
    }
    if recent.len() >= policy.max_restarts as usize {
        let reason = format!(
            "it died {} times within {:?} (RestartPolicy::max_restarts is {}); the last time: {last_exit}",
            recent.len() + 1,
            policy.window,
            policy.max_restarts
        );
        tracing::error!(sandbox = %inner.id, %reason, "crash loop; giving up");
        inner.config.events.emit(Event::GaveUp {
            sandbox: inner.id.clone(),
            reason: reason.clone(),
        });
        inner.state.send_replace(State::Failed(reason));
        return None;
    }
    let backoff = policy
        .initial_backoff
        .saturating_mul(1 << recent.len().min(16))
        .min(policy.max_backoff);
    recent.push_back(now);
    Some(backoff)
}

/// Why a restart did not give a working worker.
enum Restart {
    /// No worker came up: not the model's doing.
    StartFailed(Error),
    /// The new worker started, then died or failed while its models were loaded again.
    DiedReloading(Error),
}

/// A new worker holding every model the sandbox has loaded.
async fn start_and_reload(inner: &Inner) -> Result<Arc<Worker>, Restart> {
    let generation = inner.generations.fetch_add(1, Ordering::SeqCst) + 1;
    let worker = Worker::start(
        &inner.id,
        generation,
        &inner.config,
        inner.runtime.as_ref(),
        inner.exits.clone(),
    )
    .await
    .map_err(Restart::StartFailed)?;
    let models: Vec<_> = inner
        .models
        .lock()
        .expect("models lock")
        .loaded
        .values()
        .cloned()
        .collect();
    for model in models {
        let what = format!("reloading model '{}' into a new worker", model.model_id);
        let mut request = Request::new(model);
        request.set_timeout(inner.config.call_timeout);
        let loaded = tokio::time::timeout(
            inner.config.call_timeout,
            worker.client.clone().load_model(request),
        )
        .await;
        let failure = match loaded {
            Ok(Ok(_)) => continue,
            Ok(Err(status)) => Error::Worker { call: what, status },
            Err(_) => Error::DeadlineExceeded {
                call: what,
                after: inner.config.call_timeout,
            },
        };
        worker.kill("a model failed to load again");
        return Err(Restart::DiedReloading(failure));
    }
    Ok(worker)
}

/// After a call passed its deadline: gives TensorFlow `grace` to stop the run, then kills the
/// worker if any abandoned run is still going (or the worker does not answer at all).
pub(super) fn watch_overrun(worker: Arc<Worker>, what: &str, grace: Duration) {
    let what = what.to_string();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if worker.has_exited() {
            return;
        }
        let mut request = Request::new(InfoRequest {});
        request.set_timeout(grace);
        let answer = tokio::time::timeout(grace, worker.client.clone().info(request)).await;
        let stuck = match answer {
            Ok(Ok(info)) => info.into_inner().abandoned_runs > 0,
            _ => true,
        };
        if stuck {
            tracing::warn!(sandbox = %worker.sandbox, call = %what, "a run outlived its deadline; replacing the worker");
            worker.kill(&format!(
                "{what} outlived its deadline by {grace:?} inside TensorFlow"
            ));
            worker.events.emit(Event::KilledPastDeadline {
                sandbox: worker.sandbox.clone(),
                call: what,
                grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            });
        }
    });
}
