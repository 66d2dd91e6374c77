//! Keep plans: which channels of each group survive.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::groups::ChannelGroup;
use crate::ir::Graph;
use crate::rng::{SliceRandom, seeded};

/// Per group id, the sorted channel indices to keep. Groups not listed keep every channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeepPlan {
    pub groups: Vec<GroupKeep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupKeep {
    pub id: usize,
    pub keep: Vec<usize>,
}

impl KeepPlan {
    pub fn as_map(&self) -> BTreeMap<usize, Vec<usize>> {
        self.groups.iter().map(|g| (g.id, g.keep.clone())).collect()
    }

    pub fn from_map(map: BTreeMap<usize, Vec<usize>>) -> Self {
        KeepPlan {
            groups: map
                .into_iter()
                .map(|(id, keep)| GroupKeep { id, keep })
                .collect(),
        }
    }
}

/// Importance of each channel of a group: L1 norm of its first producer's weights for it.
/// Used to choose which channels to add back (rounding, never-empty rule).
pub fn channel_importance(graph: &Graph, group: &ChannelGroup) -> Vec<f32> {
    let mut score = vec![0.0f32; group.width];
    let Some(node) = group
        .producers
        .first()
        .and_then(|p| graph.nodes.iter().find(|n| &n.name == p))
    else {
        return score;
    };
    // The kernel whose rows (conv, Gemm with transB) or columns (MatMul, Gemm) are the channels.
    let Some(kernel) = crate::ops::output_kernel(&node.op) else {
        return score;
    };
    let Some(w) = node
        .inputs
        .get(kernel.input)
        .and_then(|i| graph.initializers.get(i))
    else {
        return score;
    };
    let values = w.to_f32_vec();
    let out_axis = kernel.out_axis.unwrap_or(0);
    let (rows_are_channels, width) = (out_axis == 0, w.shape[out_axis]);
    if width != group.width {
        return score;
    }
    if rows_are_channels {
        let per = values.len() / width;
        for (c, s) in score.iter_mut().enumerate() {
            *s = values[c * per..(c + 1) * per].iter().map(|x| x.abs()).sum();
        }
    } else {
        for (i, x) in values.iter().enumerate() {
            score[i % width] += x.abs();
        }
    }
    score
}

/// Checks a plan against the groups and normalises it: sorted unique indices, never an empty
/// group (the most important channel is kept, with a note), and optional rounding of each kept
/// width up to a multiple of `round_to` (adding back the most important removed channels).
pub fn normalise(
    graph: &Graph,
    groups: &[ChannelGroup],
    plan: &KeepPlan,
    round_to: Option<usize>,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<usize, Vec<usize>>> {
    normalise_closing(graph, groups, plan, round_to, &BTreeSet::new(), notes)
}

/// [`normalise`], except that the groups in `closable` (whole sublayers on a residual branch,
/// [`super::sublayer::removable`]) may keep no channel at all.
pub fn normalise_closing(
    graph: &Graph,
    groups: &[ChannelGroup],
    plan: &KeepPlan,
    round_to: Option<usize>,
    closable: &BTreeSet<usize>,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<usize, Vec<usize>>> {
    let mut out = BTreeMap::new();
    for entry in &plan.groups {
        let g = groups.get(entry.id).ok_or_else(|| {
            Error::Usage(format!(
                "keep plan names group {} but the model has {} groups",
                entry.id,
                groups.len()
            ))
        })?;
        let mut keep = entry.keep.clone();
        keep.sort();
        keep.dedup();
        if let Some(&bad) = keep.iter().find(|&&c| c >= g.width) {
            return Err(Error::Usage(format!(
                "keep plan: group {} has width {}, index {bad} is out of range",
                g.id, g.width
            )));
        }
        if keep.len() == g.width {
            continue;
        }
        if !g.prunable {
            return Err(Error::Usage(format!(
                "keep plan: group {} cannot be pruned ({})",
                g.id,
                g.reason.as_deref().unwrap_or("unknown")
            )));
        }
        let importance = channel_importance(graph, g);
        let mut removed: Vec<usize> = (0..g.width).filter(|c| !keep.contains(c)).collect();
        removed.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
        if keep.is_empty() && closable.contains(&g.id) {
            notes.push(format!(
                "group {} ({}) is closed whole: its sublayer is removed and the residual passes through",
                g.id,
                g.producers.join(", ")
            ));
            out.insert(g.id, keep);
            continue;
        }
        if keep.is_empty() {
            keep.push(removed.remove(0));
            notes.push(format!(
                "group {} ({}) would drop to zero width; kept its most important channel {}",
                g.id,
                g.producers.join(", "),
                keep[0]
            ));
        }
        if let Some(m) = round_to.filter(|&m| m > 1) {
            let target = keep.len().div_ceil(m) * m;
            let target = target.min(g.width);
            let add = target - keep.len();
            keep.extend(removed.drain(..add));
            keep.sort();
        }
        if keep.len() < g.width {
            out.insert(g.id, keep);
        }
    }
    Ok(out)
}

/// Keeps a random `fraction` of every prunable group (for testing topologies).
pub fn random(groups: &[ChannelGroup], fraction: f64, seed: u64) -> KeepPlan {
    let mut rng = seeded(seed);
    let groups = groups
        .iter()
        .filter(|g| g.prunable)
        .map(|g| {
            let n = ((g.width as f64 * fraction).round() as usize).clamp(1, g.width);
            let mut all: Vec<usize> = (0..g.width).collect();
            all.shuffle(&mut rng);
            let mut keep = all[..n].to_vec();
            keep.sort();
            GroupKeep { id: g.id, keep }
        })
        .collect();
    KeepPlan { groups }
}
