//! TensorFlow's `TensorProto` ⇄ tfsandbox's [`Tensor`].
//!
//! Requests may carry elements either in `tensor_content` (raw little-endian bytes) or in the
//! typed `*_val` lists, as TensorFlow Serving accepts both; answers use the typed lists
//! (`float_val`, `int_val`, ...), as TensorFlow Serving answers by default (`predict_util.cc`,
//! `kAsProtoField`), so clients that read `float_val` get the values.

use crate::proto::{tensor_shape_proto, TensorProto, TensorShapeProto};
use bytes::Bytes;
use tfsandbox_proto::dtype::tensorflow_name;
use tfsandbox_proto::v1::Tensor as WireTensor;

use tfsandbox::tensor::{DType, Tensor, STRING_OVERHEAD_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("input '{name}': dtype {dtype} is not supported by tfsandbox (supported: DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_UINT8, DT_BOOL, DT_STRING)")]
    UnsupportedType { name: String, dtype: String },
    #[error("input '{name}': {message}")]
    Malformed { name: String, message: String },
    /// A few typed values may stand for a huge shape (the last one repeats); the shape is checked
    /// against the limit before anything is allocated.
    #[error("input '{name}': {dtype} of shape {shape:?} would take {bytes} bytes in memory, over the limit of {limit} per tensor (Limits::max_tensor_bytes)")]
    TooLarge {
        name: String,
        dtype: String,
        shape: Vec<i64>,
        bytes: u128,
        limit: usize,
    },
    /// The inputs of one request together, counted before any of them is built.
    #[error("the request's inputs would take {bytes} bytes in memory ({inputs}), over the limit of {limit} per request (--max_request_bytes)")]
    RequestTooLarge {
        bytes: u128,
        /// Each input with its dtype, shape and bytes.
        inputs: String,
        limit: usize,
    },
}

/// A request tensor's dtype, shape and element count, and the bytes it will hold once built
/// (as [`Tensor::byte_len`] counts them), all read without allocating anything.
struct Size {
    dtype: DType,
    shape: Vec<i64>,
    count: usize,
    bytes: u128,
}

fn size_of_proto(name: &str, proto: &TensorProto) -> Result<Size, ConvertError> {
    let malformed = |message: String| ConvertError::Malformed {
        name: name.to_string(),
        message,
    };
    let dtype =
        DType::from_tensorflow(proto.dtype).ok_or_else(|| ConvertError::UnsupportedType {
            name: name.to_string(),
            dtype: tensorflow_name(proto.dtype),
        })?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    if shape_proto.unknown_rank {
        return Err(malformed("tensor_shape has unknown rank".into()));
    }
    let shape: Vec<i64> = shape_proto.dim.iter().map(|d| d.size).collect();
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| malformed(format!("shape {shape:?} is not a valid tensor shape")))?;
    let bytes = match dtype.size() {
        Some(size) => count as u128 * size as u128,
        // Every element is a handle plus its bytes; elements past the values given repeat the
        // last one, and each repeat is written out again on the way to the worker.
        None => {
            let given = &proto.string_val[..proto.string_val.len().min(count)];
            let repeated =
                (count - given.len()) as u128 * given.last().map_or(0, |s| s.len()) as u128;
            count as u128 * STRING_OVERHEAD_BYTES as u128
                + given.iter().map(|s| s.len() as u128).sum::<u128>()
                + repeated
        }
    };
    Ok(Size {
        dtype,
        shape,
        count,
        bytes,
    })
}

/// Refuses a request whose inputs together would hold more than `limit` bytes once built, or
/// any one of them more than `max_tensor_bytes`; nothing is allocated to find out.
pub fn check_request<'a>(
    inputs: impl IntoIterator<Item = (&'a str, &'a TensorProto)>,
    limit: usize,
    max_tensor_bytes: usize,
) -> Result<(), ConvertError> {
    let mut total = 0u128;
    let mut listed = Vec::new();
    for (name, proto) in inputs {
        let size = size_of_proto(name, proto)?;
        if size.bytes > max_tensor_bytes as u128 {
            return Err(ConvertError::TooLarge {
                name: name.to_string(),
                dtype: tensorflow_name(proto.dtype),
                shape: size.shape,
                bytes: size.bytes,
                limit: max_tensor_bytes,
            });
        }
        total += size.bytes;
        listed.push(format!(
            "'{name}': {} {:?}, {} bytes",
            tensorflow_name(proto.dtype),
            size.shape,
            size.bytes
        ));
    }
    if total > limit as u128 {
        return Err(ConvertError::RequestTooLarge {
            bytes: total,
            inputs: listed.join("; "),
            limit,
        });
    }
    Ok(())
}

