// protoc comes from the protoc-bin-vendored crate so that no system protobuf is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Tensor payloads stay `Bytes` so they are sliced out of the frame, not copied.
        .bytes(".tfsandbox.v1.Tensor")
        .compile_protos(&["proto/tfsandbox/v1/worker.proto"], &["proto"])?;
    Ok(())
}
