//! ModelProto -> ir::Graph.
//!
//! Shape-computation chains (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) are folded by
//! evaluating them twice, with two different batch sizes ("probes"). An element equal in both
//! probes is a constant; one that follows the batch size becomes the Reshape's copy (0) or
//! inferred (-1) dimension. Static shapes are tracked per probe as nodes are mapped.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;

use super::attrs::Attrs;
use super::fold::{Known, fold};
use super::input_shape::{Declared, InputShapes};

mod cx;
use super::pb::{self, NodeProto, ValueInfoProto, tensor_shape_proto::dimension, type_proto};
use crate::error::{Error, Result};
use crate::ir::{Dim, ElemType, Graph, ModelMeta, Node, Op, Tensor, ValueInfo};
use crate::ops::FOLDED_OPS;
pub use cx::ImportCx;
use cx::Rewrite;

/// Batch sizes used to tell batch-dependent shape values from constants.
const PROBES: [usize; 2] = [3, 5];

/// Decodes and imports an ONNX model. `source` names the file in error messages.
pub fn import_bytes(bytes: &[u8], source: &str) -> Result<Graph> {
    Ok(import_sized(bytes, source, &InputShapes::default())?.graph)
}

/// A graph imported with its symbolic dims sized (`--input-shape`).
#[derive(Debug, Clone)]
pub struct Imported {
    pub graph: Graph,
    /// What the import resolved for the given sizes only, in words (e.g. SAME pads of a strided
    /// conv): an export with symbolic dims would be wrong at other sizes.
    pub size_dependent: Vec<String>,
}

/// Decodes and imports an ONNX model, sizing its symbolic dims by `sizes`.
pub fn import_sized(bytes: &[u8], source: &str, sizes: &InputShapes) -> Result<Imported> {
    if bytes.is_empty() {
        return Err(Error::NotOnnx {
            path: source.into(),
            reason: "the file is empty".into(),
        });
    }
    let mut model = pb::ModelProto::decode(bytes).map_err(|e| Error::NotOnnx {
        path: source.into(),
        reason: format!("protobuf decoding failed ({e})"),
    })?;
    // Bytes have no directory to find side files in (`read_model` inlines them from a file).
    super::external::inline(&mut model, None, source)?;
    let Some(graph) = model
        .graph
        .as_ref()
        .filter(|g| !g.node.is_empty() || !g.output.is_empty())
    else {
        return Err(Error::NotOnnx {
            path: source.into(),
            reason: "it contains no graph".into(),
        });
    };
    if model.ir_version == 0 || model.opset_import.is_empty() {
        return Err(Error::NotOnnx {
            path: source.into(),
            reason: "missing ir_version or opset_import (truncated or not an ONNX file?)".into(),
        });
    }
    super::validate::model(&model)?;
    Importer::new(&model)?
        .run(graph, sizes)
        .map_err(|e| position_hint(e, graph, sizes))
}

/// A position table's Gather that fails at the size `--input-shape` gave: says that the
/// table bounds the sequence length.
fn position_hint(e: Error, g: &pb::GraphProto, sizes: &InputShapes) -> Error {
    match e {
        Error::Node {
            node,
            op_type,
            reason,
        } if !sizes.is_empty() => {
            let table = super::positions::gathers(g)
                .into_iter()
                .find(|p| p.node == node)
                .map(|p| p.rows());
            let reason = match table {
                Some(rows) => format!(
                    "{reason} (a position table of {rows} rows: the sequence length --input-shape \
                     gives is longer; at most {rows})"
                ),
                None => reason,
            };
            Error::Node {
                node,
                op_type,
                reason,
            }
        }
        e => e,
    }
}

struct Importer {
    meta: ModelMeta,
    opset: i64,
    /// Per probe: constants (initializers and folded values) and static shapes of all values.
    consts: [HashMap<String, Tensor>; 2],
    shapes: [HashMap<String, Vec<usize>>; 2],
    nodes: Vec<Node>,
    used_names: HashSet<String>,
    /// Whether an input has a sized symbolic dim (`--input-shape`).
    sized: bool,
    /// Resolutions valid only at the given sizes (see `Imported::size_dependent`).
    size_dependent: RefCell<Vec<String>>,
    /// Graph inputs that are not float32.
    input_types: BTreeMap<String, ElemType>,
    /// For a folded value that depends on the batch size: the computed value whose Shape its
    /// chain starts at (an op that needs the batch size at run time reads it from there).
    batch_sources: HashMap<String, String>,
}

