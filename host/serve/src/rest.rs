//! TensorFlow Serving's REST API (`--rest_api_port`), as its `http_rest_api_handler.cc` and
//! `json_tensor.cc` serve it: `GET /v1/models/M[/versions/N|/labels/L][/metadata]` and `POST
//! .../M[...]:predict|classify|regress`, with its JSON forms, its `{"error": ...}` bodies and its
//! HTTP codes.
//!
//! Every call is turned into the gRPC request TensorFlow Serving would build and answered by the
//! same [`Serving`] code, so the byte budget, the signature checks and the messages are the gRPC
//! path's. The body is bounded before it is read, and a parsed JSON document is bounded by it.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::serving::{
    self as pb, model_service_server::ModelService, model_spec::VersionChoice,
    prediction_service_server::PredictionService, ModelSpec,
};
use crate::proto::{
    feature, BytesList, Example, Feature, Features, FloatList, Int64List, SignatureDef, TensorInfo,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use tonic::{Code, Status};

use super::auth::{Decided, Denied, Method as AuthMethod};
use super::convert;
use super::listen::{Connection, ConnectionInfo};
use super::service::Serving;
use tfsandbox::tensor;
use tfsandbox::wire::Signature;

/// A parsed JSON document takes up to this many times its text in memory (a two-byte number,
/// `1,`, becomes a 32-byte value in a vector that may have doubled), so a body is bounded at
/// `--max_request_bytes` divided by it.
pub const JSON_EXPANSION: usize = 32;

/// What the REST server needs: the models, and its own bounds.
#[derive(Clone)]
pub struct Rest {
    serving: Serving,
    /// `--rest_api_timeout_in_ms`; `None`: no limit (0 or less, as in TensorFlow Serving).
    timeout: Option<Duration>,
    max_body_bytes: usize,
    /// `--rest_api_num_threads`: calls handled at once; further ones wait their turn.
    slots: Arc<tokio::sync::Semaphore>,
    /// Where the Prometheus counters are served, if anywhere.
    metrics_path: Option<String>,
    /// `--rest_api_enable_cors_support`: every answer carries TensorFlow Serving's CORS headers.
    cors: bool,
}

impl Rest {
    pub fn new(
        serving: Serving,
        timeout: Option<Duration>,
        max_request_bytes: usize,
        concurrency: usize,
        metrics_path: Option<String>,
        cors: bool,
    ) -> Rest {
        Rest {
            serving,
            metrics_path,
            cors,
            timeout,
            max_body_bytes: max_request_bytes / JSON_EXPANSION,
            slots: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
        }
    }

    pub fn router(self) -> axum::Router {
        let audit = self.serving.audit().clone();
        let cors = self.cors;
        let router = axum::Router::new().fallback(handle).with_state(self);
        let router = if cors {
            router.layer(axum::middleware::map_response(add_cors_headers))
        } else {
            router
        };
        router.layer(crate::audit::RequestIdLayer(audit))
    }
}

/// The REST port's connections, taken through the same slots as gRPC's, so `--max_connections`
/// and `--idle_timeout` bound REST clients too. `T`: a TCP stream, or TLS over one.
pub struct SlotListener<T> {
    pub incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<Connection<T>>>,
    pub addr: std::net::SocketAddr,
}

/// Each REST request gets its connection's [`ConnectionInfo`] (the peer's identity above all),
/// as each gRPC request does from tonic.
impl<T> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SlotListener<T>>>
    for ConnectionInfo
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SlotListener<T>>) -> ConnectionInfo {
        stream.io().info()
    }
}

impl<T> axum::serve::Listener for SlotListener<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = Connection<T>;
    /// The listener's own address: a connection's peer is not kept.
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.incoming.next().await {
                Some(Ok(connection)) => return (connection, self.addr),
                // Accept errors are waited out by the slots; the stream goes on.
                Some(Err(error)) => tracing::debug!("REST accept: {error}"),
                // Ends only when the server stops, which ends serving first.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// TensorFlow Serving's `AddCORSHeaders`, on every answer, errors included.
async fn add_cors_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-origin",
        header::HeaderValue::from_static("*"),
    );
    headers.insert(
        "access-control-allow-methods",
        header::HeaderValue::from_static("POST, GET"),
    );
    headers.insert(
        "access-control-allow-headers",
        header::HeaderValue::from_static("Content-Type"),
    );
    response
}

