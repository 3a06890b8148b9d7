//! TensorFlow Serving's `PredictionService` and `ModelService`, answered by sandboxed models.
//!
//! Status codes and messages follow TensorFlow Serving's where clients are known to look at them:
//! an unknown model or version is NOT_FOUND ("Servable not found for request: ..."), a bad request
//! INVALID_ARGUMENT with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::proto::error::Code as TfCode;
use crate::proto::serving::{
    self as pb, model_service_server::ModelService, model_spec::VersionChoice,
    model_version_status, prediction_service_server::PredictionService, ModelSpec,
};
use crate::proto::{SignatureDef, TensorInfo};
use prost::Message;
use tfsandbox_proto::transport;
use tonic::{Request, Response, Status};

use super::auth::{Authority, Decided, Method};
use super::convert;
use super::examples::{classification, count_examples, regression, serialized_examples};
use super::models::Models;
use super::versions::{ServedModel, State, Version};
use tfsandbox::tensor::Tensor;
use tfsandbox::wire::{ModelMetadata, Signature};
use tfsandbox::Error;
use tfsandbox::Predict;

const DEFAULT_SIGNATURE: &str = "serving_default";
const CLASSIFY_METHOD: &str = "tensorflow/serving/classify";
const REGRESS_METHOD: &str = "tensorflow/serving/regress";
const SIGNATURE_DEF_MAP_URL: &str = "type.googleapis.com/tensorflow.serving.SignatureDefMap";

/// Both services over the same set of models.
#[derive(Clone)]
pub struct Serving {
    models: Arc<Models>,
    answering: Answering,
    metrics: Arc<crate::metrics::Metrics>,
    authority: Arc<Authority>,
    audit: Arc<crate::audit::Audit>,
}

/// TensorFlow Serving's switches for how requests are checked and answers written.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerOptions {
    /// `--enable_signature_method_name_check`: Classify and Regress only on signatures whose
    /// method_name says so. Off (the default), TF2 models' classify and regress signatures,
    /// which keep the predict method name, are served.
    pub method_name_check: bool,
    /// `--enable_serialization_as_tensor_content`: Predict answers in `tensor_content`.
    pub tensor_content: bool,
}

/// What one call may cost in memory, counted in real bytes (see `Tensor::byte_len`) before
/// anything is built: a request's inputs, and the answer before it is converted for the client.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// All tensors of one request, or of one answer, together.
    pub max_request_bytes: usize,
    /// `Limits::max_tensor_bytes`: any one tensor.
    pub max_tensor_bytes: usize,
}

impl Serving {
    pub fn new(
        models: Arc<Models>,
        limits: RequestLimits,
        answers: AnswerOptions,
        authority: Arc<Authority>,
        audit: Arc<crate::audit::Audit>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Serving {
        Serving {
            models,
            answering: Answering { limits, answers },
            metrics,
            authority,
            audit,
        }
    }

    /// A call the authority refused, in the audit log (never its token).
    pub(super) fn audit_refusal(
        &self,
        request_id: Option<&str>,
        identity: Option<&str>,
        model: &str,
        method: Method,
        status: &Status,
    ) {
        crate::audit::refused(
            &self.audit,
            request_id,
            identity,
            Some(model),
            &method.to_string(),
            status,
        );
    }

    pub(super) fn audit(&self) -> &Arc<crate::audit::Audit> {
        &self.audit
    }

    pub(super) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The authorisation decision for a gRPC call on `spec`'s model, from its connection's
    /// identity and its `authorization` metadata. Taken before the model is looked up, so a
    /// caller who may not call a model cannot learn whether it exists.
    fn authorise<T>(
        &self,
        request: &Request<T>,
        spec: Option<&ModelSpec>,
        method: Method,
    ) -> Result<(), Status> {
        if request.extensions().get::<Decided>().is_some() {
            return Ok(());
        }
        let peer = request
            .extensions()
            .get::<super::listen::ConnectionInfo>()
            .and_then(|c| c.peer());
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let model = spec.map(|s| s.name.as_str()).unwrap_or_default();
        self.authority
            .decide(peer, authorization, model, method)
            .map_err(|denied| {
                let status = Status::from(denied);
                let id = request
                    .extensions()
                    .get::<crate::audit::RequestId>()
                    .map(|id| id.0.as_str());
                self.audit_refusal(id, peer, model, method, &status);
                status
            })
    }

    /// The version a request's ModelSpec names.
    fn resolve(&self, spec: Option<&ModelSpec>) -> Result<Arc<Version>, Status> {
        let spec = spec.ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
        let model = self.models.get(&spec.name);
        let version = version_asked(model.as_deref(), spec.version_choice.as_ref())?;
        model.and_then(|model| model.get(version)).ok_or_else(|| {
            Status::not_found(match version {
                None => format!("Servable not found for request: Latest({})", spec.name),
                Some(v) => format!(
                    "Servable not found for request: Specific({}, {v})",
                    spec.name
                ),
            })
        })
    }
}

fn model_name(spec: Option<&ModelSpec>) -> String {
    spec.map(|s| s.name.clone()).unwrap_or_default()
}

/// The version a ModelSpec asks for (`None`: the latest), a label read through the model's
/// `version_labels`.
fn version_asked(
    model: Option<&ServedModel>,
    choice: Option<&VersionChoice>,
) -> Result<Option<i64>, Status> {
    match choice {
        None => Ok(None),
        Some(VersionChoice::Version(v)) => Ok(Some(*v)),
        Some(VersionChoice::VersionLabel(label)) => {
            match model.and_then(|m| m.label(label)) {
                Some(v) => Ok(Some(v)),
                // TensorFlow Serving's word and code for a label it does not know.
                None => Err(Status::invalid_argument(format!(
                    "Unrecognized servable version label: {label}"
                ))),
            }
        }
    }
}

impl Serving {
    /// The signature a ModelSpec names, on the version it resolves to: the REST API reads each
    /// input's JSON by its dtype.
    pub(super) fn signature_of(&self, spec: &ModelSpec) -> Result<Signature, Status> {
        let version = self.resolve(Some(spec))?;
        find_signature(version.pool.metadata(), &signature_name(Some(spec))).cloned()
    }

