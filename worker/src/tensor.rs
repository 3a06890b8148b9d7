//! Tensors between the wire (`tfsandbox.v1.Tensor`) and TensorFlow.
//!
//! Numeric input is copied once, from the received frame into TensorFlow's buffer; numeric output is
//! not copied at all: the wire bytes borrow TensorFlow's buffer until they are sent.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::fmt;
use std::mem::{size_of, size_of_val};

use bytes::Bytes;
use tensorflow::{
    DataType as TfType, FetchToken, Operation, SessionRunArgs, Tensor, TensorDataNoCRepr,
    TensorType,
};
use tensorflow_sys as tf;
use tfsandbox_proto::v1::{DataType, Tensor as WireTensor};

/// TensorShape::MaxDimensions().
const MAX_DIMS: usize = 254;

/// TensorFlow's number for a type (types.proto), which the `tensorflow` crate keeps private.
pub fn tensorflow_number(dtype: TfType) -> i32 {
    match dtype {
        TfType::Float => 1,
        TfType::Double => 2,
        TfType::Int32 => 3,
        TfType::UInt8 => 4,
        TfType::Int16 => 5,
        TfType::Int8 => 6,
        TfType::String => 7,
        TfType::Complex64 => 8,
        TfType::Int64 => 9,
        TfType::Bool => 10,
        TfType::QInt8 => 11,
        TfType::QUInt8 => 12,
        TfType::QInt32 => 13,
        TfType::BFloat16 => 14,
        TfType::QInt16 => 15,
        TfType::QUInt16 => 16,
        TfType::UInt16 => 17,
        TfType::Complex128 => 18,
        TfType::Half => 19,
        TfType::Resource => 20,
        TfType::Variant => 21,
        TfType::UInt32 => 22,
        TfType::UInt64 => 23,
        TfType::UnrecognizedEnumValue(number) => i32::try_from(number).unwrap_or(-1),
    }
}

/// The wire type for a TensorFlow type, or `None` where the contract has no such type.
pub fn wire_dtype(dtype: TfType) -> Option<DataType> {
    DataType::from_tensorflow(tensorflow_number(dtype))
}

/// TensorFlow's own name for a type, as its error messages use it.
pub fn tf_dtype_name(dtype: TfType) -> String {
    tfsandbox_proto::dtype::tensorflow_name(tensorflow_number(dtype))
}

/// A TensorFlow tensor of one of the contract's types.
pub enum TfTensor {
    Float32(Tensor<f32>),
    Float64(Tensor<f64>),
    Int32(Tensor<i32>),
    Int64(Tensor<i64>),
    Uint8(Tensor<u8>),
    Bool(Tensor<bool>),
    String(Tensor<ByteString>),
}

macro_rules! each_variant {
    ($value:expr, $t:ident => $body:expr) => {
        match $value {
            TfTensor::Float32($t) => $body,
            TfTensor::Float64($t) => $body,
            TfTensor::Int32($t) => $body,
            TfTensor::Int64($t) => $body,
            TfTensor::Uint8($t) => $body,
            TfTensor::Bool($t) => $body,
            TfTensor::String($t) => $body,
        }
    };
}

impl TfTensor {
    /// Checks a wire tensor and builds the TensorFlow tensor; the error says what was wrong.
    pub fn from_wire(wire: &WireTensor) -> Result<Self, String> {
        let dtype = DataType::try_from(wire.dtype)
            .ok()
            .filter(|d| *d != DataType::Unspecified)
            .ok_or_else(|| format!("unknown dtype {}", wire.dtype))?;
        let dims = wire
            .shape
            .iter()
            .map(|&d| u64::try_from(d).map_err(|_| format!("negative dimension {d} in shape")))
            .collect::<Result<Vec<u64>, _>>()?;
        // TensorFlow aborts the process (LOG(FATAL)) on a shape it cannot hold: more than 254
        // dimensions, or a running product of the sizes, in order, past i64 (even when a later
        // zero makes the tensor empty). Refused here first.
        if dims.len() > MAX_DIMS {
            return Err(format!(
                "shape has {} dimensions; TensorFlow allows at most {MAX_DIMS}",
                dims.len()
            ));
        }
        let count = wire
            .shape
            .iter()
            .try_fold(1i64, |n, &d| n.checked_mul(d))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("shape {:?} has too many elements", wire.shape))?;

