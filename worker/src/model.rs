//! A loaded SavedModel: its session, its signatures, and running one of them.
//!
//! Everything here blocks (TensorFlow does); callers run it off the async executor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use tensorflow::{
    Graph, Operation, SavedModelBundle, SessionOptions, SessionRunArgs, SignatureDef,
};
use tfsandbox_proto::v1::{
    DataType, ModelMetadata, Signature as WireSignature, Tensor as WireTensor, TensorSpec,
};

use tfsandbox_scan::{Capability, OpPolicy, ScanLimits};

use crate::error::WorkerError;
use crate::tensor::{tensorflow_number, wire_dtype, TfTensor};

pub const DEFAULT_TAG: &str = "serve";
pub const DEFAULT_SIGNATURE: &str = "serving_default";
const INIT_OP_SIGNATURE: &str = "__saved_model_init_op";

/// One signature key resolved to the graph operation and output index it names.
struct Endpoint {
    spec: TensorSpec,
    dtype: tensorflow::DataType,
    operation: Operation,
    index: i32,
}

struct Signature {
    method_name: String,
    inputs: BTreeMap<String, Endpoint>,
    outputs: BTreeMap<String, Endpoint>,
}

pub struct Model {
    id: String,
    path: String,
    tags: Vec<String>,
    bundle: SavedModelBundle,
    signatures: BTreeMap<String, Signature>,
}

impl Model {
    /// What the model at `path` can do, failing if `policy` denies an op it uses. Called before
    /// `load`, so a refused model never reaches TensorFlow and never gets a session. `None`: the
    /// scan could not read the model, which fails the load only where a policy needs the scan.
    pub fn scan(
        path: &str,
        tags: &[String],
        policy: &OpPolicy,
    ) -> Result<Option<BTreeSet<Capability>>, WorkerError> {
        let report = match tfsandbox_scan::scan_dir(Path::new(path), tags, &ScanLimits::default()) {
            Ok(report) => report,
            Err(error) if policy.is_empty() => {
                tracing::info!(%path, "not scanned: {error}");
                return Ok(None);
            }
            Err(source) => {
                return Err(WorkerError::Scan {
                    path: path.to_string(),
                    source: Box::new(source),
                })
            }
        };
        policy
            .check(&report)
            .map_err(|source| WorkerError::Denied {
                path: path.to_string(),
                source: Box::new(source),
            })?;
        Ok(Some(report.capabilities()))
    }

