//! Whole-sublayer removal: a group whose every channel is closed, read only by linear layers
//! whose outputs go (through ops that keep their last axis feature by feature) into one side of
//! a residual Add, turns that side into a constant. With all gates 0 the gated network computes
//! `x + b` there, where b is the output projection's bias (plus any constant added after it), so
//! the export replaces the branch by that constant and drops every node that only fed it: the
//! attention or MLP sublayer (its LayerNorm included) is gone and the residual passes through.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::groups::{ChannelAnalysis, ChannelGroup};
use crate::ir::{BinaryOp, Graph, Node, Op, Tensor};

/// Where a linear layer's output rejoins the residual stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// The linear layer (reads the group).
    pub consumer: String,
    /// Constant Adds between it and the residual Add (biases), by initializer name.
    pub biases: Vec<String>,
    /// The residual Add node and which of its inputs is the branch.
    pub residual: String,
    pub input: usize,
}

/// The node that reads `value`, when exactly one does and it is not a graph output.
fn only_reader<'g>(graph: &'g Graph, value: &str) -> Option<&'g Node> {
    if graph.outputs.iter().any(|o| o.name == value) {
        return None;
    }
    let mut readers = graph
        .nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == value));
    let first = readers.next()?;
    readers.next().is_none().then_some(first)
}

/// A linear layer with a constant weight whose output's last axis is its features.
fn is_linear(graph: &Graph, n: &Node) -> bool {
    let weight_const = n
        .inputs
        .get(1)
        .is_some_and(|w| graph.initializers.contains_key(w));
    match n.op {
        Op::MatMul => weight_const,
        Op::Gemm { trans_a, .. } => weight_const && !trans_a,
        _ => false,
    }
}

/// The path from linear layer `consumer` to a residual Add, when every step keeps the last axis
/// (width `E`) feature by feature, so a constant `[E]` at the layer is a constant `[E]` there.
pub fn branch(
    graph: &Graph,
    shapes: &HashMap<String, Vec<usize>>,
    consumer: &Node,
) -> Option<Branch> {
    if !is_linear(graph, consumer) {
        return None;
    }
    let last = |v: &str| shapes.get(v).and_then(|s| s.last().copied());
    let e = last(&consumer.outputs[0])?;
    let mut v = consumer.outputs[0].clone();
    let mut biases = Vec::new();
    loop {
        let r = only_reader(graph, &v)?;
        let out = r.outputs.first()?;
        match &r.op {
            Op::Reshape { .. } if last(out) == Some(e) => {}
            Op::Transpose { perm } if perm.last() == Some(&(perm.len() - 1)) => {}
            Op::Binary(BinaryOp::Add) if r.inputs.len() == 2 => {
                let k = usize::from(r.inputs[0] == v);
                let other = &r.inputs[k];
                if let Some(t) = graph.initializers.get(other) {
                    let along_last = t.shape.last() == Some(&e)
                        && t.shape[..t.shape.len() - 1].iter().all(|&d| d == 1)
                        && t.shape.len() <= shapes.get(out)?.len();
                    if !along_last {
                        return None;
                    }
                    biases.push(other.clone());
                } else {
                    if last(other) != Some(e) || last(out) != Some(e) || r.inputs[k] == v {
                        return None;
                    }
                    return Some(Branch {
                        consumer: consumer.name.clone(),
                        biases,
                        residual: r.name.clone(),
                        input: 1 - k,
                    });
                }
            }
            _ => return None,
        }
        v = out.clone();
    }
}

/// The branches of `group` when closing it whole leaves a valid graph: it is read only by
/// linear layers that read nothing else and whose outputs rejoin a residual stream.
pub fn group_branches(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    shapes: &HashMap<String, Vec<usize>>,
    group: &ChannelGroup,
) -> Option<Vec<Branch>> {
    if !group.prunable || group.consumers.is_empty() {
        return None;
    }
    group
        .consumers
        .iter()
        .map(|c| {
            let n = graph.nodes.iter().find(|n| &n.name == c)?;
            let segs = analysis.layouts.get(n.inputs.first()?)?;
            segs.iter().all(|s| s.group == group.id).then_some(())?;
            branch(graph, shapes, n)
        })
        .collect()
}

