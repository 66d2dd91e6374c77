//! ModelProto -> ir::Graph.
//!
//! Shape-computation chains (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) are folded by
//! evaluating them twice, with two different batch sizes ("probes"). An element equal in both
//! probes is a constant; one that follows the batch size becomes the Reshape's copy (0) or
//! inferred (-1) dimension. Static shapes are tracked per probe as nodes are mapped.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;

use super::attrs::Attrs;
use super::fold::{Known, fold};
use super::pb::{self, NodeProto, ValueInfoProto, tensor_shape_proto::dimension, type_proto};
use crate::error::{Error, Result};
use crate::ir::op::{FOLDED_OPS, SUPPORTED_OPS};
use crate::ir::{
    Activation, BinaryOp, Dim, Graph, ModelMeta, Node, Op, PadMode, Tensor, ValueInfo, Window,
};

/// Batch sizes used to tell batch-dependent shape values from constants.
const PROBES: [usize; 2] = [3, 5];

/// Decodes and imports an ONNX model. `source` names the file in error messages.
pub fn import_bytes(bytes: &[u8], source: &str) -> Result<Graph> {
    if bytes.is_empty() {
        return Err(Error::NotOnnx {
            path: source.into(),
            reason: "the file is empty".into(),
        });
    }
    let model = pb::ModelProto::decode(bytes).map_err(|e| Error::NotOnnx {
        path: source.into(),
        reason: format!("protobuf decoding failed ({e})"),
    })?;
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
    Importer::new(&model)?.run(graph)
}

