//! TensorFlow Serving's public API (package `tensorflow.serving`) and the TensorFlow messages it
//! uses (package `tensorflow`), generated from our own wire-compatible copies in `proto/` (same
//! packages, names and field numbers as TensorFlow 2.18).

tonic::include_proto!("tensorflow");

pub mod error {
    tonic::include_proto!("tensorflow.error");
}

/// `PredictionService` and `ModelService`.
pub mod serving {
    tonic::include_proto!("tensorflow.serving");

    /// The encoded descriptors of the serving API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("serving_descriptor");
}
