//! Exports that keep a model's symbolic sequence (or other sized) dims although the import
//! folded shape computations at one size (`--input-shape`, or a token run's length).
//!
//! Two kinds of folded constants carry that size, and both are written back in a form that
//! follows the input at run time:
//! - Reshape targets that copy leading dims of their input (`[0, 16, 4, 8]` for a head split
//!   of `[batch, 16, 32]`): a leading entry equal to the input's dim, and equal to a sized dim,
//!   is written as 0 (copy the input's dim), which is the same at the import size.
//! - A position embedding the import folded to the rows `0..S` of its table (`Gather(table,
//!   arange(S))`): written as the whole table, its first S rows those of the graph (trained,
//!   possibly), the rest the original's, sliced at run time to the input's length.
//!
//! Whether the result is right at other sizes is not assumed: `verify::sizes::ExportDims`
//! runs it against the original at a second size before any export keeps symbolic dims.

use std::collections::HashMap;

use prost::Message;

use super::pb::{self, NodeProto};
use super::tensor::to_proto;
use crate::ir::{Dim, Graph, Op, Tensor};

/// A position table's rows past the length it was folded at, and what its slice follows.
#[derive(Debug, Clone)]
pub struct PositionRows {
    /// The graph's initializer holding rows `0..S` (shape `[1.., S, width]`).
    pub constant: String,
    /// The axis of that initializer holding the rows.
    pub axis: usize,
    /// The original table's rows `S..N`, at the constant's rank.
    pub rest: Tensor,
    /// The graph input and axis whose size is S at run time.
    pub input: String,
    pub input_axis: usize,
}

/// What a length-free export rewrites (see the module comment).
#[derive(Debug, Clone, Default)]
pub struct LengthFree {
    pub positions: Vec<PositionRows>,
}

/// The sized dims of the graph's inputs: (input, axis, size).
fn sized_dims(g: &Graph) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for v in &g.inputs {
        for (axis, d) in v.dims.iter().enumerate() {
            if let Dim::Sized { size, .. } = d {
                out.push((v.name.clone(), axis, *size));
            }
        }
    }
    out
}

impl LengthFree {
    /// Finds, in a graph imported with sized dims from `original`, the position embeddings
    /// that were folded from a table of the original (an initializer equal to its first rows).
    pub fn find(graph: &Graph, original: &[u8]) -> LengthFree {
        let sized = sized_dims(graph);
        let Some(g) = pb::ModelProto::decode(original).ok().and_then(|m| m.graph) else {
            return LengthFree::default();
        };
        let mut positions = Vec::new();
        for gather in super::positions::gathers(&g) {
            let Ok(t) = super::tensor::from_proto(gather.table) else {
                continue;
            };
            let (Some(values), [rows, width], 0) = (t.as_f32(), t.shape.as_slice(), gather.axis)
            else {
                continue;
            };
            for (name, c) in &graph.initializers {
                let Some((axis, (input, input_axis, size))) = rows_axis(&c.shape, &sized, *width)
                else {
                    continue;
                };
                let same = size < *rows && c.as_f32() == Some(&values[..size * width]);
                if same && !positions.iter().any(|p: &PositionRows| &p.constant == name) {
                    let mut shape = c.shape.clone();
                    shape[axis] = rows - size;
                    positions.push(PositionRows {
                        constant: name.clone(),
                        axis,
                        rest: Tensor::f32(shape, values[size * width..].to_vec()),
                        input,
                        input_axis,
                    });
                }
            }
        }
        LengthFree { positions }
    }
}

/// For a constant shaped `[1.., S, width]` with S a sized dim's size: S's axis and that dim.
fn rows_axis(
    shape: &[usize],
    sized: &[(String, usize, usize)],
    width: usize,
) -> Option<(usize, (String, usize, usize))> {
    let (&last, lead) = shape.split_last()?;
    let (&s, ones) = lead.split_last()?;
    if last != width || ones.iter().any(|&d| d != 1) {
        return None;
    }
    let dim = sized.iter().find(|(_, _, size)| *size == s)?;
    Some((shape.len() - 2, dim.clone()))
}