    pub fn load(id: &str, path: &str, tags: &[String]) -> Result<Model, WorkerError> {
        let bad_dir = |reason: String| WorkerError::BadModelDir {
            path: path.to_string(),
            reason,
        };
        let dir = Path::new(path);
        if !dir.is_dir() {
            return Err(bad_dir("no such directory".into()));
        }
        if !dir.join("saved_model.pb").is_file() && !dir.join("saved_model.pbtxt").is_file() {
            // A folder the sandbox's uid may not read looks empty: say so.
            if let Err(error) = std::fs::read_dir(dir) {
                if error.kind() == std::io::ErrorKind::PermissionDenied {
                    return Err(bad_dir(format!(
                        "the sandbox's uid may not read it ({error}): make the model's folders \
                         and files readable by others"
                    )));
                }
            }
            return Err(bad_dir(
                "it holds no saved_model.pb or saved_model.pbtxt".into(),
            ));
        }
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&session_options()?, tags, &mut graph, dir).map_err(
            |status| WorkerError::tensorflow(format!("loading model from '{path}'"), status),
        )?;
        let mut signatures = BTreeMap::new();
        for (name, def) in bundle.meta_graph_def().signatures() {
            // TF2 exports list their init op as a signature; it is not callable.
            if name == INIT_OP_SIGNATURE {
                continue;
            }
            let signature = Signature::resolve(def, &graph)
                .map_err(|reason| bad_dir(format!("signature '{name}': {reason}")))?;
            signatures.insert(name.clone(), signature);
        }
        Ok(Model {
            id: id.to_string(),
            path: path.to_string(),
            tags: tags.to_vec(),
            bundle,
            signatures,
        })
    }

    pub fn metadata(&self) -> ModelMetadata {
        ModelMetadata {
            model_id: self.id.clone(),
            path: self.path.clone(),
            tags: self.tags.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|(name, s)| WireSignature {
                    name: name.clone(),
                    method_name: s.method_name.clone(),
                    inputs: s.inputs.values().map(|e| e.spec.clone()).collect(),
                    outputs: s.outputs.values().map(|e| e.spec.clone()).collect(),
                })
                .collect(),
        }
    }

    /// Runs one signature. Every input is checked against the signature before TensorFlow runs;
    /// TensorFlow is told to give up at `deadline`.
    pub fn predict(
        &self,
        signature_name: &str,
        inputs: &HashMap<String, WireTensor>,
        output_filter: &[String],
        deadline: Option<Duration>,
    ) -> Result<HashMap<String, WireTensor>, WorkerError> {
        let signature_name = if signature_name.is_empty() {
            DEFAULT_SIGNATURE
        } else {
            signature_name
        };
        let signature =
            self.signatures
                .get(signature_name)
                .ok_or_else(|| WorkerError::SignatureNotFound {
                    model: self.id.clone(),
                    name: signature_name.to_string(),
                    available: names(self.signatures.keys()),
                })?;
        let context = format!("model '{}', signature '{signature_name}'", self.id);
        let invalid = |message: String| WorkerError::invalid(&context, message);

        if let Some(extra) = inputs.keys().find(|k| !signature.inputs.contains_key(*k)) {
            return Err(invalid(format!(
                "unknown input '{extra}'; the inputs are: {}",
                names(signature.inputs.keys())
            )));
        }
        let mut feeds = Vec::with_capacity(signature.inputs.len());
        for (key, endpoint) in &signature.inputs {
            let wire = inputs.get(key).ok_or_else(|| {
                invalid(format!(
                    "missing input '{key}'; the inputs are: {}",
                    names(signature.inputs.keys())
                ))
            })?;
            check_dtype(wire, &endpoint.spec)
                .map_err(|m| invalid(format!("input '{key}': {m}")))?;
            let tensor =
                TfTensor::from_wire(wire).map_err(|m| invalid(format!("input '{key}': {m}")))?;
            feeds.push((endpoint, tensor));
        }

        let wanted: Vec<(&String, &Endpoint)> = if output_filter.is_empty() {
            signature.outputs.iter().collect()
        } else {
            output_filter
                .iter()
                .map(|key| {
                    signature.outputs.get_key_value(key).ok_or_else(|| {
                        invalid(format!(
                            "unknown output '{key}' in the output filter; the outputs are: {}",
                            names(signature.outputs.keys())
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        };

        let mut args = SessionRunArgs::new();
        if let Some(deadline) = deadline {
            args.set_run_options(&run_options_with_timeout(deadline));
        }
        for (endpoint, tensor) in &feeds {
            tensor.feed(&mut args, &endpoint.operation, endpoint.index);
        }
        let tokens: Vec<_> = wanted
            .iter()
            .map(|(_, e)| args.request_fetch(&e.operation, e.index))
            .collect();
        self.bundle
            .session
            .run(&mut args)
            .map_err(|status| WorkerError::tensorflow(&context, status))?;

        let mut outputs = HashMap::with_capacity(wanted.len());
        for (position, ((key, endpoint), token)) in wanted.into_iter().zip(tokens).enumerate() {
            // Fetch by the type the tensor really has; the signature may not say.
            let dtype = args.output_data_type(position).unwrap_or(endpoint.dtype);
            let tensor = TfTensor::fetch(&mut args, token, dtype)
                .map_err(|m| WorkerError::invalid(&context, format!("output '{key}' {m}")))?;
            outputs.insert(key.clone(), tensor.into_wire());
        }
        Ok(outputs)
    }
}

impl Signature {
    fn resolve(def: &SignatureDef, graph: &Graph) -> Result<Signature, String> {
        let resolve_all = |infos: &HashMap<String, tensorflow::TensorInfo>| {
            infos
                .iter()
                .map(|(key, info)| {
                    let operation = graph
                        .operation_by_name_required(&info.name().name)
                        .map_err(|e| format!("'{key}' names no operation in the graph: {e}"))?;
                    let shape = info.shape();
                    let dims: Option<Vec<i64>> = shape
                        .dims()
                        .map(|rank| (0..rank).map(|i| shape[i].unwrap_or(-1)).collect());
                    let spec = TensorSpec {
                        name: key.clone(),
                        dtype: wire_dtype(info.dtype()).unwrap_or(DataType::Unspecified) as i32,
                        unknown_rank: dims.is_none(),
                        shape: dims.unwrap_or_default(),
                        tensorflow_dtype: tensorflow_number(info.dtype()),
                        tensor_name: format!("{}:{}", info.name().name, info.name().index),
                    };
                    let endpoint = Endpoint {
                        spec,
                        dtype: info.dtype(),
                        operation,
                        index: info.name().index,
                    };
                    Ok((key.clone(), endpoint))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()
        };
        Ok(Signature {
            method_name: def.method_name().to_string(),
            inputs: resolve_all(def.inputs())?,
            outputs: resolve_all(def.outputs())?,
        })
    }
}

/// The dtype of a wire tensor against what the signature declares. The shape is left to
/// TensorFlow, as TF Serving leaves it: a signature's shape is a hint (TF1 models often omit it, or
/// declare `[-1, 1]` where `[1]` runs), and the run itself refuses what its ops cannot take. Sizes
/// stay bounded: the host counts every request in real bytes before it is sent, and
/// `TfTensor::from_wire` refuses a shape its bytes do not fill.
fn check_dtype(wire: &WireTensor, spec: &TensorSpec) -> Result<(), String> {
    let expected = DataType::try_from(spec.dtype).unwrap_or(DataType::Unspecified);
    if expected == DataType::Unspecified {
        return Err(format!(
            "the model expects {}, which tfsandbox does not carry",
            tfsandbox_proto::dtype::tensorflow_name(spec.tensorflow_dtype)
        ));
    }
    if wire.dtype != spec.dtype {
        let got = DataType::try_from(wire.dtype)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| format!("unknown dtype {}", wire.dtype));
        return Err(format!(
            "dtype is {got}, expected {}",
            expected.as_str_name()
        ));
    }
    Ok(())
}

/// The options of every session this worker makes. TensorFlow sizes its thread pools, which
/// every session of the process shares, from the first session's options, so all of them carry
/// the host's `TFSANDBOX_SESSION_CONFIG`.
pub fn session_options() -> Result<SessionOptions, WorkerError> {
    static CONFIG: std::sync::OnceLock<Result<Vec<u8>, String>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        if std::env::var(tfsandbox_proto::worker_env::XLA_COMPILATION).as_deref() == Ok("off") {
            disable_xla_compilation();
        }
        let name = tfsandbox_proto::worker_env::SESSION_CONFIG;
        match std::env::var(name) {
            Ok(text) => hex::decode(text).map_err(|e| format!("{name} is not hex: {e}")),
            Err(_) => Ok(Vec::new()),
        }
    });
    let config = config
        .as_ref()
        .map_err(|message| WorkerError::InvalidInput {
            context: "the session's options".into(),
            message: message.clone(),
        })?;
    let mut options = SessionOptions::new();
    options.set_config(config).map_err(|status| {
        WorkerError::tensorflow("the session's options (its ConfigProto)", status)
    })?;
    Ok(options)
}

/// TensorFlow's `tensorflow::DisableXlaCompilation()`, which TensorFlow Serving calls unless
/// one of its XLA flags is given; after it, an XLA launch fails with "XLA compilation disabled".
/// The C API has no such call, so the C++ function is called by its mangled name: it takes and
/// returns nothing and only sets a flag, which the C calling convention carries the same.
fn disable_xla_compilation() {
    extern "C" {
        #[link_name = "_ZN10tensorflow21DisableXlaCompilationEv"]
        fn DisableXlaCompilation();
    }
    // SAFETY: a function of libtensorflow (linked) that takes no arguments and returns nothing.
    unsafe { DisableXlaCompilation() }
}

/// A serialized `tensorflow.RunOptions` holding only `timeout_in_ms` (field 2, varint).
fn run_options_with_timeout(deadline: Duration) -> Vec<u8> {
    // Zero means "no timeout" to TensorFlow; a deadline already past still gets the shortest one.
    let millis = deadline.as_millis().clamp(1, i64::MAX as u128) as u64;
    let mut encoded = vec![0x10];
    prost::encoding::encode_varint(millis, &mut encoded);
    encoded
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = keys.map(String::as_str).collect();
    if list.is_empty() {
        "(none)".to_string()
    } else {
        list.join(", ")
    }
}
