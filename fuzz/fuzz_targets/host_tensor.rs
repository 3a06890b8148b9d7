//! The host's decoding of a worker's answer: a PredictResponse from any bytes, each output
//! turned into a `Tensor` and read back. Nothing may panic or allocate what the bytes merely claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfsandbox::{tensor, DType, Tensor};
use tfsandbox_proto::v1::PredictResponse;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = PredictResponse::decode(data) else {
        return;
    };
    for (_, wire) in response.outputs {
        let Ok(tensor) = Tensor::from_wire(wire) else {
            continue;
        };
        let _ = tensor::to_json(&tensor);
        match tensor.dtype() {
            DType::Float32 => assert_eq!(tensor.to_vec::<f32>().unwrap().len(), tensor.len()),
            DType::Int64 => assert_eq!(tensor.to_vec::<i64>().unwrap().len(), tensor.len()),
            DType::String => assert_eq!(tensor.string_values().unwrap().len(), tensor.len()),
            _ => {}
        }
    }
});
