//! The `tfsandbox.v1.Worker` gRPC service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_server::Worker;
use tfsandbox_proto::v1::{
    GetModelMetadataRequest, GetModelMetadataResponse, InfoRequest, InfoResponse, LoadModelRequest,
    LoadModelResponse, PredictRequest, PredictResponse, UnloadModelRequest, UnloadModelResponse,
};
use tonic::{Request, Response, Status};

use tfsandbox_scan::OpPolicy;

use crate::error::WorkerError;
use crate::model::{Model, DEFAULT_TAG};

pub struct WorkerService {
    models: RwLock<HashMap<String, Arc<Model>>>,
    /// Runs still inside TensorFlow whose caller has gone.
    abandoned: Arc<AtomicU32>,
    /// The message limit the server applies, reported by Info.
    max_message_bytes: usize,
}

impl WorkerService {
    pub fn new(max_message_bytes: usize) -> WorkerService {
        WorkerService {
            models: RwLock::default(),
            abandoned: Arc::default(),
            max_message_bytes,
        }
    }

    fn model(&self, id: &str) -> Result<Arc<Model>, WorkerError> {
        self.models
            .read()
            .expect("model map lock")
            .get(id)
            .cloned()
            .ok_or_else(|| WorkerError::ModelNotFound(id.to_string()))
    }
}

/// Runs TensorFlow's blocking work on the blocking pool so the transport keeps moving meanwhile.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, WorkerError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Status::from),
        Err(join) => Err(Status::internal(format!("worker task failed: {join}"))),
    }
}

const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// Counts a TensorFlow run as abandoned while its caller is gone and it still runs.
///
/// The handler holds the tracker and the blocking run a clone; whichever side lets go first
/// decides. The handler's future is dropped when the caller cancels or its deadline passes.
struct RunTracker {
    state: Arc<AtomicU8>,
    abandoned: Arc<AtomicU32>,
    caller: bool,
}

impl RunTracker {
    fn start(abandoned: &Arc<AtomicU32>) -> RunTracker {
        RunTracker {
            state: Arc::new(AtomicU8::new(RUNNING)),
            abandoned: abandoned.clone(),
            caller: true,
        }
    }
}

impl Clone for RunTracker {
    fn clone(&self) -> Self {
        RunTracker {
            state: self.state.clone(),
            abandoned: self.abandoned.clone(),
            caller: false,
        }
    }
}

impl Drop for RunTracker {
    fn drop(&mut self) {
        if !self.caller {
            // The run is over (returned or panicked).
            if self.state.swap(FINISHED, Ordering::SeqCst) == ABANDONED {
                self.abandoned.fetch_sub(1, Ordering::SeqCst);
            }
        } else if self
            .state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let mut loaded_models: Vec<String> = self
            .models
            .read()
            .expect("model map lock")
            .keys()
            .cloned()
            .collect();
        loaded_models.sort();
        let (gpus, gpu_registered) = blocking(|| Ok(crate::gpus::observe())).await?;
        Ok(Response::new(InfoResponse {
            worker_version: env!("CARGO_PKG_VERSION").to_string(),
            tensorflow_version: tensorflow::version().unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            loaded_models,
            posture: Some(crate::posture::observe()),
            abandoned_runs: self.abandoned.load(Ordering::SeqCst),
            protocol_version: tfsandbox_proto::PROTOCOL_VERSION,
            max_message_bytes: self.max_message_bytes as u64,
            gpus,
            gpu_registered,
        }))
    }

    async fn load_model(
        &self,
        request: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        let LoadModelRequest {
            path,
            tags,
            model_id,
            deny_capabilities,
        } = request.into_inner();
        let policy = OpPolicy::parse(&deny_capabilities.join(","))
            .map_err(|e| WorkerError::invalid("deny_capabilities", e.to_string()))?;
        if model_id.is_empty() {
            return Err(WorkerError::EmptyModelId.into());
        }
        if self
            .models
            .read()
            .expect("model map lock")
            .contains_key(&model_id)
        {
            return Err(WorkerError::ModelExists(model_id).into());
        }
        let tags = if tags.is_empty() {
            vec![DEFAULT_TAG.to_string()]
        } else {
            tags
        };
        tracing::info!(%model_id, %path, ?tags, deny = ?policy.names(), "loading model");
        let id = model_id.clone();
        let (model, capabilities) = blocking(move || {
            let capabilities = Model::scan(&path, &tags, &policy)?;
            Ok((Model::load(&id, &path, &tags)?, capabilities))
        })
        .await?;
        let metadata = model.metadata();
        // Two loads of one id may race; the first to finish wins.
        let mut models = self.models.write().expect("model map lock");
        if models.contains_key(&model_id) {
            return Err(WorkerError::ModelExists(model_id).into());
        }
        models.insert(model_id, Arc::new(model));
        Ok(Response::new(LoadModelResponse {
            metadata: Some(metadata),
            scanned: capabilities.is_some(),
            capabilities: capabilities
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name().to_string())
                .collect(),
        }))
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let model = self.model(&request.get_ref().model_id)?;
        Ok(Response::new(GetModelMetadataResponse {
            metadata: Some(model.metadata()),
        }))
    }

    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let deadline = transport::grpc_timeout(&request);
        // The host's request id for the call (serve's `x-request-id`), for this log's lines.
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128 && v.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .map(str::to_string);
        let PredictRequest {
            model_id,
            signature_name,
            inputs,
            output_filter,
        } = request.into_inner();
        let model = self.model(&model_id)?;
        // Held across the await: dropped early only when the caller goes.
        let caller = RunTracker::start(&self.abandoned);
        let run = caller.clone();
        let outputs = blocking(move || {
            let _run = run;
            model.predict(&signature_name, &inputs, &output_filter, deadline)
        })
        .await;
        drop(caller);
        if let (Err(status), Some(id)) = (&outputs, &request_id) {
            tracing::info!(request_id = %id, model_id = %model_id, "predict failed: {}", status.message());
        }
        Ok(Response::new(PredictResponse { outputs: outputs? }))
    }

    async fn unload_model(
        &self,
        request: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        let id = &request.get_ref().model_id;
        let model = self.models.write().expect("model map lock").remove(id);
        match model {
            // The session closes when the last in-flight Predict on it lets go.
            Some(_) => {
                tracing::info!(model_id = %id, "unloaded model");
                Ok(Response::new(UnloadModelResponse {}))
            }
            None => Err(WorkerError::ModelNotFound(id.clone()).into()),
        }
    }
}
