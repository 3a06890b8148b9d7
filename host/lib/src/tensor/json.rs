//! Tensors to and from JSON: nested arrays, the shape taken from the nesting.
//!
//! Byte strings that are not UTF-8 are written as `{"b64": "..."}`, as TensorFlow Serving's REST
//! API does; non-finite floats as the strings "NaN", "Infinity" and "-Infinity".

use base64::Engine;
use serde_json::{Number, Value};

use super::{DType, Element, Tensor, TensorError};

/// Builds a tensor of `dtype` from nested JSON arrays (a bare value is a scalar).
pub fn from_json(value: &Value, dtype: DType) -> Result<Tensor, TensorError> {
    let err = |message: String| TensorError::Json { dtype, message };
    let mut shape = Vec::new();
    let mut probe = value;
    while let Value::Array(items) = probe {
        shape.push(items.len());
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut leaves = Vec::new();
    collect(value, &shape, 0, &mut leaves).map_err(err)?;
    match dtype {
        DType::Float32 => numbers(&shape, &leaves, |v| Some(as_f64(v)? as f32)),
        DType::Float64 => numbers(&shape, &leaves, as_f64),
        DType::Int32 => numbers(&shape, &leaves, |v| i32::try_from(v.as_i64()?).ok()),
        DType::Int64 => numbers(&shape, &leaves, Value::as_i64),
        DType::Uint8 => numbers(&shape, &leaves, |v| u8::try_from(v.as_u64()?).ok()),
        DType::Bool => numbers(&shape, &leaves, Value::as_bool),
        DType::String => {
            let values = leaves
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    string_bytes(v).ok_or_else(|| {
                        err(format!(
                            "element {i} is {v}, not a string or {{\"b64\": ...}}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::strings(&shape, values)
        }
    }
    .map_err(|e| match e {
        TensorError::Json { .. } => e,
        other => err(other.to_string()),
    })
}

/// Walks the nesting, checking every array at a depth has the same length.
fn collect<'a>(
    value: &'a Value,
    shape: &[usize],
    depth: usize,
    out: &mut Vec<&'a Value>,
) -> Result<(), String> {
    match (value, shape.get(depth)) {
        (Value::Array(items), Some(&len)) => {
            if items.len() != len {
                return Err(format!(
                    "ragged nesting: an array at depth {depth} has {} elements, another {len}",
                    items.len()
                ));
            }
            items
                .iter()
                .try_for_each(|item| collect(item, shape, depth + 1, out))
        }
        (Value::Array(_), None) => Err(format!(
            "ragged nesting: an array at depth {depth}, where elements were expected"
        )),
        (_, Some(_)) => Err(format!(
            "ragged nesting: {value} at depth {depth}, where an array was expected"
        )),
        (leaf, None) => {
            out.push(leaf);
            Ok(())
        }
    }
}

fn numbers<T: Element>(
    shape: &[usize],
    leaves: &[&Value],
    convert: impl Fn(&Value) -> Option<T>,
) -> Result<Tensor, TensorError> {
    let values = leaves
        .iter()
        .enumerate()
        .map(|(i, v)| {
            convert(v).ok_or_else(|| TensorError::Json {
                dtype: T::DTYPE,
                message: format!("element {i} is {v}, which is not a {}", T::DTYPE),
            })
        })
        .collect::<Result<Vec<T>, _>>()?;
    Tensor::new(shape, &values)
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn string_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Object(map) if map.len() == 1 => base64::engine::general_purpose::STANDARD
            .decode(map.get("b64")?.as_str()?)
            .ok(),
        _ => None,
    }
}

/// The tensor as nested JSON arrays.
pub fn to_json(tensor: &Tensor) -> Value {
    let leaves: Vec<Value> = match tensor.dtype() {
        DType::Float32 => elements::<f32>(tensor, |v| float(v as f64, v.to_string())),
        DType::Float64 => elements::<f64>(tensor, |v| float(v, v.to_string())),
        DType::Int32 => elements::<i32>(tensor, Value::from),
        DType::Int64 => elements::<i64>(tensor, Value::from),
        DType::Uint8 => elements::<u8>(tensor, Value::from),
        DType::Bool => elements::<bool>(tensor, Value::from),
        DType::String => tensor
            .string_values()
            .expect("dtype is string")
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => Value::from(s),
                Err(_) => serde_json::json!({ "b64": base64::engine::general_purpose::STANDARD.encode(b) }),
            })
            .collect(),
    };
    let shape = tensor.shape();
    // An empty tensor's nested form is all arrays and no values: [1000000, 1000, 0] would be a
    // billion empty arrays, made from a few bytes off the wire. Past a small count it is given
    // by its shape instead.
    let arrays = shape
        .iter()
        .scan(1usize, |n, &d| {
            let here = *n;
            *n = n.saturating_mul(d);
            Some(here)
        })
        .fold(0usize, usize::saturating_add);
    if leaves.is_empty() && arrays > MAX_EMPTY_ARRAYS {
        return serde_json::json!({ "shape": shape, "values": [] });
    }
    nest(&mut leaves.into_iter(), &shape)
}

/// The most nested arrays an empty tensor is written as.
const MAX_EMPTY_ARRAYS: usize = 1024;

fn elements<T: Element>(tensor: &Tensor, convert: impl Fn(T) -> Value) -> Vec<Value> {
    tensor
        .to_vec::<T>()
        .expect("dtype matches")
        .into_iter()
        .map(convert)
        .collect()
}

/// A float as JSON, printed at its own precision (0.1f32 stays 0.1, not 0.10000000149011612).
fn float(value: f64, shortest: String) -> Value {
    if value.is_nan() {
        Value::from("NaN")
    } else if value.is_infinite() {
        Value::from(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        shortest
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::Null, Value::Number)
    }
}

fn nest(leaves: &mut impl Iterator<Item = Value>, shape: &[usize]) -> Value {
    match shape.split_first() {
        None => leaves.next().unwrap_or(Value::Null),
        Some((&len, rest)) => Value::Array((0..len).map(|_| nest(leaves, rest)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_arrays_round_trip_with_their_shape() {
        let t = from_json(&json!([[1.0], [2.0], [5.0]]), DType::Float32).unwrap();
        assert_eq!(t.shape(), vec![3, 1]);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 5.0]);
        assert_eq!(to_json(&t), json!([[1.0], [2.0], [5.0]]));
    }

    /// Found by the host_tensor fuzz target: this ran the host out of memory.
    #[test]
    fn a_huge_empty_tensor_is_written_by_its_shape() {
        let t = Tensor::new::<bool>(&[2571, 3211, 139, 1, 0], &[]).unwrap();
        assert_eq!(
            to_json(&t),
            json!({"shape": [2571, 3211, 139, 1, 0], "values": []})
        );
        let small = Tensor::new::<bool>(&[2, 0], &[]).unwrap();
        assert_eq!(to_json(&small), json!([[], []]));
    }

    #[test]
    fn floats_print_at_their_own_precision() {
        let t = Tensor::new(&[2], &[0.1f32, f32::NAN]).unwrap();
        assert_eq!(to_json(&t), json!([0.1, "NaN"]));
    }

    #[test]
    fn ragged_arrays_are_refused_with_the_depth() {
        let e = from_json(&json!([[1, 2], [3]]), DType::Int32).unwrap_err();
        assert!(e.to_string().contains("ragged nesting"), "{e}");
    }

    #[test]
    fn out_of_range_integers_name_the_element() {
        let e = from_json(&json!([1, 300]), DType::Uint8).unwrap_err();
        assert!(e.to_string().contains("element 1 is 300"), "{e}");
    }

    #[test]
    fn binary_strings_use_b64_both_ways() {
        let t = Tensor::strings(&[2], vec![b"ok".to_vec(), vec![0xff, 0x00]]).unwrap();
        let j = to_json(&t);
        assert_eq!(j, json!(["ok", {"b64": "/wA="}]));
        assert_eq!(from_json(&j, DType::String).unwrap(), t);
    }

    #[test]
    fn empty_and_scalar_tensors() {
        let empty = from_json(&json!([]), DType::Int64).unwrap();
        assert_eq!(empty.shape(), vec![0]);
        let scalar = from_json(&json!(7), DType::Int64).unwrap();
        assert_eq!(scalar.shape(), Vec::<usize>::new());
        assert_eq!(to_json(&scalar), json!(7));
    }
}
