//! `compress inspect MODEL --sensitivity --data D`: a first look at which channel groups matter.
//! Each prunable group alone is cut to half its width (the channels whose producer weights have
//! the largest L1 norm stay), without training, and the test accuracy of that model is measured
//! (on the first `--samples` test examples).

use std::path::Path;

use serde::Serialize;

use crate::data::preprocess::Request;
use crate::data::{Dataset, Split};
use crate::error::Result;
use crate::ir::Graph;
use crate::prune::{GroupKeep, KeepPlan, plan::channel_importance};

/// One prunable group cut to half.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSensitivity {
    pub id: usize,
    pub producers: Vec<String>,
    pub width: usize,
    pub kept: usize,
    /// MACs of the model with this group halved, as a fraction of dense.
    pub macs_fraction: f64,
    /// Test accuracy with this group halved, a fraction in [0, 1].
    pub accuracy: f64,
    /// Dense minus this accuracy, in percentage points.
    pub drop_points: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sensitivity {
    pub model: String,
    pub data: String,
    /// Test examples each accuracy is measured on.
    pub samples: usize,
    pub dense_accuracy: f64,
    pub groups: Vec<GroupSensitivity>,
}

/// The first `n` examples of `data` (all when it has fewer).
fn first(data: Dataset, n: usize) -> Dataset {
    let n = n.min(data.len());
    data.gather(&(0..n).collect::<Vec<_>>())
}

/// Keeps the more important half (at least one channel) of `group`'s channels, by the L1 norm
/// of its producer's output-channel weights.
fn half_plan(graph: &Graph, group: &crate::groups::ChannelGroup) -> KeepPlan {
    let importance = channel_importance(graph, group);
    let mut order: Vec<usize> = (0..group.width).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]));
    let mut keep = order[..(group.width / 2).max(1)].to_vec();
    keep.sort();
    KeepPlan {
        groups: vec![GroupKeep { id: group.id, keep }],
    }
}

/// Measures every prunable group (wider than one channel) of `graph` on `dir`'s test split.
pub fn sensitivity(
    graph: &Graph,
    model: &str,
    dir: &Path,
    samples: usize,
    device: &burn::prelude::Device,
) -> Result<Sensitivity> {
    let (test, _) = crate::pipeline::load_split_with(dir, graph, &Request::default(), Split::Test)?;
    let test = first(test, samples);
    let data_name = dir.display().to_string();
    let dense = crate::pipeline::evaluate(graph, &test, &data_name, device)?;
    let dense_macs = crate::ir::cost::graph_cost(graph, 1)?.macs.max(1) as f64;
    let mut groups = Vec::new();
    for g in crate::groups::analyse(graph)?
        .iter()
        .filter(|g| g.prunable && g.width > 1)
    {
        let plan = half_plan(graph, g);
        let pruned = crate::prune::prune(graph, &plan, None)?;
        let acc = crate::pipeline::evaluate(&pruned.graph, &test, &data_name, device)?;
        let macs = crate::ir::cost::graph_cost(&pruned.graph, 1)?.macs as f64;
        groups.push(GroupSensitivity {
            id: g.id,
            producers: g.producers.clone(),
            width: g.width,
            kept: plan.groups[0].keep.len(),
            macs_fraction: macs / dense_macs,
            accuracy: acc.accuracy,
            drop_points: 100.0 * (dense.accuracy - acc.accuracy),
        });
    }
    Ok(Sensitivity {
        model: model.to_string(),
        data: data_name,
        samples: test.len(),
        dense_accuracy: dense.accuracy,
        groups,
    })
}

/// The table `inspect --sensitivity` prints.
pub fn render(s: &Sensitivity) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sensitivity of {} on {} ({} test samples): each group alone halved by L1 norm, no training",
        s.model, s.data, s.samples
    );
    let _ = writeln!(out, "dense accuracy {:.4}\n", s.dense_accuracy);
    let _ = writeln!(
        out,
        "{:>5}  {:>11}  {:>10}  {:>8}  {:>9}  producers",
        "group", "width->kept", "MACs", "accuracy", "drop pts"
    );
    for g in &s.groups {
        let _ = writeln!(
            out,
            "{:>5}  {:>11}  {:>10.3}  {:>8.4}  {:>9.2}  {}",
            g.id,
            format!("{}->{}", g.width, g.kept),
            g.macs_fraction,
            g.accuracy,
            g.drop_points,
            g.producers.join(", ")
        );
    }
    out
}