/// A request's tensor, checked: a supported dtype, a known shape of at most `max_bytes` (real
/// bytes, see [`Tensor::byte_len`]), and elements that fit it.
pub fn from_proto(
    name: &str,
    proto: TensorProto,
    max_bytes: usize,
) -> Result<Tensor, ConvertError> {
    let malformed = |message: String| ConvertError::Malformed {
        name: name.to_string(),
        message,
    };
    let Size {
        dtype,
        shape,
        count,
        bytes,
    } = size_of_proto(name, &proto)?;
    if bytes > max_bytes as u128 {
        return Err(ConvertError::TooLarge {
            name: name.to_string(),
            dtype: tensorflow_name(proto.dtype),
            shape,
            bytes,
            limit: max_bytes,
        });
    }

    let wire = |content: Vec<u8>, strings: Vec<Bytes>| WireTensor {
        dtype: dtype.to_wire() as i32,
        shape: shape.clone(),
        content: content.into(),
        string_values: strings,
    };
    let wire = if !proto.tensor_content.is_empty() {
        let Some(size) = dtype.size() else {
            return Err(malformed(
                "DT_STRING elements must be sent in string_val, not tensor_content".into(),
            ));
        };
        if Some(proto.tensor_content.len()) != count.checked_mul(size) {
            return Err(malformed(format!(
                "tensor_content holds {} bytes, but shape {shape:?} of {} needs {}",
                proto.tensor_content.len(),
                tensorflow_name(proto.dtype),
                count.saturating_mul(size)
            )));
        }
        WireTensor {
            dtype: dtype.to_wire() as i32,
            shape: shape.clone(),
            content: proto.tensor_content,
            string_values: Vec::new(),
        }
    } else {
        match dtype {
            DType::Float32 => wire(
                le_bytes(
                    filled(&proto.float_val, count).map_err(malformed)?,
                    f32::to_le_bytes,
                ),
                Vec::new(),
            ),
            DType::Float64 => wire(
                le_bytes(
                    filled(&proto.double_val, count).map_err(malformed)?,
                    f64::to_le_bytes,
                ),
                Vec::new(),
            ),
            DType::Int32 => wire(
                le_bytes(
                    filled(&proto.int_val, count).map_err(malformed)?,
                    i32::to_le_bytes,
                ),
                Vec::new(),
            ),
            DType::Int64 => wire(
                le_bytes(
                    filled(&proto.int64_val, count).map_err(malformed)?,
                    i64::to_le_bytes,
                ),
                Vec::new(),
            ),
            DType::Uint8 => {
                if let Some(v) = proto.int_val.iter().find(|v| !(0..=255).contains(*v)) {
                    return Err(malformed(format!("int_val {v} does not fit DT_UINT8")));
                }
                let values = filled(&proto.int_val, count).map_err(malformed)?;
                wire(values.iter().map(|&v| v as u8).collect(), Vec::new())
            }
            DType::Bool => {
                let values = filled(&proto.bool_val, count).map_err(malformed)?;
                wire(values.iter().map(|&v| u8::from(v)).collect(), Vec::new())
            }
            DType::String => wire(
                Vec::new(),
                filled(&proto.string_val, count).map_err(malformed)?,
            ),
        }
    };
    Tensor::from_wire(wire).map_err(|e| malformed(e.to_string()))
}

/// TensorFlow's rule for typed lists: as many values as elements, or fewer, the last one then
/// repeating (one value fills the tensor); none at all means zeros.
fn filled<T: Clone + Default>(values: &[T], count: usize) -> Result<Vec<T>, String> {
    if values.len() > count {
        return Err(format!(
            "{} values given for a shape of {count} elements",
            values.len()
        ));
    }
    let mut out = values.to_vec();
    out.resize(count, values.last().cloned().unwrap_or_default());
    Ok(out)
}

fn le_bytes<T: Copy, const N: usize>(values: Vec<T>, to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.into_iter().flat_map(to_le).collect()
}

/// An answer's tensor in the typed lists, as TensorFlow's `Tensor::AsProtoField` writes it:
/// uint8 in `int_val`, every element listed. The answer was bounded in bytes before (its tensors
/// together within `--max_request_bytes`); a list takes at most 4 times that in memory (uint8 as
/// i32), and its encoding stays under tonic's encoding limit or fails the call cleanly.
pub fn to_proto(tensor: Tensor) -> TensorProto {
    let dtype = tensor.dtype();
    let wire = tensor.into_wire();
    let mut proto = TensorProto {
        dtype: dtype.tensorflow(),
        tensor_shape: Some(shape_proto(&wire.shape, false)),
        ..TensorProto::default()
    };
    let content = &wire.content[..];
    match dtype {
        DType::Float32 => proto.float_val = from_le(content, f32::from_le_bytes),
        DType::Float64 => proto.double_val = from_le(content, f64::from_le_bytes),
        DType::Int32 => proto.int_val = from_le(content, i32::from_le_bytes),
        DType::Int64 => proto.int64_val = from_le(content, i64::from_le_bytes),
        DType::Uint8 => proto.int_val = content.iter().map(|&v| i32::from(v)).collect(),
        DType::Bool => proto.bool_val = content.iter().map(|&v| v != 0).collect(),
        DType::String => proto.string_val = wire.string_values,
    }
    proto
}