/// TensorFlow Serving's `ToHTTPStatusCode`.
fn http_code(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid code"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        // Pretty, as TensorFlow Serving's writer prints it.
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )
        .into_response()
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

async fn handle(
    State(rest): State<Rest>,
    axum::extract::ConnectInfo(connection): axum::extract::ConnectInfo<ConnectionInfo>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    axum::Extension(request_id): axum::Extension<crate::audit::RequestId>,
    body: Body,
) -> Response {
    let path = uri.path().to_string();
    if rest.metrics_path.as_deref() == Some(path.as_str()) && method == Method::GET {
        // As TensorFlow Serving serves them: on the REST port, to whoever reaches it.
        return (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            rest.serving.prometheus_text(),
        )
            .into_response();
    }
    if method == Method::OPTIONS && path.len() >= 4 && path[..4].eq_ignore_ascii_case("/v1/") {
        // A CORS preflight, answered as TensorFlow Serving answers it: with no body.
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or_default();
        let code = if origin.contains("http://") || origin.contains("https://") {
            StatusCode::OK
        } else {
            tracing::debug!("Origin header is missing in CORS preflight");
            http_code(Code::FailedPrecondition)
        };
        return code.into_response();
    }
    let Some(call) = parse_path(&method, &path) else {
        if path.len() >= 4 && path[..4].eq_ignore_ascii_case("/v1/") {
            let status = invalid(format!("Malformed request: {method} {path}"));
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": status.message() }),
            );
        }
        return StatusCode::NOT_FOUND.into_response();
    };
    // Decided before the body is read or the model looked up, so a caller who may not call the
    // model learns nothing of it and costs no more than its headers. The same decision as gRPC's.
    let auth_method = match call.verb {
        Verb::Status => AuthMethod::GetModelStatus,
        Verb::Metadata => AuthMethod::GetModelMetadata,
        Verb::Predict => AuthMethod::Predict,
        Verb::Classify => AuthMethod::Classify,
        Verb::Regress => AuthMethod::Regress,
    };
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(denied) =
        rest.serving
            .authority()
            .decide(connection.peer(), authorization, &call.model, auth_method)
    {
        let unauthenticated = matches!(denied, Denied::Unauthenticated(_));
        let status = Status::from(denied);
        rest.serving.audit_refusal(
            Some(&request_id.0),
            connection.peer(),
            &call.model,
            auth_method,
            &status,
        );
        let mut response = json_response(
            http_code(status.code()),
            &json!({ "error": status.message() }),
        );
        if unauthenticated {
            // RFC 9110: a 401 says which scheme would do.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        return response;
    }
    // Waiting for a slot counts against the call's time, as the queue does in TF Serving.
    let work = async {
        let _slot = rest
            .slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is stopping"))?;
        let body = axum::body::to_bytes(body, rest.max_body_bytes)
            .await
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "the request body is over {} bytes, the most a REST request may send (--max_request_bytes / {JSON_EXPANSION}, as parsed JSON takes up to {JSON_EXPANSION} times its text)",
                    rest.max_body_bytes
                ))
            })?;
        answer(&rest, call, &body).await
    };
    let outcome = match rest.timeout {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("Deadline Exceeded"))),
        None => work.await,
    };
    match outcome {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(status) => json_response(
            http_code(status.code()),
            &json!({ "error": status.message() }),
        ),
    }
}

#[derive(Debug, PartialEq)]
enum Verb {
    Status,
    Metadata,
    Predict,
    Classify,
    Regress,
}

#[derive(Debug, PartialEq)]
struct Call {
    model: String,
    version: Option<String>,
    label: Option<String>,
    verb: Verb,
}

