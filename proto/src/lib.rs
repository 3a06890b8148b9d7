//! The wire contract between the tfsandbox host and its workers, and the transport both speak.
//! (TensorFlow Serving's API, which only `tfsandbox serve` speaks, lives in `tfsandbox-serve`.)

pub mod dtype;
pub mod transport;

/// The version of the host↔worker contract (`proto/tfsandbox/v1/worker.proto`). Raise it with any
/// change an older peer would misread; the worker reports it in `InfoResponse.protocol_version`
/// and the host checks it at the start.
pub const PROTOCOL_VERSION: u32 = 2;

/// The environment the host gives the worker, the same on every runtime.
pub mod worker_env {
    /// Its log filter (tracing's `EnvFilter` syntax).
    pub const LOG: &str = "TFSANDBOX_LOG";
    /// The largest gRPC message it decodes or encodes, in bytes (the host's
    /// `Config::max_message_bytes`).
    pub const MAX_MESSAGE_BYTES: &str = "TFSANDBOX_MAX_MESSAGE_BYTES";
    /// What bounds the sandbox as a whole (its cgroup's memory, CPUs and pids), as the host set
    /// it up; the worker reports it in its posture.
    pub const CGROUP: &str = "TFSANDBOX_CGROUP";
    /// Every TensorFlow session's thread pools, `INTRA,INTER` (the host's
    /// `Config::session_threads`); unset: TensorFlow's default, one thread per core.
    pub const SESSION_THREADS: &str = "TFSANDBOX_SESSION_THREADS";
}

/// Generated from `proto/tfsandbox/v1/worker.proto`.
pub mod v1 {
    tonic::include_proto!("tfsandbox.v1");

    impl ModelMetadata {
        /// The signature named `name`, if the model has one.
        pub fn signature(&self, name: &str) -> Option<&Signature> {
            self.signatures.iter().find(|s| s.name == name)
        }

        /// The signatures' names, for messages that list them.
        pub fn signature_names(&self) -> Vec<&str> {
            self.signatures.iter().map(|s| s.name.as_str()).collect()
        }
    }
}

// Tensor bytes travel as they lie in memory; every supported target is little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("tfsandbox assumes a little-endian target");