struct Importer {
    meta: ModelMeta,
    opset: i64,
    /// Per probe: constants (initializers and folded values) and static shapes of all values.
    consts: [HashMap<String, Tensor>; 2],
    shapes: [HashMap<String, Vec<usize>>; 2],
    nodes: Vec<Node>,
    used_names: HashSet<String>,
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
            if (domain.is_empty() || domain == "ai.onnx") && !(1..=25).contains(version) {
                return Err(Error::InvalidModel(format!(
                    "opset {version} is not supported (supported: 1 to 25)"
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
        })
    }

    fn run(mut self, g: &pb::GraphProto) -> Result<Graph> {
        for init in &g.initializer {
            let t = super::tensor::from_proto(init)?;
            for p in 0..2 {
                self.shapes[p].insert(init.name.clone(), t.shape.clone());
                self.consts[p].insert(init.name.clone(), t.clone());
            }
        }
        let inputs = self.graph_inputs(g)?;
        for (i, n) in g.node.iter().enumerate() {
            self.node(n, i)?;
        }
        let outputs = self.graph_outputs(g)?;
        // Keep only constants that compute nodes read as data.
        let mut initializers = BTreeMap::new();
        for n in &self.nodes {
            for inp in &n.inputs {
                if let Some(t) = self.consts[0].get(inp) {
                    if self.consts[1].get(inp) != Some(t) {
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
            outputs,
            nodes: self.nodes,
            initializers,
            meta: self.meta,
        };
        graph.validate()?;
        Ok(graph)
    }

    fn graph_inputs(&mut self, g: &pb::GraphProto) -> Result<Vec<ValueInfo>> {
        let mut batch_name: Option<String> = None;
        let mut inputs = Vec::new();
        for v in &g.input {
            if self.consts[0].contains_key(&v.name) {
                continue; // an initializer listed as input (ir_version < 4 style)
            }
            if elem_type(v) != pb::tensor_proto::DataType::Float as i32 {
                return Err(Error::InvalidModel(format!(
                    "graph input '{}' is not float32 (only float32 inputs are supported)",
                    v.name
                )));
            }
            let dims = value_dims(v).ok_or_else(|| {
                Error::InvalidModel(format!("graph input '{}' has no static shape", v.name))
            })?;
            let mut out = Vec::new();
            for (axis, d) in dims.into_iter().enumerate() {
                let (n, param) = d.unwrap_or((-1, String::new()));
                if n > 0 {
                    out.push(Dim::Fixed(n as usize));
                    continue;
                }
                let name = if param.is_empty() {
                    "batch".to_string()
                } else {
                    param
                };
                if axis != 0 || batch_name.as_ref().is_some_and(|b| *b != name) {
                    return Err(Error::InvalidModel(format!(
                        "graph input '{}': symbolic dim '{name}' at axis {axis}; only one symbolic batch dimension (axis 0) is supported",
                        v.name
                    )));
                }
                batch_name = Some(name.clone());
                out.push(Dim::Batch(name));
            }
            let info = ValueInfo {
                name: v.name.clone(),
                dims: out,
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
                        if a == b {
                            Dim::Fixed(a)
                        } else {
                            let name = declared
                                .as_ref()
                                .and_then(|d| d.get(i).cloned().flatten())
                                .map(|(_, p)| p)
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "batch".into());
                            Dim::Batch(name)
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
        let mut name = base.clone();
        let mut k = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
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
        if a != b {
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
                "Add" | "Sub" | "Mul" | "Div" | "Concat" | "Identity"
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
            if let [Some(a), Some(b)] = folded {
                let out = n
                    .output
                    .first()
                    .ok_or_else(|| Error::node(&name, op_type, "no output"))?;
                for (p, t) in [a, b].into_iter().enumerate() {
                    self.shapes[p].insert(out.clone(), t.shape.clone());
                    self.consts[p].insert(out.clone(), t);
                }
                return Ok(());
            }
            if FOLDED_OPS.contains(&op_type) {
                return Err(Error::UnsupportedOp {
                    node: name,
                    op_type: format!("{op_type} on non-constant data"),
                    opset: self.opset,
                });
            }
        }
        if !SUPPORTED_OPS.contains(&op_type) {
            return Err(Error::UnsupportedOp {
                node: name,
                op_type: op_type.into(),
                opset: self.opset,
            });
        }
        let (op, data_inputs) = self.map_op(n, &name)?;
        let mut inputs: Vec<String> = data_inputs.iter().map(|&i| n.input[i].clone()).collect();
        if let Op::Binary(_) = op
            && let Some(aligned) = self.legacy_broadcast(n, &name)?
        {
            inputs[1] = aligned;
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
        for p in 0..2 {
            let ins: Vec<&[usize]> = inputs
                .iter()
                .map(|i| self.shapes[p].get(i).map(|s| s.as_slice()))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::node(&name, op_type, "an input is not computed before this node")
                })?;
            let out =
                crate::ir::shape::infer(&op, &ins).map_err(|e| Error::node(&name, op_type, e))?;
            self.shapes[p].insert(out_name.clone(), out);
        }
        self.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: vec![out_name.clone()],
        });
        Ok(())
    }

    /// Opset < 7 binary ops broadcast B against A starting at `axis` (not numpy's suffix rule).
    /// Where that differs from numpy, B is reshaped with trailing 1s by an inserted Reshape.
    fn legacy_broadcast(&mut self, n: &NodeProto, name: &str) -> Result<Option<String>> {
        let a = Attrs::new(n, name);
        if self.opset >= 7 || a.int("broadcast", 0) == 0 || !a.has("axis") {
            return Ok(None);
        }
        let (Some(xa), Some(xb)) = (
            self.input_shape(n, 0).cloned(),
            self.input_shape(n, 1).cloned(),
        ) else {
            return Err(a.err("input shape unknown"));
        };
        let axis = crate::ir::shape::norm_axis(a.int("axis", 0), xa.len()).map_err(|e| a.err(e))?;
        if axis + xb.len() > xa.len() {
            return Err(a.err(format!(
                "cannot broadcast {xb:?} into {xa:?} at axis {axis}"
            )));
        }
        if axis + xb.len() == xa.len() {
            return Ok(None); // same as numpy's rule
        }
        let mut target: Vec<i64> = xb.iter().map(|&d| d as i64).collect();
        target.extend(std::iter::repeat_n(1, xa.len() - axis - xb.len()));
        let out = format!("{}__aligned_for_{name}", n.input[1]);
        let op = Op::Reshape { shape: target };
        for p in 0..2 {
            let shape = self.shapes[p][&n.input[1]].clone();
            let s = crate::ir::shape::infer(&op, &[&shape]).map_err(|e| a.err(e))?;
            self.shapes[p].insert(out.clone(), s);
        }
        let reshape_name = format!("{name}__align");
        self.used_names.insert(reshape_name.clone());
        self.nodes.push(Node {
            name: reshape_name,
            op,
            inputs: vec![n.input[1].clone()],
            outputs: vec![out.clone()],
        });
        Ok(Some(out))
    }

    fn input_shape(&self, n: &NodeProto, i: usize) -> Option<&Vec<usize>> {
        n.input.get(i).and_then(|s| self.shapes[0].get(s))
    }

    /// Maps attributes to a typed op; returns the positions of the data inputs it keeps.
    fn map_op(&self, n: &NodeProto, name: &str) -> Result<(Op, Vec<usize>)> {
        let a = Attrs::new(n, name);
        let present = |i: usize| n.input.get(i).is_some_and(|s| !s.is_empty());
        let opset = self.opset;
        let unary = |act| Ok((Op::Activation(act), vec![0]));
        match n.op_type.as_str() {
            "Conv" => {
                let w = self
                    .input_shape(n, 1)
                    .ok_or_else(|| a.err("weight shape unknown"))?;
                let x = self
                    .input_shape(n, 0)
                    .ok_or_else(|| a.err("input shape unknown"))?;
                let kernel = a.usizes("kernel_shape")?.unwrap_or_else(|| w[2..].to_vec());
                let window = self.window(&a, kernel, x)?;
                let group = a.int("group", 1);
                if group < 1 {
                    return Err(a.err(format!("group {group} must be positive")));
                }
                let mut ins = vec![0, 1];
                if present(2) {
                    ins.push(2);
                }
                Ok((
                    Op::Conv {
                        window,
                        group: group as usize,
                    },
                    ins,
                ))
            }
            "BatchNormalization" => {
                if a.int("spatial", 1) == 0 {
                    return Err(a.err("spatial = 0 (per-activation statistics) is not supported"));
                }
                if a.int("training_mode", 0) != 0 {
                    return Err(a.err(
                        "training_mode = 1 is not supported (export the model in eval mode)",
                    ));
                }
                Ok((
                    Op::BatchNorm {
                        epsilon: a.float("epsilon", 1e-5),
                    },
                    vec![0, 1, 2, 3, 4],
                ))
            }
            "Gemm" => {
                let mut ins = vec![0, 1];
                if present(2) {
                    ins.push(2);
                }
                Ok((
                    Op::Gemm {
                        alpha: a.float("alpha", 1.0),
                        beta: a.float("beta", 1.0),
                        trans_a: a.int("transA", 0) != 0,
                        trans_b: a.int("transB", 0) != 0,
                    },
                    ins,
                ))
            }
            "MatMul" => Ok((Op::MatMul, vec![0, 1])),
            "Add" => Ok((Op::Binary(BinaryOp::Add), vec![0, 1])),
            "Sub" => Ok((Op::Binary(BinaryOp::Sub), vec![0, 1])),
            "Mul" => Ok((Op::Binary(BinaryOp::Mul), vec![0, 1])),
            "Div" => Ok((Op::Binary(BinaryOp::Div), vec![0, 1])),
            "Relu" => unary(Activation::Relu),
            "LeakyRelu" => unary(Activation::LeakyRelu {
                alpha: a.float("alpha", 0.01),
            }),
            "Sigmoid" => unary(Activation::Sigmoid),
            "Tanh" => unary(Activation::Tanh),
            "HardSwish" => unary(Activation::HardSwish),
            "HardSigmoid" => unary(Activation::HardSigmoid {
                alpha: a.float("alpha", 0.2),
                beta: a.float("beta", 0.5),
            }),
            "Clip" => {
                let (min, max) = if opset < 11 {
                    (
                        a.float("min", f32::NEG_INFINITY),
                        a.float("max", f32::INFINITY),
                    )
                } else {
                    let bound = |i, default| -> Result<f32> {
                        Ok(match self.const_input(n, name, i)? {
                            Some(t) => {
                                *t.to_f32_vec().first().ok_or_else(|| a.err("empty bound"))?
                            }
                            None => default,
                        })
                    };
                    (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
                };
                unary(Activation::Clip { min, max })
            }
            "Softmax" | "LogSoftmax" => {
                let legacy = opset < 13;
                Ok((
                    Op::Softmax {
                        axis: a.int("axis", if legacy { 1 } else { -1 }),
                        log: n.op_type == "LogSoftmax",
                        legacy,
                    },
                    vec![0],
                ))
            }
            "MaxPool" => {
                if n.output.get(1).is_some_and(|s| !s.is_empty()) {
                    return Err(a.err("the Indices output is not supported"));
                }
                let x = self
                    .input_shape(n, 0)
                    .ok_or_else(|| a.err("input shape unknown"))?;
                let kernel = a
                    .usizes("kernel_shape")?
                    .ok_or_else(|| a.err("kernel_shape is required"))?;
                let window = self.window(&a, kernel, x)?;
                Ok((
                    Op::MaxPool {
                        window,
                        ceil_mode: a.int("ceil_mode", 0) != 0,
                    },
                    vec![0],
                ))
            }
            "AveragePool" => {
                let x = self
                    .input_shape(n, 0)
                    .ok_or_else(|| a.err("input shape unknown"))?;
                let kernel = a
                    .usizes("kernel_shape")?
                    .ok_or_else(|| a.err("kernel_shape is required"))?;
                let window = self.window(&a, kernel, x)?;
                if window.dilations.iter().any(|&d| d != 1) {
                    return Err(a.err("dilated average pooling is not supported"));
                }
                Ok((
                    Op::AveragePool {
                        window,
                        ceil_mode: a.int("ceil_mode", 0) != 0,
                        count_include_pad: a.int("count_include_pad", 0) != 0,
                    },
                    vec![0],
                ))
            }
            "GlobalAveragePool" => Ok((Op::GlobalAveragePool, vec![0])),
            "ReduceMean" => {
                let axes = if opset < 18 {
                    a.ints("axes").unwrap_or_default()
                } else {
                    self.const_input(n, name, 1)?
                        .map(|t| t.to_i64_vec())
                        .unwrap_or_default()
                };
                let keepdims = a.int("keepdims", 1) != 0;
                if axes.is_empty() && a.int("noop_with_empty_axes", 0) != 0 {
                    return Ok((Op::Identity, vec![0]));
                }
                Ok((Op::ReduceMean { axes, keepdims }, vec![0]))
            }
            "Flatten" => Ok((
                Op::Flatten {
                    axis: a.int("axis", 1),
                },
                vec![0],
            )),
            "Reshape" => {
                let shape = if opset < 5 {
                    a.ints("shape").unwrap_or_default()
                } else {
                    self.reshape_target(n, name)?
                };
                if a.int("allowzero", 0) != 0 && shape.contains(&0) {
                    return Err(
                        a.err("allowzero = 1 with a 0 in the target shape is not supported")
                    );
                }
                Ok((Op::Reshape { shape }, vec![0]))
            }
            "Transpose" => {
                let rank = self
                    .input_shape(n, 0)
                    .map(|s| s.len())
                    .ok_or_else(|| a.err("input shape unknown"))?;
                let perm = match a.usizes("perm")? {
                    Some(p) => p,
                    None => (0..rank).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort();
                if sorted != (0..rank).collect::<Vec<_>>() {
                    return Err(a.err(format!("perm {perm:?} is not a permutation of 0..{rank}")));
                }
                Ok((Op::Transpose { perm }, vec![0]))
            }
            "Concat" => {
                // Opsets 1-3 default to axis 1; later ones require the attribute.
                if !a.has("axis") && opset >= 4 {
                    return Err(a.err("axis is required"));
                }
                Ok((
                    Op::Concat {
                        axis: a.int("axis", 1),
                    },
                    (0..n.input.len()).collect(),
                ))
            }
            "Pad" => {
                let (pads, mode, value, axes) = if opset < 11 {
                    let pads = a
                        .ints("pads")
                        .or_else(|| a.ints("paddings"))
                        .ok_or_else(|| a.err("pads is required"))?;
                    (
                        pads,
                        a.string("mode", "constant"),
                        a.float("value", 0.0),
                        None,
                    )
                } else {
                    let pads = self
                        .const_input(n, name, 1)?
                        .ok_or_else(|| a.err("pads input is required"))?
                        .to_i64_vec();
                    let value = match self.const_input(n, name, 2)? {
                        Some(t) => t.to_f32_vec().first().copied().unwrap_or(0.0),
                        None => 0.0,
                    };
                    let axes = self.const_input(n, name, 3)?.map(|t| t.to_i64_vec());
                    (pads, a.string("mode", "constant"), value, axes)
                };
                let mode = match mode.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(a.err(format!("mode '{other}' is not supported"))),
                };
                if mode != PadMode::Constant && pads.iter().any(|&p| p < 0) {
                    return Err(a.err("negative pads are only supported in constant mode"));
                }
                let rank = self
                    .input_shape(n, 0)
                    .map(|s| s.len())
                    .ok_or_else(|| a.err("input shape unknown"))?;
                let pads = match axes {
                    None => pads,
                    Some(axes) => {
                        // Expand per-axis pads to the full rank.
                        let mut full = vec![0; 2 * rank];
                        for (k, &ax) in axes.iter().enumerate() {
                            let ax = crate::ir::shape::norm_axis(ax, rank).map_err(|e| a.err(e))?;
                            full[ax] = pads[k];
                            full[ax + rank] = pads[k + axes.len()];
                        }
                        full
                    }
                };
                Ok((Op::Pad { pads, mode, value }, vec![0]))
            }
            "Dropout" => {
                if n.output.get(1).is_some_and(|s| !s.is_empty()) {
                    // The mask output is only meaningful in training; refuse rather than guess.
                    return Err(a.err("the mask output is not supported"));
                }
                Ok((Op::Identity, vec![0]))
            }
            "Identity" => Ok((Op::Identity, vec![0])),
            other => Err(Error::UnsupportedOp {
                node: name.into(),
                op_type: other.into(),
                opset,
            }),
        }
    }

    /// Resolves Reshape's shape input, turning batch-dependent elements into 0 or -1.
    fn reshape_target(&self, n: &NodeProto, name: &str) -> Result<Vec<i64>> {
        let a = Attrs::new(n, name);
        let input = n
            .input
            .get(1)
            .ok_or_else(|| a.err("shape input is required"))?;
        let (Some(t0), Some(t1)) = (self.consts[0].get(input), self.consts[1].get(input)) else {
            return Err(a.err(format!("shape input '{input}' must be computable at import (constant or from static shapes)")));
        };
        let (t0, t1) = (t0.to_i64_vec(), t1.to_i64_vec());
        let x0 = self
            .input_shape(n, 0)
            .ok_or_else(|| a.err("input shape unknown"))?;
        let x1 = n
            .input
            .first()
            .and_then(|s| self.shapes[1].get(s))
            .ok_or_else(|| a.err("input shape unknown"))?;
        let mut out = Vec::with_capacity(t0.len());
        for (i, (&p, &q)) in t0.iter().zip(&t1).enumerate() {
            if p == q {
                out.push(p);
            } else if x0.get(i) == Some(&(p as usize)) && x1.get(i) == Some(&(q as usize)) {
                out.push(0);
            } else {
                out.push(-1);
            }
        }
        if out.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(a.err(format!(
                "target shape {t0:?} has more than one batch-dependent dim"
            )));
        }
        Ok(out)
    }

    /// Window attributes, with auto_pad resolved to explicit pads for the static input shape.
    fn window(&self, a: &Attrs, kernel: Vec<usize>, x: &[usize]) -> Result<Window> {
        let sr = kernel.len();
        if !(1..=2).contains(&sr) || x.len() != sr + 2 {
            return Err(a.err(format!(
                "only 1-D and 2-D windows are supported (kernel {kernel:?}, input {x:?})"
            )));
        }
        let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; sr]);
        let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; sr]);
        let mut pads = a.usizes("pads")?.unwrap_or_else(|| vec![0; 2 * sr]);
        if strides.len() != sr || dilations.len() != sr || pads.len() != 2 * sr {
            return Err(a.err("strides, dilations or pads do not match the kernel rank"));
        }
        if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
            return Err(a.err("zero stride, dilation or kernel size"));
        }
        match a.string("auto_pad", "NOTSET").as_str() {
            "NOTSET" => {}
            "VALID" => pads = vec![0; 2 * sr],
            mode @ ("SAME_UPPER" | "SAME_LOWER") => {
                for i in 0..sr {
                    let input = x[2 + i];
                    let out = input.div_ceil(strides[i]);
                    let span = dilations[i] * (kernel[i] - 1) + 1;
                    let total = ((out - 1) * strides[i] + span).saturating_sub(input);
                    let (small, big) = (total / 2, total - total / 2);
                    let (begin, end) = if mode == "SAME_UPPER" {
                        (small, big)
                    } else {
                        (big, small)
                    };
                    pads[i] = begin;
                    pads[i + sr] = end;
                }
            }
            other => return Err(a.err(format!("unknown auto_pad '{other}'"))),
        }
        Ok(Window {
            kernel,
            strides,
            pads,
            dilations,
        })
    }
}