/// `name[/versions/N|/labels/L]`, as TensorFlow Serving's path patterns take them: `N` digits,
/// no segment with `/` or `:`.
fn model_segments(segments: &[&str]) -> Option<(String, Option<String>, Option<String>)> {
    let ok = |s: &str| !s.is_empty() && !s.contains(':');
    match segments {
        [name] if ok(name) => Some((name.to_string(), None, None)),
        [name, kind, n] if ok(name) && kind.eq_ignore_ascii_case("versions") && is_digits(n) => {
            Some((name.to_string(), Some(n.to_string()), None))
        }
        [name, kind, label] if ok(name) && kind.eq_ignore_ascii_case("labels") && ok(label) => {
            Some((name.to_string(), None, Some(label.to_string())))
        }
        _ => None,
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The call a path names (TensorFlow Serving's `kPredictionApiGegex` and `kModelStatusApiRegex`,
/// case-insensitive); `None` when it names none. A GET without a model name is kept, to be
/// refused by name.
fn parse_path(method: &Method, path: &str) -> Option<Call> {
    let prefix = "/v1/models";
    if path.len() < prefix.len() || !path[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = &path[prefix.len()..];
    if *method == Method::POST {
        let (head, verb) = rest.strip_prefix('/')?.rsplit_once(':')?;
        let verb = match verb.to_ascii_lowercase().as_str() {
            "predict" => Verb::Predict,
            "classify" => Verb::Classify,
            "regress" => Verb::Regress,
            _ => return None,
        };
        let segments: Vec<&str> = head.split('/').collect();
        let (model, version, label) = model_segments(&segments)?;
        return Some(Call {
            model,
            version,
            label,
            verb,
        });
    }
    if *method != Method::GET {
        return None;
    }
    if rest.is_empty() {
        return Some(Call {
            model: String::new(),
            version: None,
            label: None,
            verb: Verb::Status,
        });
    }
    let mut segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    let mut verb = Verb::Status;
    if segments.len() > 1 && segments.last()?.eq_ignore_ascii_case("metadata") {
        segments.pop();
        verb = Verb::Metadata;
    }
    let (model, version, label) = model_segments(&segments)?;
    Some(Call {
        model,
        version,
        label,
        verb,
    })
}

fn model_spec(call: &Call, signature_name: String) -> Result<ModelSpec, Status> {
    let version_choice = match (&call.version, &call.label) {
        (Some(n), _) => Some(VersionChoice::Version(n.parse().map_err(|_| {
            invalid(format!("Failed to convert version: {n} to numeric."))
        })?)),
        (None, Some(label)) => Some(VersionChoice::VersionLabel(label.clone())),
        (None, None) => None,
    };
    Ok(ModelSpec {
        name: call.model.clone(),
        version_choice,
        signature_name,
    })
}

/// The gRPC request of a REST call that [`handle`] has already let through.
fn grpc_request<T>(message: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Decided);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

async fn answer(rest: &Rest, call: Call, body: &[u8]) -> Result<Value, Status> {
    let serving = &rest.serving;
    match call.verb {
        Verb::Status | Verb::Metadata if call.model.is_empty() => {
            Err(invalid("Missing model name in request."))
        }
        Verb::Status => {
            let request = pb::GetModelStatusRequest {
                model_spec: Some(model_spec(&call, String::new())?),
            };
            let response = serving
                .get_model_status(grpc_request(request, rest.timeout))
                .await?
                .into_inner();
            Ok(status_json(&response))
        }
        Verb::Metadata => {
            let request = pb::GetModelMetadataRequest {
                model_spec: Some(model_spec(&call, String::new())?),
                metadata_field: vec!["signature_def".to_string()],
            };
            let response = serving
                .get_model_metadata(grpc_request(request, rest.timeout))
                .await?
                .into_inner();
            metadata_json(&response)
        }
        Verb::Predict => predict(rest, &call, body).await,
        Verb::Classify | Verb::Regress => examples_call(rest, &call, body).await,
    }
}

/// The body as a JSON object, with its `signature_name`.
fn parse_body(body: &[u8]) -> Result<(Map<String, Value>, String), Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("JSON Parse error: The document is empty"));
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("JSON Parse error: {e}")))?;
    let Value::Object(doc) = doc else {
        return Err(invalid(format!("JSON Value: {doc} Is not object")));
    };
    let signature = match doc.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "JSON Value: {other} not formatted correctly. 'signature_name' key must be a string value."
            )))
        }
    };
    Ok((doc, signature))
}