        if dtype == DataType::String {
            if !wire.content.is_empty() {
                return Err(
                    "a string tensor carries its elements in string_values, not content".into(),
                );
            }
            if wire.string_values.len() != count {
                return Err(format!(
                    "shape {:?} needs {count} strings, got {}",
                    wire.shape,
                    wire.string_values.len()
                ));
            }
            let values: Vec<ByteString> =
                wire.string_values.iter().cloned().map(ByteString).collect();
            let tensor = Tensor::new(&dims)
                .with_values(&values)
                .map_err(|e| e.to_string())?;
            return Ok(TfTensor::String(tensor));
        }
        if !wire.string_values.is_empty() {
            return Err(format!(
                "a {} tensor must not carry string_values",
                dtype.as_str_name()
            ));
        }
        Ok(match dtype {
            DataType::Float32 => TfTensor::Float32(numeric(&dims, count, &wire.content)?),
            DataType::Float64 => TfTensor::Float64(numeric(&dims, count, &wire.content)?),
            DataType::Int32 => TfTensor::Int32(numeric(&dims, count, &wire.content)?),
            DataType::Int64 => TfTensor::Int64(numeric(&dims, count, &wire.content)?),
            DataType::Uint8 => TfTensor::Uint8(numeric(&dims, count, &wire.content)?),
            DataType::Bool => {
                // Any byte but 0 or 1 would be an invalid `bool`.
                if let Some(at) = wire.content.iter().position(|&b| b > 1) {
                    return Err(format!(
                        "bool element {at} is {}, not 0 or 1",
                        wire.content[at]
                    ));
                }
                TfTensor::Bool(numeric(&dims, count, &wire.content)?)
            }
            DataType::String | DataType::Unspecified => unreachable!("handled above"),
        })
    }

    pub fn dtype(&self) -> TfType {
        each_variant!(self, t => tensor_dtype(t))
    }

    pub fn dims(&self) -> &[u64] {
        each_variant!(self, t => t.dims())
    }

    pub fn feed<'a>(&'a self, args: &mut SessionRunArgs<'a>, op: &Operation, index: i32) {
        each_variant!(self, t => args.add_feed(op, index, t))
    }

    /// Takes a fetched output of whatever type it turned out to have.
    pub fn fetch(
        args: &mut SessionRunArgs<'_>,
        token: FetchToken,
        dtype: TfType,
    ) -> Result<Self, String> {
        let tensor = match dtype {
            TfType::Float => args.fetch(token).map(TfTensor::Float32),
            TfType::Double => args.fetch(token).map(TfTensor::Float64),
            TfType::Int32 => args.fetch(token).map(TfTensor::Int32),
            TfType::Int64 => args.fetch(token).map(TfTensor::Int64),
            TfType::UInt8 => args.fetch(token).map(TfTensor::Uint8),
            TfType::Bool => args.fetch(token).map(TfTensor::Bool),
            TfType::String => args.fetch(token).map(TfTensor::String),
            other => {
                return Err(format!(
                    "has type {}, which tfsandbox does not carry",
                    tf_dtype_name(other)
                ))
            }
        };
        tensor.map_err(|e| e.to_string())
    }

    pub fn into_wire(self) -> WireTensor {
        let shape = self.dims().iter().map(|&d| d as i64).collect();
        let dtype = wire_dtype(self.dtype()).expect("every variant has a wire type") as i32;
        let (content, string_values) = match self {
            TfTensor::Float32(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::Float64(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::Int32(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::Int64(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::Uint8(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::Bool(t) => (tensor_bytes(t), Vec::new()),
            TfTensor::String(t) => (Bytes::new(), t.iter().map(|s| s.0.clone()).collect()),
        };
        WireTensor {
            dtype,
            shape,
            content,
            string_values,
        }
    }
}

fn tensor_dtype<T: TensorType>(_: &Tensor<T>) -> TfType {
    T::data_type()
}

/// Plain-old-data element types whose bytes are their little-endian value.
trait Pod: TensorType + Copy {}
impl Pod for f32 {}
impl Pod for f64 {}
impl Pod for i32 {}
impl Pod for i64 {}
impl Pod for u8 {}
// Only after the caller checked every byte is 0 or 1.
impl Pod for bool {}

fn numeric<T: Pod>(dims: &[u64], count: usize, content: &[u8]) -> Result<Tensor<T>, String> {
    let need = count
        .checked_mul(size_of::<T>())
        .ok_or("shape has too many elements")?;
    if content.len() != need {
        return Err(format!(
            "content has {} bytes, but shape {dims:?} of {}-byte elements needs {need}",
            content.len(),
            size_of::<T>()
        ));
    }
    let mut tensor = Tensor::<T>::new(dims);
    let target: &mut [T] = &mut tensor;
    // SAFETY: `target` holds exactly `need` bytes (`count` elements of T), `content` was checked to
    // be as long, and every bit pattern is a valid T (bools were checked by the caller).
    unsafe {
        std::ptr::copy_nonoverlapping(content.as_ptr(), target.as_mut_ptr().cast::<u8>(), need)
    };
    Ok(tensor)
}

/// The bytes of a TensorFlow tensor, kept alive by the `Bytes` that views them.
struct TensorBytes<T: Pod>(Tensor<T>);

impl<T: Pod> AsRef<[u8]> for TensorBytes<T> {
    fn as_ref(&self) -> &[u8] {
        let elements: &[T] = &self.0;
        // SAFETY: plain data viewed as bytes, for as long as the tensor lives.
        unsafe { std::slice::from_raw_parts(elements.as_ptr().cast::<u8>(), size_of_val(elements)) }
    }
}

fn tensor_bytes<T: Pod>(tensor: Tensor<T>) -> Bytes
where
    Tensor<T>: Send,
{
    // An empty tensor's data pointer may be null, which no slice may hold.
    if tensor.is_empty() {
        return Bytes::new();
    }
    Bytes::from_owner(TensorBytes(tensor))
}

/// A TensorFlow string element: arbitrary bytes.
///
/// The `tensorflow` crate's own `String` element insists on UTF-8 and panics on anything else a
/// model returns; models deal in byte strings (images, serialized protos), so this one does not.
#[derive(Default, Clone, Debug)]
pub struct ByteString(pub Bytes);

impl fmt::Display for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

impl TensorType for ByteString {
    type InnerType = TensorDataNoCRepr<ByteString>;

    fn data_type() -> TfType {
        TfType::String
    }

    fn zero() -> Self {
        ByteString::default()
    }

    fn one() -> Self {
        ByteString(Bytes::from_static(b"\x01"))
    }

    fn is_repr_c() -> bool {
        false
    }

    fn unpack(data: &[u8], count: usize) -> tensorflow::Result<Vec<Self>> {
        if data.len() < count * size_of::<tf::TF_TString>() {
            return Err(tensorflow::Status::new_set_lossy(
                tensorflow::Code::Internal,
                "string tensor buffer is shorter than its element count",
            ));
        }
        let tstrings = data.as_ptr().cast::<tf::TF_TString>();
        Ok((0..count)
            .map(|i| {
                // SAFETY: TensorFlow laid out `count` TF_TStrings here (length checked above).
                unsafe {
                    let s = tstrings.add(i);
                    let bytes = std::slice::from_raw_parts(
                        tf::TF_StringGetDataPointer(s).cast::<u8>(),
                        tf::TF_StringGetSize(s),
                    );
                    ByteString(Bytes::copy_from_slice(bytes))
                }
            })
            .collect())
    }

    fn pack(data: &[Self], dims: &[u64]) -> tensorflow::Result<*mut tf::TF_Tensor> {
        let internal = |m: &str| tensorflow::Status::new_set_lossy(tensorflow::Code::Internal, m);
        if data.is_empty() {
            // TF_NewTensor with a zero-length buffer still needs a non-null pointer; no strings to free.
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            // SAFETY: TensorFlow allocates and owns an empty buffer.
            let tensor = unsafe {
                tf::TF_AllocateTensor(
                    tf::TF_DataType::TF_STRING,
                    dims.as_ptr(),
                    dims.len() as i32,
                    0,
                )
            };
            return if tensor.is_null() {
                Err(internal("TF_AllocateTensor failed"))
            } else {
                Ok(tensor)
            };
        }
        let layout = Layout::array::<tf::TF_TString>(data.len())
            .map_err(|_| internal("string tensor too large"))?;
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        // SAFETY: the buffer holds `data.len()` TF_TStrings, each initialised before TensorFlow sees
        // it; `free_tstrings` releases them and the buffer with the same layout.
        unsafe {
            let buffer = alloc::alloc(layout).cast::<tf::TF_TString>();
            if buffer.is_null() {
                alloc::handle_alloc_error(layout);
            }
            for (i, value) in data.iter().enumerate() {
                let s = buffer.add(i);
                tf::TF_StringInit(s);
                tf::TF_StringCopy(s, value.0.as_ptr().cast(), value.0.len());
            }
            let tensor = tf::TF_NewTensor(
                tf::TF_DataType::TF_STRING,
                dims.as_ptr(),
                dims.len() as i32,
                buffer.cast::<c_void>(),
                layout.size(),
                Some(free_tstrings),
                std::ptr::null_mut(),
            );
            if tensor.is_null() {
                free_tstrings(buffer.cast(), layout.size(), std::ptr::null_mut());
                return Err(internal("TF_NewTensor returned null"));
            }
            Ok(tensor)
        }
    }
}

unsafe extern "C" fn free_tstrings(data: *mut c_void, len: usize, _: *mut c_void) {
    let count = len / size_of::<tf::TF_TString>();
    let strings = data.cast::<tf::TF_TString>();
    for i in 0..count {
        tf::TF_StringDealloc(strings.add(i));
    }
    // The layout `pack` allocated with; it was valid then, so it is now.
    let layout = Layout::array::<tf::TF_TString>(count).expect("layout was valid at allocation");
    alloc::dealloc(data.cast(), layout);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(dtype: DataType, shape: Vec<i64>) -> WireTensor {
        WireTensor {
            dtype: dtype as i32,
            shape,
            content: Bytes::new(),
            string_values: vec![],
        }
    }

    /// Found by the worker_tensor fuzz target: TensorFlow aborted the worker on these.
    #[test]
    fn shapes_tensorflow_cannot_hold_are_refused_not_fatal() {
        let overflow_before_zero = wire(DataType::Bool, vec![49, 2, 2, (1 << 56) - 1, 0]);
        let error = TfTensor::from_wire(&overflow_before_zero).err().unwrap();
        assert!(error.contains("too many elements"), "{error}");

        let too_many_dims = wire(DataType::Float32, vec![1; MAX_DIMS + 1]);
        let error = TfTensor::from_wire(&too_many_dims).err().unwrap();
        assert!(error.contains("at most 254"), "{error}");

        // An empty tensor whose product stays in range is fine.
        assert!(TfTensor::from_wire(&wire(DataType::Bool, vec![3, 0, 5])).is_ok());
    }
}
