//! One worker of a sandbox: started by the runtime, watched until it exits, spoken to over its
//! stdio. A sandbox replaces a dead worker with a new one (see `restart.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::InfoRequest;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;
use tonic::Request;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::runtime::{Launch, Runtime};

/// Worker stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// How long a failed call waits to learn whether the worker died (which explains the failure).
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// A worker's exit, as its supervisor reports it to the sandbox.
pub(super) struct Exited {
    pub generation: u64,
    pub status: String,
}

pub(super) struct Worker {
    /// 1 for the first worker of a sandbox, counting up with each restart.
    pub generation: u64,
    pub sandbox: String,
    pub client: WorkerClient<Channel>,
    pub host_pid: Option<u32>,
    /// How the worker ended, once it has.
    exit: watch::Receiver<Option<String>>,
    /// Takes the reason the host kills it.
    kill: Mutex<Option<oneshot::Sender<String>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
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
        };
        let started = runtime.start(&launch).await?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = tokio::spawn(forward_stderr(
            launch.sandbox_id.clone(),
            started.stderr,
            stderr_tail.clone(),
        ));
        let host_pid = started.control.host_pid();
        let mut control = started.control;
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<String>();
        // The supervisor owns the worker until it exits, so its exit is seen the moment it happens.
        let name = launch.sandbox_id.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = control.wait() => status,
                Ok(reason) = kill_rx => {
                    control.kill().await;
                    let status = control.wait().await;
                    format!("{status}, killed by the host: {reason}")
                }
            };
            // Its last stderr lines belong to the report.
            let _ = stderr_done.await;
            tracing::debug!(worker = %name, %status, "worker exited");
            let _ = exit_tx.send(Some(status.clone()));
            let _ = exits.send(Exited { generation, status });
        });

        let connected = transport::connect(started.stdout, started.stdin).await;
        let client = match connected {
            Ok((channel, _driver)) => WorkerClient::new(channel)
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
            Err(source) => {
                // A worker that died at once explains the failure better than the transport can.
                let _ = kill.send("the transport failed at start".into());
                let exited = exit_report(&exit, &stderr_tail, sandbox, "starting the worker").await;
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
            kill: Mutex::new(Some(kill)),
            stderr_tail,
        });
        let mut request = Request::new(InfoRequest {});
        request.set_timeout(config.start_timeout);
        let answered =
            tokio::time::timeout(config.start_timeout, worker.client.clone().info(request)).await;
        let failure = match answered {
            Ok(Ok(_)) => return Ok(worker),
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
        worker.kill("it did not answer at start");
        Err(failure)
    }

    /// Stops the worker; `reason` joins its exit status.
    pub fn kill(&self, reason: &str) {
        if let Some(kill) = self.kill.lock().expect("kill lock").take() {
            let _ = kill.send(reason.to_string());
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Resolves with the exit status once the worker has exited.
    pub async fn wait(&self) -> String {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "unknown".into(),
        };
        status
    }

    /// The worker's exit as an error, if it exits within a moment.
    pub async fn exit_report(&self, what: &str) -> Option<Error> {
        exit_report(&self.exit, &self.stderr_tail, &self.sandbox, what).await
    }
}

async fn exit_report(
    exit: &watch::Receiver<Option<String>>,
    stderr_tail: &Mutex<VecDeque<String>>,
    sandbox: &str,
    what: &str,
) -> Option<Error> {
    let mut exit = exit.clone();
    let status = tokio::time::timeout(EXIT_GRACE, exit.wait_for(Option::is_some))
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
        status,
        stderr,
    })
}

/// Sends each worker stderr line to the host's log, tagged with the worker, and keeps the last few.
async fn forward_stderr(
    worker: String,
    stderr: Box<dyn AsyncRead + Send + Unpin>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "tfsandbox::worker", worker = %worker, "{line}");
        let mut tail = tail.lock().expect("stderr lock");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