fn meta_of(m: &pb::ModelProto) -> ModelMeta {
    ModelMeta {
        ir_version: m.ir_version,
        opset_imports: m
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        metadata_props: m
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
    }
}

/// Dims of a graph input or output; `None` for unknown rank.
fn value_dims(v: &ValueInfoProto) -> Option<Vec<Option<(i64, String)>>> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(n)) if *n > 0 => Some((*n, String::new())),
                Some(dimension::Value::DimParam(p)) => Some((-1, p.clone())),
                _ => Some((-1, String::new())),
            })
            .collect(),
    )
}

/// A graph input's dims as `--input-shape` resolves them: fixed sizes, or symbolic names
/// (`None`: no static shape).
fn declared_dims(v: &ValueInfoProto) -> Option<Vec<Declared>> {
    Some(
        value_dims(v)?
            .into_iter()
            .map(|d| match d {
                Some((n, _)) if n > 0 => Ok(n as usize),
                Some((_, param)) => Err(param),
                None => Err(String::new()),
            })
            .collect(),
    )
}

/// The element type of a graph input: float32, or int64 / bool (token ids, attention masks).
fn input_elem_type(v: &ValueInfoProto) -> Result<ElemType> {
    use pb::tensor_proto::DataType;
    match DataType::try_from(elem_type(v)) {
        Ok(DataType::Float) => Ok(ElemType::F32),
        Ok(DataType::Int64) => Ok(ElemType::I64),
        Ok(DataType::Int32) => Ok(ElemType::I32),
        Ok(DataType::Bool) => Ok(ElemType::Bool),
        _ => Err(Error::InvalidModel(format!(
            "graph input '{}' is not float32, int64, int32 or bool (the supported input types)",
            v.name
        ))),
    }
}

fn elem_type(v: &ValueInfoProto) -> i32 {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type,
        _ => 0,
    }
}

impl Importer {
    fn new(model: &pb::ModelProto) -> Result<Self> {
        let meta = meta_of(model);
        for (domain, version) in &meta.opset_imports {
            let supported = super::validate::OPSETS;
            if (domain.is_empty() || domain == "ai.onnx") && !supported.contains(version) {
                return Err(Error::InvalidModel(format!(
                    "opset {version} is not supported (supported: {} to {})",
                    supported.start(),
                    supported.end()
                )));
            }
        }
        Ok(Importer {
            opset: meta.opset(),
            meta,
            consts: Default::default(),
            shapes: Default::default(),
            nodes: Vec::new(),
            used_names: HashSet::new(),
            sized: false,
            size_dependent: RefCell::new(Vec::new()),
            input_types: BTreeMap::new(),
            batch_sources: HashMap::new(),
        })
    }

    fn run(mut self, g: &pb::GraphProto, sizes: &InputShapes) -> Result<Imported> {
        for init in &g.initializer {
            let t = super::tensor::from_proto(init)?;
            for p in 0..2 {
                self.shapes[p].insert(init.name.clone(), t.shape.clone());
                self.consts[p].insert(init.name.clone(), t.clone());
            }
        }
        let inputs = self.graph_inputs(g, sizes)?;
        for (i, n) in g.node.iter().enumerate() {
            self.node(n, i)?;
        }
        let outputs = self.graph_outputs(g)?;
        // Keep only constants that compute nodes read as data.
        let mut initializers = BTreeMap::new();
        for n in &self.nodes {
            for inp in &n.inputs {
                if let Some(t) = self.consts[0].get(inp) {
                    if !self.consts[1].get(inp).is_some_and(|u| u.same_bits(t)) {
                        return Err(Error::node(
                            &n.name,
                            n.op.onnx_type(),
                            format!("input '{inp}' depends on the batch size"),
                        ));
                    }
                    initializers.insert(inp.clone(), t.clone());
                }
            }
        }
        let graph = Graph {
            name: g.name.clone(),
            inputs,
            input_types: self.input_types,
            outputs,
            nodes: self.nodes,
            initializers,
            meta: self.meta,
        };
        graph.validate()?;
        Ok(Imported {
            graph,
            size_dependent: self.size_dependent.into_inner(),
        })
    }