    /// `answer` to a call on `model`, counted in the request metrics.
    fn counted<T>(&self, model: &str, answer: Result<T, Status>) -> Result<Response<T>, Status> {
        let code = answer
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.metrics.request(model, code);
        answer.map(Response::new)
    }

    /// Every Prometheus metric: the security event counters and [`crate::metrics`].
    pub(super) fn prometheus_text(&self) -> String {
        self.audit.prometheus_text() + &self.metrics.prometheus_text(&self.models)
    }

    pub(super) fn limits(&self) -> RequestLimits {
        self.answering.limits
    }
}

/// The signature a request names (default `serving_default`), as TensorFlow Serving refuses a
/// missing one.
fn find_signature<'a>(metadata: &'a ModelMetadata, name: &str) -> Result<&'a Signature, Status> {
    metadata.signature(name).ok_or_else(|| {
        Status::invalid_argument(format!("Serving signature key \"{name}\" not found."))
    })
}

fn signature_name(spec: Option<&ModelSpec>) -> String {
    match spec.map(|s| s.signature_name.as_str()) {
        None | Some("") => DEFAULT_SIGNATURE.to_string(),
        Some(name) => name.to_string(),
    }
}

/// The ModelSpec an answer carries: the model and version that answered.
fn answered_spec(name: &str, version: &Version, signature: Option<String>) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        version_choice: Some(VersionChoice::Version(version.number)),
        signature_name: signature.unwrap_or_default(),
    }
}

/// A library error as the gRPC status a TensorFlow Serving client expects.
pub fn status_of(error: &Error) -> Status {
    if let Some(status) = error.status() {
        // The worker's own answer (e.g. INVALID_ARGUMENT naming the input) passes through.
        return Status::new(status.code(), status.message());
    }
    let code = match error {
        Error::DeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
        Error::TooManyCalls { .. } | Error::TooManyModels { .. } => tonic::Code::ResourceExhausted,
        Error::TensorTooLarge { .. } | Error::MessageTooLarge { .. } => {
            tonic::Code::ResourceExhausted
        }
        Error::Closed { .. } | Error::WorkerExited { .. } | Error::Transport { .. } => {
            tonic::Code::Unavailable
        }
        _ => tonic::Code::Internal,
    };
    Status::new(code, error.to_string())
}

fn tensor_info(spec: &tfsandbox::wire::TensorSpec) -> TensorInfo {
    TensorInfo {
        encoding: Some(crate::proto::tensor_info::Encoding::Name(
            spec.tensor_name.clone(),
        )),
        dtype: spec.tensorflow_dtype,
        tensor_shape: Some(convert::shape_proto(&spec.shape, spec.unknown_rank)),
    }
}