/// An answer's tensor in `tensor_content` (raw little-endian bytes), as TensorFlow's
/// `Tensor::AsProtoTensorContent` writes it; strings have no raw form and stay in `string_val`.
pub fn to_proto_content(tensor: Tensor) -> TensorProto {
    if tensor.dtype() == DType::String {
        return to_proto(tensor);
    }
    let dtype = tensor.dtype();
    let wire = tensor.into_wire();
    TensorProto {
        dtype: dtype.tensorflow(),
        tensor_shape: Some(shape_proto(&wire.shape, false)),
        tensor_content: wire.content,
        ..TensorProto::default()
    }
}

fn from_le<T, const N: usize>(content: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    content
        .chunks_exact(N)
        .map(|chunk| from(chunk.try_into().expect("chunks_exact gives N bytes")))
        .collect()
}

/// A shape as TensorFlow writes it; -1 stays -1 (a size not fixed).
pub fn shape_proto(dims: &[i64], unknown_rank: bool) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DataType as TfType;

    const MAX: usize = 1 << 20;

    fn convert(name: &str, proto: TensorProto) -> Result<Tensor, ConvertError> {
        from_proto(name, proto, MAX)
    }

    fn proto(dtype: TfType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dtype: dtype as i32,
            tensor_shape: Some(shape_proto(dims, false)),
            ..TensorProto::default()
        }
    }

    #[test]
    fn typed_values_and_content_give_the_same_tensor() {
        let typed = TensorProto {
            float_val: vec![1.0, 2.0, 5.0],
            ..proto(TfType::DtFloat, &[3, 1])
        };
        let content = TensorProto {
            tensor_content: [1.0f32, 2.0, 5.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
            ..proto(TfType::DtFloat, &[3, 1])
        };
        let a = convert("x", typed).unwrap();
        let b = convert("x", content).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.shape(), vec![3, 1]);
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 5.0]);
    }

    #[test]
    fn one_value_fills_the_shape() {
        let t = convert(
            "x",
            TensorProto {
                int64_val: vec![7],
                ..proto(TfType::DtInt64, &[2, 2])
            },
        )
        .unwrap();
        assert_eq!(t.to_vec::<i64>().unwrap(), vec![7; 4]);
    }

    #[test]
    fn strings_bools_and_uint8() {
        let s = convert(
            "s",
            TensorProto {
                string_val: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
                ..proto(TfType::DtString, &[2])
            },
        )
        .unwrap();
        assert_eq!(
            s.string_values().unwrap(),
            &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")]
        );
        let b = convert(
            "b",
            TensorProto {
                bool_val: vec![true, false],
                ..proto(TfType::DtBool, &[2])
            },
        )
        .unwrap();
        assert_eq!(b.to_vec::<bool>().unwrap(), vec![true, false]);
        let u = convert(
            "u",
            TensorProto {
                int_val: vec![0, 255],
                ..proto(TfType::DtUint8, &[2])
            },
        )
        .unwrap();
        assert_eq!(u.to_vec::<u8>().unwrap(), vec![0, 255]);
        let bad = convert(
            "u",
            TensorProto {
                int_val: vec![256],
                ..proto(TfType::DtUint8, &[1])
            },
        );
        assert!(bad.unwrap_err().to_string().contains("does not fit"));
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        let half = convert(
            "h",
            TensorProto {
                half_val: vec![1],
                ..proto(TfType::DtHalf, &[1])
            },
        );
        assert!(half.unwrap_err().to_string().contains("DT_HALF"));
        let bf16 = convert("h", proto(TfType::DtBfloat16, &[1]));
        assert!(bf16.unwrap_err().to_string().contains("DT_BFLOAT16"));
        let short = convert(
            "x",
            TensorProto {
                tensor_content: vec![0u8; 3].into(),
                ..proto(TfType::DtFloat, &[1])
            },
        );
        assert!(short.unwrap_err().to_string().contains("3 bytes"));
        let many = convert(
            "x",
            TensorProto {
                float_val: vec![1.0; 3],
                ..proto(TfType::DtFloat, &[2])
            },
        );
        assert!(many.is_err());
        let negative = convert(
            "x",
            TensorProto {
                float_val: vec![1.0],
                ..proto(TfType::DtFloat, &[-1])
            },
        );
        assert!(negative.is_err());
        let unknown = convert(
            "x",
            TensorProto {
                dtype: 999,
                ..TensorProto::default()
            },
        );
        assert!(unknown.unwrap_err().to_string().contains("dtype 999"));
    }

    #[test]
    fn a_huge_shape_is_refused_before_anything_is_allocated() {
        let huge = convert(
            "x",
            TensorProto {
                float_val: vec![1.0],
                ..proto(TfType::DtFloat, &[1 << 40, 1 << 20])
            },
        );
        assert!(
            matches!(huge, Err(ConvertError::TooLarge { .. })),
            "{huge:?}"
        );
        let strings = convert(
            "s",
            TensorProto {
                string_val: vec![Bytes::from_static(b"a")],
                ..proto(TfType::DtString, &[(MAX + 1) as i64])
            },
        );
        assert!(matches!(strings, Err(ConvertError::TooLarge { .. })));
    }

    #[test]
    fn strings_cost_their_handles_and_the_request_counts_as_a_whole() {
        // No values at all: 100 million empty strings, each a handle in memory.
        let empty = proto(TfType::DtString, &[100_000_000]);
        let error = check_request([("s", &empty)], usize::MAX, usize::MAX);
        assert!(error.is_ok(), "{error:?}");
        let error = check_request([("s", &empty)], 1 << 30, usize::MAX).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("{} bytes", 100_000_000 * STRING_OVERHEAD_BYTES)),
            "{message}"
        );
        assert!(message.contains("'s': DT_STRING [100000000]"), "{message}");
        // The last value repeats, and so do its bytes.
        let filled = TensorProto {
            string_val: vec![Bytes::from(vec![b'a'; 1000])],
            ..proto(TfType::DtString, &[1000])
        };
        let error = check_request([("s", &filled)], usize::MAX, 1000 * 1000).unwrap_err();
        assert!(
            matches!(error, ConvertError::TooLarge { bytes, .. }
                if bytes == (1000 * (1000 + STRING_OVERHEAD_BYTES)) as u128),
            "{error}"
        );
        // Each input fits on its own; the two together do not.
        let half = TensorProto {
            float_val: vec![1.0],
            ..proto(TfType::DtFloat, &[1024])
        };
        check_request([("a", &half)], 4096, 4096).unwrap();
        let error = check_request([("a", &half), ("b", &half)], 4096, 4096).unwrap_err();
        assert!(
            matches!(error, ConvertError::RequestTooLarge { bytes: 8192, .. }),
            "{error}"
        );
        // An answer's tensor counts the same way.
        let answer = Tensor::strings(&[3], vec![Bytes::new(); 3]).unwrap();
        assert_eq!(answer.byte_len(), 3 * STRING_OVERHEAD_BYTES);
    }

    #[test]
    fn answers_use_the_typed_lists() {
        let p = to_proto(Tensor::new(&[2], &[1.5f32, 2.5]).unwrap());
        assert_eq!(p.dtype, TfType::DtFloat as i32);
        assert!(p.tensor_content.is_empty());
        assert_eq!(p.float_val, vec![1.5, 2.5]);
        assert_eq!(p.tensor_shape.unwrap().dim[0].size, 2);

        assert_eq!(
            to_proto(Tensor::new(&[2], &[-1.0f64, 7.0]).unwrap()).double_val,
            vec![-1.0, 7.0]
        );
        assert_eq!(
            to_proto(Tensor::new(&[3], &[i32::MIN, 0, 5]).unwrap()).int_val,
            vec![i32::MIN, 0, 5]
        );
        assert_eq!(
            to_proto(Tensor::new(&[1], &[i64::MAX]).unwrap()).int64_val,
            vec![i64::MAX]
        );
        assert_eq!(
            to_proto(Tensor::new(&[2], &[255u8, 1]).unwrap()).int_val,
            vec![255, 1]
        );
        assert_eq!(
            to_proto(Tensor::new(&[2], &[true, false]).unwrap()).bool_val,
            vec![true, false]
        );

        // What goes out comes back the same.
        let t = Tensor::new(&[2, 2], &[1i64, -2, 3, -4]).unwrap();
        let back = convert("t", to_proto(t.clone())).unwrap();
        assert_eq!(back.to_vec::<i64>().unwrap(), t.to_vec::<i64>().unwrap());
        assert_eq!(back.shape(), vec![2, 2]);
    }
}
