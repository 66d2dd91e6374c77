//! ONNX protobuf in and out. The message types are tract's prost-generated `pb` module, so the
//! bytes we produce are read by the same schema tract uses.

pub mod attrs;
mod export;
pub mod external;
mod fold;
mod import;
pub mod input_shape;
pub mod length_free;
pub mod positions;
pub mod tensor;
pub mod validate;

pub use attrs::Attrs;
pub use export::{ExportCx, PRODUCER, export, to_model_proto};
pub use import::{ImportCx, Imported, import_bytes, import_sized};
pub use input_shape::{InputShape, InputShapes};
pub use tract_onnx::pb;

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Graph;

/// Imports ONNX bytes (errors say `<bytes>` where a file name would go; see `import_file`).
pub fn import(bytes: &[u8]) -> Result<Graph> {
    import_bytes(bytes, "<bytes>")
}

/// Reads and imports an ONNX file; errors name the file. External data (a side file such as
/// `model.onnx.data`) is read from the model's directory.
pub fn import_file(path: &Path) -> Result<Graph> {
    import_bytes(&read_model(path)?, &path.display().to_string())
}

/// Reads an ONNX file as self-contained bytes: a model with external data comes back with its
/// tensors read from their side files (see [`external`]), anything else exactly as stored.
/// Bytes that do not decode are returned as they are, for the import to report.
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let Ok(mut model) = pb::ModelProto::decode(&bytes[..]) else {
        return Ok(bytes);
    };
    if !external::has_external(&model) {
        return Ok(bytes);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    external::inline(&mut model, Some(dir), &path.display().to_string())?;
    Ok(model.encode_to_vec())
}

/// Reads an ONNX TensorProto file (the `input_0.pb` layout of ONNX test data).
pub fn read_tensor_file(path: &Path) -> Result<crate::ir::Tensor> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let t = pb::TensorProto::decode(&bytes[..]).map_err(|e| Error::Data {
        path: path.display().to_string(),
        reason: format!("not an ONNX TensorProto ({e})"),
    })?;
    tensor::from_proto(&t)
}
