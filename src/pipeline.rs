//! The whole job: evaluate the dense model, fine-tune with gates, turn the deterministic gates
//! into a keep plan, fold gate values into the weights, prune, verify, evaluate the result.
//!
//! ```
//! use compress::{exec::default_device, pipeline, train::{Method, TrainConfig}};
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
//! let graph = compress::onnx::import_file(&root.join("models/lenet5/model.onnx"))?;
//! let (train, test) = pipeline::load_data(&root.join("fixtures/data/fashion-mnist-subset"), &graph)?;
//! let mut cfg = TrainConfig::new(Method::DepL0);
//! cfg.max_steps = Some(5); // a real run trains for epochs; this only shows the calls
//! cfg.quiet = true;
//! let device = default_device();
//! let trained = pipeline::train(&graph, &train, 0.1, &cfg, &device)?;
//! let compressed = pipeline::compress_trained(&trained, &cfg, None)?; // pruned + verified
//! let accuracy = pipeline::evaluate(&compressed.graph, &test, "subset", &device)?;
//! assert!(accuracy.accuracy > 0.5);
//! # Ok::<(), compress::Error>(())
//! ```

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;

use crate::data::{self, Dataset, Split};
use crate::error::{Error, Result};
use crate::eval::{Accuracy, accuracy};
use crate::exec::Network;
use crate::ir::Graph;
use crate::prune::{GroupKeep, KeepPlan, Pruned};
use crate::train::{Method, TrainConfig, TrainOutcome, fine_tune, test_gates};
use crate::verify::Verification;

/// Loads the train and test splits in the layout the model's input wants, normalised as the
/// format's default (CIFAR: per-channel mean/std; IDX and image folders: [0, 1] pixels).
pub fn load_data(dir: &Path, graph: &Graph) -> Result<(Dataset, Dataset)> {
    let want = graph
        .inputs
        .first()
        .map(|i| i.shape(1))
        .filter(|s| s.len() == 4)
        .map(|s| (s[1], s[2], s[3]));
    let format = data::detect(dir)?;
    let mut train = data::load(dir, Split::Train, want)?;
    let mut test = data::load(dir, Split::Test, want)?;
    if let Some(norm) = data::transform::Normalize::default_for(format) {
        norm.apply_dataset(&mut train)?;
        norm.apply_dataset(&mut test)?;
    }
    Ok((train, test))
}

/// The trained graph with each gated group's deterministic gate values multiplied in at its gate
/// positions: what the fine-tuned gated network computes in eval mode.
pub fn gated_graph(outcome: &TrainOutcome, cfg: &TrainConfig) -> Graph {
    let mut g = outcome.net.trained_graph();
    let values = test_gates(cfg.method, &outcome.gate_params, cfg.arm_k);
    for (gated, v) in outcome.net.gated.iter().zip(values) {
        for value in &outcome.net.analysis.groups[gated.group].gates {
            crate::prune::reference::scale_channels(&mut g, value, v.clone(), "gate");
        }
    }
    g
}

/// Channels whose deterministic gate is non-zero survive.
pub fn keep_plan(outcome: &TrainOutcome, cfg: &TrainConfig) -> KeepPlan {
    let values = test_gates(cfg.method, &outcome.gate_params, cfg.arm_k);
    KeepPlan {
        groups: outcome
            .net
            .gated
            .iter()
            .zip(values)
            .map(|(g, v)| GroupKeep {
                id: g.group,
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

/// Stochastic weight pruning: channels whose producer rows are all zero are dead.
pub fn dead_channel_plan(graph: &Graph) -> Result<KeepPlan> {
    let groups = crate::groups::analyse(graph)?;
    let mut plan = KeepPlan::default();
    for g in groups.iter().filter(|g| g.prunable) {
        let mut alive = vec![false; g.width];
        for p in &g.producers {
            let Some(node) = graph.nodes.iter().find(|n| &n.name == p) else {
                continue;
            };
            let Some(w) = node.inputs.get(1).and_then(|i| graph.initializers.get(i)) else {
                continue;
            };
            let v = w.to_f32_vec();
            let rows = matches!(
                node.op,
                crate::ir::Op::Conv { .. } | crate::ir::Op::Gemm { trans_b: true, .. }
            );
            for (i, x) in v.iter().enumerate() {
                let c = if rows {
                    i / (v.len() / g.width)
                } else {
                    i % g.width
                };
                alive[c] |= *x != 0.0;
            }
        }
        plan.groups.push(GroupKeep {
            id: g.id,
            keep: (0..g.width).filter(|&c| alive[c]).collect(),
        });
    }
    Ok(plan)
}

pub struct Compressed {
    pub pruned: Pruned,
    /// The pruned model with gate values folded in (no gate ops): what gets written.
    pub graph: Graph,
    pub bytes: Vec<u8>,
    pub verification: Verification,
    /// The network the pruned model must reproduce (trained, gated, eval mode).
    pub gated: Graph,
}

/// Prunes the gated network by its gates, folds the gate values and verifies in tract.
pub fn compress_trained(
    outcome: &TrainOutcome,
    cfg: &TrainConfig,
    round_to: Option<usize>,
) -> Result<Compressed> {
    let (gated, plan) = if cfg.method == Method::Swp {
        let g = outcome.net.trained_graph();
        let plan = dead_channel_plan(&g)?;
        (g, plan)
    } else {
        (gated_graph(outcome, cfg), keep_plan(outcome, cfg))
    };
    let pruned = if cfg.method == Method::Swp {
        crate::prune::prune_dead(&gated, &plan)?
    } else {
        crate::prune::prune(&gated, &plan, round_to)?
    };
    let mut graph = pruned.graph.clone();
    crate::ir::fold::fold_channel_scales(&mut graph);
    let bytes = crate::onnx::export(&graph);
    let reference = crate::onnx::export(&pruned.reference);
    let verification = crate::verify::verify_export(&gated, &reference, &bytes, 2, 1e-4)?;
    Ok(Compressed {
        pruned,
        graph,
        bytes,
        verification,
        gated,
    })
}

/// Top-1 accuracy of a graph on a dataset, on `device`.
pub fn evaluate(graph: &Graph, data: &Dataset, name: &str, device: &Device) -> Result<Accuracy> {
    let net = Network::new(graph, device)?;
    accuracy(&net, data, name, 256)
}

/// Fine-tunes; `epochs = 0` skips training (the gates stay at their initial, open values).
pub fn train(
    graph: &Graph,
    train: &Dataset,
    val_fraction: f64,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::Usage(format!(
            "--val-fraction {val_fraction}: expected a fraction in [0, 1)"
        )));
    }
    fine_tune(graph, train, val_fraction, cfg, &device.clone().autodiff())
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Timings {
    pub dense_eval_s: f64,
    pub train_s: f64,
    pub prune_verify_s: f64,
    pub pruned_eval_s: f64,
    pub latency_s: f64,
    pub total_s: f64,
}
