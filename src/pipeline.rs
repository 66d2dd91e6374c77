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

use crate::data::preprocess::{ModelInput, Preprocessing, Request};
use crate::data::{self, Dataset, Examples, Split};
use crate::error::{Error, Result};
use crate::eval::{Accuracy, accuracy, accuracy_on};
use crate::exec::Network;
use crate::ir::Graph;
use crate::methods;
use crate::prune::{KeepPlan, Pruned};
use crate::train::{TrainConfig, TrainOutcome, fine_tune, test_gates};
use crate::verify::Verification;
use crate::verify::sizes::{ExportDims, Reference};

/// Loads the train and test splits in the layout the model's input wants, prepared as the
/// model's metadata says, else as the format's default (CIFAR: per-channel mean/std; IDX and
/// image folders: [0, 1] pixels).
pub fn load_data(dir: &Path, graph: &Graph) -> Result<(Dataset, Dataset)> {
    let data = load_data_with(dir, graph, &Request::default())?;
    Ok((data.train, data.test))
}

/// Both splits and the preprocessing they were given.
pub struct Prepared {
    pub train: Dataset,
    pub test: Dataset,
    pub preprocessing: Preprocessing,
}

/// Loads the train and test splits prepared as `request` asks, else as the model's metadata
/// says, else as the format's default ([`crate::data::preprocess`]). The preprocessing is
/// checked against the model before any image is read.
pub fn load_data_with(dir: &Path, graph: &Graph, request: &Request) -> Result<Prepared> {
    let (want, preprocessing) = plan_preprocessing(dir, graph, request)?;
    let train = load_prepared(dir, Split::Train, want, &preprocessing)?;
    let test = load_prepared(dir, Split::Test, want, &preprocessing)?;
    Ok(Prepared {
        train,
        test,
        preprocessing,
    })
}

/// One split, prepared as [`load_data_with`] prepares both (`eval` reads only the split it
/// scores, so a dataset that ships only that split is enough).
pub fn load_split_with(
    dir: &Path,
    graph: &Graph,
    request: &Request,
    split: Split,
) -> Result<(Dataset, Preprocessing)> {
    let (want, preprocessing) = plan_preprocessing(dir, graph, request)?;
    let data = load_prepared(dir, split, want, &preprocessing)?;
    Ok((data, preprocessing))
}

/// (channels, height, width) of an image input.
type Chw = Option<(usize, usize, usize)>;

/// The model's (channels, height, width) and the preprocessing to apply, from the request, the
/// model's metadata and the data's format.
fn plan_preprocessing(
    dir: &Path,
    graph: &Graph,
    request: &Request,
) -> Result<(Chw, Preprocessing)> {
    let want = graph
        .inputs
        .first()
        .map(|i| i.shape(1))
        .filter(|s| s.len() == 4)
        .map(|s| (s[1], s[2], s[3]));
    let format = data::detect(dir)?;
    let model = ModelInput {
        chw: want,
        props: &graph.meta.metadata_props,
    };
    Ok((want, request.resolve(format, &model)?))
}

fn load_prepared(
    dir: &Path,
    split: Split,
    want: Chw,
    preprocessing: &Preprocessing,
) -> Result<Dataset> {
    let resize = preprocessing.resize.map(|[h, w]| (h, w));
    let mut data = data::load_with(dir, split, want, resize)?;
    if let Some(norm) = preprocessing.normalize()? {
        norm.apply_dataset(&mut data)?;
    }
    Ok(data)
}

/// The trained graph with each gated group's deterministic gate values multiplied in at its gate
/// positions: what the fine-tuned gated network computes in eval mode.
pub fn gated_graph(outcome: &TrainOutcome, cfg: &TrainConfig) -> Graph {
    let values = test_gates(cfg.method, &outcome.gate_params, cfg.arm_k);
    methods::plan::gated_graph(
        outcome.net.trained_graph(),
        &outcome.net.analysis,
        &outcome.gated_group_ids(),
        values,
    )
}

/// Channels whose deterministic gate is non-zero survive; with a budget (`cfg.target_macs`,
/// `cfg.target_params`), the plan is completed to it by gate probability
/// ([`methods::budget_fit`]), widths counted as `round_to` will round them.
pub fn keep_plan(
    outcome: &TrainOutcome,
    cfg: &TrainConfig,
    round_to: Option<usize>,
) -> Result<KeepPlan> {
    Ok(decide(outcome, cfg, round_to)?.plan)
}

/// The budgets asked for in `cfg`.
fn budget_request(cfg: &TrainConfig, round_to: Option<usize>) -> methods::plan::BudgetRequest {
    methods::plan::BudgetRequest {
        targets: methods::budget_fit::Targets {
            macs: cfg.target_macs,
            params: cfg.target_params,
        },
        round_to,
    }
}

fn decide(
    outcome: &TrainOutcome,
    cfg: &TrainConfig,
    round_to: Option<usize>,
) -> Result<methods::plan::Decision> {
    methods::plan::decide(
        cfg.gate_method().as_ref(),
        outcome.net.trained_graph(),
        &outcome.net.analysis,
        &outcome.gated_group_ids(),
        &outcome.gate_params,
        &budget_request(cfg, round_to),
    )
}

/// Stochastic weight pruning: channels whose producer rows are all zero are dead.
pub use crate::methods::swp::dead_channel_plan;