/// Exports `g`; when its inputs carry sized dims (an export that keeps symbolic dims), in
/// the length-free form of `lf`.
pub fn export(g: &Graph, lf: &LengthFree) -> Vec<u8> {
    let sized = sized_dims(g);
    if sized.is_empty() {
        return super::export(g);
    }
    let mut g = g.clone();
    copy_leading_dims(&mut g, &sized);
    let mut model = super::to_model_proto(&g);
    if let Some(graph) = model.graph.as_mut()
        && g.meta.opset() >= 10
    {
        for p in &lf.positions {
            slice_positions(graph, p);
        }
    }
    model.encode_to_vec()
}

/// Writes a Reshape's leading target entries that copy the input's dim (and carry a sized
/// dim's size) as 0.
fn copy_leading_dims(g: &mut Graph, sized: &[(String, usize, usize)]) {
    let Ok(shapes) = g.infer_shapes(1) else {
        return;
    };
    let sizes: Vec<i64> = sized.iter().map(|(_, _, s)| *s as i64).collect();
    for n in &mut g.nodes {
        let Op::Reshape { shape } = &mut n.op else {
            continue;
        };
        let Some(x) = shapes.get(&n.inputs[0]) else {
            continue;
        };
        for (t, &d) in shape.iter_mut().zip(x) {
            if *t == 0 {
                continue;
            }
            if *t != d as i64 {
                break;
            }
            if sizes.contains(t) {
                *t = 0;
            }
        }
    }
}

/// Replaces the initializer of `p` by the whole table, sliced to the input's length.
fn slice_positions(g: &mut pb::GraphProto, p: &PositionRows) {
    let Some(at) = g.initializer.iter().position(|t| t.name == p.constant) else {
        return;
    };
    let Ok(kept) = super::tensor::from_proto(&g.initializer[at]) else {
        return;
    };
    let (Some(head), Some(rest)) = (kept.as_f32(), p.rest.as_f32()) else {
        return;
    };
    // A table whose width was pruned no longer lines up with the original's rows.
    let mut other = kept.shape.clone();
    other[p.axis] = p.rest.shape[p.axis];
    if other != p.rest.shape {
        return;
    }
    let mut shape = kept.shape.clone();
    shape[p.axis] += p.rest.shape[p.axis];
    let table = Tensor::f32(shape, [head, rest].concat());
    let name = |what: &str| format!("{}__{what}", p.constant);
    let consts: HashMap<&str, Tensor> = HashMap::from([
        ("len_at", Tensor::i64(vec![1], vec![p.input_axis as i64])),
        (
            "len_end",
            Tensor::i64(vec![1], vec![p.input_axis as i64 + 1]),
        ),
        ("zero", Tensor::i64(vec![1], vec![0])),
        ("axis", Tensor::i64(vec![1], vec![p.axis as i64])),
    ]);
    g.initializer[at] = to_proto(&name("table"), &table);
    let mut keys: Vec<&&str> = consts.keys().collect();
    keys.sort();
    for k in keys {
        g.initializer.push(to_proto(&name(k), &consts[*k]));
    }
    let node = |what: &str, op: &str, input: Vec<String>, output: String| NodeProto {
        input,
        output: vec![output],
        name: name(what),
        op_type: op.into(),
        ..Default::default()
    };
    let nodes = [
        node("shape", "Shape", vec![p.input.clone()], name("shape")),
        node(
            "len",
            "Slice",
            vec![name("shape"), name("len_at"), name("len_end"), name("zero")],
            name("len"),
        ),
        node(
            "rows",
            "Slice",
            vec![name("table"), name("zero"), name("len"), name("axis")],
            p.constant.clone(),
        ),
    ];
    g.node.splice(0..0, nodes);
}