    fn graph_inputs(&mut self, g: &pb::GraphProto, sizes: &InputShapes) -> Result<Vec<ValueInfo>> {
        let data_inputs: Vec<&ValueInfoProto> = g
            .input
            .iter()
            // An initializer listed as input (ir_version < 4 style) is not a data input.
            .filter(|v| !self.consts[0].contains_key(&v.name))
            .collect();
        let names: Vec<&str> = data_inputs.iter().map(|v| v.name.as_str()).collect();
        let declared: Vec<Option<Vec<Declared>>> =
            data_inputs.iter().map(|v| declared_dims(v)).collect();
        let named: Vec<(&str, &[Declared])> = names
            .iter()
            .zip(&declared)
            .map(|(n, d)| (*n, d.as_deref().unwrap_or_default()))
            .collect();
        sizes.check(&named)?;
        let mut batch_name: Option<String> = None;
        let mut inputs = Vec::new();
        for (v, declared) in data_inputs.into_iter().zip(&declared) {
            let elem = input_elem_type(v)?;
            if elem != ElemType::F32 {
                self.input_types.insert(v.name.clone(), elem);
            }
            let declared = declared.as_deref().ok_or_else(|| {
                Error::InvalidModel(format!("graph input '{}' has no static shape", v.name))
            })?;
            let dims = sizes.resolve(&v.name, &names, declared)?;
            let at_largest_probe: Vec<usize> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) | Dim::Sized { size: n, .. } => *n,
                    Dim::Batch(_) => PROBES[1],
                })
                .collect();
            super::validate::bounded_elements(&at_largest_probe)
                .map_err(|e| Error::InvalidModel(format!("graph input '{}': {e}", v.name)))?;
            if let Some(Dim::Batch(name)) = dims.first() {
                if batch_name.as_ref().is_some_and(|b| b != name) {
                    return Err(Error::InvalidModel(format!(
                        "graph input '{}': symbolic dim '{name}' at axis 0; only one symbolic batch dimension (axis 0) is supported",
                        v.name
                    )));
                }
                batch_name = Some(name.clone());
            }
            self.sized |= dims.iter().any(|d| matches!(d, Dim::Sized { .. }));
            let info = ValueInfo {
                name: v.name.clone(),
                dims,
            };
            for (p, &b) in PROBES.iter().enumerate() {
                self.shapes[p].insert(info.name.clone(), info.shape(b));
            }
            inputs.push(info);
        }
        if inputs.is_empty() {
            return Err(Error::InvalidModel(
                "the graph has no (non-constant) input".into(),
            ));
        }
        Ok(inputs)
    }

    fn graph_outputs(&self, g: &pb::GraphProto) -> Result<Vec<ValueInfo>> {
        g.output
            .iter()
            .map(|v| {
                let (Some(s0), Some(s1)) =
                    (self.shapes[0].get(&v.name), self.shapes[1].get(&v.name))
                else {
                    return Err(Error::InvalidModel(format!(
                        "graph output '{}' is never computed",
                        v.name
                    )));
                };
                if self.consts[0].contains_key(&v.name) {
                    return Err(Error::InvalidModel(format!(
                        "graph output '{}' is a constant; only computed outputs are supported",
                        v.name
                    )));
                }
                // Keep the model's own name for the batch dim when it declared one.
                let declared = value_dims(v);
                let dims = s0
                    .iter()
                    .zip(s1)
                    .enumerate()
                    .map(|(i, (&a, &b))| {
                        let param = declared
                            .as_ref()
                            .and_then(|d| d.get(i).cloned().flatten())
                            .map(|(_, p)| p)
                            .filter(|p| !p.is_empty());
                        match param {
                            // A dim the model declares symbolic, computed at --input-shape's size.
                            Some(name) if a == b && self.sized => Dim::Sized { name, size: a },
                            _ if a == b => Dim::Fixed(a),
                            name => Dim::Batch(name.unwrap_or_else(|| "batch".into())),
                        }
                    })
                    .collect();
                Ok(ValueInfo {
                    name: v.name.clone(),
                    dims,
                })
            })
            .collect()
    }

    fn unique_name(&mut self, n: &NodeProto, index: usize) -> String {
        let base = if n.name.is_empty() {
            format!("{}_{index}", n.op_type)
        } else {
            n.name.clone()
        };
        self.fresh_name(&base)
    }

    fn known(&self, p: usize, name: &str) -> Known<'_> {
        if name.is_empty() {
            return Known::Missing;
        }
        match (self.consts[p].get(name), self.shapes[p].get(name)) {
            (Some(t), _) => Known::Const(t),
            (None, Some(s)) => Known::ShapeOnly(s),
            _ => Known::Missing,
        }
    }

    /// A constant input's value in probe 0, required to be batch independent.
    fn const_input(&self, n: &NodeProto, name: &str, i: usize) -> Result<Option<Tensor>> {
        let Some(input) = n.input.get(i).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let (Some(a), Some(b)) = (self.consts[0].get(input), self.consts[1].get(input)) else {
            return Err(Error::node(
                name,
                &n.op_type,
                format!("input {i} ('{input}') must be a constant"),
            ));
        };
        if !a.same_bits(b) {
            return Err(Error::node(
                name,
                &n.op_type,
                format!("input {i} ('{input}') depends on the batch size"),
            ));
        }
        Ok(Some(a.clone()))
    }

    fn node(&mut self, n: &NodeProto, index: usize) -> Result<()> {
        let name = self.unique_name(n, index);
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(Error::UnsupportedOp {
                node: name,
                op_type: format!("{}:{}", n.domain, n.op_type),
                opset: self.opset,
            });
        }
        let op_type = n.op_type.as_str();
        let foldable = FOLDED_OPS.contains(&op_type)
            || matches!(
                op_type,
                "Add"
                    | "Sub"
                    | "Mul"
                    | "Div"
                    | "Mod"
                    | "Sqrt"
                    | "Equal"
                    | "Where"
                    | "Concat"
                    | "Identity"
                    | "Reshape"
                    | "Transpose"
            );
        if foldable {
            let mut folded: [Option<Tensor>; 2] = [None, None];
            for (p, slot) in folded.iter_mut().enumerate() {
                let ins: Vec<Known> = n.input.iter().map(|i| self.known(p, i)).collect();
                let all_known = ins
                    .iter()
                    .zip(&n.input)
                    .all(|(k, i)| i.is_empty() || !matches!(k, Known::Missing));
                if !all_known {
                    return Err(Error::node(
                        &name,
                        op_type,
                        "an input is not computed before this node",
                    ));
                }
                *slot = fold(n, &name, &ins)?;
            }
            // A result whose shape follows the batch size is data (a class token expanded to
            // the batch): the op computes it at run time when it can.
            let batch_shaped = matches!(&folded, [Some(a), Some(b)] if a.shape != b.shape)
                && crate::ops::importer(op_type).is_some();
            if let ([Some(a), Some(b)], false) = (folded, batch_shaped) {
                let out = n
                    .output
                    .first()
                    .ok_or_else(|| Error::node(&name, op_type, "no output"))?;
                if a != b {
                    self.note_batch_source(n, out);
                }
                for (p, t) in [a, b].into_iter().enumerate() {
                    self.shapes[p].insert(out.clone(), t.shape.clone());
                    self.consts[p].insert(out.clone(), t);
                }
                return Ok(());
            }
            if FOLDED_OPS.contains(&op_type) && crate::ops::importer(op_type).is_none() {
                return Err(Error::UnsupportedOp {
                    node: name,
                    op_type: format!("{op_type} on non-constant data"),
                    opset: self.opset,
                });
            }
        }
        if let Some(import_parts) = crate::ops::per_output_importer(op_type) {
            // One single-output op per output (Split becomes one Slice per piece).
            let parts = import_parts(&ImportCx {
                node: n,
                name: &name,
                opset: self.opset,
                attrs: Attrs::new(n, &name),
                importer: self,
                rewrites: RefCell::new(Vec::new()),
                extra_inputs: RefCell::new(Vec::new()),
            })?;
            for (k, (op, data_inputs)) in parts.into_iter().enumerate() {
                let Some(out_name) = n.output.get(k).filter(|s| !s.is_empty()) else {
                    continue;
                };
                let part_name = if k == 0 {
                    name.clone()
                } else {
                    self.fresh_name(&format!("{name}__{k}"))
                };
                let inputs = data_inputs
                    .iter()
                    .map(|&i| input_name(n, &name, i))
                    .collect::<Result<_>>()?;
                self.push_node(part_name, op, inputs, out_name.clone())?;
            }
            return Ok(());
        }
        let Some(import) = crate::ops::importer(op_type) else {
            return Err(Error::UnsupportedOp {
                node: name,
                op_type: op_type.into(),
                opset: self.opset,
            });
        };
        let cx = ImportCx {
            node: n,
            name: &name,
            opset: self.opset,
            attrs: Attrs::new(n, &name),
            importer: self,
            rewrites: RefCell::new(Vec::new()),
            extra_inputs: RefCell::new(Vec::new()),
        };
        let (op, data_inputs) = import(&cx)?;
        let rewrites = cx.rewrites.into_inner();
        let extra_inputs = cx.extra_inputs.into_inner();
        let mut inputs: Vec<String> = data_inputs
            .iter()
            .map(|&i| input_name(n, &name, i))
            .collect::<Result<_>>()?;
        inputs.extend(extra_inputs);
        for Rewrite {
            input,
            op,
            suffix,
            value,
        } in rewrites
        {
            let node_name = self.fresh_name(&format!("{name}__{suffix}"));
            let read = input_name(n, &name, input)?;
            self.push_node(node_name, op, vec![read], value.clone())?;
            for (k, &i) in data_inputs.iter().enumerate() {
                if i == input {
                    inputs[k] = value.clone();
                }
            }
        }
        let out_name = n
            .output
            .first()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::node(&name, op_type, "no output"))?;
        // Secondary outputs (Dropout mask, BN running stats, MaxPool indices) are not supported.
        for extra in n.output.iter().skip(1).filter(|s| !s.is_empty()) {
            self.shapes[0].remove(extra);
            self.shapes[1].remove(extra);
        }
        self.push_node(name, op, inputs, out_name.clone())
    }

    /// Records where the batch-dependent value `out` of folded node `n` gets the batch size:
    /// the computed input of a Shape, else the source of an input that has one.
    fn note_batch_source(&mut self, n: &NodeProto, out: &str) {
        let computed =
            |i: &String| !self.consts[0].contains_key(i) && self.shapes[0].contains_key(i);
        let source = match n.input.first() {
            Some(x) if n.op_type == "Shape" && computed(x) => Some(x.clone()),
            _ => n
                .input
                .iter()
                .find_map(|i| self.batch_sources.get(i).cloned()),
        };
        if let Some(s) = source {
            self.batch_sources.insert(out.to_string(), s);
        }
    }

    /// `base`, or `base_k` with the first k that is not used yet.
    fn fresh_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// Infers the output shape in both probes and appends the node.
    fn push_node(&mut self, name: String, op: Op, inputs: Vec<String>, out: String) -> Result<()> {
        let op_type = op.onnx_type();
        for p in 0..2 {
            let ins: Vec<&[usize]> = inputs
                .iter()
                .map(|i| self.shapes[p].get(i).map(|s| s.as_slice()))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::node(&name, op_type, "an input is not computed before this node")
                })?;
            let shape =
                crate::ir::shape::infer(&op, &ins).map_err(|e| Error::node(&name, op_type, e))?;
            super::validate::bounded_elements(&shape)
                .map_err(|e| Error::node(&name, op_type, format!("output {e}")))?;
            self.shapes[p].insert(out.clone(), shape);
        }
        self.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: vec![out],
        });
        Ok(())
    }

    fn input_shape(&self, n: &NodeProto, i: usize) -> Option<&Vec<usize>> {
        n.input.get(i).and_then(|s| self.shapes[0].get(s))
    }
}

/// The name of input `i` of a node, or an error naming the node when it has no such input.
fn input_name(n: &NodeProto, name: &str, i: usize) -> Result<String> {
    n.input.get(i).cloned().ok_or_else(|| {
        Error::node(
            name,
            &n.op_type,
            format!("input {i} is missing (the node has {})", n.input.len()),
        )
    })
}
