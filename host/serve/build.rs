// TensorFlow Serving's public API as `tfsandbox serve` speaks it (our own wire-compatible copies in
// proto/). protoc comes from the protoc-bin-vendored crate so that no system protobuf is needed.
use std::path::PathBuf;

const SERVING_PROTOS: &[&str] = &[
    "proto/tensorflow_serving/apis/prediction_service.proto",
    "proto/tensorflow_serving/apis/model_service.proto",
    "proto/tensorflow_serving/apis/prediction_log.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    // The descriptor set is what gRPC reflection serves.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .bytes(".tensorflow.TensorProto")
        .file_descriptor_set_path(out.join("serving_descriptor.bin"))
        .compile_protos(SERVING_PROTOS, &["proto"])?;
    Ok(())
}
