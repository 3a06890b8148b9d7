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
    /// Every TensorFlow session's options: a serialized `tensorflow.ConfigProto` in hex (the
    /// host's `Config::session`); unset: TensorFlow's defaults.
    pub const SESSION_CONFIG: &str = "TFSANDBOX_SESSION_CONFIG";
    /// `off`: functions marked for XLA (`jit_compile`) fail instead of compiling (the host's
    /// `SessionConfig::disable_xla_compilation`); unset: they compile.
    pub const XLA_COMPILATION: &str = "TFSANDBOX_XLA_COMPILATION";
    /// A FIFO the worker reads the protocol from instead of fd 0, and the one it writes it to
    /// instead of fd 1 (the docker runtime's, bind-mounted, past the engine's attach stream).
    /// Both or neither: unset, the protocol is on fds 0 and 1.
    pub const PROTOCOL_IN: &str = "TFSANDBOX_PROTOCOL_IN";
    pub const PROTOCOL_OUT: &str = "TFSANDBOX_PROTOCOL_OUT";
}

/// A protocol FIFO the worker could not open.
#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    #[error("{name} is set but {other} is not: the host names both protocol FIFOs or neither")]
    OnlyOne {
        name: &'static str,
        other: &'static str,
    },
    #[error("opening the protocol FIFO {}: {source}", .path.display())]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The protocol's input and output, opened from the FIFOs the host named in
/// [`worker_env::PROTOCOL_IN`] and [`worker_env::PROTOCOL_OUT`]; `None` where it named neither
/// (the protocol is then on fds 0 and 1).
///
/// The output first: the host holds its reading end before the worker starts, so that open
/// returns at once. Then the input, whose open waits until the host opens its writing end; so
/// once the host has opened it, the worker holds both ends, and the host's reader sees EOF when
/// the worker is gone. Both close-on-exec, neither read-write (the FIFOs' modes refuse that).
pub fn open_protocol_fifos() -> Result<Option<(std::fs::File, std::fs::File)>, FifoError> {
    use worker_env::{PROTOCOL_IN, PROTOCOL_OUT};
    let (input, output) = match (
        std::env::var_os(PROTOCOL_IN),
        std::env::var_os(PROTOCOL_OUT),
    ) {
        (None, None) => return Ok(None),
        (Some(input), Some(output)) => (input, output),
        (None, Some(_)) => {
            return Err(FifoError::OnlyOne {
                name: PROTOCOL_OUT,
                other: PROTOCOL_IN,
            })
        }
        (Some(_), None) => {
            return Err(FifoError::OnlyOne {
                name: PROTOCOL_IN,
                other: PROTOCOL_OUT,
            })
        }
    };
    let open = |path: std::ffi::OsString, write: bool| {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&path)
            .map_err(|source| FifoError::Open {
                path: path.into(),
                source,
            })
    };
    let output = open(output, true)?;
    let input = open(input, false)?;
    Ok(Some((input, output)))
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
