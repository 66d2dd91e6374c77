//! Gated fine-tuning: pretrained weights and gate parameters trained jointly with a penalty on
//! the expected cost, by one of the methods of ../shared/METHODS.md.
//!
//! The penalty is `lambda * E[MACs] / dense MACs`, with `E[MACs]` computed from the graph's real
//! layer costs under independent gates (see `cost`). This is our common form of METHODS' cost
//! terms: Dep-L0's `k^2 E_{l-1} E_l` is the same product for a conv chain, and it counts every
//! weight of a residual-tied group. With `--target-macs F`, lambda becomes a Lagrange multiplier
//! updated by dual ascent so that `E[MACs]` converges to F x dense.

pub mod checkpoint;
pub mod cost;
pub mod net;

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::exec::value::host_f32;
use crate::gates::DepGenerator;
use crate::gates::hard_concrete as hc;
use crate::groups::analyse_layouts;
use crate::ir::Graph;
use crate::rng::SplitMix64;
use cost::CostModel;
use net::GatedNet;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    L0Hc,
    L0Arm,
    L0Ar,
    DepL0,
    Swp,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "l0-hc" => Method::L0Hc,
            "l0-arm" => Method::L0Arm,
            "l0-ar" => Method::L0Ar,
            "dep-l0" => Method::DepL0,
            "swp" => Method::Swp,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::L0Hc => "l0-hc",
            Method::L0Arm => "l0-arm",
            Method::L0Ar => "l0-ar",
            Method::DepL0 => "dep-l0",
            Method::Swp => "swp",
        }
    }
}

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
        }
    }
}

/// The method settings that shape its parameters, as options (checked on resume).
fn variant(cfg: &TrainConfig) -> String {
    if cfg.method == Method::DepL0 {
        let chain = if cfg.dep_backward {
            "backward"
        } else {
            "forward"
        };
        format!("--dep-chain {chain} --dep-n0 {}", cfg.dep_n0)
    } else {
        String::new()
    }
}

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

/// Gate parameters as a burn module (one vector per gated group).
#[derive(Module, Debug)]
pub struct GateParams {
    pub logits: Vec<Param<Tensor<1>>>,
}

fn scalar(t: Tensor<1>) -> f64 {
    host_f32(t)[0] as f64
}

/// Deterministic test-time gate values of each gated group.
pub fn test_gates(method: Method, params: &[Vec<f32>], k: f64) -> Vec<Vec<f32>> {
    params
        .iter()
        .map(|v| {
            v.iter()
                .map(|&a| match method {
                    Method::L0Arm | Method::L0Ar => {
                        let p = 1.0 / (1.0 + (-(k as f32) * a).exp());
                        if p >= 0.5 { p } else { 0.0 }
                    }
                    Method::Swp => 1.0,
                    _ => hc::test_gate(a as f64) as f32,
                })
                .collect()
        })
        .collect()
}

struct Trainer<'a> {
    cfg: &'a TrainConfig,
    net: GatedNet,
    gates: GateParams,
    /// Dep-L0: the generator that outputs every group's logits (replaces `gates`).
    generator: Option<DepGenerator>,
    cost: CostModel,
    rng: SplitMix64,
    lambda: f64,
    sample: Vec<usize>,
    /// The dense network, for distillation.
    teacher: Option<crate::exec::Network>,
    /// The weights' learning rate in the current epoch (after the schedule).
    lr_now: f64,
    /// n_g per gated group (weights one gate switches off in its producers), for the L0 penalty.
    group_sizes: Vec<f64>,
    n_train: f64,
}