fn is_b64(value: &Value) -> bool {
    matches!(value, Value::Object(m) if m.len() == 1 && m.contains_key("b64"))
}

/// Whether a `{"b64": ...}` in `value` is not base64, which TensorFlow Serving refuses as such.
fn has_bad_b64(value: &Value) -> bool {
    use base64::Engine;
    match value {
        Value::Array(items) => items.iter().any(has_bad_b64),
        Value::Object(m) if is_b64(value) => m["b64"].as_str().is_none_or(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_err()
        }),
        _ => false,
    }
}

/// The inputs of a predict body, per input name, as the JSON each tensor is read from.
fn request_inputs(
    doc: &Map<String, Value>,
    signature: &Signature,
) -> Result<Vec<(String, Value)>, Status> {
    let names: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
    let both = || {
        invalid(format!(
            "JSON Value: {} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
            Value::Object(doc.clone())
        ))
    };
    match (doc.get("instances"), doc.get("inputs")) {
        (Some(_), Some(_)) => Err(both()),
        (Some(instances), None) => {
            let Value::Array(rows) = instances else {
                return Err(invalid(format!(
                    "JSON Value: {} Expecting 'instances' to be an list/array",
                    Value::Object(doc.clone())
                )));
            };
            if rows.is_empty() {
                return Err(invalid(format!(
                    "JSON Value: {} No values in 'instances' array",
                    Value::Object(doc.clone())
                )));
            }
            let named = rows.iter().all(|r| r.is_object() && !is_b64(r));
            if !named {
                let [name] = names.as_slice() else {
                    return Err(invalid("instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map"));
                };
                return Ok(vec![(name.to_string(), instances.clone())]);
            }
            // Row format with named inputs: one column per input, stacked along a new first axis.
            let keys: Vec<String> = match rows.first() {
                Some(Value::Object(first)) => first.keys().cloned().collect(),
                _ => Vec::new(),
            };
            keys.into_iter()
                .map(|key| {
                    let column = rows
                        .iter()
                        .enumerate()
                        .map(|(i, row)| {
                            row.get(&key).cloned().ok_or_else(|| {
                                invalid(format!(
                                    "Failed to process element: {i} of 'instances' list. JSON object: {row} keys count mismatch"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((key, Value::Array(column)))
                })
                .collect()
        }
        (None, Some(inputs)) => match inputs {
            Value::Object(map) if !is_b64(inputs) => {
                Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            _ => match names.as_slice() {
                [name] => Ok(vec![(name.to_string(), inputs.clone())]),
                _ => Err(invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map")),
            },
        },
        (None, None) => Err(invalid("Missing 'inputs' or 'instances' key")),
    }
}

async fn predict(rest: &Rest, call: &Call, body: &[u8]) -> Result<Value, Status> {
    let (doc, signature_name) = parse_body(body)?;
    let row_format = doc.contains_key("instances");
    let spec = model_spec(call, signature_name)?;
    let signature = rest.serving.signature_of(&spec)?;
    let mut inputs = std::collections::HashMap::new();
    for (name, value) in request_inputs(&doc, &signature)? {
        // An unknown name is passed on for the gRPC path to refuse, naming the signature's inputs.
        let dtype = signature
            .inputs
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| tfsandbox::tensor::DType::from_wire(i.dtype))
            .unwrap_or(tfsandbox::tensor::DType::Float32);
        if has_bad_b64(&value) {
            return Err(invalid("Unable to base64 decode"));
        }
        let tensor = tensor::from_json(&value, dtype)
            .map_err(|e| invalid(format!("input '{name}': {e}")))?;
        inputs.insert(name, convert::to_proto(tensor));
    }
    // The JSON document goes before the tensors are counted and run.
    drop(doc);
    let request = pb::PredictRequest {
        model_spec: Some(spec),
        inputs,
        output_filter: Vec::new(),
    };
    let response = rest
        .serving
        .predict(grpc_request(request, rest.timeout))
        .await?
        .into_inner();
    let limit = rest.serving.limits().max_tensor_bytes;
    let mut outputs: Vec<(String, Value)> = response
        .outputs
        .into_iter()
        .map(|(name, proto)| {
            let tensor = convert::from_proto(&name, proto, limit)
                .map_err(|e| Status::internal(e.to_string()))?;
            let mut json = tensor::to_json(&tensor);
            // TensorFlow Serving writes every string of an output named `*_bytes` in base64.
            if name.ends_with("_bytes") && tensor.dtype() == tfsandbox::tensor::DType::String {
                all_b64(&mut json);
            }
            Ok((name, json))
        })
        .collect::<Result<_, Status>>()?;
    outputs.sort_by(|a, b| a.0.cmp(&b.0));
    if !row_format {
        return Ok(match <[(String, Value); 1]>::try_from(outputs) {
            Ok([(_, value)]) => json!({ "outputs": value }),
            Err(outputs) => json!({ "outputs": Map::from_iter(outputs) }),
        });
    }
    if let [(_, value)] = outputs.as_slice() {
        return Ok(json!({ "predictions": value }));
    }
    // Row format, several outputs: one object per row, every output split along its first axis.
    let mut rows: Option<usize> = None;
    for (name, value) in &outputs {
        let n = value.as_array().map(Vec::len).ok_or_else(|| {
            invalid(format!(
                "Tensor name: {name} has no shape information; cannot answer in the row format"
            ))
        })?;
        if *rows.get_or_insert(n) != n {
            return Err(invalid(format!(
                "Tensor name: {name} has inconsistent batch size: {n} expecting: {}",
                rows.unwrap_or_default()
            )));
        }
    }
    let predictions: Vec<Value> = (0..rows.unwrap_or(0))
        .map(|i| {
            Value::Object(
                outputs
                    .iter()
                    .map(|(name, value)| (name.clone(), value[i].clone()))
                    .collect(),
            )
        })
        .collect();
    Ok(json!({ "predictions": predictions }))
}

/// Every plain string in `value` as `{"b64": ...}` (binary ones are so already).
fn all_b64(value: &mut Value) {
    use base64::Engine;
    match value {
        Value::Array(items) => items.iter_mut().for_each(all_b64),
        Value::String(s) => {
            *value =
                json!({ "b64": base64::engine::general_purpose::STANDARD.encode(s.as_bytes()) })
        }
        _ => {}
    }
}

/// A float as TensorFlow Serving writes it: at its own precision (0.1f32 is 0.1).
fn decimal(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// A tf.Example feature from JSON (a value or a list of them), as `json_tensor.cc` reads it:
/// strings and `{"b64": ...}` are bytes, integers int64, other numbers floats.
fn feature_of(name: &str, value: &Value) -> Result<Feature, Status> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let unexpected = |v: &Value| {
        invalid(format!(
            "Feature: {name} has element with unexpected JSON type: {v}"
        ))
    };
    let kind = match items.first() {
        None => feature::Kind::FloatList(FloatList { value: Vec::new() }),
        Some(Value::String(_)) | Some(Value::Object(_)) => {
            let value = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone().into_bytes()),
                    Value::Object(m) if is_b64(v) => {
                        use base64::Engine;
                        let text = m["b64"].as_str().ok_or_else(|| unexpected(v))?;
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .map_err(|_| invalid("Unable to base64 decode"))
                    }
                    _ => Err(unexpected(v)),
                })
                .collect::<Result<Vec<Vec<u8>>, _>>()?;
            feature::Kind::BytesList(BytesList { value })
        }
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            let value = items
                .iter()
                .map(|v| v.as_i64().ok_or_else(|| unexpected(v)))
                .collect::<Result<_, _>>()?;
            feature::Kind::Int64List(Int64List { value })
        }
        Some(Value::Number(_)) => {
            let value = items
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32).ok_or_else(|| unexpected(v)))
                .collect::<Result<_, _>>()?;
            feature::Kind::FloatList(FloatList { value })
        }
        Some(other) => return Err(unexpected(other)),
    };
    Ok(Feature { kind: Some(kind) })
}

fn example_of(value: &Value) -> Result<Example, Status> {
    let Value::Object(features) = value else {
        return Err(invalid(format!(
            "JSON Value: {value} Example must be JSON object"
        )));
    };
    let feature = features
        .iter()
        .map(|(name, v)| Ok((name.clone(), feature_of(name, v)?)))
        .collect::<Result<_, Status>>()?;
    Ok(Example {
        features: Some(Features { feature }),
    })
}

async fn examples_call(rest: &Rest, call: &Call, body: &[u8]) -> Result<Value, Status> {
    let (doc, signature_name) = parse_body(body)?;
    let Some(Value::Array(examples)) = doc.get("examples") else {
        return Err(invalid(format!(
            "JSON Value: {} Expecting 'examples' to be an list/array",
            Value::Object(doc.clone())
        )));
    };
    let examples = examples
        .iter()
        .map(example_of)
        .collect::<Result<Vec<_>, _>>()?;
    let kind = match doc.get("context") {
        Some(context) => pb::input::Kind::ExampleListWithContext(pb::ExampleListWithContext {
            examples,
            context: Some(example_of(context)?),
        }),
        None => pb::input::Kind::ExampleList(pb::ExampleList { examples }),
    };
    let input = Some(pb::Input { kind: Some(kind) });
    let model_spec = Some(model_spec(call, signature_name)?);
    drop(doc);
    if call.verb == Verb::Classify {
        let request = pb::ClassificationRequest { model_spec, input };
        let response = rest
            .serving
            .classify(grpc_request(request, rest.timeout))
            .await?
            .into_inner();
        let results: Vec<Value> = response
            .result
            .map(|r| r.classifications)
            .unwrap_or_default()
            .into_iter()
            .map(|row| {
                row.classes
                    .into_iter()
                    .map(|c| json!([c.label, decimal(c.score)]))
                    .collect()
            })
            .collect();
        Ok(json!({ "results": results }))
    } else {
        let request = pb::RegressionRequest { model_spec, input };
        let response = rest
            .serving
            .regress(grpc_request(request, rest.timeout))
            .await?
            .into_inner();
        let results: Vec<Value> = response
            .result
            .map(|r| r.regressions)
            .unwrap_or_default()
            .into_iter()
            .map(|r| decimal(r.value))
            .collect();
        Ok(json!({ "results": results }))
    }
}

fn status_json(response: &pb::GetModelStatusResponse) -> Value {
    let versions: Vec<Value> = response
        .model_version_status
        .iter()
        .map(|s| {
            let state = pb::model_version_status::State::try_from(s.state)
                .map_or("UNKNOWN", |s| s.as_str_name());
            let status = s.status.clone().unwrap_or_default();
            let code = crate::proto::error::Code::try_from(status.error_code)
                .map_or("UNKNOWN", |c| c.as_str_name());
            json!({
                // Protobuf's JSON writes int64 as a string.
                "version": s.version.to_string(),
                "state": state,
                "status": { "error_code": code, "error_message": status.error_message },
            })
        })
        .collect();
    json!({ "model_version_status": versions })
}

fn tensor_info_json(info: &TensorInfo) -> Value {
    let dtype = tfsandbox_proto::dtype::tensorflow_name(info.dtype);
    let shape = info.tensor_shape.clone().unwrap_or_default();
    let dims: Vec<Value> = shape
        .dim
        .iter()
        .map(|d| json!({ "size": d.size.to_string(), "name": d.name }))
        .collect();
    let name = match &info.encoding {
        Some(crate::proto::tensor_info::Encoding::Name(name)) => name.clone(),
        _ => String::new(),
    };
    json!({
        "dtype": dtype,
        "tensor_shape": { "dim": dims, "unknown_rank": shape.unknown_rank },
        "name": name,
    })
}

fn signature_json(signature: &SignatureDef) -> Value {
    let map = |m: &std::collections::HashMap<String, TensorInfo>| -> Value {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), tensor_info_json(v)))
                .collect(),
        )
    };
    json!({
        "inputs": map(&signature.inputs),
        "outputs": map(&signature.outputs),
        "method_name": signature.method_name,
        "defaults": {},
    })
}

