//! What a training run is asked to do: method, optimiser, schedule, penalty and their settings.

use serde::Serialize;

use crate::methods::{GateMethod, Method, Settings};

/// Optimiser of the weights (gate parameters always use Adam, as in the reference code).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Optimizer {
    Adam,
    Sgd { momentum: f64, nesterov: bool },
}

/// Learning-rate schedule of the weights, per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` at each milestone epoch (1-based: the lr of epoch e counts the
    /// milestones < e).
    Step {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// Cosine decay from the base rate towards 0 over the run.
    Cosine,
}

impl Schedule {
    pub fn factor(&self, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Step { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| m < epoch).count() as i32)
            }
            Schedule::Cosine => {
                0.5 * (1.0
                    + (std::f64::consts::PI * (epoch - 1) as f64 / epochs.max(1) as f64).cos())
            }
        }
    }

    /// `constant`, `cosine` or `step:M1,M2,...:GAMMA`.
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "constant" => Some(Schedule::Constant),
            "cosine" => Some(Schedule::Cosine),
            _ => {
                let rest = s.strip_prefix("step:")?;
                let (ms, gamma) = rest.rsplit_once(':')?;
                let milestones = ms
                    .split(',')
                    .map(|m| m.trim().parse().ok())
                    .collect::<Option<Vec<usize>>>()?;
                Some(Schedule::Step {
                    milestones,
                    gamma: gamma.parse().ok()?,
                })
            }
        }
    }
}

/// The cost the gates are penalised for.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Penalty {
    /// `lambda * E[MACs] / dense MACs` (default).
    Macs,
    /// METHODS' expected L0: `(1/N) * sum_g lambda_g * P(open_g) * n_g`, n_g the weights a gate
    /// switches off in its producers; `group_lambda` overrides lambda per group id.
    L0 {
        group_lambda: std::collections::BTreeMap<usize, f64>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainConfig {
    pub method: Method,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub gate_lr: f64,
    /// Weight of the expected-MACs penalty (the initial multiplier with a target).
    pub lambda: f64,
    /// Fraction of dense MACs to reach (turns lambda into a Lagrange multiplier).
    pub target_macs: Option<f64>,
    /// Fraction of dense parameters to reach (with or without a MACs target).
    pub target_params: Option<f64>,
    /// Share of the training steps over which a budget's target ramps from 1 (dense) down to
    /// the target (CoFi's Lagrangian warm-up).
    pub budget_warmup: f64,
    pub seed: u64,
    /// Stop after this many optimiser steps (all epochs when None); for tests and dry runs.
    pub max_steps: Option<usize>,
    /// ARM/AR: slope k of p = sigmoid(k * phi).
    pub arm_k: f64,
    /// SWP: tau = kappa * std(W) in the zeroing probability exp(-(|w| / tau)^2).
    pub swp_kappa: f64,
    /// L2 weight decay of the weights (Adam), used by SWP.
    pub weight_decay: f64,
    /// Write a checkpoint here after every epoch.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Continue from the newest checkpoint in `checkpoint_dir`.
    pub resume: bool,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub penalty: Penalty,
    /// Weight of the distillation term `T^2 * KL(teacher || student)` from the dense model.
    pub distill_weight: f64,
    pub distill_temperature: f64,
    /// Random crop (zero padding in normalised space) and flip on training batches.
    #[serde(skip)]
    pub augment: Option<crate::data::transform::Augment>,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Also gate channel groups tied by a residual Add (off by default, as in the reference
    /// code: such a gate's cost counts every weight of the tied group).
    pub gate_residual: bool,
    /// Initial HC logit (log alpha); 3 gives P(open) = 0.99 (METHODS, ours: start almost open).
    pub init_logit: f64,
    /// Dep-L0: build the generator chain from the last gated layer to the first (METHODS 3).
    pub dep_backward: bool,
    /// Dep-L0: width of the generator's all-ones input.
    pub dep_n0: usize,
    pub quiet: bool,
    /// How the training data was prepared; checkpoints record it and a resume must match it.
    #[serde(skip)]
    pub preprocessing: Option<crate::data::preprocess::Preprocessing>,
    /// Epochs of training the pruned network (no gates) after the structure is fixed.
    pub finetune_epochs: usize,
    /// Train with no gated group at all (the fine-tune phase of a pruned network).
    #[serde(skip)]
    pub no_gates: bool,
}

impl TrainConfig {
    pub fn new(method: Method) -> Self {
        TrainConfig {
            method,
            epochs: 3,
            batch_size: 128,
            lr: 1e-3,
            gate_lr: 0.1,
            lambda: 1.0,
            target_macs: None,
            target_params: None,
            budget_warmup: crate::train::budget::DEFAULT_WARMUP,
            seed: 0,
            max_steps: None,
            arm_k: 7.0,
            swp_kappa: 0.05,
            weight_decay: 0.0,
            checkpoint_dir: None,
            resume: false,
            optimizer: Optimizer::Adam,
            schedule: Schedule::Constant,
            penalty: Penalty::Macs,
            distill_weight: 0.0,
            distill_temperature: 4.0,
            augment: None,
            progress: false,
            gate_residual: false,
            init_logit: 3.0,
            dep_backward: false,
            dep_n0: 64,
            quiet: false,
            preprocessing: None,
            finetune_epochs: 0,
            no_gates: false,
        }
    }

    /// The method's own settings.
    pub fn method_settings(&self) -> Settings {
        Settings {
            init_logit: self.init_logit,
            arm_k: self.arm_k,
            swp_kappa: self.swp_kappa,
            dep_n0: self.dep_n0,
            dep_backward: self.dep_backward,
            seed: self.seed,
            dep_scaled: self.target_macs.is_some() || self.target_params.is_some(),
        }
    }

    /// The configured method, as the trait training calls.
    pub fn gate_method(&self) -> Box<dyn GateMethod> {
        self.method.build(&self.method_settings())
    }
}