impl Trainer<'_> {
    fn device(&self) -> Device {
        self.net.device().clone()
    }

    fn input(&self, data: &Dataset, idx: &[usize]) -> Val {
        let batch = data.gather(idx);
        let mut shape = vec![idx.len()];
        shape.extend(&self.sample);
        Val::from_f32(batch.images, &shape, &self.device())
    }

    /// A training batch, augmented when configured.
    fn train_input(&mut self, data: &Dataset, idx: &[usize]) -> Result<Val> {
        let mut batch = data.gather(idx);
        if let Some(aug) = &self.cfg.augment {
            aug.apply(
                &mut batch.images,
                idx.len(),
                data.channels,
                data.height,
                data.width,
                &mut self.rng,
            )?;
        }
        let mut shape = vec![idx.len()];
        shape.extend(&self.sample);
        Ok(Val::from_f32(batch.images, &shape, &self.device()))
    }

    fn labels(&self, data: &Dataset, idx: &[usize]) -> Tensor<1, Int> {
        let v: Vec<i64> = idx.iter().map(|&i| data.labels[i] as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), &self.device())
    }

    /// Uniform noise in (0, 1), host-generated so runs are reproducible on every backend.
    fn noise(&mut self, rows: usize, cols: usize, hard_concrete: bool) -> Tensor<2> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| {
                let u = self.rng.uniform() as f64;
                if hard_concrete {
                    hc::noise_from_uniform(u) as f32
                } else {
                    u as f32
                }
            })
            .collect();
        self.net.tensor2(values, rows, cols)
    }

    fn per_example(&self, i: usize) -> bool {
        self.net.gated[i]
            .positions
            .iter()
            .any(|&(_, rank)| rank >= 3)
    }

    /// Current expected number of open channels per gated group.
    /// Each gated group's gate parameters (HC log alpha, ARM phi, or Dep-L0 generator output).
    fn logits(&self) -> Vec<Tensor<1>> {
        match &self.generator {
            Some(g) => g.forward(),
            None => self.gates.logits.iter().map(|a| a.val()).collect(),
        }
    }

    /// Expected number of open channels per gated group, from the given logits.
    fn expected_open(&self, logits: &[Tensor<1>]) -> Vec<Tensor<1>> {
        logits
            .iter()
            .map(|a| match self.cfg.method {
                Method::L0Arm | Method::L0Ar => {
                    burn::tensor::activation::sigmoid(a.clone() * self.cfg.arm_k as f32).sum()
                }
                _ => hc::prob_open_t(a.clone()).sum(),
            })
            .collect()
    }

    fn gate_values_host(&self) -> Vec<Vec<f32>> {
        self.logits()
            .into_iter()
            .map(|a| host_f32(a.detach()))
            .collect()
    }

    /// Stochastic weight pruning (METHODS section 4, our defaults): after each step, zero each
    /// conv/linear weight with probability exp(-(|w| / tau)^2), tau = kappa * std(W).
    fn swp_mask(&mut self) {
        if self.cfg.swp_kappa <= 0.0 {
            return; // kappa 0: plain (dense) fine-tuning, the benchmarks' reference
        }
        let kappa = self.cfg.swp_kappa as f32;
        let device = self.device();
        let params = std::mem::take(&mut self.net.weights.params);
        let mut out = Vec::with_capacity(params.len());
        for (i, p) in params.into_iter().enumerate() {
            if !self.net.is_prunable_weight(i) {
                out.push(p);
                continue;
            }
            let id = p.id;
            let w = p.val().detach();
            let shape = w.dims();
            let n: usize = shape.iter().product();
            let mean = w.clone().sum() / n as f32;
            let var = (w.clone() - mean.reshape([1, 1, 1, 1, 1, 1]))
                .powi_scalar(2)
                .sum()
                / n as f32;
            let tau = var.sqrt() * kappa + 1e-12;
            let v: Vec<f32> = (0..n).map(|_| self.rng.uniform()).collect();
            let v = crate::exec::value::T6::from_data(TensorData::new(v, shape), &device);
            let q = (w.clone().abs() / tau.reshape([1, 1, 1, 1, 1, 1]))
                .powi_scalar(2)
                .neg()
                .exp();
            let keep = v.greater_equal(q).float();
            out.push(Param::initialized(id, (w * keep).detach().require_grad()));
        }
        self.net.weights.params = out;
    }

    fn eval_gates(&self) -> Vec<Tensor<2>> {
        test_gates(self.cfg.method, &self.gate_values_host(), self.cfg.arm_k)
            .into_iter()
            .map(|v| {
                let c = v.len();
                self.net.tensor2(v, 1, c)
            })
            .collect()
    }

    fn kept_counts(&self) -> Vec<usize> {
        test_gates(self.cfg.method, &self.gate_values_host(), self.cfg.arm_k)
            .iter()
            .map(|v| v.iter().filter(|&&z| z > 0.0).count())
            .collect()
    }

    fn accuracy(&self, data: &Dataset, indices: &[usize]) -> Result<f64> {
        let gates = self.eval_gates();
        let mut correct = 0usize;
        for chunk in indices.chunks(256) {
            let logits = self.net.forward_eval(self.input(data, chunk), &gates)?;
            let pred = host_f32(logits.argmax(1).float().reshape([chunk.len()]));
            correct += chunk
                .iter()
                .zip(pred)
                .filter(|&(&i, p)| data.labels[i] as f32 == p)
                .count();
        }
        Ok(if indices.is_empty() {
            0.0
        } else {
            correct as f64 / indices.len() as f64
        })
    }

    /// One optimiser step; returns (data loss, penalty, expected MACs).
    fn step(
        &mut self,
        data: &Dataset,
        idx: &[usize],
        opt_w: &mut burn::optim::ModuleOptimizer,
        opt_g: &mut burn::optim::ModuleOptimizer,
    ) -> Result<(f64, f64, f64)> {
        let x = self.train_input(data, idx)?;
        let y = self.labels(data, idx);
        let ce = CrossEntropyLoss::new(None, &self.device());
        let n = idx.len();
        let method = self.cfg.method;
        let groups = self.net.gated.len();
        let logits = self.logits();
        let (gate_values, arm_noise): (Vec<Tensor<2>>, Vec<Tensor<2>>) = match method {
            Method::L0Hc | Method::DepL0 => {
                let mut zs = Vec::new();
                for (i, a) in logits.iter().enumerate() {
                    let c = self.net.gated[i].width;
                    let rows = if self.per_example(i) { n } else { 1 };
                    let u = self.noise(rows, c, true);
                    let a = a.clone().reshape([1, c]);
                    zs.push(hc::sample_t(a.expand([rows, c]), u));
                }
                (zs, Vec::new())
            }
            Method::L0Arm | Method::L0Ar => {
                let mut masks = Vec::new();
                let mut us = Vec::new();
                for (i, a) in logits.iter().enumerate() {
                    let c = self.net.gated[i].width;
                    let u = self.noise(1, c, false);
                    let p = burn::tensor::activation::sigmoid(
                        a.clone().detach() * self.cfg.arm_k as f32,
                    )
                    .reshape([1, c]);
                    masks.push(u.clone().lower(p).float());
                    us.push(u);
                }
                (masks, us)
            }
            Method::Swp => (Vec::new(), Vec::new()),
        };
        let out = self.net.forward_train(x.clone(), &gate_values)?;
        let mut data_loss = ce.forward(out.clone(), y.clone());
        if let Some(teacher) = &self.teacher
            && self.cfg.distill_weight > 0.0
        {
            // Hinton et al.'s soft targets: T^2 * KL(softmax(t/T) || softmax(s/T)), batch mean.
            let t = self.cfg.distill_temperature as f32;
            let logits_t = teacher.forward(vec![x.clone()])?.remove(0).to2().detach();
            let p_t = burn::tensor::activation::softmax(logits_t.clone() / t, 1);
            let log_p_t = burn::tensor::activation::log_softmax(logits_t / t, 1);
            let log_p_s = burn::tensor::activation::log_softmax(out / t, 1);
            let kl = (p_t * (log_p_t - log_p_s)).sum_dim(1).mean();
            data_loss = data_loss + kl * (self.cfg.distill_weight as f32 * t * t);
        }
        let open = self.expected_open(&logits);
        let (penalty, expected) = if open.is_empty() {
            (
                Tensor::<1>::zeros([1], &self.device()),
                self.cost.dense_macs,
            )
        } else {
            let e = self.cost.expected(&open);
            let expected = scalar(e.clone().detach());
            let fraction = e / self.cost.dense_macs as f32;
            let pressure = match (&self.cfg.penalty, self.cfg.target_macs) {
                // A budget: no pressure once E[MACs] is within it, so gates stop closing there
                // (closed hard-concrete gates get no data gradient and would not reopen).
                (_, Some(target)) => (fraction - target as f32).clamp_min(0.0) * self.lambda as f32,
                (Penalty::Macs, None) => fraction * self.lambda as f32,
                (Penalty::L0 { group_lambda }, None) => {
                    let mut r = Tensor::<1>::zeros([1], &self.device());
                    for (i, o) in open.iter().enumerate() {
                        let g = &self.net.gated[i];
                        let lambda = group_lambda.get(&g.group).copied().unwrap_or(self.lambda);
                        r = r + o.clone() * (lambda * self.group_sizes[i] / self.n_train) as f32;
                    }
                    r
                }
            };
            (pressure, expected)
        };
        let loss = data_loss.clone() + penalty.clone();
        let loss_value = scalar(data_loss.clone().detach());
        if !loss_value.is_finite() {
            return Err(Error::Diverged(format!(
                "the loss became {loss_value} at epoch step; the last good checkpoint is kept"
            )));
        }
        let mut grads = loss.backward();
        let gw = GradientsParams::from_module(&mut grads, &self.net.weights);
        let mut gg = match &self.generator {
            Some(g) => GradientsParams::from_module(&mut grads, g),
            None => GradientsParams::from_module(&mut grads, &self.gates),
        };
        if matches!(method, Method::L0Arm | Method::L0Ar) {
            // ARM / AR estimates of the data term's gradient w.r.t. phi, added to the penalty's.
            let f_a = loss_value as f32;
            let f_b = if method == Method::L0Arm {
                let masks_b: Vec<Tensor<2>> = arm_noise
                    .iter()
                    .zip(&self.gates.logits)
                    .map(|(u, a)| {
                        let c = u.dims()[1];
                        let p = burn::tensor::activation::sigmoid(
                            a.val().detach() * self.cfg.arm_k as f32,
                        )
                        .reshape([1, c]);
                        u.clone().greater(p.neg() + 1.0).float()
                    })
                    .collect();
                let logits_b = self.net.forward_eval_train_bn(x, &masks_b)?;
                scalar(ce.forward(logits_b, y).detach()) as f32
            } else {
                0.0
            };
            let k = self.cfg.arm_k as f32;
            for (a, u) in self.gates.logits.iter().zip(&arm_noise) {
                let c = u.dims()[1];
                let u = u.clone().reshape([c]);
                let est = if method == Method::L0Arm {
                    (u - 0.5) * (k * (f_b - f_a))
                } else {
                    (u * -2.0 + 1.0) * (k * f_a)
                };
                let total = match gg.remove::<1>(a.id) {
                    Some(g) => g + est,
                    None => est,
                };
                gg.register(a.id, total);
            }
        }
        let weights = std::mem::replace(&mut self.net.weights, net::Weights { params: Vec::new() });
        self.net.weights = opt_w.step(self.lr_now, weights, gw);
        if let Some(g) = self.generator.take() {
            self.generator = Some(opt_g.step(self.cfg.gate_lr, g, gg));
        } else if groups > 0 {
            let gates = std::mem::replace(&mut self.gates, GateParams { logits: Vec::new() });
            self.gates = opt_g.step(self.cfg.gate_lr, gates, gg);
        }
        if method == Method::Swp {
            self.swp_mask();
        }
        if let Some(target) = self.cfg.target_macs {
            // Dual ascent on the multiplier of the budget constraint E[MACs] <= target.
            let gap = expected / self.cost.dense_macs - target;
            self.lambda = (self.lambda + 0.1 * gap).max(0.0);
        }
        Ok((loss_value, scalar(penalty.detach()), expected))
    }
}

