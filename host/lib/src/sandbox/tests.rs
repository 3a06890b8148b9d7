//! Unit tests of the sandbox's own logic: restart backoff and its cap, the crash-loop limit, start
//! failures told apart from crashes, `stuck_grace` after a deadline, and drain on shutdown.
//!
//! They run on an in-memory runtime under paused tokio time: each "worker" is an echo-style gRPC
//! service served in this process over the real transport on a duplex pipe, scripted to answer,
//! hang, fail to start or die. The checks in `checks/` run the same logic through real workers.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_server::{Worker as WorkerService, WorkerServer};
use tfsandbox_proto::v1::{
    GetModelMetadataRequest, GetModelMetadataResponse, InfoRequest, InfoResponse, LoadModelRequest,
    LoadModelResponse, ModelMetadata, PredictRequest, PredictResponse, Signature, TensorSpec,
    UnloadModelRequest, UnloadModelResponse,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::config::RestartPolicy;
use crate::exit::WorkerExit;
use crate::runtime::{Launch, Worker as Started, WorkerControl};

/// What one start of the in-memory runtime does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A worker that answers Predict after this long.
    Answer(Duration),
    /// A worker whose Predict never ends, and that reports the run as abandoned (as a worker
    /// does whose TensorFlow run outlived its caller).
    Hang,
    /// A worker that exits with status 1 this long after it started.
    DieAfter(Duration),
    /// No worker: the start itself fails.
    Fail,
    /// A worker that answers, but speaks protocol 0.
    OldProtocol,
}

/// What the runtime saw, in virtual time.
#[derive(Default)]
struct Seen {
    starts: Vec<Instant>,
    kills: Vec<Instant>,
}

struct MemoryRuntime {
    /// One step per start; once it runs out, workers answer at once.
    script: Mutex<VecDeque<Step>>,
    seen: Arc<Mutex<Seen>>,
}

impl MemoryRuntime {
    fn scripted(script: impl IntoIterator<Item = Step>) -> (Box<dyn Runtime>, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let runtime = MemoryRuntime {
            script: Mutex::new(script.into_iter().collect()),
            seen: seen.clone(),
        };
        (Box::new(runtime), seen)
    }
}

impl Runtime for MemoryRuntime {
    fn start<'a>(&'a self, _launch: &'a Launch) -> BoxFuture<'a, Result<Started>> {
        async move {
            self.seen.lock().unwrap().starts.push(Instant::now());
            let step = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Answer(Duration::ZERO));
            if let Step::Fail = step {
                return Err(Error::Spawn {
                    path: "in-memory worker".into(),
                    source: std::io::Error::other("no descriptors left (scripted)"),
                });
            }
            let (host_end, worker_end) = tokio::io::duplex(1 << 20);
            let (host_read, host_write) = tokio::io::split(host_end);
            let (worker_read, worker_write) = tokio::io::split(worker_end);
            let router = transport::server().add_service(WorkerServer::new(Echo { step }));
            let serving = transport::serve(
                worker_read,
                worker_write,
                router,
                Box::pin(futures::future::pending()),
            );
            let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
            let (exit_tx, exit_rx) = watch::channel(None);
            // The worker's life: it ends when killed or when its script says; its pipe closes then.
            tokio::spawn(async move {
                let die = async {
                    match step {
                        Step::DieAfter(after) => tokio::time::sleep(after).await,
                        _ => futures::future::pending().await,
                    }
                };
                let status = tokio::select! {
                    _ = serving => WorkerExit::code(0),
                    _ = kill_rx => WorkerExit::signal(9),
                    _ = die => WorkerExit::code(1),
                };
                let _ = exit_tx.send(Some(status));
            });
            Ok(Started {
                stdin: Box::new(host_write),
                stdout: Box::new(host_read),
                stderr: Box::new(tokio::io::empty()),
                control: Box::new(MemoryControl {
                    kill: Some(kill_tx),
                    exit: exit_rx,
                    seen: self.seen.clone(),
                }),
            })
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        Ok(format!("/models/{}", host.display()))
    }
}