fn signature_def(signature: &Signature) -> SignatureDef {
    SignatureDef {
        inputs: signature
            .inputs
            .iter()
            .map(|s| (s.name.clone(), tensor_info(s)))
            .collect(),
        outputs: signature
            .outputs
            .iter()
            .map(|s| (s.name.clone(), tensor_info(s)))
            .collect(),
        method_name: signature.method_name.clone(),
        defaults: HashMap::new(),
    }
}

/// How requests are checked and answers written, whichever way a request comes: a client's
/// call on the version its ModelSpec resolves to, or a warmup request replayed on a version
/// being loaded.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    pub limits: RequestLimits,
    pub answers: AnswerOptions,
}

impl Answering {
    /// Runs a Predict on `version` (in a batch, where it batches).
    pub async fn predict(
        &self,
        version: &Arc<Version>,
        request: pb::PredictRequest,
        timeout: Option<Duration>,
    ) -> Result<pb::PredictResponse, Status> {
        let spec = request.model_spec.as_ref();
        let name = signature_name(spec);
        let signature = find_signature(version.pool.metadata(), &name)?;
        // Names first, then the whole request's size, and only then is anything built.
        if let Some(unknown) = request
            .inputs
            .keys()
            .find(|key| !signature.inputs.iter().any(|i| &i.name == *key))
        {
            let known: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Status::invalid_argument(format!(
                "input '{unknown}' is not an input of signature \"{name}\" (its inputs: {})",
                known.join(", ")
            )));
        }
        let convert_status = |e: convert::ConvertError| match e {
            convert::ConvertError::TooLarge { .. }
            | convert::ConvertError::RequestTooLarge { .. } => {
                Status::resource_exhausted(e.to_string())
            }
            _ => Status::invalid_argument(e.to_string()),
        };
        convert::check_request(
            request.inputs.iter().map(|(k, p)| (k.as_str(), p)),
            self.limits.max_request_bytes,
            self.limits.max_tensor_bytes,
        )
        .map_err(convert_status)?;
        let inputs = request
            .inputs
            .into_iter()
            .map(|(key, proto)| {
                Ok((
                    key.clone(),
                    convert::from_proto(&key, proto, self.limits.max_tensor_bytes)?,
                ))
            })
            .collect::<Result<Vec<_>, convert::ConvertError>>()
            .map_err(convert_status)?;
        let outputs = run(
            version,
            name.clone(),
            request.output_filter,
            inputs,
            timeout,
        )
        .await?;
        check_answer(&outputs, &name, self.limits.max_request_bytes)?;
        let model = spec.map(|s| s.name.as_str()).unwrap_or_default();
        Ok(pb::PredictResponse {
            model_spec: Some(answered_spec(model, version, Some(name))),
            outputs: outputs
                .into_iter()
                .map(|(k, t)| {
                    let proto = if self.answers.tensor_content {
                        convert::to_proto_content(t)
                    } else {
                        convert::to_proto(t)
                    };
                    (k, proto)
                })
                .collect(),
        })
    }

    /// Runs a classify or regress signature of `version` on the request's serialized Examples;
    /// returns its outputs.
    async fn run_examples(
        &self,
        version: &Arc<Version>,
        spec: Option<&ModelSpec>,
        input: Option<pb::Input>,
        method: &str,
        timeout: Option<Duration>,
    ) -> Result<(ModelSpec, BTreeMap<String, Tensor>), Status> {
        let examples = serialized_examples(input, self.limits.max_request_bytes)?;
        run_examples_on(
            version,
            spec,
            examples,
            method,
            timeout,
            self.limits,
            self.answers.method_name_check,
        )
        .await
    }

    /// Runs a Classify on `version`.
    pub async fn classify(
        &self,
        version: &Arc<Version>,
        request: pb::ClassificationRequest,
        timeout: Option<Duration>,
    ) -> Result<pb::ClassificationResponse, Status> {
        let batch = count_examples(request.input.as_ref());
        let (spec, outputs) = self
            .run_examples(
                version,
                request.model_spec.as_ref(),
                request.input,
                CLASSIFY_METHOD,
                timeout,
            )
            .await?;
        Ok(pb::ClassificationResponse {
            model_spec: Some(spec),
            result: Some(classification(
                &outputs,
                batch,
                self.limits.max_request_bytes,
            )?),
        })
    }

    /// Runs a Regress on `version`.
    pub async fn regress(
        &self,
        version: &Arc<Version>,
        request: pb::RegressionRequest,
        timeout: Option<Duration>,
    ) -> Result<pb::RegressionResponse, Status> {
        let batch = count_examples(request.input.as_ref());
        let (spec, outputs) = self
            .run_examples(
                version,
                request.model_spec.as_ref(),
                request.input,
                REGRESS_METHOD,
                timeout,
            )
            .await?;
        Ok(pb::RegressionResponse {
            model_spec: Some(spec),
            result: Some(regression(&outputs, batch)?),
        })
    }
}