/// An indicatif bar for one epoch, only when asked for and stderr is a terminal.
fn progress_bar(cfg: &TrainConfig, epoch: usize, steps: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !cfg.progress || cfg.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    let style =
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .ok()?;
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
    Some(bar)
}

/// Ids of the channel groups that get gates: prunable groups wider than one channel, without
/// the residual-tied ones unless `gate_residual`; none for SWP, which prunes weights, not gates.
pub fn gated_groups(
    graph: &Graph,
    analysis: &crate::groups::ChannelAnalysis,
    cfg: &TrainConfig,
) -> Vec<usize> {
    if cfg.method == Method::Swp {
        return Vec::new();
    }
    let residual = residual_tied_groups(graph, analysis);
    analysis
        .groups
        .iter()
        .filter(|g| g.prunable && g.width > 1)
        .filter(|g| cfg.gate_residual || !residual.contains(&g.id))
        .map(|g| g.id)
        .collect()
}

/// Groups that meet a residual Add or Sub of two computed values (the residual stream).
pub fn residual_tied_groups(
    graph: &Graph,
    analysis: &crate::groups::ChannelAnalysis,
) -> std::collections::HashSet<usize> {
    use crate::ir::{BinaryOp, Op};
    let mut out = std::collections::HashSet::new();
    for n in &graph.nodes {
        if let Op::Binary(BinaryOp::Add | BinaryOp::Sub) = n.op
            && let (Some(a), Some(b)) = (
                analysis.layouts.get(&n.inputs[0]),
                analysis.layouts.get(&n.inputs[1]),
            )
        {
            out.extend(a.iter().chain(b).map(|s| s.group));
        }
    }
    out
}

