//! The worker's conversion of a received tensor into TensorFlow's, and back: whatever the bytes,
//! it is refused with a message or it round-trips exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tfsandbox_proto::v1::Tensor as WireTensor;
use tfsandbox_worker::tensor::TfTensor;

fuzz_target!(|data: &[u8]| {
    let Ok(wire) = WireTensor::decode(data) else {
        return;
    };
    let Ok(tensor) = TfTensor::from_wire(&wire) else {
        return;
    };
    let back = tensor.into_wire();
    assert_eq!(back.dtype, wire.dtype);
    assert_eq!(back.shape, wire.shape);
    assert_eq!(back.content, wire.content);
    assert_eq!(back.string_values, wire.string_values);
});
