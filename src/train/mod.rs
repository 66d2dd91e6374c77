//! Gated fine-tuning: pretrained weights and gate parameters trained jointly with a penalty on
//! the expected cost, by one of the methods of ../shared/METHODS.md (see [`crate::methods`]).
//!
//! The penalty is `lambda * E[MACs] / dense MACs`, with `E[MACs]` computed from the graph's real
//! layer costs under independent gates (see `cost`). This is our common form of METHODS' cost
//! terms: Dep-L0's `k^2 E_{l-1} E_l` is the same product for a conv chain, and it counts every
//! weight of a residual-tied group. With a MACs target, lambda becomes a Lagrange multiplier
//! updated by dual ascent so that `E[MACs]` converges to the target fraction of dense.
//!
//! - `config`: what a run is asked to do; `trainer`: its state and set-up; `step`: one
//!   optimiser step; `budget`: the cost term and dual ascent; `epochs`: the loop and resuming;
//!   `snapshot` / `checkpoint`: what a checkpoint holds and its files; `net`: the trainable
//!   graph; `cost`: expected and deterministic MACs; `finetune`: the phase after pruning.

pub mod budget;
pub mod checkpoint;
mod config;
pub mod defaults;
pub use crate::methods::cost;
mod epochs;
pub mod finetune;
pub mod net;
mod snapshot;
mod step;
mod trainer;

use serde::Serialize;

pub use crate::methods::Method;
pub use crate::methods::select::residual_tied_groups;
pub use config::{Optimizer, Penalty, Schedule, TrainConfig};
pub use epochs::{fine_tune, fine_tune_from};
pub use trainer::GateParams;

use crate::ir::Graph;
use net::GatedNet;

/// One epoch of training, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub penalty: f64,
    /// Validation accuracy with deterministic gates.
    pub accuracy: f64,
    pub expected_macs: f64,
    pub deterministic_macs: f64,
    /// Open (kept) gates per gated group, in group order.
    pub open_gates: Vec<usize>,
    pub lambda: f64,
    pub seconds: f64,
}

pub struct TrainOutcome {
    pub net: GatedNet,
    /// Gate parameter vectors (HC log alpha / ARM phi), one per gated group.
    pub gate_params: Vec<Vec<f32>>,
    pub history: Vec<EpochRecord>,
    pub dense_macs: f64,
}

impl TrainOutcome {
    /// Analysis group ids of the gated groups, in gate order.
    pub fn gated_group_ids(&self) -> Vec<usize> {
        self.net.gated.iter().map(|g| g.group).collect()
    }
}

/// Deterministic test-time gate values of each gated group (ARM/AR use slope `k`).
pub fn test_gates(method: Method, params: &[Vec<f32>], k: f64) -> Vec<Vec<f32>> {
    let settings = crate::methods::Settings {
        arm_k: k,
        ..Default::default()
    };
    crate::methods::test_gates(method.build(&settings).as_ref(), params)
}

/// Ids of the channel groups that get gates: prunable groups wider than one channel, without
/// the residual-tied ones unless `gate_residual`; none for SWP, which prunes weights, not gates.
pub fn gated_groups(
    graph: &Graph,
    analysis: &crate::groups::ChannelAnalysis,
    cfg: &TrainConfig,
) -> Vec<usize> {
    if cfg.no_gates {
        return Vec::new();
    }
    crate::methods::select::gated_groups(
        graph,
        analysis,
        cfg.gate_method().has_gates(),
        cfg.gate_residual,
    )
}
