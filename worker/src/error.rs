//! The worker's errors, each mapped to the gRPC status the host sees.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("model id must not be empty")]
    EmptyModelId,
    #[error("a model with id '{0}' is already loaded")]
    ModelExists(String),
    #[error("no model with id '{0}' is loaded")]
    ModelNotFound(String),
    #[error("cannot load model from '{path}': {reason}")]
    BadModelDir { path: String, reason: String },
    #[error("cannot load model from '{path}': {source}")]
    Denied {
        path: String,
        source: Box<tfsandbox_scan::Denied>,
    },
    #[error("cannot load model from '{path}': scanning it for the op policy: {source}")]
    Scan {
        path: String,
        source: Box<tfsandbox_scan::ScanError>,
    },
    #[error("model '{model}' has no signature '{name}'; it has: {available}")]
    SignatureNotFound {
        model: String,
        name: String,
        available: String,
    },
    #[error("{context}: {message}")]
    InvalidInput { context: String, message: String },
    /// `message` is TensorFlow's own: its error class, then its text.
    #[error("{context}: {message}")]
    TensorFlow {
        context: String,
        message: String,
        status: Code,
    },
}

impl WorkerError {
    /// Wraps a TensorFlow status, keeping its message and its error class.
    pub fn tensorflow(context: impl Into<String>, status: tensorflow::Status) -> Self {
        use tensorflow::Code as Tf;
        let grpc = match status.code() {
            Tf::Cancelled => Code::Cancelled,
            Tf::InvalidArgument => Code::InvalidArgument,
            Tf::DeadlineExceeded => Code::DeadlineExceeded,
            Tf::NotFound => Code::NotFound,
            Tf::AlreadyExists => Code::AlreadyExists,
            Tf::PermissionDenied => Code::PermissionDenied,
            Tf::ResourceExhausted => Code::ResourceExhausted,
            Tf::FailedPrecondition => Code::FailedPrecondition,
            Tf::Aborted => Code::Aborted,
            Tf::OutOfRange => Code::OutOfRange,
            Tf::Unimplemented => Code::Unimplemented,
            Tf::Unavailable => Code::Unavailable,
            Tf::DataLoss => Code::DataLoss,
            Tf::Unauthenticated => Code::Unauthenticated,
            _ => Code::Internal,
        };
        WorkerError::TensorFlow {
            context: context.into(),
            message: status.to_string(),
            status: grpc,
        }
    }

    pub fn invalid(context: impl Into<String>, message: impl Into<String>) -> Self {
        WorkerError::InvalidInput {
            context: context.into(),
            message: message.into(),
        }
    }
}

impl From<WorkerError> for Status {
    fn from(error: WorkerError) -> Status {
        let code = match &error {
            WorkerError::EmptyModelId
            | WorkerError::BadModelDir { .. }
            | WorkerError::Scan { .. }
            | WorkerError::InvalidInput { .. } => Code::InvalidArgument,
            WorkerError::ModelExists(_) => Code::AlreadyExists,
            WorkerError::Denied { .. } => Code::PermissionDenied,
            WorkerError::ModelNotFound(_) | WorkerError::SignatureNotFound { .. } => Code::NotFound,
            WorkerError::TensorFlow { status, .. } => *status,
        };
        Status::new(code, error.to_string())
    }
}
