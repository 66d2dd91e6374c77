//! External data (`TensorProto.data_location = EXTERNAL`): tensors whose bytes live in a side
//! file next to the model, as the `onnx` package and PyTorch's dynamo exporter write models over
//! protobuf's 2 GB limit. `inline` reads them into `raw_data`, so the rest of the import (and the
//! runtimes that verify from bytes) sees an ordinary self-contained model.
//!
//! The side file is user input, so a reference is only followed when it stays inside the
//! model's directory: no absolute path, no `..`, no symlink leading out.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use super::pb::{self, TensorProto, tensor_proto::DataType};
use crate::error::{Error, Result};

/// Largest tensor read from a side file (16 GiB): past this a reference is more likely corrupt
/// than a real weight, and reading it would exhaust memory before anything useful happens.
pub const MAX_TENSOR_BYTES: u64 = 16 << 30;

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(EXTERNAL) || !t.external_data.is_empty()
}

/// Every tensor a model carries: initializers, sparse initializers and node attributes, in
/// subgraphs too.
fn for_each_tensor(
    g: &mut pb::GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
            f(t)?;
        }
    }
    for n in &mut g.node {
        for a in &mut n.attribute {
            for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
                f(t)?;
            }
            for s in a
                .sparse_tensor
                .iter_mut()
                .chain(a.sparse_tensors.iter_mut())
            {
                for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
                    f(t)?;
                }
            }
            for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                for_each_tensor(sub, f)?;
            }
        }
    }
    Ok(())
}

/// Whether any tensor of the graph (or a subgraph) keeps its data in an external file.
fn graph_has_external(g: &pb::GraphProto) -> bool {
    let sparse = |s: &pb::SparseTensorProto| s.values.iter().chain(&s.indices).any(is_external);
    g.initializer.iter().any(is_external)
        || g.sparse_initializer.iter().any(sparse)
        || g.node.iter().flat_map(|n| &n.attribute).any(|a| {
            a.t.iter().chain(&a.tensors).any(is_external)
                || a.sparse_tensor.iter().chain(&a.sparse_tensors).any(sparse)
                || a.g.iter().chain(&a.graphs).any(graph_has_external)
        })
}

/// Whether any tensor of the model keeps its data in an external file.
pub fn has_external(model: &pb::ModelProto) -> bool {
    model.graph.as_ref().is_some_and(graph_has_external)
}

/// Reads every external tensor's bytes into its `raw_data`, resolving locations relative to
/// `dir` (the model file's directory). Without a directory (a model given as bytes), an
/// external tensor is an error. `source` names the model file in errors.
pub fn inline(model: &mut pb::ModelProto, dir: Option<&Path>, source: &str) -> Result<()> {
    let Some(g) = model.graph.as_mut() else {
        return Ok(());
    };
    let mut reader = SideFiles {
        dir,
        source,
        root: None,
        open: HashMap::new(),
    };
    for_each_tensor(g, &mut |t| {
        if is_external(t) {
            let raw = reader.read(t)?;
            t.raw_data = raw;
            t.external_data.clear();
            t.data_location = None;
        }
        Ok(())
    })
}

/// Side-file offsets are multiples of this, so a runtime may map each tensor directly.
const ALIGN: usize = 64;

/// Moves the initializers' bytes of a self-contained model into one side-file blob referenced by
/// `location` (relative to the model's directory). Returns the model bytes and the side file.
pub fn split(bytes: &[u8], location: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    use prost::Message;
    let mut model = pb::ModelProto::decode(bytes)
        .map_err(|e| Error::Internal(format!("re-reading the export: {e}")))?;
    let entry = |key: &str, value: String| pb::StringStringEntryProto {
        key: key.into(),
        value,
    };
    let resize_params: HashSet<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|n| n.op_type == "Resize")
        .flat_map(|n| n.input.iter().skip(1).cloned())
        .collect();
    let mut data = Vec::new();
    for t in model.graph.iter_mut().flat_map(|g| &mut g.initializer) {
        if t.raw_data.is_empty() || stays_inline(t, &resize_params) {
            continue;
        }
        data.resize(data.len().next_multiple_of(ALIGN), 0);
        let raw = std::mem::take(&mut t.raw_data);
        t.data_location = Some(EXTERNAL);
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", data.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        data.extend_from_slice(&raw);
    }
    Ok((model.encode_to_vec(), data))
}

