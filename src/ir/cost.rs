//! Cost model: learnable parameters and multiply-accumulates per node.
//!
//! MACs count the multiplications of Conv, Gemm and MatMul only (FLOPs = 2 x MACs where quoted).
//! Parameters follow PyTorch's `sum(p.numel())`: conv and linear weights and biases (also a bias
//! written as an Add after a MatMul), BN scale and bias, learned positional embeddings and class
//! tokens ([`super::learned`]); BN running statistics are buffers, not parameters. A tensor shared by several nodes is
//! counted once in the totals.

use std::collections::HashSet;

use super::graph::Graph;
use crate::error::Result;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCost {
    pub params: u64,
    pub macs: u64,
}

#[derive(Debug, Clone)]
pub struct GraphCost {
    pub per_node: Vec<NodeCost>,
    pub params: u64,
    pub macs: u64,
    /// Output shape of each node's first output at the batch size used.
    pub out_shapes: Vec<Vec<usize>>,
}

pub fn graph_cost(graph: &Graph, batch: usize) -> Result<GraphCost> {
    let shapes = graph.infer_shapes(batch)?;
    let mut per_node = Vec::with_capacity(graph.nodes.len());
    let mut out_shapes = Vec::with_capacity(graph.nodes.len());
    let mut counted: HashSet<&str> = HashSet::new();
    let mut total = NodeCost::default();
    let shape = |name: &str| -> &[usize] { shapes.get(name).map(|s| s.as_slice()).unwrap_or(&[]) };
    let trainable = super::learned::trainable_inputs(graph);
    for (n, trainable) in graph.nodes.iter().zip(trainable) {
        let out = shape(&n.outputs[0]);
        let mut cost = NodeCost::default();
        for i in trainable {
            if let Some(name) = n.inputs.get(i)
                && let Some(t) = graph.initializers.get(name)
            {
                let count = t.len() as u64;
                cost.params += count;
                if counted.insert(name.as_str()) {
                    total.params += count;
                }
            }
        }
        let ins: Vec<&[usize]> = n.inputs.iter().map(|i| shape(i)).collect();
        cost.macs = crate::ops::macs(&n.op, &ins, out);
        total.macs += cost.macs;
        per_node.push(cost);
        out_shapes.push(out.to_vec());
    }
    Ok(GraphCost {
        per_node,
        params: total.params,
        macs: total.macs,
        out_shapes,
    })
}
