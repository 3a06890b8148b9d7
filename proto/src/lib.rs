//! The wire contract between the tfsandbox host and its workers, and the transport both speak.

pub mod transport;

/// Generated from `proto/tfsandbox/v1/worker.proto`.
pub mod v1 {
    tonic::include_proto!("tfsandbox.v1");
}

// Tensor bytes travel as they lie in memory; every supported target is little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("tfsandbox assumes a little-endian target");
