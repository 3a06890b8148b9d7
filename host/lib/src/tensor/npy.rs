//! Tensors from NumPy's `.npy` files, for inputs too large for a command line.

use std::io::Read;

use super::{DType, Tensor, TensorError};

/// Reads a C-ordered `.npy` array of a numeric or boolean type as a tensor of `dtype`.
pub fn from_npy(reader: impl Read, dtype: DType) -> Result<Tensor, TensorError> {
    let bad = |message: String| TensorError::Npy { dtype, message };
    let file = npyz::NpyFile::new(reader).map_err(|e| bad(e.to_string()))?;
    if file.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-ordered arrays are not read; save it C-ordered".into(),
        ));
    }
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} is too large"))))
        .collect::<Result<_, _>>()?;
    let stored = file.dtype().descr();
    let wanted = match dtype {
        DType::Float32 => "<f4",
        DType::Float64 => "<f8",
        DType::Int32 => "<i4",
        DType::Int64 => "<i8",
        DType::Uint8 => "|u1",
        DType::Bool => "|b1",
        DType::String => return Err(bad("string tensors are given as JSON".into())),
    };
    if stored.trim_matches('\'') != wanted {
        return Err(bad(format!(
            "the file holds {stored}, the input wants {wanted}"
        )));
    }
    let read = |e: std::io::Error| bad(e.to_string());
    match dtype {
        DType::Float32 => Tensor::new(&shape, &file.into_vec::<f32>().map_err(read)?),
        DType::Float64 => Tensor::new(&shape, &file.into_vec::<f64>().map_err(read)?),
        DType::Int32 => Tensor::new(&shape, &file.into_vec::<i32>().map_err(read)?),
        DType::Int64 => Tensor::new(&shape, &file.into_vec::<i64>().map_err(read)?),
        DType::Uint8 => Tensor::new(&shape, &file.into_vec::<u8>().map_err(read)?),
        DType::Bool => Tensor::new(&shape, &file.into_vec::<bool>().map_err(read)?),
        DType::String => unreachable!("refused above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file as NumPy 1.x writes it (version 1.0 header, padded to 64 bytes).
    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend((header.len() as u16).to_le_bytes());
        file.extend(header.as_bytes());
        file.extend(data);
        file
    }

    #[test]
    fn a_float_array_reads_with_its_shape() {
        let data: Vec<u8> = [1.0f32, 2.0, 5.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let tensor = from_npy(&npy("<f4", "(3, 1)", &data)[..], DType::Float32).unwrap();
        assert_eq!(tensor.shape(), vec![3, 1]);
        assert_eq!(tensor.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 5.0]);
    }

    #[test]
    fn a_type_mismatch_names_both_types() {
        let data = [0u8; 24];
        let error = from_npy(&npy("<f8", "(3,)", &data)[..], DType::Float32)
            .unwrap_err()
            .to_string();
        assert!(error.contains("<f8") && error.contains("<f4"), "{error}");
    }

    #[test]
    fn a_short_file_is_an_error() {
        let error = from_npy(&npy("<f4", "(1000,)", &[0u8; 8])[..], DType::Float32);
        assert!(error.is_err());
    }
}
