//! The wire contract between the tfsandbox host and its workers, and the transport both speak;
//! and TensorFlow Serving's public gRPC API, which `tfsandbox serve` answers.

pub mod transport;

/// Generated from `proto/tfsandbox/v1/worker.proto`.
pub mod v1 {
    tonic::include_proto!("tfsandbox.v1");
}

/// TensorFlow's own messages (package `tensorflow`) that TensorFlow Serving's API uses, written
/// here wire-compatible with TensorFlow 2.18 (same packages, names and field numbers).
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    pub mod error {
        tonic::include_proto!("tensorflow.error");
    }

    /// TensorFlow Serving's `PredictionService` and `ModelService` (package `tensorflow.serving`).
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");

        /// The encoded descriptors of the serving API, for gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("serving_descriptor");
    }
}

// Tensor bytes travel as they lie in memory; every supported target is little-endian.
#[cfg(not(target_endian = "little"))]
compile_error!("tfsandbox assumes a little-endian target");