struct MemoryControl {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    exit: watch::Receiver<Option<WorkerExit>>,
    seen: Arc<Mutex<Seen>>,
}

impl WorkerControl for MemoryControl {
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit> {
        async move {
            match self.exit.wait_for(Option::is_some).await {
                Ok(status) => status.clone().unwrap_or_default(),
                Err(_) => WorkerExit::unknown("the worker task is gone"),
            }
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            if let Some(kill) = self.kill.take() {
                self.seen.lock().unwrap().kills.push(Instant::now());
                let _ = kill.send(());
            }
        }
        .boxed()
    }

    fn host_pid(&self) -> Option<u32> {
        None
    }
}

/// The worker's side: Predict echoes its inputs, after the step's delay.
struct Echo {
    step: Step,
}

#[tonic::async_trait]
impl WorkerService for Echo {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            abandoned_runs: matches!(self.step, Step::Hang).into(),
            protocol_version: match self.step {
                Step::OldProtocol => 0,
                _ => tfsandbox_proto::PROTOCOL_VERSION,
            },
            worker_version: "0.0.1".into(),
            ..InfoResponse::default()
        }))
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let request = request.into_inner();
        let x = TensorSpec {
            name: "x".into(),
            dtype: crate::DType::Float32.to_wire().into(),
            ..TensorSpec::default()
        };
        Ok(Response::new(LoadModelResponse {
            metadata: Some(ModelMetadata {
                model_id: request.model_id,
                path: request.path,
                tags: request.tags,
                signatures: vec![Signature {
                    name: "serving_default".into(),
                    inputs: vec![x.clone()],
                    outputs: vec![x],
                    ..Signature::default()
                }],
            }),
            ..LoadModelResponse::default()
        }))
    }

    async fn get_model_metadata(
        &self,
        _: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented("in-memory worker"))
    }

    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        match self.step {
            Step::Answer(after) => tokio::time::sleep(after).await,
            _ => futures::future::pending().await,
        }
        Ok(Response::new(PredictResponse {
            outputs: request.into_inner().inputs,
        }))
    }

    async fn unload_model(
        &self,
        _: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        Ok(Response::new(UnloadModelResponse {}))
    }
}

/// A real model folder, only read (the digest at load reads it; the in-memory worker never does),
/// so no test leaves a folder behind.
fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checks/fixtures/half_plus_two")
}

fn config(restart: RestartPolicy) -> Config {
    Config {
        // Never run: the in-memory runtime only needs a file to be named.
        worker_path: Some("/proc/self/exe".into()),
        restart,
        ..Config::default()
    }
}

fn policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    }
}

/// The waits between one start and the next, in whole milliseconds of virtual time.
fn gaps(seen: &Mutex<Seen>) -> Vec<u128> {
    let starts = &seen.lock().unwrap().starts;
    starts
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_millis())
        .collect()
}

