//! Physical pruning: keep plans, the masked reference, and the surgery that removes channels.

pub mod plan;
pub mod reference;
pub mod surgery;

use std::collections::BTreeMap;

pub use plan::{GroupKeep, KeepPlan};

use crate::error::Result;
use crate::groups::{ChannelAnalysis, analyse_layouts};
use crate::ir::Graph;

#[derive(Debug, Clone)]
pub struct Pruned {
    pub graph: Graph,
    /// The original network with removed channels masked: what `graph` must compute.
    pub reference: Graph,
    pub analysis: ChannelAnalysis,
    /// Normalised plan actually applied (group id -> kept channels), pruned groups only.
    pub keep: BTreeMap<usize, Vec<usize>>,
    /// Things the user should know (groups kept at one channel, ...).
    pub notes: Vec<String>,
}

/// Applies a keep plan: normalise it, build the masked reference, cut the channels.
pub fn prune(graph: &Graph, plan: &KeepPlan, round_to: Option<usize>) -> Result<Pruned> {
    let analysis = analyse_layouts(graph)?;
    let mut notes = Vec::new();
    let keep = plan::normalise(graph, &analysis.groups, plan, round_to, &mut notes)?;
    let reference = reference::masked_reference(graph, &analysis, &keep);
    let pruned = surgery::apply(graph, &analysis, &keep)?;
    Ok(Pruned {
        graph: pruned,
        reference,
        analysis,
        keep,
        notes,
    })
}