/// Runs `spec`'s signature of `version` on `examples`; with `check_method`, it must be a
/// `method` signature.
async fn run_examples_on(
    version: &Arc<Version>,
    spec: Option<&ModelSpec>,
    examples: Vec<bytes::Bytes>,
    method: &str,
    timeout: Option<Duration>,
    limits: RequestLimits,
    check_method: bool,
) -> Result<(ModelSpec, BTreeMap<String, Tensor>), Status> {
    let name = signature_name(spec);
    let signature = find_signature(version.pool.metadata(), &name)?;
    if check_method && signature.method_name != method {
        let kind = if method == CLASSIFY_METHOD {
            "classification"
        } else {
            "regression"
        };
        return Err(Status::invalid_argument(format!(
            "Expected {kind} signature method_name to be {method}. Was: {}",
            signature.method_name
        )));
    }
    let [input_spec] = signature.inputs.as_slice() else {
        return Err(Status::invalid_argument(format!(
            "Signature \"{name}\" takes {} inputs; a {method} signature takes one, the serialized Examples",
            signature.inputs.len()
        )));
    };
    let n = examples.len();
    let tensor = Tensor::strings(&[n], examples).map_err(|e| Status::internal(e.to_string()))?;
    let inputs = vec![(input_spec.name.clone(), tensor)];
    let outputs = run(version, name.clone(), Vec::new(), inputs, timeout).await?;
    check_answer(&outputs, &name, limits.max_request_bytes)?;
    let model = spec.map(|s| s.name.as_str()).unwrap_or_default();
    Ok((answered_spec(model, version, Some(name)), outputs))
}

/// Runs `signature` of `version` on `inputs`, in a batch where the version batches (as TensorFlow
/// Serving's batching session merges every run, Predict's, Classify's and Regress's alike).
async fn run(
    version: &Arc<Version>,
    signature: String,
    outputs: Vec<String>,
    inputs: Vec<(String, Tensor)>,
    timeout: Option<Duration>,
) -> Result<BTreeMap<String, Tensor>, Status> {
    let request_id = crate::audit::current_request_id();
    match &version.batcher {
        Some(batcher) => {
            batcher
                .predict(version, signature, outputs, inputs, timeout, request_id)
                .await
        }
        None => version
            .pool
            .predict_with(library_call(
                signature, outputs, inputs, timeout, request_id,
            ))
            .await
            .map_err(|e| status_of(&e)),
    }
}

/// The library call a request makes: `signature` on `inputs`, answering only `outputs` (empty:
/// all), within `deadline`, its `request_id` passed on to the worker's log.
pub(crate) fn library_call(
    signature: String,
    outputs: Vec<String>,
    inputs: Vec<(String, Tensor)>,
    deadline: Option<Duration>,
    request_id: Option<String>,
) -> Predict {
    let mut predict = Predict::new(inputs).signature(signature).outputs(outputs);
    if let Some(deadline) = deadline {
        predict = predict.deadline(deadline);
    }
    if let Some(id) = request_id {
        predict = predict.request_id(id);
    }
    predict
}

