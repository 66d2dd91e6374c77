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
    for (value, group) in &analysis.norms {
        if let Some(kept) = keep.get(group) {
            let mask: Vec<f32> = (0..analysis.groups[*group].width)
                .map(|c| if kept.contains(&c) { 1.0 } else { 0.0 })
                .collect();
            mask_layer_norm(&mut g, value, &mask);
        }
    }
    g
}

/// Replaces the LayerNormalization producing `value` (over its last axis) by the same
/// normalisation over the channels where `mask` is 1, written out in plain ops, with 0 at the
/// others: what the pruned LayerNorm computes over the kept channels, at full width.
pub fn mask_layer_norm(graph: &mut Graph, value: &str, mask: &[f32]) {
    let Some(at) = graph.nodes.iter().position(|n| n.outputs[0] == value) else {
        return;
    };
    let node = graph.nodes[at].clone();
    let Op::LayerNorm(ln) = &node.op else { return };
    let width = mask.len();
    let open = mask.iter().filter(|&&m| m != 0.0).count().max(1) as f32;
    let name = |what: &str| format!("{value}__masked_{what}");
    let mut consts = vec![
        (name("mask"), Tensor::f32(vec![width], mask.to_vec())),
        (name("count"), Tensor::f32(vec![], vec![open])),
        (name("eps"), Tensor::f32(vec![], vec![ln.epsilon])),
    ];
    // A closed channel's bias would survive the normalisation: it is zeroed too.
    let bias = node.inputs.get(2).and_then(|b| graph.initializers.get(b));
    if let Some(b) = bias {
        let masked = b
            .to_f32_vec()
            .iter()
            .enumerate()
            .map(|(i, v)| v * mask[i % width])
            .collect();
        consts.push((name("bias"), Tensor::f32(b.shape.clone(), masked)));
    }
    let has_bias = bias.is_some();
    for (n, t) in consts {
        graph.initializers.insert(n, t);
    }
    let op = |o| Op::Binary(o);
    let sum = Op::Reduce(crate::ops::reduce::Reduce {
        kind: crate::ops::reduce::ReduceKind::Sum,
        axes: vec![-1],
        keepdims: true,
    });
    let x = node.inputs[0].clone();
    let mut steps: Vec<(&str, Op, Vec<String>)> = vec![
        ("x", op(BinaryOp::Mul), vec![x.clone(), name("mask")]),
        ("sum", sum.clone(), vec![name("x")]),
        ("mean", op(BinaryOp::Div), vec![name("sum"), name("count")]),
        ("centred", op(BinaryOp::Sub), vec![x, name("mean")]),
        ("d", op(BinaryOp::Mul), vec![name("centred"), name("mask")]),
        ("sq", op(BinaryOp::Mul), vec![name("d"), name("d")]),
        ("sqsum", sum, vec![name("sq")]),
        ("var", op(BinaryOp::Div), vec![name("sqsum"), name("count")]),
        ("vareps", op(BinaryOp::Add), vec![name("var"), name("eps")]),
        (
            "std",
            Op::Activation(crate::ir::Activation::Sqrt),
            vec![name("vareps")],
        ),
        ("norm", op(BinaryOp::Div), vec![name("d"), name("std")]),
        (
            "scaled",
            op(BinaryOp::Mul),
            vec![name("norm"), node.inputs[1].clone()],
        ),
    ];
    if has_bias {
        steps.push((
            "shifted",
            op(BinaryOp::Add),
            vec![name("scaled"), name("bias")],
        ));
    }
    let last = steps.len() - 1;
    let nodes: Vec<Node> = steps
        .into_iter()
        .enumerate()
        .map(|(i, (what, op, inputs))| Node {
            name: name(what),
            op,
            inputs,
            outputs: vec![if i == last {
                value.to_string()
            } else {
                name(what)
            }],
        })
        .collect();
    graph.nodes.splice(at..=at, nodes);
}
