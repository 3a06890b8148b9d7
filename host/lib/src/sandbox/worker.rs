//! One worker of a sandbox: started by the runtime, watched until it exits, spoken to over its
//! stdio. A sandbox replaces a dead worker with a new one (see `restart.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::InfoRequest;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::Request;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::exit::WorkerExit;
use crate::runtime::{Launch, Runtime};

use super::log;

/// How long a failed call waits to learn whether the worker died (which explains the failure).
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// The same, once the host has decided to kill it: it is going, and its runtime may take a moment
/// (the engine stopping a container).
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long the report of an exit waits for the last stderr lines. Not longer: a process the
/// worker left could hold stderr open for ever.
const STDERR_AFTER_EXIT: Duration = Duration::from_millis(500);

/// A worker's exit, as its supervisor reports it to the sandbox.
pub(super) struct Exited {
    pub generation: u64,
    pub status: WorkerExit,
}

pub(super) struct Worker {
    /// 1 for the first worker of a sandbox, counting up with each restart.
    pub generation: u64,
    pub sandbox: String,
    pub client: WorkerClient<Channel>,
    pub host_pid: Option<u32>,
    /// How the worker ended, once it has.
    exit: watch::Receiver<Option<WorkerExit>>,
    kill: Killer,
    stderr_tail: log::Tail,
    /// The sandbox's security events.
    pub events: Events,
}

