//! Errors of the host library.

use std::path::PathBuf;
use std::time::Duration;

use tfsandbox_proto::transport::TransportError;

use crate::tensor::TensorError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("worker binary not found; looked at: {}. Build it (cargo build --bins) or set Config::worker_path or TFSANDBOX_WORKER", .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    WorkerNotFound { looked: Vec<PathBuf> },
    #[error("cannot start worker {}: {source}", .path.display())]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sandbox {sandbox}: transport: {source}")]
    Transport {
        sandbox: String,
        source: TransportError,
    },
    #[error("sandbox {sandbox}: the worker exited ({status}) during {call}{}", stderr_tail(.stderr))]
    WorkerExited {
        sandbox: String,
        call: String,
        status: Box<crate::WorkerExit>,
        stderr: Vec<String>,
    },
    #[error("sandbox {sandbox}: the worker (version '{worker_version}') speaks protocol {worker}, this host speaks {host}: use the worker built with this tfsandbox")]
    ProtocolMismatch {
        sandbox: String,
        worker: u32,
        worker_version: String,
        host: u32,
    },
    /// The worker refused or failed the call; its message names the model, signature and input.
    #[error("{} ({:?})", .status.message(), .status.code())]
    Worker { call: String, status: tonic::Status },
    /// The call's deadline passed; it was cancelled. A run TensorFlow could not stop is ended
    /// by replacing the worker.
    #[error("{call}: deadline exceeded after {after:?}")]
    DeadlineExceeded { call: String, after: Duration },
    #[error("sandbox {sandbox}: {call}: {limit} calls are in flight and {queued} waiting already (Limits::max_concurrent_calls, max_queued_calls)")]
    TooManyCalls {
        sandbox: String,
        call: String,
        limit: usize,
        queued: usize,
    },
    #[error("sandbox {sandbox}: loading model '{model}': {limit} models are loaded already (Limits::max_models)")]
    TooManyModels {
        sandbox: String,
        model: String,
        limit: usize,
    },
    #[error("{call}: tensor '{name}' holds {bytes} bytes, over the limit of {limit} (Limits::max_tensor_bytes)")]
    TensorTooLarge {
        call: String,
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error("{call}: the request is {bytes} bytes, over the message limit of {limit} (Config::max_message_bytes)")]
    MessageTooLarge {
        call: String,
        bytes: usize,
        limit: usize,
    },
    /// The worker kept dying; the sandbox stopped restarting it.
    #[error("sandbox {sandbox}: {call}: the worker is not restarted any more: {reason}")]
    Failed {
        sandbox: String,
        call: String,
        reason: String,
    },
    #[error("sandbox {sandbox}: {call}: the sandbox is shut down")]
    Closed { sandbox: String, call: String },
    #[error("model directory {}: {reason}", .path.display())]
    ModelPath { path: PathBuf, reason: String },
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("sandbox {sandbox}: could not confine the worker: {message}")]
    Confinement { sandbox: String, message: String },
    /// The process runtime could not give the sandbox its own cgroup, and running without one
    /// was not allowed.
    #[error(
        "sandbox {sandbox}: no cgroup to bound its memory, CPUs and pids: {source} (allow it to \
         run without: ProcessSettings::allow_weaker with Weaker::Cgroup, --allow-weaker cgroup)"
    )]
    NoCgroup {
        sandbox: String,
        #[source]
        source: crate::runtime::cgroup::CgroupError,
    },
    /// The Docker engine refused or failed a request; its error is the source.
    #[cfg(feature = "docker")]
    #[error("{action}: {source}")]
    Engine {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The docker runtime's protocol FIFOs could not be made or opened on the host.
    #[cfg(feature = "docker")]
    #[error("the protocol FIFO {}: {action}: {source}", .path.display())]
    ProtocolFifo {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("choosing the engine runtime '{wanted}': the engine has no runtime of that name, only {known}")]
    NoEngineRuntime { wanted: String, known: String },
    #[error("choosing a uid for the sandbox: {0}")]
    NoFreeUid(String),
    #[error(transparent)]
    Closure(#[from] crate::closure::ClosureError),
    #[cfg(feature = "docker")]
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error("config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("unknown runtime '{name}': one of process, docker, gvisor")]
    UnknownRuntime { name: String },
    #[error("the {runtime} runtime is not built into this tfsandbox (cargo feature '{runtime}')")]
    RuntimeNotBuilt { runtime: crate::RuntimeKind },
    #[error("the worker answered {call} without {field}")]
    Incomplete { call: String, field: &'static str },
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[cfg(feature = "docker")]
    #[error(transparent)]
    ModelAccess(#[from] crate::runtime::model_access::AccessError),
}

impl Error {
    /// The gRPC status the worker answered with, where it did.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Worker { status, .. } => Some(status),
            _ => None,
        }
    }
}

fn stderr_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines:\n  {}", lines.join("\n  "))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What stands in the way of GPUs for a sandbox: the setting, or what the host lacks.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("'{0}' names no GPU: give an index (0, 1, ...) or a UUID (GPU-...)")]
    BadDevice(String),
    #[error("GPUs were asked for, but {0} is missing: is the NVIDIA driver loaded (nvidia-modprobe -u -c=0 creates the nodes)?")]
    MissingNode(String),
    #[error(
        "GPU {0} is not on this host (no /dev/nvidia<N> or /proc/driver/nvidia/gpus entry matches)"
    )]
    UnknownDevice(String),
    #[error("GPUs were asked for, but the host has none (no /dev/nvidia<N>)")]
    NoGpus,
    #[error("GPUs were asked for, but the host's loader cache names no {0} (ldconfig -p); is the NVIDIA driver installed?")]
    MissingDriverLibrary(String),
    #[error("GPUs were asked for, but no CUDA library folder was given (GpuSettings::library_dirs; scripts/setup-libtensorflow.sh --variant cuda)")]
    NoLibraryDirs,
    #[error("reading {what}: {message}")]
    Host { what: String, message: String },
}
