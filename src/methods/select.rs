//! Which channel groups get a gate, and how many weights one gate switches off.

use std::collections::HashSet;

use crate::groups::{ChannelAnalysis, ChannelGroup};
use crate::ir::{BinaryOp, Graph, Op};

/// Ids of the channel groups that get gates: prunable groups wider than one channel, without
/// the residual-tied ones unless `gate_residual`; none when the method has no gates (SWP).
pub fn gated_groups(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    has_gates: bool,
    gate_residual: bool,
) -> Vec<usize> {
    if !has_gates {
        return Vec::new();
    }
    let residual = residual_tied_groups(graph, analysis);
    analysis
        .groups
        .iter()
        .filter(|g| g.prunable && g.width > 1)
        .filter(|g| gate_residual || !residual.contains(&g.id))
        .map(|g| g.id)
        .collect()
}

/// Groups that meet a residual Add or Sub of two computed values (the residual stream).
pub fn residual_tied_groups(graph: &Graph, analysis: &ChannelAnalysis) -> HashSet<usize> {
    let mut out = HashSet::new();
    for n in &graph.nodes {
        if let Op::Binary(BinaryOp::Add | BinaryOp::Sub) = n.op
            && let (Some(a), Some(b)) = (
                analysis.layouts.get(&n.inputs[0]),
                analysis.layouts.get(&n.inputs[1]),
            )
            && !a.iter().chain(b).all(|s| analysis.heads.contains(&s.group))
        {
            out.extend(a.iter().chain(b).map(|s| s.group));
        }
    }
    out
}

/// Weights one channel's gate switches off in the group's producers (METHODS section 0: a conv
/// output channel owns C_in x kh x kw weights, a linear output neuron its input row).
pub fn weights_per_channel(graph: &Graph, group: &ChannelGroup) -> f64 {
    group
        .producers
        .iter()
        .filter_map(|p| graph.nodes.iter().find(|n| &n.name == p))
        .filter_map(|n| {
            let w = graph.initializers.get(n.inputs.get(1)?)?;
            // Per output channel of the producer (a split piece is part of its output).
            let rows = crate::ops::output_kernel(&n.op)
                .and_then(|k| w.shape.get(k.out_axis?).copied())
                .unwrap_or(group.width);
            Some(w.len() as f64 / rows.max(1) as f64)
        })
        .sum()
}
