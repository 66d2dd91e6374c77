//! From trained gate parameters to pruning decisions: which channels survive (the keep plan)
//! and the network the pruned model must reproduce (the trained graph with each gate's
//! deterministic value multiplied in).

use super::{GateMethod, test_gates};
use crate::error::Result;
use crate::groups::ChannelAnalysis;
use crate::ir::Graph;
use crate::prune::{GroupKeep, KeepPlan};

/// `trained` with each gated group's test-time values multiplied in at its gate positions:
/// what the fine-tuned gated network computes in eval mode. `groups[i]` is the analysis group
/// behind `values[i]`.
pub fn gated_graph(
    mut trained: Graph,
    analysis: &ChannelAnalysis,
    groups: &[usize],
    values: Vec<Vec<f32>>,
) -> Graph {
    for (&group, v) in groups.iter().zip(values) {
        for value in &analysis.groups[group].gates {
            crate::prune::reference::scale_channels(&mut trained, value, v.clone(), "gate");
        }
    }
    trained
}

/// Channels whose test-time gate value is non-zero survive.
pub fn keep_plan(groups: &[usize], values: &[Vec<f32>]) -> KeepPlan {
    KeepPlan {
        groups: groups
            .iter()
            .zip(values)
            .map(|(&id, v)| GroupKeep {
                id,
                keep: v
                    .iter()
                    .enumerate()
                    .filter(|(_, z)| **z > 0.0)
                    .map(|(i, _)| i)
                    .collect(),
            })
            .collect(),
    }
}

/// The reference graph and the keep plan of a trained network: by the gates' test-time values,
/// or, for a method without gates, by its dead channels (the graph itself is then the reference).
pub fn decide(
    method: &dyn GateMethod,
    trained: Graph,
    analysis: &ChannelAnalysis,
    groups: &[usize],
    params: &[Vec<f32>],
) -> Result<(Graph, KeepPlan)> {
    if !method.has_gates() {
        let plan = super::swp::dead_channel_plan(&trained)?;
        return Ok((trained, plan));
    }
    let values = test_gates(method, params);
    let plan = keep_plan(groups, &values);
    Ok((gated_graph(trained, analysis, groups, values), plan))
}
