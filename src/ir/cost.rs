//! Cost model: learnable parameters and multiply-accumulates per node.
//!
//! MACs count the multiplications of Conv, Gemm and MatMul only (FLOPs = 2 x MACs where quoted).
//! Parameters follow PyTorch's `sum(p.numel())`: conv and linear weights and biases, BN scale and
//! bias; BN running statistics are buffers, not parameters. A tensor shared by several nodes is
//! counted once in the totals.

use std::collections::HashSet;

use super::graph::Graph;
use super::op::Op;
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

/// Inputs of a node that hold learnable parameters (by position).
fn param_inputs(op: &Op) -> &'static [usize] {
    match op {
        Op::Conv { .. } | Op::Gemm { .. } => &[1, 2],
        Op::MatMul => &[0, 1],
        Op::BatchNorm { .. } => &[1, 2],
        _ => &[],
    }
}

fn numel(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

pub fn graph_cost(graph: &Graph, batch: usize) -> Result<GraphCost> {
    let shapes = graph.infer_shapes(batch)?;
    let mut per_node = Vec::with_capacity(graph.nodes.len());
    let mut out_shapes = Vec::with_capacity(graph.nodes.len());
    let mut counted: HashSet<&str> = HashSet::new();
    let mut total = NodeCost::default();
    let shape = |name: &str| -> &[usize] { shapes.get(name).map(|s| s.as_slice()).unwrap_or(&[]) };
    for n in &graph.nodes {
        let out = shape(&n.outputs[0]);
        let mut cost = NodeCost::default();
        for &i in param_inputs(&n.op) {
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
        cost.macs = match &n.op {
            Op::Conv { .. } => {
                let w = shape(&n.inputs[1]);
                // Each output element reads (C_in / group) x kernel inputs.
                numel(out) * numel(&w[1..])
            }
            Op::Gemm { trans_a, .. } => {
                let a = shape(&n.inputs[0]);
                let k = if *trans_a { a[0] } else { a[1] };
                numel(out) * k as u64
            }
            Op::MatMul => {
                let a = shape(&n.inputs[0]);
                numel(out) * *a.last().unwrap_or(&1) as u64
            }
            _ => 0,
        };
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
