//! Checks of a decoded model before anything else reads it: the graph is well formed (every
//! value read is defined earlier, each once), every node has the inputs and outputs its op
//! takes, window-like attributes are in range, tensors' dims match their data and no tensor is
//! larger than [`max_tensor_elements`]. A file from elsewhere may be crafted: everything after
//! this module may assume these facts instead of indexing or allocating on trust.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pb::{self, GraphProto, NodeProto, TensorProto, tensor_shape_proto::dimension};
use crate::error::{Error, Result};

/// Default bound on the elements of any one tensor (2^28, 1 GiB of f32): far above any input,
/// weight or activation of a model this tool prunes, far below what exhausts a machine.
pub const DEFAULT_MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

static MAX_TENSOR_ELEMENTS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_TENSOR_ELEMENTS);

/// The bound on the elements of any one tensor (initializer, graph input, computed value)
/// that a model may have; `--max-tensor-elements` changes it for the process.
pub fn max_tensor_elements() -> u64 {
    MAX_TENSOR_ELEMENTS.load(Ordering::Relaxed)
}

/// Sets [`max_tensor_elements`] (at least 1).
pub fn set_max_tensor_elements(n: u64) {
    MAX_TENSOR_ELEMENTS.store(n.max(1), Ordering::Relaxed);
}

/// Element count of `dims`, or the reason it is over the bound (overflow included).
pub fn bounded_elements(dims: &[usize]) -> std::result::Result<usize, String> {
    let limit = max_tensor_elements();
    let mut n: u64 = 1;
    for &d in dims {
        n = n.saturating_mul(d as u64);
    }
    if n > limit {
        return Err(format!(
            "shape {dims:?} has more than {limit} elements (the limit; raise it with --max-tensor-elements)"
        ));
    }
    Ok(n as usize)
}

/// The supported default-domain opsets.
pub const OPSETS: std::ops::RangeInclusive<i64> = 1..=25;

/// Largest kernel size, stride, dilation or pad a window attribute may have.
const MAX_WINDOW: i64 = 1 << 16;
/// Largest rank an axis or permutation may refer to.
const MAX_RANK: i64 = 64;
/// Largest number of inputs or outputs of a variadic op (Concat, Split).
const MAX_VARIADIC: usize = 1 << 16;

/// The whole model: opsets, graph structure, node arities, attributes, tensors.
pub fn model(m: &pb::ModelProto) -> Result<()> {
    for o in &m.opset_import {
        if (o.domain.is_empty() || o.domain == "ai.onnx") && !OPSETS.contains(&o.version) {
            return Err(Error::InvalidModel(format!(
                "opset {} is not supported (supported: {} to {})",
                o.version,
                OPSETS.start(),
                OPSETS.end()
            )));
        }
    }
    match &m.graph {
        Some(g) => graph(g),
        None => Ok(()),
    }
}

/// A node's name in messages: its own, else `<op_type>_<index>` as the import names it.
fn node_name(n: &NodeProto, index: usize) -> String {
    if n.name.is_empty() {
        format!("{}_{index}", n.op_type)
    } else {
        n.name.clone()
    }
}

fn graph(g: &GraphProto) -> Result<()> {
    for t in &g.initializer {
        tensor(t).map_err(|e| Error::InvalidModel(format!("initializer '{}': {e}", t.name)))?;
    }
    for v in &g.input {
        input_dims(v)?;
    }
    let mut defined: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    let computed_later: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(|s| s.as_str()))
        .collect();
    for (index, n) in g.node.iter().enumerate() {
        let name = node_name(n, index);
        let fail = |reason: String| Error::node(&name, &n.op_type, reason);
        arity(n).map_err(fail)?;
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            if !defined.contains(input.as_str()) {
                return Err(fail(if computed_later.contains(input.as_str()) {
                    format!(
                        "reads '{input}' before it is computed (nodes out of order, or a cycle)"
                    )
                } else {
                    format!("reads '{input}', which no input, initializer or node defines")
                }));
            }
        }
        attributes(n).map_err(fail)?;
        for output in n.output.iter().filter(|s| !s.is_empty()) {
            if !defined.insert(output) {
                return Err(fail(format!("writes '{output}', which is already defined")));
            }
        }
    }
    for v in &g.output {
        if !defined.contains(v.name.as_str()) {
            return Err(Error::InvalidModel(format!(
                "graph output '{}' is never computed",
                v.name
            )));
        }
    }
    Ok(())
}

/// Declared dims of a graph input: non-negative, and the fixed ones within the element bound.
fn input_dims(v: &pb::ValueInfoProto) -> Result<()> {
    let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let Some(shape) = &t.shape else {
        return Ok(());
    };
    let mut fixed = Vec::new();
    for d in &shape.dim {
        if let Some(dimension::Value::DimValue(n)) = d.value {
            let n = usize::try_from(n).map_err(|_| {
                Error::InvalidModel(format!("graph input '{}' has negative dim {n}", v.name))
            })?;
            fixed.push(n);
        }
    }
    bounded_elements(&fixed)
        .map(drop)
        .map_err(|e| Error::InvalidModel(format!("graph input '{}': {e}", v.name)))
}

