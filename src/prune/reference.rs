//! The masked reference: the original network with each removed channel multiplied by 0 at its
//! group's gate positions. A correct pruned model computes exactly this.

use std::collections::BTreeMap;

use crate::groups::ChannelAnalysis;
use crate::ir::{BinaryOp, Graph, Node, Op, Tensor};

/// Inserts `value * scale` after the node producing `value` and redirects its readers.
/// `scale` has one entry per channel of the channel axis `axis`. Used for pruning masks and
/// gate values.
pub fn scale_channels(graph: &mut Graph, value: &str, axis: usize, scale: Vec<f32>, tag: &str) {
    let shapes = graph
        .infer_shapes(1)
        .expect("scaling a graph that passed shape inference");
    let rank = shapes[value].len();
    let mut shape = vec![1; rank];
    shape[axis] = scale.len();
    let scaled = format!("{value}__{tag}");
    let const_name = format!("{value}__{tag}_factor");
    graph
        .initializers
        .insert(const_name.clone(), Tensor::f32(shape, scale));
    let at = graph
        .nodes
        .iter()
        .position(|n| n.outputs.iter().any(|o| o == value))
        .map_or(0, |i| i + 1);
    for n in &mut graph.nodes[at..] {
        for i in &mut n.inputs {
            if i == value {
                *i = scaled.clone();
            }
        }
    }
    graph.nodes.insert(
        at,
        Node {
            name: format!("{value}__{tag}"),
            op: Op::Binary(BinaryOp::Mul),
            inputs: vec![value.to_string(), const_name],
            outputs: vec![scaled],
        },
    );
}

pub fn masked_reference(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    keep: &BTreeMap<usize, Vec<usize>>,
) -> Graph {
    let mut g = graph.clone();
    for (&id, kept) in keep {
        let group = &analysis.groups[id];
        let mask: Vec<f32> = (0..group.width)
            .map(|c| if kept.contains(&c) { 1.0 } else { 0.0 })
            .collect();
        for value in &group.gates {
            scale_channels(
                &mut g,
                value,
                analysis.channel_axis(value),
                mask.clone(),
                "mask",
            );
        }
    }
    g
}