fn metadata_json(response: &pb::GetModelMetadataResponse) -> Result<Value, Status> {
    use prost::Message;
    let spec = response.model_spec.clone().unwrap_or_default();
    let version = match spec.version_choice {
        Some(VersionChoice::Version(v)) => v.to_string(),
        _ => String::new(),
    };
    let signatures = match response.metadata.get("signature_def") {
        Some(any) => pb::SignatureDefMap::decode(&any.value[..])
            .map_err(|e| Status::internal(e.to_string()))?,
        None => pb::SignatureDefMap::default(),
    };
    let defs: Map<String, Value> = signatures
        .signature_def
        .iter()
        .map(|(k, v)| (k.clone(), signature_json(v)))
        .collect();
    Ok(json!({
        "model_spec": { "name": spec.name, "signature_name": spec.signature_name, "version": version },
        "metadata": { "signature_def": { "signature_def": defs } },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, version: Option<&str>, label: Option<&str>, verb: Verb) -> Option<Call> {
        Some(Call {
            model: model.into(),
            version: version.map(Into::into),
            label: label.map(Into::into),
            verb,
        })
    }

    #[test]
    fn paths_as_tensorflow_serving_matches_them() {
        let post = |p| parse_path(&Method::POST, p);
        let get = |p| parse_path(&Method::GET, p);
        assert_eq!(
            post("/v1/models/m:predict"),
            call("m", None, None, Verb::Predict)
        );
        assert_eq!(
            post("/V1/Models/m/versions/3:CLASSIFY"),
            call("m", Some("3"), None, Verb::Classify)
        );
        assert_eq!(
            post("/v1/models/m/labels/stable:regress"),
            call("m", None, Some("stable"), Verb::Regress)
        );
        assert_eq!(post("/v1/models/m/versions/x:predict"), None);
        assert_eq!(post("/v1/models/m:explain"), None);
        assert_eq!(post("/v1/models/m"), None);
        assert_eq!(get("/v1/models/m"), call("m", None, None, Verb::Status));
        assert_eq!(
            get("/v1/models/m/versions/2/metadata"),
            call("m", Some("2"), None, Verb::Metadata)
        );
        assert_eq!(
            get("/v1/models/m/labels/canary"),
            call("m", None, Some("canary"), Verb::Status)
        );
        assert_eq!(get("/v1/models"), call("", None, None, Verb::Status));
        assert_eq!(get("/v1/models/m/versions"), None);
        assert_eq!(get("/other"), None);
        assert_eq!(parse_path(&Method::PUT, "/v1/models/m"), None);
    }

    #[test]
    fn bytes_outputs_in_base64() {
        let mut value = json!([["hi", {"b64": "/wA="}]]);
        all_b64(&mut value);
        assert_eq!(value, json!([[{"b64": "aGk="}, {"b64": "/wA="}]]));
    }

    #[test]
    fn floats_keep_their_own_precision() {
        assert_eq!(decimal(3.0).to_string(), "3.0");
        assert_eq!(decimal(0.1).to_string(), "0.1");
    }

    #[test]
    fn features_by_json_type() {
        let f = feature_of("x", &json!([1, 2])).unwrap();
        assert!(matches!(f.kind, Some(feature::Kind::Int64List(l)) if l.value == [1, 2]));
        let f = feature_of("x", &json!(2.5)).unwrap();
        assert!(matches!(f.kind, Some(feature::Kind::FloatList(l)) if l.value == [2.5]));
        let f = feature_of("x", &json!({"b64": "aGk="})).unwrap();
        assert!(matches!(f.kind, Some(feature::Kind::BytesList(l)) if l.value[0][..] == b"hi"[..]));
        let e = feature_of("x", &json!({"b64": "!!"})).unwrap_err();
        assert_eq!(e.message(), "Unable to base64 decode");
        assert!(feature_of("x", &json!([1, "a"])).is_err());
    }
}
