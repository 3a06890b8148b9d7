//! A running sandbox and the models loaded in it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::{
    GetModelMetadataRequest, InfoRequest, InfoResponse, LoadModelRequest, ModelMetadata,
    PredictRequest, UnloadModelRequest,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{oneshot, watch};
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::runtime::{self, Launch, Runtime};
use crate::tensor::Tensor;

/// Worker stderr lines kept for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// How long a failed call waits to learn whether the worker died (which explains the failure).
const EXIT_GRACE: Duration = Duration::from_secs(1);

static NEXT_SANDBOX: AtomicU64 = AtomicU64::new(1);

/// One worker in one sandbox. Dropping it kills the worker.
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: WorkerClient<Channel>,
    config: Config,
    runtime: Box<dyn Runtime>,
    host_pid: Option<u32>,
    /// How the worker ended, once it has.
    exit: watch::Receiver<Option<String>>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    model_ids: Mutex<HashMap<String, u32>>,
}

impl Sandbox {
    /// Starts a worker and waits until it answers.
    pub async fn start(config: Config) -> Result<Sandbox> {
        let runtime = runtime::for_config(&config).await?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed)
        );
        let launch = Launch {
            sandbox_id: id.clone(),
            worker_path: config.resolve_worker_path()?,
            worker_log: config.worker_log.clone(),
        };
        let worker = runtime.start(&launch).await?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = tokio::spawn(forward_stderr(
            id.clone(),
            worker.stderr,
            stderr_tail.clone(),
        ));
        let host_pid = worker.control.host_pid();
        let mut control = worker.control;
        let (exit_tx, exit) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        // The supervisor owns the worker until it exits, so its exit is seen the moment it happens.
        let supervisor_id = id.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = control.wait() => status,
                _ = kill_rx => {
                    control.kill().await;
                    control.wait().await
                }
            };
            // Its last stderr lines belong to the report.
            let _ = stderr_done.await;
            tracing::debug!(sandbox = %supervisor_id, %status, "worker exited");
            let _ = exit_tx.send(Some(status));
        });

        let connected = transport::connect(worker.stdout, worker.stdin).await;
        let (channel, _driver) = match connected {
            Ok(connected) => connected,
            Err(source) => {
                // A worker that died at once explains the failure better than the transport can.
                let _ = kill.send(());
                let exited = exit_report(&exit, &stderr_tail, &id, "starting the worker").await;
                return Err(exited.unwrap_or(Error::Transport {
                    sandbox: id,
                    source,
                }));
            }
        };

        let client = WorkerClient::new(channel)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes);
        let sandbox = Sandbox {
            inner: Arc::new(Inner {
                id,
                client,
                config,
                runtime,
                host_pid,
                exit,
                kill: Mutex::new(Some(kill)),
                stderr_tail,
                model_ids: Mutex::new(HashMap::new()),
            }),
        };
        let start_timeout = sandbox.inner.config.start_timeout;
        sandbox
            .inner
            .call("starting the worker", start_timeout, |mut c| async move {
                c.info(InfoRequest {}).await
            })
            .await?;
        Ok(sandbox)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The host pid of what the runtime started for this sandbox (the `process` runtime's
    /// jailer, whose child is the worker); `None` for the docker runtime.
    pub fn host_pid(&self) -> Option<u32> {
        self.inner.host_pid
    }

    /// The worker's own report: versions, identity, loaded models.
    pub async fn info(&self) -> Result<InfoResponse> {
        self.inner
            .call_default("Info", |mut c| async move { c.info(InfoRequest {}).await })
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
        };
        let response = self
            .inner
            .call_default(
                &format!("loading model '{model_id}' from {}", dir.display()),
                |mut c| async move { c.load_model(request).await },
            )
            .await?;
        let metadata = response.metadata.ok_or_else(|| Error::Incomplete {
            call: "LoadModel".into(),
            field: "metadata",
        })?;
        Ok(Model {
            sandbox: self.inner.clone(),
            id: model_id,
            metadata,
        })
    }

    /// Stops the worker and waits until it is gone; returns how it ended.
    pub async fn shutdown(self) -> String {
        self.inner.kill();
        let mut exit = self.inner.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_default(),
            Err(_) => "unknown".into(),
        };
        status
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Models hold the inner part too; the worker goes when the last handle does.
        if Arc::strong_count(&self.inner) == 1 {
            self.inner.kill();
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

/// A model loaded in a sandbox.
#[derive(Clone)]
pub struct Model {
    sandbox: Arc<Inner>,
    id: String,
    metadata: ModelMetadata,
}

impl Model {
    pub fn id(&self) -> &str {
        &self.id
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
        let call = format!(
            "model '{}', signature '{}'",
            self.id,
            predict.signature.as_deref().unwrap_or("serving_default")
        );
        let response = self
            .sandbox
            .call_default(&call, |mut c| async move { c.predict(request).await })
            .await?;
        response
            .outputs
            .into_iter()
            .map(|(key, wire)| Ok((key, Tensor::from_wire(wire)?)))
            .collect()
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
                |mut c| async move { c.get_model_metadata(request).await },
            )
            .await?;
        response.metadata.ok_or_else(|| Error::Incomplete {
            call: "GetModelMetadata".into(),
            field: "metadata",
        })
    }

    /// Frees the model in the worker.
    pub async fn unload(self) -> Result<()> {
        let request = UnloadModelRequest {
            model_id: self.id.clone(),
        };
        self.sandbox
            .call_default(
                &format!("unloading model '{}'", self.id),
                |mut c| async move { c.unload_model(request).await },
            )
            .await?;
        Ok(())
    }
}