/// Refuses an answer (the worker's, so hostile) whose tensors together hold more than `limit`
/// bytes, before it is converted and encoded for the client.
fn check_answer(
    outputs: &BTreeMap<String, Tensor>,
    signature: &str,
    limit: usize,
) -> Result<(), Status> {
    let bytes: u128 = outputs.values().map(|t| t.byte_len() as u128).sum();
    if bytes > limit as u128 {
        let listed: Vec<String> = outputs
            .iter()
            .map(|(k, t)| {
                format!(
                    "'{k}': {} {:?}, {} bytes",
                    t.dtype(),
                    t.shape(),
                    t.byte_len()
                )
            })
            .collect();
        return Err(Status::resource_exhausted(format!(
            "the answer of signature \"{signature}\" would take {bytes} bytes in memory ({}), over the limit of {limit} per request (--max_request_bytes)",
            listed.join("; ")
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl PredictionService for Serving {
    async fn predict(
        &self,
        request: Request<pb::PredictRequest>,
    ) -> Result<Response<pb::PredictResponse>, Status> {
        self.authorise(
            &request,
            request.get_ref().model_spec.as_ref(),
            Method::Predict,
        )?;
        let timeout = transport::grpc_timeout(&request);
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let answer = async {
            let version = self.resolve(request.model_spec.as_ref())?;
            self.answering.predict(&version, request, timeout).await
        }
        .await;
        self.counted(&model, answer)
    }

    async fn get_model_metadata(
        &self,
        request: Request<pb::GetModelMetadataRequest>,
    ) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        self.authorise(
            &request,
            request.get_ref().model_spec.as_ref(),
            Method::GetModelMetadata,
        )?;
        let request = request.into_inner();
        if request.metadata_field.is_empty() {
            return Err(Status::invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field",
            ));
        }
        if let Some(field) = request
            .metadata_field
            .iter()
            .find(|f| *f != "signature_def")
        {
            return Err(Status::invalid_argument(format!(
                "Metadata field {field} is not supported"
            )));
        }
        let spec = request.model_spec.as_ref();
        let version = self.resolve(spec)?;
        let map = pb::SignatureDefMap {
            signature_def: version
                .pool
                .metadata()
                .signatures
                .iter()
                .map(|s| (s.name.clone(), signature_def(s)))
                .collect(),
        };
        let any = prost_types::Any {
            type_url: SIGNATURE_DEF_MAP_URL.to_string(),
            value: map.encode_to_vec(),
        };
        let model = spec.map(|s| s.name.as_str()).unwrap_or_default();
        Ok(Response::new(pb::GetModelMetadataResponse {
            model_spec: Some(answered_spec(model, &version, None)),
            metadata: [("signature_def".to_string(), any)].into(),
        }))
    }

    async fn classify(
        &self,
        request: Request<pb::ClassificationRequest>,
    ) -> Result<Response<pb::ClassificationResponse>, Status> {
        self.authorise(
            &request,
            request.get_ref().model_spec.as_ref(),
            Method::Classify,
        )?;
        let timeout = transport::grpc_timeout(&request);
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let answer = async {
            let version = self.resolve(request.model_spec.as_ref())?;
            self.answering.classify(&version, request, timeout).await
        }
        .await;
        self.counted(&model, answer)
    }

    async fn multi_inference(
        &self,
        request: Request<pb::MultiInferenceRequest>,
    ) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        // Every task must name the same model (checked below), so the first names it.
        let spec = request
            .get_ref()
            .tasks
            .first()
            .and_then(|t| t.model_spec.as_ref());
        self.authorise(&request, spec, Method::MultiInference)?;
        let timeout = transport::grpc_timeout(&request);
        let model = model_name(spec);
        let request = request.into_inner();
        let answer = async {
            let version = self.resolve(Some(check_tasks(&request)?))?;
            self.answering
                .multi_inference(&version, request, timeout)
                .await
        }
        .await;
        self.counted(&model, answer)
    }

    async fn regress(
        &self,
        request: Request<pb::RegressionRequest>,
    ) -> Result<Response<pb::RegressionResponse>, Status> {
        self.authorise(
            &request,
            request.get_ref().model_spec.as_ref(),
            Method::Regress,
        )?;
        let timeout = transport::grpc_timeout(&request);
        let request = request.into_inner();
        let model = model_name(request.model_spec.as_ref());
        let answer = async {
            let version = self.resolve(request.model_spec.as_ref())?;
            self.answering.regress(&version, request, timeout).await
        }
        .await;
        self.counted(&model, answer)
    }
}

/// The ModelSpec every task of a MultiInference names, once the tasks are checked as TensorFlow
/// Serving checks them.
pub fn check_tasks(request: &pb::MultiInferenceRequest) -> Result<&ModelSpec, Status> {
    let first = request
        .tasks
        .first()
        .ok_or_else(|| Status::invalid_argument("Tasks is empty"))?;
    let first_spec = first
        .model_spec
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
    let mut signatures = std::collections::BTreeSet::new();
    for task in &request.tasks {
        let spec = task.model_spec.as_ref();
        if spec.map(|s| (&s.name, &s.version_choice))
            != Some((&first_spec.name, &first_spec.version_choice))
        {
            return Err(Status::invalid_argument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name and version",
            ));
        }
        if !signatures.insert(signature_name(spec)) {
            return Err(Status::invalid_argument(format!(
                "Duplicate evaluation of signature: {}",
                signature_name(spec)
            )));
        }
        if task.method_name != CLASSIFY_METHOD && task.method_name != REGRESS_METHOD {
            return Err(Status::invalid_argument(format!(
                "Unsupported signature method_name: {}",
                task.method_name
            )));
        }
    }
    Ok(first_spec)
}

impl Answering {
    /// One classify or regress result per task of a request [`check_tasks`] took, all on
    /// `version` (resolved once, so a version switch cannot split a request). Each task is its
    /// own run in the sandbox.
    pub async fn multi_inference(
        &self,
        version: &Arc<Version>,
        request: pb::MultiInferenceRequest,
        timeout: Option<Duration>,
    ) -> Result<pb::MultiInferenceResponse, Status> {
        let batch = count_examples(request.input.as_ref());
        let examples = serialized_examples(request.input, self.limits.max_request_bytes)?;
        let mut results = Vec::with_capacity(request.tasks.len());
        for task in &request.tasks {
            let spec = task.model_spec.as_ref();
            let (answered, outputs) = run_examples_on(
                version,
                spec,
                examples.clone(),
                &task.method_name,
                timeout,
                self.limits,
                self.answers.method_name_check,
            )
            .await?;
            let result = if task.method_name == CLASSIFY_METHOD {
                pb::inference_result::Result::ClassificationResult(classification(
                    &outputs,
                    batch,
                    self.limits.max_request_bytes,
                )?)
            } else {
                pb::inference_result::Result::RegressionResult(regression(&outputs, batch)?)
            };
            results.push(pb::InferenceResult {
                model_spec: Some(answered),
                result: Some(result),
            });
        }
        Ok(pb::MultiInferenceResponse { results })
    }
}

#[tonic::async_trait]
impl ModelService for Serving {
    async fn get_model_status(
        &self,
        request: Request<pb::GetModelStatusRequest>,
    ) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        self.authorise(
            &request,
            request.get_ref().model_spec.as_ref(),
            Method::GetModelStatus,
        )?;
        let request = request.into_inner();
        let spec = request
            .model_spec
            .ok_or_else(|| Status::invalid_argument("Missing ModelSpec"))?;
        let wanted = version_asked(
            self.models.get(&spec.name).as_deref(),
            spec.version_choice.as_ref(),
        )?;
        let model = self.models.get(&spec.name).ok_or_else(|| {
            Status::not_found(format!(
                "Could not find any versions of model {}",
                spec.name
            ))
        })?;
        let statuses: Vec<_> = model
            .statuses()
            .into_iter()
            .filter(|(v, _)| wanted.is_none_or(|w| w == *v))
            .map(|(version, status)| pb::ModelVersionStatus {
                version,
                state: match status.state {
                    State::Loading => model_version_status::State::Loading,
                    State::Available => model_version_status::State::Available,
                    State::Unloading => model_version_status::State::Unloading,
                    State::End => model_version_status::State::End,
                } as i32,
                status: Some(match status.error {
                    None => pb::StatusProto {
                        error_code: TfCode::Ok as i32,
                        error_message: String::new(),
                    },
                    Some((code, message)) => pb::StatusProto {
                        error_code: code as i32,
                        error_message: message,
                    },
                }),
            })
            .collect();
        if statuses.is_empty() {
            return Err(Status::not_found(match wanted {
                Some(v) => format!("Could not find version {v} of model {}", spec.name),
                None => format!("Could not find any versions of model {}", spec.name),
            }));
        }
        Ok(Response::new(pb::GetModelStatusResponse {
            model_version_status: statuses,
        }))
    }

    /// Answers once the new config's versions are loaded, or failed to load: then with the
    /// error of the first model that failed, as TensorFlow Serving answers.
    async fn handle_reload_config_request(
        &self,
        request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let every_model = ModelSpec {
            name: "*".into(),
            ..ModelSpec::default()
        };
        self.authorise(
            &request,
            Some(&every_model),
            Method::HandleReloadConfigRequest,
        )?;
        let list = match request.into_inner().config.and_then(|c| c.config) {
            Some(pb::model_server_config::Config::ModelConfigList(list)) => list,
            _ => {
                return Err(Status::invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only \
                     ModelConfigList is currently supported",
                ))
            }
        };
        let configs = super::model_config::from_proto(list).map_err(Status::invalid_argument)?;
        self.models
            .apply(configs)
            .await
            .map_err(|error| Status::new(error.code(), error.to_string()))?;
        Ok(Response::new(pb::ReloadConfigResponse {
            status: Some(pb::StatusProto {
                error_code: TfCode::Ok as i32,
                error_message: String::new(),
            }),
            metric: Vec::new(),
        }))
    }
}
