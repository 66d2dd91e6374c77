//! From trained gate parameters to pruning decisions: which channels survive (the keep plan)
//! and the network the pruned model must reproduce (the trained graph with each gate's
//! deterministic value multiplied in).

use super::budget_fit::{self, Fit, Targets};
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
            let axis = analysis.channel_axis(value);
            crate::prune::reference::scale_channels(&mut trained, value, axis, v.clone(), "gate");
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

/// A budget to complete the plan to (see [`budget_fit`]), and the pruner's width rounding.
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetRequest {
    pub targets: Targets,
    pub round_to: Option<usize>,
}

/// What [`decide`] settles: the reference graph, the keep plan, and the budget completion
/// when a budget was asked for.
pub struct Decision {
    pub gated: Graph,
    pub plan: KeepPlan,
    pub fit: Option<Fit>,
}

/// The reference graph and the keep plan of a trained network: by the gates' test-time values,
/// completed to the budget when one is asked for, or, for a method without gates, by its dead
/// channels (the graph itself is then the reference). The reference uses the completed values,
/// so verification proves the export against the final plan.
pub fn decide(
    method: &dyn GateMethod,
    trained: Graph,
    analysis: &ChannelAnalysis,
    groups: &[usize],
    params: &[Vec<f32>],
    budget: &BudgetRequest,
) -> Result<Decision> {
    if !method.has_gates() {
        let plan = super::swp::dead_channel_plan(&trained)?;
        return Ok(Decision {
            gated: trained,
            plan,
            fit: None,
        });
    }
    let mut values = test_gates(method, params);
    let fit = if budget.targets.any() && !groups.is_empty() {
        let cost = super::cost::CostModel::new(&trained, analysis, groups)?;
        let probs = budget_fit::open_probabilities(method, params);
        let importance: Vec<Vec<f32>> = groups
            .iter()
            .map(|&g| crate::prune::plan::channel_importance(&trained, &analysis.groups[g]))
            .collect();
        let keys = budget_fit::order_keys(&probs, &importance);
        Some(budget_fit::complete(
            &cost,
            budget.targets,
            &probs,
            &keys,
            &mut values,
            budget.round_to,
        ))
    } else {
        None
    };
    let plan = keep_plan(groups, &values);
    Ok(Decision {
        gated: gated_graph(trained, analysis, groups, values),
        plan,
        fit,
    })
}