/// A tensor's dims are non-negative and bounded, and its data holds exactly that many values.
fn tensor(t: &TensorProto) -> std::result::Result<(), String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
        .collect::<std::result::Result<_, _>>()?;
    let n = bounded_elements(&dims)?;
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        // Inlined by `external` before this check when there is a file to read it from.
        return Ok(());
    }
    use pb::tensor_proto::DataType as D;
    let width = match D::try_from(t.data_type).unwrap_or(D::Undefined) {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        D::Int8 | D::Uint8 | D::Bool => 1,
        D::Float16 | D::Bfloat16 | D::Int16 | D::Uint16 => 2,
        // Types without a fixed width (strings, complex, sub-byte): left to the importer.
        _ => return Ok(()),
    };
    let typed = t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len();
    let held = if t.raw_data.is_empty() {
        typed
    } else if t.raw_data.len().is_multiple_of(width) {
        t.raw_data.len() / width
    } else {
        return Err(format!(
            "raw data of {} bytes is not a whole number of {width}-byte values",
            t.raw_data.len()
        ));
    };
    if held != n {
        return Err(format!(
            "holds {held} values but its dims {dims:?} need {n}"
        ));
    }
    Ok(())
}

/// (inputs, outputs) a node of this op type may have, from the ONNX operator specs over the
/// supported opsets; `None` for op types the importer does not know (it reports those).
fn arity_of(op_type: &str) -> Option<((usize, usize), (usize, usize))> {
    let one = (1, 1);
    Some(match op_type {
        "Conv" | "ConvTranspose" | "Gemm" => ((2, 3), one),
        "BatchNormalization" => ((5, 5), (1, 5)),
        "MatMul" | "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Gather" => ((2, 2), one),
        "Relu" | "LeakyRelu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Tanh" | "Sqrt"
        | "Exp" | "Log" | "Reciprocal" | "Neg" | "Abs" | "Erf" | "Softmax" | "LogSoftmax"
        | "AveragePool" | "GlobalAveragePool" | "Flatten" | "Transpose" | "Identity" | "Shape"
        | "Cast" => (one, one),
        "Clip" => ((1, 3), one),
        "MaxPool" => (one, (1, 2)),
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "Squeeze" | "Unsqueeze"
        | "Reshape" => ((1, 2), one),
        "Concat" => ((1, MAX_VARIADIC), one),
        "Split" => ((1, 2), (1, MAX_VARIADIC)),
        "Pad" | "Resize" => ((1, 4), one),
        "Dropout" => ((1, 3), (1, 2)),
        "Slice" => ((1, 5), one),
        "Constant" => ((0, 0), one),
        _ => return None,
    })
}

/// The node has as many inputs and outputs as its op takes, the required ones named.
fn arity(n: &NodeProto) -> std::result::Result<(), String> {
    let Some(((min_in, max_in), (min_out, max_out))) = arity_of(&n.op_type) else {
        return Ok(());
    };
    let count = |what: &str, have: usize, min: usize, max: usize| {
        if (min..=max).contains(&have) {
            return Ok(());
        }
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        Err(format!("has {have} {what}, the op takes {want}"))
    };
    count("inputs", n.input.len(), min_in, max_in)?;
    count("outputs", n.output.len(), min_out, max_out)?;
    if let Some(i) = n.input.iter().take(min_in).position(|s| s.is_empty()) {
        return Err(format!("required input {i} is empty"));
    }
    if n.output.first().is_some_and(|s| s.is_empty()) {
        return Err("output 0 is empty".into());
    }
    Ok(())
}

/// Window, group, axis and permutation attributes in range; tensors in attributes checked
/// as initializers are.
fn attributes(n: &NodeProto) -> std::result::Result<(), String> {
    for a in &n.attribute {
        let within = |lo: i64, hi: i64| -> std::result::Result<(), String> {
            // An INTS attribute is its list (even empty); an INT one its value.
            let values = if a.r#type == pb::attribute_proto::AttributeType::Ints as i32
                || !a.ints.is_empty()
            {
                a.ints.clone()
            } else {
                vec![a.i]
            };
            if a.ints.len() > MAX_RANK as usize * 2 {
                return Err(format!("attribute {} has {} values", a.name, a.ints.len()));
            }
            match values.iter().find(|v| !(lo..=hi).contains(*v)) {
                Some(v) => Err(format!(
                    "attribute {} = {v} is out of range ({lo} to {hi})",
                    a.name
                )),
                None => Ok(()),
            }
        };
        match a.name.as_str() {
            "kernel_shape" | "strides" | "dilations" => within(1, MAX_WINDOW)?,
            // Pad's pads (before opset 11) may crop; window pads may not.
            "pads" if n.op_type == "Pad" => within(-MAX_WINDOW, MAX_WINDOW)?,
            "pads" | "output_padding" => within(0, MAX_WINDOW)?,
            "group" => within(1, MAX_WINDOW)?,
            "axis" | "axes" => within(-MAX_RANK, MAX_RANK - 1)?,
            "perm" => within(0, MAX_RANK - 1)?,
            _ => {}
        }
        if let Some(t) = &a.t {
            tensor(t).map_err(|e| format!("attribute {}: {e}", a.name))?;
        }
    }
    Ok(())
}