/// Ids of the groups that may be closed whole.
pub fn removable(graph: &Graph, analysis: &ChannelAnalysis) -> BTreeSet<usize> {
    let Ok(shapes) = graph.infer_shapes(1) else {
        return BTreeSet::new();
    };
    analysis
        .groups
        .iter()
        .filter(|g| group_branches(graph, analysis, &shapes, g).is_some())
        .map(|g| g.id)
        .collect()
}

/// The nodes that go when `group` alone is closed whole (None when it cannot be).
pub fn removed_nodes(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    shapes: &HashMap<String, Vec<usize>>,
    group: &ChannelGroup,
) -> Option<HashSet<String>> {
    let branches = group_branches(graph, analysis, shapes, group)?;
    let mut g = graph.clone();
    for b in &branches {
        if let Some(r) = g.nodes.iter_mut().find(|n| n.name == b.residual) {
            r.inputs[b.input] = String::new();
        }
    }
    drop_dead(&mut g);
    let left: HashSet<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    Some(
        graph
            .nodes
            .iter()
            .filter(|n| !left.contains(n.name.as_str()))
            .map(|n| n.name.clone())
            .collect(),
    )
}

/// Replaces each branch by its constant (read from `graph`, where surgery has folded what the
/// removed channels carried into the consumer's bias) and drops the nodes nothing reads any
/// more, with their initializers.
pub fn remove(graph: &mut Graph, branches: &[Branch]) {
    for b in branches {
        let Some(consumer) = graph.nodes.iter().find(|n| n.name == b.consumer) else {
            continue;
        };
        let width = graph
            .initializers
            .get(&consumer.inputs[1])
            .map_or(0, |w| match consumer.op {
                Op::Gemm { trans_b: true, .. } => w.shape[0],
                _ => w.shape.last().copied().unwrap_or(0),
            });
        let mut k = vec![0.0f32; width];
        if let (Op::Gemm { beta, .. }, Some(c)) = (&consumer.op, consumer.inputs.get(2)) {
            add_along_last(&mut k, graph.initializers.get(c), *beta);
        }
        for name in &b.biases {
            add_along_last(&mut k, graph.initializers.get(name), 1.0);
        }
        let name = format!("{}__removed_sublayer", b.consumer);
        graph
            .initializers
            .insert(name.clone(), Tensor::f32(vec![width], k));
        if let Some(r) = graph.nodes.iter_mut().find(|n| n.name == b.residual) {
            r.inputs[b.input] = name;
        }
    }
    drop_dead(graph);
}

/// `k += scale * t` for a constant broadcast along the last axis (`[E]`, `[1, E]`, ...; a
/// single value too).
fn add_along_last(k: &mut [f32], t: Option<&Tensor>, scale: f32) {
    let Some(t) = t else { return };
    let v = t.to_f32_vec();
    for (i, x) in k.iter_mut().enumerate() {
        *x += scale * v[if v.len() == 1 { 0 } else { i }];
    }
}

/// Removes nodes none of whose outputs is read (by a node or as a graph output), repeatedly,
/// then initializers no node reads.
fn drop_dead(graph: &mut Graph) {
    loop {
        let read: HashSet<&str> = graph
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .chain(graph.outputs.iter().map(|o| o.name.as_str()))
            .collect();
        let dead: HashSet<String> = graph
            .nodes
            .iter()
            .filter(|n| !n.outputs.iter().any(|o| read.contains(o.as_str())))
            .map(|n| n.name.clone())
            .collect();
        if dead.is_empty() {
            break;
        }
        graph.nodes.retain(|n| !dead.contains(&n.name));
    }
    let read: HashSet<String> = graph.nodes.iter().flat_map(|n| n.inputs.clone()).collect();
    let keep: BTreeMap<String, Tensor> = std::mem::take(&mut graph.initializers)
        .into_iter()
        .filter(|(k, _)| read.contains(k))
        .collect();
    graph.initializers = keep;
}