/// Waits in virtual time until `generation` has started and answers.
async fn until_generation(sandbox: &Sandbox, generation: u64) {
    for _ in 0..1000 {
        if sandbox.generation() >= generation && sandbox.info().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("generation {generation} never came up");
}

fn x() -> Predict {
    Predict::new([("x", Tensor::new(&[1], &[1.0f32]).unwrap())])
}

#[tokio::test(start_paused = true)]
async fn restarts_wait_the_initial_backoff_doubled_per_death_up_to_the_cap() {
    let died = Step::DieAfter(Duration::from_millis(5));
    let (runtime, seen) = MemoryRuntime::scripted([died; 6]);
    let sandbox = Sandbox::start_on(config(policy(10)), runtime)
        .await
        .unwrap();
    until_generation(&sandbox, 7).await;
    // Each worker lives 5 ms; the wait after its death is 100 ms doubled per death in the
    // window, at most max_backoff (1 s).
    assert_eq!(gaps(&seen), vec![105, 205, 405, 805, 1005, 1005]);
}

#[tokio::test(start_paused = true)]
async fn more_deaths_than_max_restarts_in_the_window_end_the_sandbox() {
    let died = Step::DieAfter(Duration::from_millis(5));
    let (runtime, seen) = MemoryRuntime::scripted([died; 10]);
    let sandbox = Sandbox::start_on(config(policy(3)), runtime).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The first worker and three restarts; the fourth death is one too many.
    assert_eq!(seen.lock().unwrap().starts.len(), 4);
    match sandbox.info().await {
        Err(Error::Failed { reason, .. }) => {
            assert!(reason.contains("died 4 times"), "{reason}");
            assert!(reason.contains("exit status: 1"), "{reason}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn failed_starts_are_retried_with_growing_waits_and_do_not_count_as_deaths() {
    // One death allowed in the window, then five starts that fail, then a worker that answers.
    let script = [
        Step::DieAfter(Duration::from_millis(5)),
        Step::Fail,
        Step::Fail,
        Step::Fail,
        Step::Fail,
        Step::Fail,
    ];
    let (runtime, seen) = MemoryRuntime::scripted(script);
    let sandbox = Sandbox::start_on(config(policy(1)), runtime).await.unwrap();
    until_generation(&sandbox, 7).await;
    assert_eq!(gaps(&seen), vec![105, 200, 400, 800, 1000, 1000]);
    let model = sandbox.load_model(model_dir()).await.unwrap();
    assert!(model.predict_with(x()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_run_that_outlives_its_deadline_gets_its_worker_replaced_after_stuck_grace() {
    let (runtime, seen) = MemoryRuntime::scripted([Step::Hang]);
    let sandbox = Sandbox::start_on(config(policy(5)), runtime).await.unwrap();
    let model = sandbox.load_model(model_dir()).await.unwrap();
    let called = Instant::now();
    let deadline = Duration::from_secs(3);
    match model.predict_with(x().deadline(deadline)).await {
        Err(Error::DeadlineExceeded { after, .. }) => assert_eq!(after, deadline),
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(Instant::now() - called, deadline);
    until_generation(&sandbox, 2).await;
    // Killed stuck_grace (2 s) after the deadline, once the worker said a run was still going.
    let kills = seen.lock().unwrap().kills.clone();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0] - called, deadline + Config::default().stuck_grace);
    // The replacement holds the model again and answers.
    assert!(model.predict_with(x()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_run_that_ends_at_its_deadline_keeps_its_worker() {
    let (runtime, seen) = MemoryRuntime::scripted([Step::Answer(Duration::from_secs(5))]);
    let sandbox = Sandbox::start_on(config(policy(5)), runtime).await.unwrap();
    let model = sandbox.load_model(model_dir()).await.unwrap();
    let late = model
        .predict_with(x().deadline(Duration::from_secs(1)))
        .await;
    assert!(
        matches!(late, Err(Error::DeadlineExceeded { .. })),
        "{late:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The worker reported no abandoned run: it stays.
    assert!(seen.lock().unwrap().kills.is_empty());
    assert_eq!(sandbox.generation(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_calls_in_flight() {
    let (runtime, seen) = MemoryRuntime::scripted([Step::Answer(Duration::from_secs(1))]);
    let sandbox = Sandbox::start_on(config(policy(5)), runtime).await.unwrap();
    let model = sandbox.load_model(model_dir()).await.unwrap();
    let call = tokio::spawn(async move { model.predict_with(x()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    let status = sandbox.shutdown().await;
    assert!(call.await.unwrap().is_ok(), "the call in flight finished");
    assert_eq!(
        status,
        "signal: 9 (SIGKILL), killed by the host: the sandbox was shut down"
    );
    // Killed once the call was done: 0.9 s later, not at once.
    let kills = seen.lock().unwrap().kills.clone();
    assert_eq!(kills[0] - began, Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_waiting_at_the_drain_timeout() {
    let (runtime, seen) = MemoryRuntime::scripted([Step::Answer(Duration::from_secs(600))]);
    let mut config = config(policy(5));
    config.drain_timeout = Duration::from_secs(2);
    let sandbox = Sandbox::start_on(config, runtime).await.unwrap();
    let model = sandbox.load_model(model_dir()).await.unwrap();
    let call = tokio::spawn(async move { model.predict_with(x()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    sandbox.shutdown().await;
    let kills = seen.lock().unwrap().kills.clone();
    assert_eq!(kills[0] - began, Duration::from_secs(2));
    // The call left behind fails (its worker is gone), it does not hang.
    assert!(call.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_worker_of_another_protocol_version_is_refused_at_the_start() {
    let (runtime, seen) = MemoryRuntime::scripted([Step::OldProtocol]);
    match Sandbox::start_on(config(policy(5)), runtime).await {
        Err(error @ Error::ProtocolMismatch { .. }) => {
            let text = error.to_string();
            assert!(text.contains("speaks protocol 0"), "{text}");
            assert!(
                text.contains(&format!(
                    "this host speaks {}",
                    tfsandbox_proto::PROTOCOL_VERSION
                )),
                "{text}"
            );
            assert!(text.contains("'0.0.1'"), "{text}");
        }
        Err(other) => panic!("expected ProtocolMismatch, got {other}"),
        Ok(_) => panic!("a worker of protocol 0 was taken"),
    }
    // Its supervisor kills it at once.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        seen.lock().unwrap().kills.len(),
        1,
        "the worker is not left running"
    );
}

/// A sandbox whose worker answers Predict after 1 s, taking one call at a time and queueing one.
async fn one_running_one_queued() -> (Sandbox, Model) {
    let (runtime, _) = MemoryRuntime::scripted([Step::Answer(Duration::from_secs(1))]);
    let mut config = config(policy(5));
    config.limits.max_concurrent_calls = 1;
    config.limits.max_queued_calls = 1;
    let sandbox = Sandbox::start_on(config, runtime).await.unwrap();
    let model = sandbox.load_model(model_dir()).await.unwrap();
    (sandbox, model)
}

#[tokio::test(start_paused = true)]
async fn calls_past_the_concurrency_limit_wait_in_order_and_past_the_queue_fail_at_once() {
    let (_sandbox, model) = one_running_one_queued().await;
    let began = Instant::now();
    let spawn =
        |model: Model| tokio::spawn(async move { (model.predict_with(x()).await, Instant::now()) });
    let running = spawn(model.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let queued = spawn(model.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    // One running, one waiting: the third is refused there and then, naming both bounds.
    let refused = model.predict_with(x()).await;
    assert!(
        matches!(
            refused,
            Err(Error::TooManyCalls {
                limit: 1,
                queued: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(Instant::now() - began, Duration::from_millis(20));
    let (first, first_at) = running.await.unwrap();
    let (second, second_at) = queued.await.unwrap();
    assert!(first.is_ok() && second.is_ok());
    // The queued call ran once the first was done, not beside it.
    assert_eq!(first_at - began, Duration::from_secs(1));
    assert_eq!(second_at - began, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_waits_no_longer_than_its_deadline() {
    let (_sandbox, model) = one_running_one_queued().await;
    let running = {
        let model = model.clone();
        tokio::spawn(async move { model.predict_with(x()).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let began = Instant::now();
    let waited = model
        .predict_with(x().deadline(Duration::from_millis(300)))
        .await;
    assert!(
        matches!(&waited, Err(Error::DeadlineExceeded { call, .. }) if call.contains("waiting for one of 1 calls")),
        "{waited:?}"
    );
    assert_eq!(Instant::now() - began, Duration::from_millis(300));
    assert!(running.await.unwrap().is_ok());
}