pub struct Compressed {
    pub pruned: Pruned,
    /// The pruned model with gate values folded in (no gate ops): what gets written.
    pub graph: Graph,
    pub bytes: Vec<u8>,
    pub verification: Verification,
    /// The network the pruned model must reproduce (trained, gated, eval mode).
    pub gated: Graph,
    /// What to tell the user about the export's dims (`--input-shape`); empty otherwise.
    pub notes: Vec<String>,
    /// Target against achieved for each budget asked for, and the export completion.
    pub budgets: Option<crate::report::run::Budgets>,
}

/// Prunes the gated network by its gates, folds the gate values and verifies in tract.
pub fn compress_trained(
    outcome: &TrainOutcome,
    cfg: &TrainConfig,
    round_to: Option<usize>,
) -> Result<Compressed> {
    compress_trained_with(outcome, cfg, round_to, &ExportDims::AsImported)
}

/// `compress_trained`, exporting with `dims` (symbolic dims proven at a second size, or the
/// sizes `--input-shape` gave).
pub fn compress_trained_with(
    outcome: &TrainOutcome,
    cfg: &TrainConfig,
    round_to: Option<usize>,
    dims: &ExportDims,
) -> Result<Compressed> {
    let method = cfg.gate_method();
    let methods::plan::Decision { gated, plan, fit } = decide(outcome, cfg, round_to)?;
    let pruned = if !method.has_gates() {
        crate::prune::prune_dead(&gated, &plan)?
    } else {
        crate::prune::prune(&gated, &plan, round_to)?
    };
    let mut graph = pruned.graph.clone();
    crate::ir::fold::fold_channel_scales(&mut graph);
    let checked =
        dims.export_checked(&graph, Reference::Graph(&pruned.reference), &gated, 2, 1e-4)?;
    let budgets = fit
        .map(|f| budgets(cfg, &f, &outcome.net.trained_graph(), &graph))
        .transpose()?;
    let mut notes = checked.notes;
    notes.extend(budgets.as_ref().and_then(unprepared_completion));
    Ok(Compressed {
        pruned,
        graph,
        bytes: checked.bytes,
        verification: checked.verification,
        budgets,
        gated,
        notes,
    })
}

/// Each budget's target, where training ended, the deterministic gates and the export.
fn budgets(
    cfg: &TrainConfig,
    fit: &methods::budget_fit::Fit,
    dense: &Graph,
    exported: &Graph,
) -> Result<crate::report::run::Budgets> {
    use crate::report::run::{BudgetFigures, Budgets};
    let (d, e) = (
        crate::ir::cost::graph_cost(dense, 1)?,
        crate::ir::cost::graph_cost(exported, 1)?,
    );
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let figures = |target: Option<f64>, pick: fn((f64, f64)) -> f64, exported: f64| {
        target.map(|target| BudgetFigures {
            target,
            expected: pick(fit.expected),
            deterministic: pick(fit.deterministic),
            exported,
        })
    };
    Ok(Budgets {
        macs: figures(cfg.target_macs, |p| p.0, ratio(e.macs, d.macs)),
        params: figures(cfg.target_params, |p| p.1, ratio(e.params, d.params)),
        channels_closed: fit.closed,
        channels_opened: fit.opened,
    })
}

/// How far above a budget training may end before the export's completion is worth a warning:
/// beyond it, the completion removes channels the training never learnt to do without.
const UNPREPARED_GAP: f64 = 0.05;

/// A note when training ended well above a budget, so the export had to close channels the
/// training had not closed (ranked by gate probability, near-ties by weight norm; accuracy then
/// drops; the fix is more training or more pressure).
fn unprepared_completion(b: &crate::report::run::Budgets) -> Option<String> {
    let missed: Vec<String> = [("MACs", &b.macs), ("params", &b.params)]
        .into_iter()
        .filter_map(|(name, f)| f.as_ref().map(|f| (name, f)))
        .filter(|(_, f)| f.expected > f.target + UNPREPARED_GAP)
        .map(|(name, f)| format!("{name} at {:.3} for a {:.3} target", f.expected, f.target))
        .collect();
    (!missed.is_empty() && b.channels_closed > 0).then(|| {
        format!(
            "training ended above the budget ({}), so the export closed {} channels that \
             training had kept (by gate probability and weight norm); expect an accuracy drop: train longer (--epochs, --max-steps), \
             or add --finetune-epochs",
            missed.join(", "),
            b.channels_closed
        )
    })
}

/// Top-1 accuracy of a graph on a dataset, on `device`.
pub fn evaluate(graph: &Graph, data: &Dataset, name: &str, device: &Device) -> Result<Accuracy> {
    let net = Network::new(graph, device)?;
    accuracy(&net, data, name, 256)
}

/// Top-1 accuracy of a graph on images or token data, on `device`.
pub fn evaluate_on(
    graph: &Graph,
    data: Examples<'_>,
    name: &str,
    device: &Device,
) -> Result<Accuracy> {
    let net = Network::new(graph, device)?;
    accuracy_on(&net, data, name, 256)
}

/// Fine-tunes on images or token data; `epochs = 0` skips training (the gates stay at their
/// initial, open values).
pub fn train<'a>(
    graph: &Graph,
    train: impl Into<Examples<'a>>,
    val_fraction: f64,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::InvalidFraction {
            what: "validation fraction",
            value: val_fraction,
        });
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
