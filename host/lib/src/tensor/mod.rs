//! Tensors as the host library's callers build and read them.
//!
//! A [`Tensor`] is the wire tensor itself, so handing it to the worker copies nothing.

mod json;
#[cfg(feature = "npy")]
mod npy;

use std::fmt;

use bytes::Bytes;
use tfsandbox_proto::v1::{DataType, Tensor as WireTensor};

/// TensorFlow's name for its dtype number (`DT_FLOAT`), as signatures report it
/// (`TensorSpec::tensorflow_dtype`).
pub use tfsandbox_proto::dtype::tensorflow_name;

pub use json::{from_json, to_json};
#[cfg(feature = "npy")]
pub use npy::from_npy;

/// What each string element costs in memory beyond its bytes: its `Bytes` handle.
pub const STRING_OVERHEAD_BYTES: usize = std::mem::size_of::<Bytes>();

/// Element types the contract carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Float32,
    Float64,
    Int32,
    Int64,
    Uint8,
    Bool,
    String,
}

impl DType {
    pub fn from_wire(value: i32) -> Option<DType> {
        Some(match DataType::try_from(value).ok()? {
            DataType::Float32 => DType::Float32,
            DataType::Float64 => DType::Float64,
            DataType::Int32 => DType::Int32,
            DataType::Int64 => DType::Int64,
            DataType::Uint8 => DType::Uint8,
            DataType::Bool => DType::Bool,
            DataType::String => DType::String,
            DataType::Unspecified => return None,
        })
    }

    pub fn to_wire(self) -> DataType {
        match self {
            DType::Float32 => DataType::Float32,
            DType::Float64 => DataType::Float64,
            DType::Int32 => DataType::Int32,
            DType::Int64 => DataType::Int64,
            DType::Uint8 => DataType::Uint8,
            DType::Bool => DataType::Bool,
            DType::String => DataType::String,
        }
    }

    /// Bytes per element; strings have none fixed.
    pub fn size(self) -> Option<usize> {
        self.to_wire().element_size()
    }

    /// TensorFlow's number for it (`DT_FLOAT` is 1), as TensorFlow Serving's API carries it.
    pub fn tensorflow(self) -> i32 {
        self.to_wire().tensorflow()
    }

    /// The type for TensorFlow's number, or `None` where the contract has no such type.
    pub fn from_tensorflow(number: i32) -> Option<DType> {
        DType::from_wire(DataType::from_tensorflow(number)? as i32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Bool => "bool",
            DType::String => "string",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements, but {got} were given")]
    Count {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("the tensor is {actual}, not {requested}")]
    WrongType { actual: String, requested: DType },
    #[error("malformed tensor from the worker: {0}")]
    Malformed(String),
    #[error("JSON for a {dtype} tensor: {message}")]
    Json { dtype: DType, message: String },
    #[error(".npy for a {dtype} tensor: {message}")]
    Npy { dtype: DType, message: String },
}

/// A numeric or boolean element type. Its bytes in memory are the wire's (little-endian, and a
/// bool is one byte, 0 or 1), so a slice of them is sent with one copy.
pub trait Element: Copy + bytemuck::NoUninit + sealed::Sealed {
    const DTYPE: DType;
    fn read_le(bytes: &[u8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! number_element {
    ($($t:ty => $dtype:ident),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn read_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("caller passes one element's bytes"))
            }
        }
    )*};
}
number_element!(f32 => Float32, f64 => Float64, i32 => Int32, i64 => Int64, u8 => Uint8);

impl sealed::Sealed for bool {}
impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// A dense tensor: element type, shape (outermost first) and row-major elements.
#[derive(Clone, PartialEq)]
pub struct Tensor(WireTensor);

impl Tensor {
    /// A numeric or boolean tensor; `values` must hold exactly the shape's element count.
    pub fn new<T: Element>(shape: &[usize], values: &[T]) -> Result<Tensor, TensorError> {
        check_count(shape, values.len())?;
        let content: &[u8] = bytemuck::cast_slice(values);
        Ok(Tensor(WireTensor {
            dtype: T::DTYPE.to_wire() as i32,
            shape: shape.iter().map(|&d| d as i64).collect(),
            content: Bytes::copy_from_slice(content),
            string_values: Vec::new(),
        }))
    }

    /// A scalar.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::new(&[], &[value]).expect("a scalar holds one element")
    }

    /// A tensor of byte strings.
    pub fn strings<S: Into<Bytes>>(shape: &[usize], values: Vec<S>) -> Result<Tensor, TensorError> {
        check_count(shape, values.len())?;
        Ok(Tensor(WireTensor {
            dtype: DataType::String as i32,
            shape: shape.iter().map(|&d| d as i64).collect(),
            content: Bytes::new(),
            string_values: values.into_iter().map(Into::into).collect(),
        }))
    }

    /// Checks a tensor the worker sent: known type, sane shape, and as many bytes as it says.
    pub fn from_wire(wire: WireTensor) -> Result<Tensor, TensorError> {
        let malformed = |m: String| TensorError::Malformed(m);
        let dtype = DType::from_wire(wire.dtype)
            .ok_or_else(|| malformed(format!("dtype {}", wire.dtype)))?;
        let count = wire
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| malformed(format!("shape {:?}", wire.shape)))?;
        let consistent = match dtype.size() {
            Some(size) => {
                wire.string_values.is_empty() && Some(wire.content.len()) == count.checked_mul(size)
            }
            None => wire.content.is_empty() && wire.string_values.len() == count,
        };
        if !consistent {
            return Err(malformed(format!(
                "{dtype} tensor of shape {:?} with {} content bytes and {} strings",
                wire.shape,
                wire.content.len(),
                wire.string_values.len()
            )));
        }
        Ok(Tensor(wire))
    }

    /// Bytes the tensor holds in memory: the numbers, or every string's bytes plus its handle
    /// ([`STRING_OVERHEAD_BYTES`]), so that a million empty strings do not count as nothing.
    pub fn byte_len(&self) -> usize {
        self.0.content.len()
            + self
                .0
                .string_values
                .iter()
                .map(|s| s.len() + STRING_OVERHEAD_BYTES)
                .sum::<usize>()
    }

    pub fn into_wire(self) -> WireTensor {
        self.0
    }

    /// The element type. A `Tensor` always has a known one.
    pub fn dtype(&self) -> DType {
        DType::from_wire(self.0.dtype).expect("checked when built")
    }

    pub fn shape(&self) -> Vec<usize> {
        self.0.shape.iter().map(|&d| d as usize).collect()
    }

    pub fn len(&self) -> usize {
        self.0.shape.iter().map(|&d| d as usize).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements, if the tensor holds `T`.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        if self.dtype() != T::DTYPE {
            return Err(TensorError::WrongType {
                actual: self.dtype().to_string(),
                requested: T::DTYPE,
            });
        }
        let size = T::DTYPE.size().expect("elements have a size");
        Ok(self.0.content.chunks_exact(size).map(T::read_le).collect())
    }

    /// The elements of a string tensor.
    pub fn string_values(&self) -> Result<&[Bytes], TensorError> {
        if self.dtype() != DType::String {
            return Err(TensorError::WrongType {
                actual: self.dtype().to_string(),
                requested: DType::String,
            });
        }
        Ok(&self.0.string_values)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor<{}>{:?} {}",
            self.dtype(),
            self.0.shape,
            to_json(self)
        )
    }
}

fn check_count(shape: &[usize], got: usize) -> Result<(), TensorError> {
    let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if expected != Some(got) {
        return Err(TensorError::Count {
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            got,
        });
    }
    Ok(())
}