/// Weights one channel's gate switches off in the group's producers (METHODS section 0: a conv
/// output channel owns C_in x kh x kw weights, a linear output neuron its input row).
fn producer_weights_per_channel(graph: &Graph, group: &crate::groups::ChannelGroup) -> f64 {
    group
        .producers
        .iter()
        .filter_map(|p| graph.nodes.iter().find(|n| &n.name == p))
        .filter_map(|n| n.inputs.get(1).and_then(|w| graph.initializers.get(w)))
        .map(|w| w.len() as f64 / group.width as f64)
        .sum()
}

/// Rebuilds a generator's parameters with fixed ids (see `net::WEIGHT_IDS`).
fn with_fixed_ids(mut g: DepGenerator) -> DepGenerator {
    for (i, layer) in g.layers.iter_mut().enumerate() {
        let base = net::GENERATOR_IDS + 2 * i as u64;
        layer.weight = net::param_with_id(base, layer.weight.val());
        if let Some(b) = layer.bias.take() {
            layer.bias = Some(net::param_with_id(base + 1, b.val()));
        }
    }
    g
}

fn host_named<const D: usize>(name: String, t: Tensor<D>) -> checkpoint::Named {
    let shape = t.dims().to_vec();
    (name, shape, host_f32(t.detach()))
}