impl Worker {
    /// Starts a worker and waits until it answers; `exits` learns when it ends.
    pub async fn start(
        sandbox: &str,
        generation: u64,
        config: &Config,
        runtime: &dyn Runtime,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> Result<Arc<Worker>> {
        let launch = Launch {
            // Each worker gets its own name: the last one's container may still be going away.
            sandbox_id: format!("{sandbox}-w{generation}"),
            worker_path: config.resolve_worker_path()?,
            worker_log: config.worker_log.clone(),
            max_message_bytes: config.max_message_bytes,
            session: config.session.clone(),
            start_timeout: config.start_timeout,
        };
        let started = runtime.start(&launch).await?;

        let stderr_tail: log::Tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = tokio::spawn(log::forward(
            launch.sandbox_id.clone(),
            started.stderr,
            stderr_tail.clone(),
            config.events.clone(),
        ));
        let host_pid = started.control.host_pid();
        let mut control = started.control;
        let (exit_tx, exit) = watch::channel(None);
        let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<String>();
        let kill = Killer {
            tx: kill_tx,
            decided: Arc::new(AtomicBool::new(false)),
        };
        // The supervisor owns the worker until it exits, so its exit is seen the moment it happens.
        let name = launch.sandbox_id.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                biased;
                status = control.wait() => status,
                Some(reason) = kill_rx.recv() => {
                    control.kill().await;
                    control.wait().await.killed_because(reason)
                }
            };
            // Its last stderr lines belong to the report, if they come at once.
            let stderr_abort = stderr_done.abort_handle();
            if tokio::time::timeout(STDERR_AFTER_EXIT, stderr_done)
                .await
                .is_err()
            {
                stderr_abort.abort();
            }
            tracing::debug!(worker = %name, %status, "worker exited");
            let _ = exit_tx.send(Some(status.clone()));
            let _ = exits.send(Exited { generation, status });
        });

        let connected = transport::connect(started.stdout, started.stdin).await;
        let client = match connected {
            Ok((channel, driver)) => {
                // The connection ends only with the worker: if it breaks first (a peer that stops
                // reading, a protocol error) or the worker closes its stdout, the worker goes.
                let kill = kill.clone();
                let events = config.events.clone();
                let worker_name = launch.sandbox_id.clone();
                tokio::spawn(async move {
                    let reason = match driver.await {
                        Ok(Ok(())) => {
                            // A worker that exits closes its pipes first: it is reported as it
                            // ended, unless it is still there after a moment.
                            tokio::time::sleep(EXIT_GRACE).await;
                            "it closed its end of the transport".to_string()
                        }
                        Ok(Err(error)) => {
                            let reason = format!("the transport failed: {error}");
                            // The transport's write queue passed its bound (see
                            // `tfsandbox_proto::transport`).
                            if reason.contains("it is not reading") {
                                events.emit(Event::WorkerNotReading {
                                    worker: worker_name,
                                    reason: reason.clone(),
                                });
                            }
                            reason
                        }
                        Err(_) => "the transport task ended".to_string(),
                    };
                    kill.kill(reason);
                });
                WorkerClient::new(channel)
                    .max_decoding_message_size(config.max_message_bytes)
                    .max_encoding_message_size(config.max_message_bytes)
            }
            Err(source) => {
                // A worker that died at once explains the failure better than the transport can.
                kill.kill("the transport failed at start".into());
                let exited =
                    exit_report(&exit, &stderr_tail, &kill, sandbox, "starting the worker").await;
                return Err(exited.unwrap_or(Error::Transport {
                    sandbox: sandbox.to_string(),
                    source,
                }));
            }
        };
        let worker = Arc::new(Worker {
            generation,
            sandbox: sandbox.to_string(),
            client,
            host_pid,
            exit,
            kill,
            stderr_tail,
            events: config.events.clone(),
        });
        let mut request = Request::new(InfoRequest {});
        request.set_timeout(config.start_timeout);
        let answered =
            tokio::time::timeout(config.start_timeout, worker.client.clone().info(request)).await;
        let failure = match answered {
            Ok(Ok(info)) => {
                let info = info.into_inner();
                if info.protocol_version == tfsandbox_proto::PROTOCOL_VERSION {
                    return Ok(worker);
                }
                Error::ProtocolMismatch {
                    sandbox: sandbox.to_string(),
                    worker: info.protocol_version,
                    worker_version: info.worker_version,
                    host: tfsandbox_proto::PROTOCOL_VERSION,
                }
            }
            // A worker that died explains the failure better than the transport can.
            Ok(Err(status)) => match worker.exit_report("starting the worker").await {
                Some(exited) => exited,
                None => Error::Worker {
                    call: "starting the worker".into(),
                    status: tonic::Status::new(
                        status.code(),
                        format!("starting the worker: {}", status.message()),
                    ),
                },
            },
            Err(_) => Error::DeadlineExceeded {
                call: "starting the worker".into(),
                after: config.start_timeout,
            },
        };
        worker.kill("it did not start as a worker of this host");
        Err(failure)
    }

    /// Stops the worker; `reason` joins its exit status.
    pub fn kill(&self, reason: &str) {
        self.kill.kill(reason.to_string());
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Resolves with the exit status once the worker has exited.
    pub async fn wait(&self) -> WorkerExit {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => WorkerExit::unknown("its supervisor is gone"),
        };
        status
    }

    /// The worker's exit as an error, if it exits within a moment.
    pub async fn exit_report(&self, what: &str) -> Option<Error> {
        exit_report(
            &self.exit,
            &self.stderr_tail,
            &self.kill,
            &self.sandbox,
            what,
        )
        .await
    }
}

async fn exit_report(
    exit: &watch::Receiver<Option<WorkerExit>>,
    stderr_tail: &Mutex<VecDeque<String>>,
    kill: &Killer,
    sandbox: &str,
    what: &str,
) -> Option<Error> {
    let mut exit = exit.clone();
    let grace = if kill.decided.load(Ordering::Relaxed) {
        KILL_GRACE
    } else {
        EXIT_GRACE
    };
    let status = tokio::time::timeout(grace, exit.wait_for(Option::is_some))
        .await
        .ok()?
        .ok()?
        .clone()?;
    let stderr = stderr_tail
        .lock()
        .expect("stderr lock")
        .iter()
        .cloned()
        .collect();
    Some(Error::WorkerExited {
        sandbox: sandbox.to_string(),
        call: what.to_string(),
        status: Box::new(status),
        stderr,
    })
}

/// Tells the supervisor to kill the worker, with why; the first reason counts.
#[derive(Clone)]
struct Killer {
    tx: mpsc::UnboundedSender<String>,
    /// Set once a kill was asked for.
    decided: Arc<AtomicBool>,
}

impl Killer {
    fn kill(&self, reason: String) {
        self.decided.store(true, Ordering::Relaxed);
        let _ = self.tx.send(reason);
    }
}
