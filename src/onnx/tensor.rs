//! TensorProto <-> ir::Tensor.

use super::pb::{TensorProto, tensor_proto::DataType};
use crate::error::{Error, Result};
use crate::ir::{Data, Tensor};

fn dims_of(t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                Error::InvalidModel(format!("tensor '{}' has negative dim {d}", t.name))
            })
        })
        .collect()
}

fn raw_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
}

/// Converts an ONNX tensor. Floating types become f32, integer and bool types become i64.
pub fn from_proto(t: &TensorProto) -> Result<Tensor> {
    let shape = dims_of(t)?;
    let n: usize = shape.iter().product();
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(Error::InvalidModel(format!(
            "tensor '{}' uses external data files, which are not supported",
            t.name
        )));
    }
    let raw = &t.raw_data;
    let dt = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let data = match dt {
        DataType::Float => Data::F32(if raw.is_empty() {
            t.float_data.clone()
        } else {
            raw_chunks::<4>(raw).map(f32::from_le_bytes).collect()
        }),
        DataType::Double => Data::F32(if raw.is_empty() {
            t.double_data.iter().map(|&x| x as f32).collect()
        } else {
            raw_chunks::<8>(raw)
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect()
        }),
        DataType::Int64 => Data::I64(if raw.is_empty() {
            t.int64_data.clone()
        } else {
            raw_chunks::<8>(raw).map(i64::from_le_bytes).collect()
        }),
        DataType::Int32 => Data::I64(if raw.is_empty() {
            t.int32_data.iter().map(|&x| x as i64).collect()
        } else {
            raw_chunks::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect()
        }),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => Data::I64(if raw.is_empty() {
            t.int32_data.iter().map(|&x| x as i64).collect()
        } else if dt == DataType::Int8 {
            raw.iter().map(|&b| b as i8 as i64).collect()
        } else {
            raw.iter().map(|&b| b as i64).collect()
        }),
        other => {
            return Err(Error::InvalidModel(format!(
                "tensor '{}' has unsupported element type {}",
                t.name,
                other.as_str_name()
            )));
        }
    };
    let tensor = Tensor { shape, data };
    if tensor.len() != n {
        return Err(Error::InvalidModel(format!(
            "tensor '{}' holds {} values but its shape {:?} needs {n}",
            t.name,
            tensor.len(),
            tensor.shape
        )));
    }
    Ok(tensor)
}

/// Converts to an ONNX tensor with little-endian `raw_data`.
pub fn to_proto(name: &str, t: &Tensor) -> TensorProto {
    let (data_type, raw_data) = match &t.data {
        Data::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    TensorProto {
        name: name.to_string(),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}