/// Whether an initializer keeps its bytes in the model file: ONNX shape inference (in
/// `onnx.checker` and in ONNX Runtime's loader) reads the values of integer tensors (axes,
/// shapes, pads, indices) and of Resize's roi/scales, and cannot read them from a side file.
/// Only floating-point data goes out; these are small, so the model stays far under 2 GB.
fn stays_inline(t: &TensorProto, resize_params: &HashSet<String>) -> bool {
    use DataType as D;
    let float = matches!(
        DataType::try_from(t.data_type),
        Ok(D::Float | D::Double | D::Float16 | D::Bfloat16)
    );
    !float || resize_params.contains(&t.name)
}

/// Bytes per element of the types a side file can hold; `None` for strings and unknown types.
fn element_size(data_type: i32) -> Option<u64> {
    use DataType as D;
    Some(match DataType::try_from(data_type).ok()? {
        D::Uint8 | D::Int8 | D::Bool => 1,
        D::Uint16 | D::Int16 | D::Float16 | D::Bfloat16 => 2,
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 | D::Complex64 => 8,
        D::Complex128 => 16,
        _ => return None,
    })
}

/// Where one tensor's bytes are: the `external_data` entries (`checksum` is not checked).
struct Reference<'a> {
    location: &'a str,
    offset: u64,
    length: Option<u64>,
}

/// The side files of one model, opened once each.
struct SideFiles<'a> {
    dir: Option<&'a Path>,
    source: &'a str,
    /// The model directory, canonicalised on first use.
    root: Option<PathBuf>,
    open: HashMap<PathBuf, (File, u64)>,
}

