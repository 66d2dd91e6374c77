//! The graph: nodes in topological order, named values, constant initializers, model metadata.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::op::Op;
use super::tensor::Tensor;
use crate::error::{Error, Result};

/// A dimension of a graph input or output: fixed, the one symbolic batch dimension, or another
/// symbolic dimension of the model fixed to a size for analysis (`--input-shape`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// The symbolic batch dimension, with the name the model gave it (e.g. "batch_size").
    Batch(String),
    /// A symbolic dimension of the model (e.g. "height"), computed at `size`; an export may
    /// write it back as symbolic once that is proven safe (`verify::sizes`).
    Sized {
        name: String,
        size: usize,
    },
}

/// Dims written for people: `[batch, 1, 28, 28]`.
pub struct Dims<'a>(pub &'a [Dim]);

impl std::fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Dim::Fixed(n) => write!(f, "{n}")?,
                Dim::Batch(name) => f.write_str(name)?,
                Dim::Sized { name, size } => write!(f, "{name}={size}")?,
            }
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Dim>,
}

impl ValueInfo {
    /// Concrete shape for a given batch size.
    pub fn shape(&self, batch: usize) -> Vec<usize> {
        self.dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Batch(_) => batch,
                Dim::Sized { size, .. } => *size,
            })
            .collect()
    }

    /// Whether a dim other than the batch is symbolic (sized for analysis).
    pub fn has_sized_dim(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, Dim::Sized { .. }))
    }

    /// The dims with every sized symbolic dim replaced by its size.
    pub fn frozen(&self) -> ValueInfo {
        let dims = self
            .dims
            .iter()
            .map(|d| match d {
                Dim::Sized { size, .. } => Dim::Fixed(*size),
                other => other.clone(),
            })
            .collect();
        ValueInfo {
            name: self.name.clone(),
            dims,
        }
    }

    pub fn has_batch_dim(&self) -> bool {
        self.dims.iter().any(|d| matches!(d, Dim::Batch(_)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// Model-level metadata carried through import and export unchanged (except the producer).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelMeta {
    pub ir_version: i64,
    /// (domain, version); the default domain is "".
    pub opset_imports: Vec<(String, i64)>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata_props: Vec<(String, String)>,
}

impl ModelMeta {
    /// Version of the default ONNX domain.
    pub fn opset(&self) -> i64 {
        self.opset_imports
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|(_, v)| *v)
            .unwrap_or(1)
    }
}

/// Element type of a graph input. The interpreter holds every value as f32 (token ids and masks
/// are exact there up to 2^24); the type is what the model declares and its exports write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ElemType {
    #[default]
    F32,
    /// Token ids, attention masks.
    I64,
    I32,
    Bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub inputs: Vec<ValueInfo>,
    /// Graph inputs that are not float32, by name (absent: float32).
    pub input_types: BTreeMap<String, ElemType>,
    pub outputs: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    pub initializers: BTreeMap<String, Tensor>,
    pub meta: ModelMeta,
}

impl Graph {
    /// Element type of graph input `name`.
    pub fn input_type(&self, name: &str) -> ElemType {
        self.input_types.get(name).copied().unwrap_or_default()
    }

    /// Which node produces each value (graph inputs and initializers have no producer).
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut map = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                map.insert(o.as_str(), i);
            }
        }
        map
    }

    /// Which nodes read each value, in node order.
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in &n.inputs {
                map.entry(inp.as_str()).or_default().push(i);
            }
        }
        map
    }

    /// Checks that every value is defined before it is read and defined once.
    pub fn validate(&self) -> Result<()> {
        let mut defined: HashSet<&str> = self.initializers.keys().map(|s| s.as_str()).collect();
        for i in &self.inputs {
            defined.insert(&i.name);
        }
        for n in &self.nodes {
            for inp in &n.inputs {
                if !defined.contains(inp.as_str()) {
                    return Err(Error::node(
                        &n.name,
                        n.op.onnx_type(),
                        format!("input '{inp}' is not defined before this node"),
                    ));
                }
            }
            for o in &n.outputs {
                if !defined.insert(o) {
                    return Err(Error::node(
                        &n.name,
                        n.op.onnx_type(),
                        format!("output '{o}' is defined twice"),
                    ));
                }
            }
        }
        for o in &self.outputs {
            if !defined.contains(o.name.as_str()) {
                return Err(Error::InvalidModel(format!(
                    "graph output '{}' is not produced by any node",
                    o.name
                )));
            }
        }
        Ok(())
    }

    /// Shapes of every value for a given batch size (graph inputs' symbolic dim set to `batch`).
    pub fn infer_shapes(&self, batch: usize) -> Result<HashMap<String, Vec<usize>>> {
        let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
        for (name, t) in &self.initializers {
            shapes.insert(name.clone(), t.shape.clone());
        }
        for i in &self.inputs {
            shapes.insert(i.name.clone(), i.shape(batch));
        }
        for n in &self.nodes {
            let ins: Vec<&[usize]> = n
                .inputs
                .iter()
                .map(|name| shapes.get(name).map(|s| s.as_slice()))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::node(&n.name, n.op.onnx_type(), "an input has no known shape")
                })?;
            let out = super::shape::infer(&n.op, &ins)
                .map_err(|reason| Error::node(&n.name, n.op.onnx_type(), reason))?;
            for o in &n.outputs {
                shapes.insert(o.clone(), out.clone());
            }
        }
        Ok(shapes)
    }
}
