//! Learned constants that their op alone does not mark as weights: a linear layer's bias
//! written as a separate Add after its MatMul (transformer exports), a learned positional
//! embedding added to a token sequence, and a class token expanded to the batch size. They
//! are trained, counted as parameters and sliced along their channel axis like a bias.

use std::collections::HashMap;

use super::graph::{Graph, Node};
use super::op::{BinaryOp, Op};
use crate::ops::logic::Logic;
use crate::ops::{WeightInput, WeightKind};

/// Per node of `graph`: its op's weight inputs plus the learned constants it reads.
pub fn node_weights(graph: &Graph) -> Vec<Vec<WeightInput>> {
    // Shapes decide the positional-embedding rule; a graph without them has only op weights.
    let shapes = graph.infer_shapes(1).unwrap_or_default();
    let producers = graph.producers();
    graph
        .nodes
        .iter()
        .map(|n| {
            let mut w = n.op.weights();
            w.extend(learned_input(graph, &shapes, &producers, n));
            w
        })
        .collect()
}

/// Trainable inputs of each node (weights that are not running statistics).
pub fn trainable_inputs(graph: &Graph) -> Vec<Vec<usize>> {
    node_weights(graph)
        .into_iter()
        .map(|ws| {
            ws.into_iter()
                .filter(WeightInput::trainable)
                .map(|w| w.input)
                .collect()
        })
        .collect()
}

fn bias(input: usize, rank: usize) -> WeightInput {
    WeightInput {
        input,
        kind: WeightKind::Bias,
        out_axis: Some(rank.saturating_sub(1)),
        in_axis: None,
    }
}

fn learned_input(
    graph: &Graph,
    shapes: &HashMap<String, Vec<usize>>,
    producers: &HashMap<&str, usize>,
    n: &Node,
) -> Option<WeightInput> {
    let init = |i: usize| n.inputs.get(i).and_then(|v| graph.initializers.get(v));
    match &n.op {
        // A class token expanded to the batch size of the token sequence.
        Op::Expand(e) if !e.from_input.is_empty() => init(0).map(|t| bias(0, t.shape.len())),
        // The same token as compress exports it: `Where(s == s, token, token)` broadcast
        // against the batch source (counted once, through input 1).
        Op::Logic(Logic::Where) if n.inputs.get(1) == n.inputs.get(2) => {
            init(1).map(|t| bias(1, t.shape.len()))
        }
        Op::Binary(BinaryOp::Add) => {
            let i = (0..2).find(|&i| init(i).is_some())?;
            let (c, x) = (init(i)?, n.inputs.get(1 - i)?);
            if graph.initializers.contains_key(x) || c.len() <= 1 {
                return None;
            }
            let x_shape = shapes.get(x)?;
            let last = *x_shape.last()?;
            // Only the last axis varies: one value per output channel of the linear layer.
            let per_channel =
                c.shape.last() == Some(&last) && c.shape.iter().rev().skip(1).all(|&d| d == 1);
            let linear = producers.get(x.as_str()).is_some_and(|&p| {
                let p = &graph.nodes[p];
                match p.op {
                    Op::MatMul => p
                        .inputs
                        .get(1)
                        .is_some_and(|w| graph.initializers.contains_key(w)),
                    Op::Gemm { .. } => true,
                    _ => false,
                }
            });
            // A table over a token sequence [B, T, D]: one value per position and channel.
            let positional = x_shape.len() == 3
                && c.shape.len() >= 2
                && c.shape[c.shape.len() - 2..] == x_shape[1..]
                && c.shape[..c.shape.len() - 2].iter().all(|&d| d == 1);
            ((linear && per_channel) || positional).then(|| bias(i, c.shape.len()))
        }
        _ => None,
    }
}