impl SideFiles<'_> {
    fn error(&self, t: &TensorProto, reason: impl std::fmt::Display) -> Error {
        Error::Data {
            path: self.source.into(),
            reason: format!("tensor '{}': {reason}", t.name),
        }
    }

    fn reference<'t>(&self, t: &'t TensorProto) -> Result<Reference<'t>> {
        let mut location = None;
        let (mut offset, mut length) = (0, None);
        for e in &t.external_data {
            let number = || {
                e.value.parse::<u64>().map_err(|_| {
                    self.error(
                        t,
                        format!("external data {} '{}' is not a byte count", e.key, e.value),
                    )
                })
            };
            match e.key.as_str() {
                "location" => location = Some(e.value.as_str()),
                "offset" => offset = number()?,
                "length" => length = Some(number()?),
                _ => {}
            }
        }
        let location = location
            .filter(|l| !l.is_empty())
            .ok_or_else(|| self.error(t, "external data has no location"))?;
        Ok(Reference {
            location,
            offset,
            length,
        })
    }

    /// The side file's path, checked to stay inside the model's directory.
    fn resolve(&mut self, t: &TensorProto, location: &str) -> Result<PathBuf> {
        let Some(dir) = self.dir else {
            return Err(self.error(
                t,
                format!(
                    "data is in an external file ('{location}'); import the model from its file so the side file can be found"
                ),
            ));
        };
        let rel = Path::new(location);
        if rel.is_absolute() || rel.has_root() {
            return Err(self.error(
                t,
                format!("external data location '{location}' is an absolute path; it must be relative to the model's directory"),
            ));
        }
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(self.error(
                t,
                format!("external data location '{location}' leaves the model's directory ('..' is not allowed)"),
            ));
        }
        let root = match &self.root {
            Some(r) => r.clone(),
            None => {
                let r = dir.canonicalize().map_err(|e| {
                    self.error(t, format!("model directory {}: {e}", dir.display()))
                })?;
                self.root = Some(r.clone());
                r
            }
        };
        let path = dir.join(rel);
        let real = path.canonicalize().map_err(|e| {
            self.error(
                t,
                format!("external data file {} cannot be read ({e})", path.display()),
            )
        })?;
        if !real.starts_with(&root) {
            return Err(self.error(
                t,
                format!(
                    "external data location '{location}' resolves to {}, outside the model's directory",
                    real.display()
                ),
            ));
        }
        Ok(real)
    }

    /// Reads one external tensor's bytes after checking them against its shape and the file.
    fn read(&mut self, t: &TensorProto) -> Result<Vec<u8>> {
        let r = self.reference(t)?;
        let size = element_size(t.data_type).ok_or_else(|| {
            self.error(
                t,
                format!(
                    "element type {} cannot be stored as external data",
                    t.data_type
                ),
            )
        })?;
        let expected = t
            .dims
            .iter()
            .try_fold(size, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
            .filter(|&n| n <= MAX_TENSOR_BYTES)
            .ok_or_else(|| {
                self.error(
                    t,
                    format!("shape {:?} needs more than {MAX_TENSOR_BYTES} bytes (the limit for one tensor)", t.dims),
                )
            })?;
        let path = self.resolve(t, r.location)?;
        let (file, file_len) = match self.open.remove(&path) {
            Some(open) => open,
            None => {
                let cannot_read = |e: std::io::Error| {
                    self.error(
                        t,
                        format!("external data file {} cannot be read ({e})", path.display()),
                    )
                };
                let file = File::open(&path).map_err(cannot_read)?;
                let len = file.metadata().map_err(cannot_read)?.len();
                (file, len)
            }
        };
        let length = r.length.unwrap_or(file_len.saturating_sub(r.offset));
        if length != expected {
            return Err(self.error(
                t,
                format!(
                    "external data length {length} bytes does not match its shape {:?} ({expected} bytes)",
                    t.dims
                ),
            ));
        }
        if r.offset
            .checked_add(length)
            .is_none_or(|end| end > file_len)
        {
            return Err(self.error(
                t,
                format!(
                    "external data at offset {} length {length} is beyond the end of {} ({file_len} bytes)",
                    r.offset,
                    path.display()
                ),
            ));
        }
        let mut raw = vec![0u8; length as usize];
        let mut file = file;
        file.seek(SeekFrom::Start(r.offset))
            .and_then(|_| file.read_exact(&mut raw))
            .map_err(|e| Error::io(&path, e))?;
        self.open.insert(path, (file, file_len));
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external_tensor(dims: Vec<i64>, entries: &[(&str, &str)]) -> pb::ModelProto {
        let t = TensorProto {
            name: "w".into(),
            dims,
            data_type: DataType::Float as i32,
            data_location: Some(EXTERNAL),
            external_data: entries
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer: vec![t],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn inline_err(m: &mut pb::ModelProto, dir: Option<&Path>) -> String {
        inline(m, dir, "m.onnx").unwrap_err().to_string()
    }

    #[test]
    fn reads_offset_and_length_and_defaults_length_to_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<u8> = (1..=4u8).flat_map(|i| f32::from(i).to_le_bytes()).collect();
        let mut file = vec![9u8; 3];
        file.extend(&values);
        std::fs::write(dir.path().join("d.bin"), &file).unwrap();
        for entries in [
            &[("location", "d.bin"), ("offset", "3"), ("length", "16")][..],
            &[("location", "./d.bin"), ("offset", "3"), ("checksum", "x")][..],
        ] {
            let mut m = external_tensor(vec![2, 2], entries);
            assert!(has_external(&m));
            inline(&mut m, Some(dir.path()), "m.onnx").unwrap();
            assert!(!has_external(&m));
            let t = &m.graph.as_ref().unwrap().initializer[0];
            assert_eq!(t.raw_data, values);
            assert_eq!(t.data_location, None);
        }
    }

    #[test]
    fn constant_node_attributes_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.bin"), [0u8; 8]).unwrap();
        let mut m = external_tensor(vec![2], &[("location", "d.bin")]);
        let g = m.graph.as_mut().unwrap();
        let t = g.initializer.pop().unwrap();
        g.node.push(pb::NodeProto {
            op_type: "Constant".into(),
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                t: Some(t),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(has_external(&m));
        inline(&mut m, Some(dir.path()), "m.onnx").unwrap();
        assert!(!has_external(&m));
    }

    #[test]
    fn malformed_references_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.bin"), [0u8; 16]).unwrap();
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("offset", "0")], "has no location"),
            (
                &[("location", "d.bin"), ("offset", "-1")],
                "is not a byte count",
            ),
            (
                &[("location", "d.bin"), ("length", "12")],
                "does not match its shape",
            ),
            (
                &[("location", "d.bin"), ("offset", "4")],
                "does not match its shape",
            ),
        ];
        for (entries, what) in cases {
            let err = inline_err(&mut external_tensor(vec![4], entries), Some(dir.path()));
            assert!(err.starts_with("m.onnx: tensor 'w': "), "{err}");
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn split_then_inline_gives_back_the_tensors() {
        use prost::Message;
        let t = |name: &str, n: usize| TensorProto {
            name: name.into(),
            dims: vec![n as i64],
            data_type: DataType::Float as i32,
            raw_data: (0..n * 4).map(|i| i as u8).collect(),
            ..Default::default()
        };
        let model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                initializer: vec![t("a", 3), t("b", 5)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (bytes, data) = split(&model.encode_to_vec(), "m.onnx.data").unwrap();
        let mut back = pb::ModelProto::decode(&bytes[..]).unwrap();
        assert!(has_external(&back));
        let offsets: Vec<&str> = back.graph.as_ref().unwrap().initializer[1]
            .external_data
            .iter()
            .filter(|e| e.key == "offset")
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(offsets, ["64"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx.data"), data).unwrap();
        inline(&mut back, Some(dir.path()), "m.onnx").unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn integer_tensors_and_resize_parameters_stay_inline() {
        use prost::Message;
        let t = |name: &str, data_type: DataType| TensorProto {
            name: name.into(),
            dims: vec![4],
            data_type: data_type as i32,
            raw_data: vec![1; 4 * element_size(data_type as i32).unwrap() as usize],
            ..Default::default()
        };
        let resize = pb::NodeProto {
            op_type: "Resize".into(),
            input: vec!["w".into(), String::new(), "scales".into()],
            ..Default::default()
        };
        let model = pb::ModelProto {
            graph: Some(pb::GraphProto {
                node: vec![resize],
                initializer: vec![
                    t("w", DataType::Float),
                    t("axes", DataType::Int64),
                    t("scales", DataType::Float),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (bytes, data) = split(&model.encode_to_vec(), "m.onnx.data").unwrap();
        let back = pb::ModelProto::decode(&bytes[..]).unwrap();
        let inits = &back.graph.unwrap().initializer;
        let external: Vec<bool> = inits.iter().map(is_external).collect();
        assert_eq!(external, [true, false, false]);
        assert_eq!(data.len(), 16);
        assert_eq!(
            inits[1].raw_data,
            model.graph.unwrap().initializer[1].raw_data
        );
    }

    #[test]
    fn without_a_directory_external_data_is_an_error() {
        let err = inline_err(
            &mut external_tensor(vec![4], &[("location", "d.bin")]),
            None,
        );
        assert!(err.contains("import the model from its file"), "{err}");
    }

    #[test]
    fn unsupported_element_type_and_huge_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = external_tensor(vec![4], &[("location", "d.bin")]);
        m.graph.as_mut().unwrap().initializer[0].data_type = DataType::String as i32;
        assert!(inline_err(&mut m, Some(dir.path())).contains("cannot be stored as external"));
        let mut m = external_tensor(vec![i64::MAX, 4], &[("location", "d.bin")]);
        assert!(inline_err(&mut m, Some(dir.path())).contains("the limit for one tensor"));
        let mut m = external_tensor(vec![-1], &[("location", "d.bin")]);
        assert!(inline_err(&mut m, Some(dir.path())).contains("the limit for one tensor"));
    }
}
