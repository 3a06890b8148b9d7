// protoc comes from the protoc-bin-vendored crate so that no system protobuf is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    prost_build::compile_protos(&["proto/tensorflow/saved_model.proto"], &["proto"])?;
    Ok(())
}