impl Trainer<'_> {
    /// SWP has no gates: its cost is that of the network without its dead channels.
    fn swp_macs(&self) -> Result<f64> {
        let g = self.net.trained_graph();
        let plan = crate::pipeline::dead_channel_plan(&g)?;
        let pruned = crate::prune::prune_dead(&g, &plan)?;
        Ok(crate::ir::cost::graph_cost(&pruned.graph, 1)?.macs as f64)
    }

    /// Every trained tensor, named, for a checkpoint.
    fn snapshot(&self) -> Vec<checkpoint::Named> {
        let mut out = Vec::new();
        for (i, p) in self.net.weights.params.iter().enumerate() {
            out.push(host_named(format!("weight.{i}"), p.val()));
        }
        let mut running: Vec<_> = self.net.running.iter().collect();
        running.sort_by_key(|(s, _)| **s);
        for (slot, v) in running {
            out.push(host_named(format!("running.{slot}"), v.t.clone()));
        }
        for (i, a) in self.gates.logits.iter().enumerate() {
            out.push(host_named(format!("gate.{i}"), a.val()));
        }
        if let Some(g) = &self.generator {
            for (i, l) in g.layers.iter().enumerate() {
                out.push(host_named(format!("generator.{i}.weight"), l.weight.val()));
                if let Some(b) = &l.bias {
                    out.push(host_named(format!("generator.{i}.bias"), b.val()));
                }
            }
        }
        out
    }

    /// Puts checkpointed tensors back (same names and ids as `snapshot`).
    fn restore(&mut self, tensors: &[checkpoint::Named]) -> Result<()> {
        // Every tensor this net has must be there with its shape, before anything is replaced.
        for (name, shape, _) in self.snapshot() {
            if let Some(t) = tensors.iter().find(|t| t.0 == name)
                && t.1 != shape
            {
                return Err(Error::Data {
                    path: "checkpoint".into(),
                    reason: format!(
                        "tensor '{name}' has shape {:?} there but {shape:?} here (was it made \
                         from another model or with other settings?)",
                        t.1
                    ),
                });
            }
        }
        let device = self.device();
        let find = |name: &str| -> Result<&checkpoint::Named> {
            tensors
                .iter()
                .find(|t| t.0 == name)
                .ok_or_else(|| Error::Data {
                    path: "checkpoint".into(),
                    reason: format!("tensor '{name}' is missing (was it made from another model?)"),
                })
        };
        fn make<const D: usize>(t: &checkpoint::Named, device: &Device) -> Tensor<D> {
            let shape: [usize; D] = t.1.clone().try_into().expect("rank checked by name");
            Tensor::<D>::from_data(TensorData::new(t.2.clone(), shape), device)
        }
        for i in 0..self.net.weights.params.len() {
            let t = find(&format!("weight.{i}"))?;
            self.net.weights.params[i] =
                net::param_with_id(net::WEIGHT_IDS + i as u64, make::<6>(t, &device));
        }
        let slots: Vec<usize> = self.net.running.keys().copied().collect();
        for slot in slots {
            let t = find(&format!("running.{slot}"))?;
            let v = Val::new(make::<6>(t, &device), 1);
            self.net.running.insert(slot, v);
        }
        for i in 0..self.gates.logits.len() {
            let t = find(&format!("gate.{i}"))?;
            self.gates.logits[i] =
                net::param_with_id(net::GATE_IDS + i as u64, make::<1>(t, &device));
        }
        if let Some(g) = &mut self.generator {
            for (i, l) in g.layers.iter_mut().enumerate() {
                let base = net::GENERATOR_IDS + 2 * i as u64;
                l.weight = net::param_with_id(
                    base,
                    make::<2>(find(&format!("generator.{i}.weight"))?, &device),
                );
                if l.bias.is_some() {
                    l.bias = Some(net::param_with_id(
                        base + 1,
                        make::<1>(find(&format!("generator.{i}.bias"))?, &device),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Fine-tunes `graph` on `train` (minus a validation share), returning the trained gated net.
pub fn fine_tune(
    graph: &Graph,
    train: &Dataset,
    val_fraction: f64,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    let analysis = analyse_layouts(graph)?;
    let gate_groups = gated_groups(graph, &analysis, cfg);
    let cost = CostModel::new(graph, &analysis, &gate_groups)?;
    let net = GatedNet::new(graph, analysis, &gate_groups, device)?;
    let sample = crate::eval::sample_shape(&net.net, train, "training data")?;
    let mut rng = SplitMix64::new(cfg.seed);
    let init = match cfg.method {
        Method::L0Arm | Method::L0Ar => (cfg.init_logit / cfg.arm_k) as f32,
        _ => cfg.init_logit as f32,
    };
    let widths: Vec<usize> = net.gated.iter().map(|g| g.width).collect();
    let generator = (cfg.method == Method::DepL0 && !widths.is_empty()).then(|| {
        with_fixed_ids(DepGenerator::new_seeded(
            &widths,
            cfg.dep_n0,
            cfg.dep_backward,
            cfg.seed,
            device,
        ))
    });
    let logits: Vec<Tensor<1>> = net
        .gated
        .iter()
        .filter(|_| generator.is_none())
        .map(|g| {
            let v: Vec<f32> = (0..g.width)
                .map(|_| init + 0.01 * (2.0 * rng.uniform() - 1.0))
                .collect();
            Tensor::<1>::from_data(TensorData::new(v, [g.width]), device)
        })
        .collect();
    // Hold out the validation share (deterministic by seed).
    let mut order: Vec<usize> = (0..train.len()).collect();
    rng.shuffle(&mut order);
    let n_val = ((train.len() as f64) * val_fraction).round() as usize;
    let (val_idx, train_idx) = order.split_at(n_val.min(train.len().saturating_sub(1)));
    let (val_idx, mut train_idx) = (val_idx.to_vec(), train_idx.to_vec());
    let teacher = (cfg.distill_weight > 0.0)
        .then(|| crate::exec::Network::new(graph, device))
        .transpose()?;
    let group_sizes: Vec<f64> = net
        .gated
        .iter()
        .map(|g| producer_weights_per_channel(graph, &net.analysis.groups[g.group]))
        .collect();
    let logits = logits
        .into_iter()
        .enumerate()
        .map(|(i, t): (usize, Tensor<1>)| net::param_with_id(net::GATE_IDS + i as u64, t))
        .collect();
    let mut t = Trainer {
        cfg,
        net,
        gates: GateParams { logits },
        generator,
        cost,
        rng,
        lambda: cfg.lambda,
        sample,
        teacher,
        lr_now: cfg.lr,
        group_sizes,
        n_train: train.len() as f64,
    };
    let decay = (cfg.weight_decay > 0.0)
        .then(|| burn::optim::decay::WeightDecayConfig::new(cfg.weight_decay as f32));
    let mut opt_w = match cfg.optimizer {
        Optimizer::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        Optimizer::Sgd { momentum, nesterov } => burn::optim::SgdConfig::new()
            .with_weight_decay(decay)
            .with_momentum((momentum > 0.0).then(|| {
                // PyTorch's convention (no dampening), which the reference schedules assume.
                burn::optim::momentum::MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov)
            }))
            .init(),
    };
    let mut opt_g = AdamConfig::new().init();
    let mut history = Vec::new();
    let mut steps = 0usize;
    let mut first_epoch = 1;
    if cfg.resume {
        let dir = cfg
            .checkpoint_dir
            .as_ref()
            .ok_or_else(|| Error::Usage("--resume needs --checkpoint-dir".into()))?;
        let loaded = checkpoint::load_latest(dir)?
            .ok_or_else(|| Error::Usage(format!("--resume: no checkpoint in {}", dir.display())))?;
        if loaded.state.method != cfg.method.name() || loaded.state.seed != cfg.seed {
            return Err(Error::Usage(format!(
                "--resume: {} was made with --method {} --seed {}, not --method {} --seed {}",
                loaded.path.display(),
                loaded.state.method,
                loaded.state.seed,
                cfg.method.name(),
                cfg.seed
            )));
        }
        // Checkpoints from before `variant` existed have it empty; the shape check in
        // `restore` still guards them.
        if !loaded.state.variant.is_empty() && loaded.state.variant != variant(cfg) {
            return Err(Error::Usage(format!(
                "--resume: {} was made with {}, not {}",
                loaded.path.display(),
                loaded.state.variant,
                variant(cfg)
            )));
        }
        t.restore(&loaded.tensors)?;
        opt_w = opt_w.load_record(loaded.opt_w);
        opt_g = opt_g.load_record(loaded.opt_g);
        t.rng = SplitMix64::new(loaded.state.rng_state);
        t.lambda = loaded.state.lambda;
        train_idx = loaded.state.train_order;
        history = loaded.state.history;
        steps = loaded.state.steps;
        first_epoch = loaded.state.epoch + 1;
        if !cfg.quiet {
            eprintln!(
                "resumed from {} (epoch {})",
                loaded.path.display(),
                loaded.state.epoch
            );
        }
    }
    'epochs: for epoch in first_epoch..=cfg.epochs {
        let start = std::time::Instant::now();
        t.lr_now = cfg.lr * cfg.schedule.factor(epoch, cfg.epochs);
        t.rng.shuffle(&mut train_idx);
        let bar = progress_bar(cfg, epoch, train_idx.len().div_ceil(cfg.batch_size.max(1)));
        let (mut loss_sum, mut pen_sum, mut exp_macs, mut batches) = (0.0, 0.0, 0.0, 0usize);
        for chunk in train_idx.chunks(cfg.batch_size.max(1)) {
            if cfg.max_steps.is_some_and(|m| steps >= m) {
                break;
            }
            let (l, p, e) = t
                .step(train, chunk, &mut opt_w, &mut opt_g)
                .map_err(|e| match e {
                    Error::Diverged(why) => Error::Diverged(format!(
                        "{why} (epoch {epoch}); {}",
                        match cfg.checkpoint_dir.as_ref().map(|d| checkpoint::epochs(d)
                            .map(|v| v.last().map(|k| d.join(format!("epoch-{k}")))))
                        {
                            Some(Ok(Some(p))) =>
                                format!("the last good checkpoint is {}", p.display()),
                            _ => "no checkpoint was written".to_string(),
                        }
                    )),
                    other => other,
                })?;
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "loss {l:.4} E[MACs] {:.1}%",
                    100.0 * e / t.cost.dense_macs
                ));
                bar.inc(1);
            }
            loss_sum += l;
            pen_sum += p;
            exp_macs = e;
            batches += 1;
            steps += 1;
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let accuracy = t.accuracy(train, &val_idx)?;
        let kept = t.kept_counts();
        let record = EpochRecord {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            penalty: pen_sum / batches.max(1) as f64,
            accuracy,
            expected_macs: exp_macs,
            deterministic_macs: if cfg.method == Method::Swp {
                t.swp_macs()?
            } else {
                t.cost.deterministic(&kept)
            },
            open_gates: kept,
            lambda: t.lambda,
            seconds: start.elapsed().as_secs_f64(),
        };
        if !cfg.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} penalty {:.4} val acc {:.4} E[MACs] {:.0} MACs {:.0} ({:.1}% of dense) lambda {:.3} [{:.1}s]",
                cfg.epochs,
                record.loss,
                record.penalty,
                record.accuracy,
                record.expected_macs,
                record.deterministic_macs,
                100.0 * record.deterministic_macs / t.cost.dense_macs,
                record.lambda,
                record.seconds
            );
        }
        history.push(record);
        if let Some(dir) = &cfg.checkpoint_dir {
            let state = checkpoint::State {
                method: cfg.method.name().to_string(),
                seed: cfg.seed,
                variant: variant(cfg),
                epoch,
                steps,
                lambda: t.lambda,
                rng_state: t.rng.state(),
                train_order: train_idx.clone(),
                history: history.clone(),
                tensors: Vec::new(),
            };
            checkpoint::save(dir, state, &t.snapshot(), &opt_w, &opt_g)?;
        }
        if cfg.max_steps.is_some_and(|m| steps >= m) {
            break 'epochs;
        }
    }
    let gate_params = t.gate_values_host();
    Ok(TrainOutcome {
        dense_macs: t.cost.dense_macs,
        net: t.net,
        gate_params,
        history,
    })
}
