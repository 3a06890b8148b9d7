//! A running sandbox and the models loaded in it.
//!
//! A sandbox owns one worker at a time (`worker.rs`). When the worker dies, pending calls fail
//! with its exit status and the sandbox starts another and loads the same models into it
//! (`restart.rs`); model handles keep working across the switch.

mod log;
mod restart;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so deadlines move with paused time in the unit tests.
use tokio::time::Instant;

use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::{
    GetModelMetadataRequest, InfoRequest, InfoResponse, LoadModelRequest, ModelMetadata,
    PredictRequest, UnloadModelRequest,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::runtime::{self, Runtime};
use crate::tensor::Tensor;
use tfsandbox_scan::Capability;
use worker::Worker;

static NEXT_SANDBOX: AtomicU64 = AtomicU64::new(1);

/// One sandbox: a worker, replaced when it dies. The worker goes when the last handle to the
/// sandbox (the `Sandbox` or any of its `Model`s) does.
pub struct Sandbox {
    inner: Arc<Inner>,
}

/// Which worker calls go to.
#[derive(Clone)]
enum State {
    Ready(Arc<Worker>),
    /// The worker died; another is being started.
    Restarting {
        last_exit: String,
    },
    /// The worker kept dying; no more restarts.
    Failed(String),
    Closed,
}

struct Inner {
    id: String,
    config: Config,
    runtime: Box<dyn Runtime>,
    state: watch::Sender<State>,
    closing: AtomicBool,
    generations: AtomicU64,
    /// Each worker reports its exit here; the restart keeper listens.
    exits: mpsc::UnboundedSender<worker::Exited>,
    models: Mutex<Models>,
    /// One permit per call sent to the worker.
    calls: Semaphore,
    /// One permit per call admitted: sent to the worker or waiting, in order, for a permit of
    /// `calls` (`Limits::max_concurrent_calls` plus `max_queued_calls`).
    admitted: Semaphore,
}

#[derive(Default)]
struct Models {
    /// What loaded each model, by id: a new worker loads them all again.
    loaded: BTreeMap<String, LoadModelRequest>,
    /// Loads in flight, counted against the limit.
    loading: usize,
    /// How many models were named after each folder, for fresh ids.
    names: HashMap<String, u32>,
}

impl Sandbox {
    /// Starts a worker and waits until it answers.
    pub async fn start(config: Config) -> Result<Sandbox> {
        config.validate()?;
        let runtime = runtime::for_config(&config).await?;
        Sandbox::start_on(config, runtime).await
    }

    /// [`Sandbox::start`] on a given runtime: the seam the unit tests start sandboxes through.
    async fn start_on(config: Config, runtime: Box<dyn Runtime>) -> Result<Sandbox> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed)
        );
        let (exits, exits_rx) = mpsc::unbounded_channel();
        let worker = Worker::start(&id, 1, &config, runtime.as_ref(), exits.clone()).await?;
        let calls = Semaphore::new(config.limits.max_concurrent_calls);
        let admitted =
            Semaphore::new(config.limits.max_concurrent_calls + config.limits.max_queued_calls);
        let inner = Arc::new(Inner {
            id,
            config,
            runtime,
            state: watch::Sender::new(State::Ready(worker)),
            closing: AtomicBool::new(false),
            generations: AtomicU64::new(1),
            exits,
            models: Mutex::new(Models::default()),
            calls,
            admitted,
        });
        tokio::spawn(restart::keep(Arc::downgrade(&inner), exits_rx));
        inner.config.events.emit(Event::SandboxStarted {
            sandbox: inner.id.clone(),
            runtime: inner.config.runtime.kind().name().to_string(),
        });
        Ok(Sandbox { inner })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The host pid of what the runtime started for the current worker (the `process`
    /// runtime's jailer, whose child is the worker); `None` for the docker runtime or while no
    /// worker runs.
    pub fn host_pid(&self) -> Option<u32> {
        self.inner.worker().and_then(|w| w.host_pid)
    }

    /// Which worker this is: 1 for the first, one more for each restart.
    pub fn generation(&self) -> u64 {
        self.inner.generations.load(Ordering::SeqCst)
    }

    /// Kills the current worker at once, as a crash would; the sandbox then restarts it like
    /// any dead worker. Calls in flight on it fail.
    pub fn kill_worker(&self) {
        if let Some(worker) = self.inner.worker() {
            worker.kill("Sandbox::kill_worker");
        }
    }

    /// The worker's own report: versions, identity, loaded models.
    pub async fn info(&self) -> Result<InfoResponse> {
        self.inner
            .call_default(
                "Info",
                InfoRequest {},
                |mut c, r| async move { c.info(r).await },
            )
            .await
    }

    /// Loads the SavedModel in `dir` (tag "serve") under an id made from its folder name.
    pub async fn load_model(&self, dir: impl AsRef<Path>) -> Result<Model> {
        self.load_model_with(dir, LoadOptions::default()).await
    }

    pub async fn load_model_with(
        &self,
        dir: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<Model> {
        let dir = dir.as_ref();
        let path = self.inner.runtime.model_path(dir)?;
        let model_id = match options.id {
            Some(id) => id,
            None => self.inner.fresh_model_id(dir),
        };
        let request = LoadModelRequest {
            path,
            tags: options.tags,
            model_id: model_id.clone(),
            deny_capabilities: self.inner.config.op_policy.names(),
        };
        let limit = self.inner.config.limits.max_models;
        {
            let mut models = self.inner.models.lock().expect("models lock");
            if models.loaded.len() + models.loading >= limit {
                return Err(self.inner.limit_hit(Error::TooManyModels {
                    sandbox: self.inner.id.clone(),
                    model: model_id,
                    limit,
                }));
            }
            models.loading += 1;
        }
        // What is loaded, as the host sees it: hashed before the worker reads it.
        let digest = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || crate::digest::folder(&dir)).await
        };
        let digest = match digest {
            Ok(Ok(digest)) => digest,
            failed => {
                self.inner.models.lock().expect("models lock").loading -= 1;
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "the digest's task failed".to_string(),
                };
                return Err(Error::ModelPath {
                    path: dir.to_path_buf(),
                    reason: format!("cannot compute its digest: {reason}"),
                });
            }
        };
        let loaded = self
            .inner
            .call_default(
                &format!("loading model '{model_id}' from {}", dir.display()),
                request.clone(),
                |mut c, r| async move { c.load_model(r).await },
            )
            .await;
        {
            let mut models = self.inner.models.lock().expect("models lock");
            models.loading -= 1;
            if loaded.is_ok() {
                models.loaded.insert(model_id.clone(), request);
            }
        }
        let loaded = loaded?;
        let metadata = loaded.metadata.ok_or_else(|| Error::Incomplete {
            call: "LoadModel".into(),
            field: "metadata",
        })?;
        // The worker's word: only names the catalogue knows are kept, each once.
        let capabilities: Option<Vec<Capability>> = loaded.scanned.then(|| {
            let known: BTreeSet<Capability> = loaded
                .capabilities
                .iter()
                .filter_map(|name| name.parse().ok())
                .collect();
            known.into_iter().collect()
        });
        self.inner.config.events.emit(Event::ModelLoaded {
            sandbox: self.inner.id.clone(),
            model: model_id.clone(),
            path: dir.display().to_string(),
            digest: digest.sha256.clone(),
            files: digest.files,
            bytes: digest.bytes,
            capabilities: capabilities
                .as_ref()
                .map(|all| all.iter().map(|c| c.name()).collect()),
        });
        Ok(Model {
            sandbox: self.inner.clone(),
            id: model_id,
            metadata,
            digest: Arc::new(digest),
            capabilities,
        })
    }

    /// Lets the calls in flight finish (up to `Config::drain_timeout`), refusing new ones, then
    /// stops the worker and waits until it is gone; returns how it ended.
    pub async fn shutdown(self) -> String {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        let all = inner.config.limits.max_concurrent_calls as u32;
        let drained =
            tokio::time::timeout(inner.config.drain_timeout, inner.calls.acquire_many(all)).await;
        if drained.is_err() {
            tracing::warn!(sandbox = %inner.id, "calls still in flight after the drain timeout");
        }
        let state = inner.state.send_replace(State::Closed);
        match state {
            State::Ready(worker) => {
                worker.kill("the sandbox was shut down");
                worker.wait().await.to_string()
            }
            State::Restarting { last_exit } => last_exit,
            State::Failed(reason) => reason,
            State::Closed => "already shut down".into(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let State::Ready(worker) = &*self.state.borrow() {
            worker.kill("the sandbox was dropped");
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The id calls use; unset: the folder name, made unique in this sandbox.
    pub id: Option<String>,
    /// MetaGraph tags; empty: ["serve"].
    pub tags: Vec<String>,
}

/// A model loaded in a sandbox. It stays loaded across worker restarts.
#[derive(Clone)]
pub struct Model {
    sandbox: Arc<Inner>,
    id: String,
    metadata: ModelMetadata,
    digest: Arc<crate::digest::FolderDigest>,
    capabilities: Option<Vec<Capability>>,
}

impl Model {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The digest of the model's folder, taken on the host as it was loaded
    /// ([`crate::digest::folder`]).
    pub fn digest(&self) -> &crate::digest::FolderDigest {
        &self.digest
    }

    /// What the model's ops can do, as the worker's scan at load found them (the worker's
    /// word); `None` where that scan could not read the model and no op policy needed it.
    pub fn capabilities(&self) -> Option<&[Capability]> {
        self.capabilities.as_deref()
    }

    /// Signatures, as the worker reported them when it loaded the model.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// Runs `serving_default` and returns every output.
    pub async fn predict<K: Into<String>>(
        &self,
        inputs: impl IntoIterator<Item = (K, Tensor)>,
    ) -> Result<BTreeMap<String, Tensor>> {
        self.predict_with(Predict::new(inputs)).await
    }

    pub async fn predict_with(&self, predict: Predict) -> Result<BTreeMap<String, Tensor>> {
        let call = format!(
            "model '{}', signature '{}'",
            self.id,
            predict.signature.as_deref().unwrap_or("serving_default")
        );
        let limit = self.sandbox.config.limits.max_tensor_bytes;
        let too_large = |name: &str, tensor: &Tensor| {
            let bytes = tensor.byte_len();
            (bytes > limit).then(|| Error::TensorTooLarge {
                call: call.clone(),
                name: name.to_string(),
                bytes,
                limit,
            })
        };
        if let Some(error) = predict.inputs.iter().find_map(|(k, t)| too_large(k, t)) {
            return Err(self.sandbox.limit_hit(error));
        }
        let request = PredictRequest {
            model_id: self.id.clone(),
            signature_name: predict.signature.clone().unwrap_or_default(),
            inputs: predict
                .inputs
                .into_iter()
                .map(|(k, t)| (k, t.into_wire()))
                .collect(),
            output_filter: predict.outputs,
        };
        let deadline = predict.deadline.unwrap_or(self.sandbox.config.call_timeout);
        let request_id = predict
            .request_id
            .filter(|id| id.len() <= 128 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let response = self
            .sandbox
            .call(&call, deadline, request, |mut c, mut r| async move {
                if let Some(id) = request_id.and_then(|id| id.parse().ok()) {
                    r.metadata_mut().insert("x-request-id", id);
                }
                c.predict(r).await
            })
            .await?;
        let outputs = response
            .outputs
            .into_iter()
            .map(|(key, wire)| Ok((key, Tensor::from_wire(wire)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        match outputs.iter().find_map(|(k, t)| too_large(k, t)) {
            Some(error) => Err(self.sandbox.limit_hit(error)),
            None => Ok(outputs),
        }
    }

    /// Asks the worker for the model's signatures again.
    pub async fn fetch_metadata(&self) -> Result<ModelMetadata> {
        let request = GetModelMetadataRequest {
            model_id: self.id.clone(),
        };
        let response = self
            .sandbox
            .call_default(
                &format!("metadata of model '{}'", self.id),
                request,
                |mut c, r| async move { c.get_model_metadata(r).await },
            )
            .await?;
        response.metadata.ok_or_else(|| Error::Incomplete {
            call: "GetModelMetadata".into(),
            field: "metadata",
        })
    }

    /// Frees the model in the worker; a new worker will not load it again.
    pub async fn unload(self) -> Result<()> {
        self.sandbox
            .models
            .lock()
            .expect("models lock")
            .loaded
            .remove(&self.id);
        let request = UnloadModelRequest {
            model_id: self.id.clone(),
        };
        self.sandbox
            .call_default(
                &format!("unloading model '{}'", self.id),
                request,
                |mut c, r| async move { c.unload_model(r).await },
            )
            .await?;
        Ok(())
    }
}

/// One Predict call: which signature, its inputs, which outputs, and its deadline.
#[derive(Debug, Clone, Default)]
pub struct Predict {
    pub signature: Option<String>,
    pub inputs: HashMap<String, Tensor>,
    /// Empty: all outputs.
    pub outputs: Vec<String>,
    /// Unset: `Config::call_timeout`.
    pub deadline: Option<Duration>,
    /// The caller's id for the call, sent to the worker as `x-request-id` (its log lines about
    /// the call name it) when it is 1 to 128 printable ASCII characters.
    pub request_id: Option<String>,
}

impl Predict {
    pub fn new<K: Into<String>>(inputs: impl IntoIterator<Item = (K, Tensor)>) -> Predict {
        Predict {
            inputs: inputs.into_iter().map(|(k, t)| (k.into(), t)).collect(),
            ..Predict::default()
        }
    }

    pub fn signature(mut self, name: impl Into<String>) -> Predict {
        self.signature = Some(name.into());
        self
    }

    pub fn outputs<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Predict {
        self.outputs = keys.into_iter().map(Into::into).collect();
        self
    }

    pub fn request_id(mut self, id: impl Into<String>) -> Predict {
        self.request_id = Some(id.into());
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> Predict {
        self.deadline = Some(deadline);
        self
    }
}

impl Inner {
    /// The worker calls go to now, if one runs.
    fn worker(&self) -> Option<Arc<Worker>> {
        match &*self.state.borrow() {
            State::Ready(worker) => Some(worker.clone()),
            _ => None,
        }
    }

    fn fresh_model_id(&self, dir: &Path) -> String {
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "model".into());
        let mut models = self.models.lock().expect("models lock");
        let n = models.names.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}-{n}")
        }
    }

    async fn call_default<Req, Resp, F, Fut>(
        &self,
        what: &str,
        message: Req,
        rpc: F,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        F: FnOnce(WorkerClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call(what, self.config.call_timeout, message, rpc)
            .await
    }

    /// Runs one call within `limit`. A failure the worker's death caused says so; a call past
    /// its deadline is cancelled, and its worker replaced if TensorFlow does not stop the run.
    async fn call<Req, Resp, F, Fut>(
        &self,
        what: &str,
        limit: Duration,
        message: Req,
        rpc: F,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        F: FnOnce(WorkerClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let deadline = Instant::now() + limit;
        // Refused here with a clear error: past the limit the transport only resets the stream.
        let bytes = message.encoded_len();
        if bytes > self.config.max_message_bytes {
            return Err(self.limit_hit(Error::MessageTooLarge {
                call: what.to_string(),
                bytes,
                limit: self.config.max_message_bytes,
            }));
        }
        if self.closing.load(Ordering::SeqCst) {
            return Err(self.closed(what));
        }
        // Past both bounds a call fails at once: a flood costs the host no more than the queue.
        let limits = &self.config.limits;
        let _admitted = self.admitted.try_acquire().map_err(|_| {
            self.limit_hit(Error::TooManyCalls {
                sandbox: self.id.clone(),
                call: what.to_string(),
                limit: limits.max_concurrent_calls,
                queued: limits.max_queued_calls,
            })
        })?;
        // The queue is first come, first served (tokio's semaphore is fair), and a call waits in
        // it no longer than its own deadline.
        let _permit = match tokio::time::timeout_at(deadline, self.calls.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(self.closed(what)),
            Err(_) => {
                return Err(Error::DeadlineExceeded {
                    call: format!(
                        "{what} (waiting for one of {} calls)",
                        limits.max_concurrent_calls
                    ),
                    after: limit,
                })
            }
        };
        let worker = self.ready_worker(what, limit, deadline).await?;
        let mut request = Request::new(message);
        // The worker hands the deadline on to TensorFlow.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let outcome = tokio::time::timeout_at(deadline, rpc(worker.client.clone(), request)).await;
        match outcome {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status))
                if Instant::now() < deadline && status.code() != Code::DeadlineExceeded =>
            {
                Err(explain(&worker, what, status).await)
            }
            _ => {
                restart::watch_overrun(worker.clone(), what, self.config.stuck_grace);
                if worker.has_exited() {
                    if let Some(exited) = worker.exit_report(what).await {
                        return Err(exited);
                    }
                }
                Err(Error::DeadlineExceeded {
                    call: what.to_string(),
                    after: limit,
                })
            }
        }
    }

    /// The current worker; while one restarts, waits for it until the call's deadline.
    async fn ready_worker(
        &self,
        what: &str,
        limit: Duration,
        deadline: Instant,
    ) -> Result<Arc<Worker>> {
        let mut state = self.state.subscribe();
        loop {
            let current = state.borrow_and_update().clone();
            match current {
                State::Ready(worker) => return Ok(worker),
                State::Failed(reason) => {
                    return Err(Error::Failed {
                        sandbox: self.id.clone(),
                        call: what.to_string(),
                        reason,
                    })
                }
                State::Closed => return Err(self.closed(what)),
                State::Restarting { last_exit } => {
                    match tokio::time::timeout_at(deadline, state.changed()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => return Err(self.closed(what)),
                        Err(_) => {
                            return Err(Error::DeadlineExceeded {
                                call: format!(
                                    "{what} (waiting for a new worker; the last one exited: {last_exit})"
                                ),
                                after: limit,
                            })
                        }
                    }
                }
            }
        }
    }

    /// Sends a limit's refusal to the event stream, and returns it.
    fn limit_hit(&self, error: Error) -> Error {
        let n = |v: usize| v as u64;
        let (limit, call, value, bound) = match &error {
            Error::TooManyCalls {
                call,
                limit,
                queued,
                ..
            } => (
                "max_concurrent_calls + max_queued_calls",
                call.clone(),
                n(*limit + *queued) + 1,
                n(*limit + *queued),
            ),
            Error::TooManyModels { model, limit, .. } => (
                "max_models",
                format!("loading model '{model}'"),
                n(*limit) + 1,
                n(*limit),
            ),
            Error::TensorTooLarge {
                call,
                name,
                bytes,
                limit,
            } => (
                "max_tensor_bytes",
                format!("{call}: tensor '{name}'"),
                n(*bytes),
                n(*limit),
            ),
            Error::MessageTooLarge { call, bytes, limit } => {
                ("max_message_bytes", call.clone(), n(*bytes), n(*limit))
            }
            _ => return error,
        };
        self.config.events.emit(Event::LimitHit {
            sandbox: self.id.clone(),
            limit,
            call,
            value,
            bound,
        });
        error
    }

    fn closed(&self, what: &str) -> Error {
        Error::Closed {
            sandbox: self.id.clone(),
            call: what.to_string(),
        }
    }
}

/// A failed call as the caller should see it.
async fn explain(worker: &Worker, what: &str, status: Status) -> Error {
    // A status the worker sent itself stands; one the transport made up may hide a dead worker.
    let from_transport = matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
            | Code::OutOfRange
            | Code::ResourceExhausted
    ) && !status.metadata().contains_key("content-type");
    if from_transport {
        if let Some(error) = worker.exit_report(what).await {
            return error;
        }
        // Its message knows nothing of the call; say which one it was.
        let status = Status::new(status.code(), format!("{what}: {}", status.message()));
        return Error::Worker {
            call: what.to_string(),
            status,
        };
    }
    Error::Worker {
        call: what.to_string(),
        status,
    }
}

#[cfg(test)]
mod tests;