/// One Predict call: which signature, its inputs, and which outputs.
#[derive(Debug, Clone, Default)]
pub struct Predict {
    pub signature: Option<String>,
    pub inputs: HashMap<String, Tensor>,
    /// Empty: all outputs.
    pub outputs: Vec<String>,
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
}

impl Inner {
    fn kill(&self) {
        if let Some(kill) = self.kill.lock().expect("kill lock").take() {
            let _ = kill.send(());
        }
    }

    fn fresh_model_id(&self, dir: &Path) -> String {
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "model".into());
        let mut ids = self.model_ids.lock().expect("model id lock");
        let n = ids.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base
        } else {
            format!("{base}-{n}")
        }
    }

    async fn call_default<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: FnOnce(WorkerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call(what, self.config.call_timeout, call).await
    }

    /// Runs one call with a deadline; a failure caused by the worker's death says so.
    async fn call<T, F, Fut>(&self, what: &str, limit: Duration, call: F) -> Result<T>
    where
        F: FnOnce(WorkerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let outcome = tokio::time::timeout(limit, call(self.client.clone())).await;
        match outcome {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.explain(what, status).await),
            Err(_) => Err(self.exited(what).await.unwrap_or(Error::Timeout {
                call: what.to_string(),
                after: limit,
            })),
        }
    }

    async fn explain(&self, what: &str, status: Status) -> Error {
        // A status the worker sent itself stands; one the transport made up may hide a dead worker.
        let from_transport = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
        ) && !status.metadata().contains_key("content-type");
        if from_transport {
            if let Some(error) = self.exited(what).await {
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

    async fn exited(&self, what: &str) -> Option<Error> {
        exit_report(&self.exit, &self.stderr_tail, &self.id, what).await
    }
}

/// The worker's exit as an error, if it exits within a moment.
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

/// Sends each worker stderr line to the host's log, tagged with the sandbox, and keeps the last few.
async fn forward_stderr(
    sandbox: String,
    stderr: Box<dyn AsyncRead + Send + Unpin>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "tfsandbox::worker", sandbox = %sandbox, "{line}");
        let mut tail = tail.lock().expect("stderr lock");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
