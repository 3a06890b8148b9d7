//! Element types: the contract's own (`v1::DataType`) beside TensorFlow's numbers and names for
//! them (the `DataType` enum of TensorFlow's `types.proto`, which TensorFlow Serving's API and
//! the C API share). The one table every crate converts through.

use crate::v1::DataType;

/// One element type the contract carries.
struct Row {
    wire: DataType,
    /// TensorFlow's number for it.
    tensorflow: i32,
    /// Bytes per element; strings have none fixed.
    size: Option<usize>,
}

const ROWS: [Row; 7] = [
    Row {
        wire: DataType::Float32,
        tensorflow: 1,
        size: Some(4),
    },
    Row {
        wire: DataType::Float64,
        tensorflow: 2,
        size: Some(8),
    },
    Row {
        wire: DataType::Int32,
        tensorflow: 3,
        size: Some(4),
    },
    Row {
        wire: DataType::Uint8,
        tensorflow: 4,
        size: Some(1),
    },
    Row {
        wire: DataType::String,
        tensorflow: 7,
        size: None,
    },
    Row {
        wire: DataType::Int64,
        tensorflow: 9,
        size: Some(8),
    },
    Row {
        wire: DataType::Bool,
        tensorflow: 10,
        size: Some(1),
    },
];

/// TensorFlow's names for its numbers 0 to 23 (`DT_INVALID` to `DT_UINT64`), as its error
/// messages print them; the reference types (100 more) print as their base type with `_REF`.
const TENSORFLOW_NAMES: [&str; 24] = [
    "DT_INVALID",
    "DT_FLOAT",
    "DT_DOUBLE",
    "DT_INT32",
    "DT_UINT8",
    "DT_INT16",
    "DT_INT8",
    "DT_STRING",
    "DT_COMPLEX64",
    "DT_INT64",
    "DT_BOOL",
    "DT_QINT8",
    "DT_QUINT8",
    "DT_QINT32",
    "DT_BFLOAT16",
    "DT_QINT16",
    "DT_QUINT16",
    "DT_UINT16",
    "DT_COMPLEX128",
    "DT_HALF",
    "DT_RESOURCE",
    "DT_VARIANT",
    "DT_UINT32",
    "DT_UINT64",
];

impl DataType {
    fn row(self) -> Option<&'static Row> {
        ROWS.iter().find(|row| row.wire == self)
    }

    /// The contract's type for TensorFlow's number, or `None` where the contract has no such type.
    pub fn from_tensorflow(number: i32) -> Option<DataType> {
        ROWS.iter()
            .find(|row| row.tensorflow == number)
            .map(|row| row.wire)
    }

    /// TensorFlow's number for this type; `DT_INVALID` (0) for `Unspecified`.
    pub fn tensorflow(self) -> i32 {
        self.row().map_or(0, |row| row.tensorflow)
    }

    /// Bytes per element; `None` for strings (and `Unspecified`).
    pub fn element_size(self) -> Option<usize> {
        self.row().and_then(|row| row.size)
    }
}

/// TensorFlow's name for its type number (`DT_FLOAT`), or the number where it names none.
pub fn tensorflow_name(number: i32) -> String {
    let (base, suffix) = if number > 100 {
        (number - 100, "_REF")
    } else {
        (number, "")
    };
    match usize::try_from(base)
        .ok()
        .and_then(|i| TENSORFLOW_NAMES.get(i))
    {
        Some(name) => format!("{name}{suffix}"),
        None => format!("dtype {number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_type_but_unspecified_has_one_row() {
        for wire in [
            DataType::Float32,
            DataType::Float64,
            DataType::Int32,
            DataType::Int64,
            DataType::Uint8,
            DataType::Bool,
            DataType::String,
        ] {
            assert_eq!(DataType::from_tensorflow(wire.tensorflow()), Some(wire));
        }
        assert_eq!(DataType::Unspecified.tensorflow(), 0);
        assert_eq!(DataType::from_tensorflow(0), None);
        assert_eq!(
            DataType::from_tensorflow(19),
            None,
            "DT_HALF is not carried"
        );
    }

    #[test]
    fn names_follow_tensorflow() {
        assert_eq!(tensorflow_name(DataType::Float32.tensorflow()), "DT_FLOAT");
        assert_eq!(tensorflow_name(DataType::Bool.tensorflow()), "DT_BOOL");
        assert_eq!(tensorflow_name(14), "DT_BFLOAT16");
        assert_eq!(tensorflow_name(101), "DT_FLOAT_REF");
        assert_eq!(tensorflow_name(0), "DT_INVALID");
        assert_eq!(tensorflow_name(100), "dtype 100");
        assert_eq!(tensorflow_name(-3), "dtype -3");
        assert_eq!(tensorflow_name(999), "dtype 999");
    }
}
