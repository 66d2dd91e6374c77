//! The options of `compress run` (and of `compress MODEL --method M ...`).

use std::path::PathBuf;

use crate::app::options::{DepChain, Device, OptimizerName, PenaltyName, named};
use crate::app::preprocess::PreprocessArgs;
use crate::train::Method;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub model: PathBuf,
    /// Gate method.
    #[arg(long, value_parser = named::<Method>(), default_value = "dep-l0")]
    pub method: Method,
    /// Dataset directory (IDX, CIFAR binary or image folder), or token data (a `.jsonl` file,
    /// or a directory of `train.jsonl` and `test.jsonl`) for a model with token inputs;
    /// default: the shipped subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub shapes: crate::app::input_shape::InputShapeArgs,
    /// Token data: pad every sequence to this length (default: the longest in the data).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Output model; default MODEL.pruned.onnx beside the input.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Learning rate of the weights (Adam).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning rate of the gate parameters (Adam).
    #[arg(long, default_value_t = 0.1)]
    pub gate_lr: f64,
    /// Weight of the expected-MACs penalty (lambda x E[MACs] / dense MACs); default 0.5 for
    /// dep-l0, 1 for the other methods.
    #[arg(long = "lambda")]
    pub lambda: Option<f64>,
    /// Fraction of the dense MACs to reach (the exported model lands at or up to 0.01 below
    /// it); lambda then becomes a Lagrange multiplier.
    #[arg(long, value_name = "F")]
    pub target_macs: Option<f64>,
    /// Fraction of the dense parameters to reach, as --target-macs (both may be given).
    #[arg(long, value_name = "F")]
    pub target_params: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of the training split held out for per-epoch validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Stop after this many optimiser steps (all epochs when absent).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Round each kept width up to a multiple of N.
    #[arg(long, value_name = "N")]
    pub round_to: Option<usize>,
    /// SWP: tau = kappa x std(W) in the zeroing probability exp(-(|w|/tau)^2).
    #[arg(long, default_value_t = 0.05)]
    pub swp_kappa: f64,
    /// L2 weight decay of the weights (default: 5e-4 for swp, 0 otherwise).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Write a checkpoint after every epoch into this directory.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint in --checkpoint-dir (same method and seed).
    #[arg(long, requires = "checkpoint_dir")]
    pub resume: bool,
    /// cpu (always available); wgpu and cuda when compiled with those features.
    #[arg(long, value_parser = named::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Runs per latency median (0 skips latency measurement).
    #[arg(long, default_value_t = 10)]
    pub latency_runs: usize,
    /// Weights' optimiser (gate parameters always use Adam).
    #[arg(long, value_parser = named::<OptimizerName>(), default_value = "adam")]
    pub optimizer: OptimizerName,
    /// SGD momentum (PyTorch convention: no dampening).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    pub nesterov: bool,
    /// Weights' learning-rate schedule: constant, cosine or step:M1,M2,...:GAMMA (epochs);
    /// default cosine for transformers (LayerNorm over a token sequence), else constant.
    #[arg(long)]
    pub schedule: Option<String>,
    /// What the gates are penalised for: macs (expected MACs) or l0 (METHODS' expected L0:
    /// lambda x P(open) x weights per gate / N).
    #[arg(long, value_parser = named::<PenaltyName>(), default_value = "macs")]
    pub penalty: PenaltyName,
    /// Per-group lambdas for --penalty l0: JSON {"GROUP_ID or PRODUCER_NODE": lambda, ...}.
    #[arg(long, value_name = "FILE")]
    pub lambda_config: Option<PathBuf>,
    /// Weight of a distillation term from the dense model (T^2 x KL on softened logits);
    /// default 0.25 for transformers (LayerNorm over a token sequence), else 0.
    #[arg(long)]
    pub distill_weight: Option<f64>,
    /// Temperature of the distillation term; default 2 for transformers, else 4.
    #[arg(long)]
    pub distill_temperature: Option<f64>,
    /// Random crop (pad 4) and horizontal flip of training images: default on for CIFAR data.
    #[arg(long, overrides_with = "no_augment")]
    pub augment: bool,
    #[arg(long)]
    pub no_augment: bool,
    /// Also gate channel groups tied by residual adds (off: as in the reference code).
    #[arg(long)]
    pub gate_residual: bool,
    /// After pruning, train the smaller network for N more epochs (task loss, plus
    /// distillation with --distill-weight), then export and verify it; 0 skips this phase.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub finetune_epochs: usize,
    /// Dep-L0 generator direction: forward (first gated layer to last) or backward (last to
    /// first, its outputs reversed).
    #[arg(long, value_parser = named::<DepChain>(), default_value = "forward")]
    pub dep_chain: DepChain,
    /// Dep-L0 generator input width n0 (its input is a vector of n0 ones).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub dep_n0: u64,
    /// Print the groups, gate count, starting penalty and estimated run time; train nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run several settings and write one report with the accuracy-vs-MACs Pareto front:
    /// lambda=A,B,..., target-macs=A,B,... or target-params=A,B,...
    #[arg(long, value_name = "SETTING=V1,V2")]
    pub sweep: Option<String>,
    /// Errors only.
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as JSON on stdout and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
    #[command(flatten)]
    pub out: crate::app::model_output::ModelOutputArgs,
}

impl RunArgs {
    /// Whether progress and summaries go to the terminal.
    pub fn chatty(&self) -> bool {
        !self.quiet && !self.json
    }
}
