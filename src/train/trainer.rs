//! The state of a training run (network, gate parameters, method, random source, multiplier)
//! and how it is set up: gate parameters initialised, data split into training and validation.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::TensorData;

use super::TrainConfig;
use super::net::{self, GatedNet};
use crate::data::loader::{Loader, Prefetch};
use crate::data::{Dataset, Examples, TokenData};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::host_f32;
use crate::gates::DepGenerator;
use crate::groups::analyse_layouts;
use crate::ir::Graph;
use crate::methods::cost::CostModel;
use crate::methods::{self, GateInit, GateMethod, Rng};
use crate::rng::SliceRandom;

/// Gate parameters as a burn module (one vector per gated group).
#[derive(Module, Debug)]
pub struct GateParams {
    pub logits: Vec<Param<Tensor<1>>>,
}

pub(super) struct Trainer<'a> {
    pub cfg: &'a TrainConfig,
    pub method: Box<dyn GateMethod>,
    pub net: GatedNet,
    pub gates: GateParams,
    /// Dep-L0: the generator that outputs every group's logits (replaces `gates`).
    pub generator: Option<DepGenerator>,
    pub cost: CostModel,
    pub rng: Rng,
    pub lambda: f64,
    /// Shape of one image example (empty for token data).
    pub sample: Vec<usize>,
    /// The dense network, for distillation.
    pub teacher: Option<crate::exec::Network>,
    /// The weights' learning rate in the current epoch (after the schedule).
    pub lr_now: f64,
    /// n_g per gated group (weights one gate switches off in its producers), for the L0 penalty.
    pub group_sizes: Vec<f64>,
    pub n_train: f64,
    /// Multipliers and ramp of `--target-macs` / `--target-params` (see `budget`).
    pub budget: super::budget::BudgetState,
    /// The epoch's training batches, read ahead in the epoch's order (see `train_input`).
    pub feed: Option<Loader>,
}

/// Example indices for validation and for training.
pub(super) struct Split {
    pub val: Vec<usize>,
    pub train: Vec<usize>,
}

impl<'a> Trainer<'a> {
    /// Builds the gated network, draws the initial gate parameters and holds out the validation
    /// share (both from the run's seed, in that order). `teacher` is what distillation learns
    /// from (the dense model; `graph` itself in the gated phase).
    pub fn new(
        graph: &Graph,
        teacher: &Graph,
        train: Examples<'_>,
        val_fraction: f64,
        cfg: &'a TrainConfig,
        device: &Device,
    ) -> Result<(Self, Split)> {
        let method = cfg.gate_method();
        let analysis = analyse_layouts(graph)?;
        let gate_groups = super::gated_groups(graph, &analysis, cfg);
        let cost = CostModel::new(graph, &analysis, &gate_groups)?;
        let net = GatedNet::new(graph, analysis, &gate_groups, device)?;
        let sample = match train {
            Examples::Images(d) => crate::eval::sample_shape(&net.net, d, "training data")?,
            Examples::Tokens(t) => {
                crate::eval::check_token_inputs(&net.net, t)?;
                Vec::new()
            }
        };
        let mut rng = crate::rng::seeded(cfg.seed);
        let widths: Vec<usize> = net.gated.iter().map(|g| g.width).collect();
        let (logits, generator) = match method.init(&widths, &mut rng, device) {
            GateInit::Free(logits) => (logits, None),
            GateInit::Generator(g) => (Vec::new(), Some(with_fixed_ids(g))),
        };
        // Hold out the validation share (deterministic by seed).
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let n_val = ((train.len() as f64) * val_fraction).round() as usize;
        let (val_idx, train_idx) = order.split_at(n_val.min(train.len().saturating_sub(1)));
        let split = Split {
            val: val_idx.to_vec(),
            train: train_idx.to_vec(),
        };
        let teacher = (cfg.distill_weight > 0.0)
            .then(|| crate::exec::Network::new(teacher, device))
            .transpose()?;
        let group_sizes: Vec<f64> = net
            .gated
            .iter()
            .map(|g| methods::select::weights_per_channel(graph, &net.analysis.groups[g.group]))
            .collect();
        let logits = logits
            .into_iter()
            .enumerate()
            .map(|(i, t)| net::param_with_id(net::GATE_IDS + i as u64, t))
            .collect();
        let trainer = Trainer {
            cfg,
            method,
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
            budget: super::budget::BudgetState::new(total_steps(cfg, split.train.len())),
            feed: None,
        };
        Ok((trainer, split))
    }

    pub fn device(&self) -> Device {
        self.net.device().clone()
    }

    /// The examples `idx` as one input value.
    pub fn input(&self, pixels: Vec<f32>, idx: &[usize]) -> Val {
        let mut shape = vec![idx.len()];
        shape.extend(&self.sample);
        Val::from_f32(pixels, &shape, &self.device())
    }

    /// Starts reading the training batches of `order` ahead (the epoch's shuffled examples);
    /// token batches are cut from memory when asked for.
    pub fn start_feed(&mut self, data: Examples<'_>, order: &[usize]) {
        let Examples::Images(data) = data else {
            return;
        };
        let prefetch = Prefetch::for_data(data);
        self.feed = Some(Loader::new(
            data,
            order.to_vec(),
            self.cfg.batch_size.max(1),
            prefetch,
        ));
    }

    /// A training batch, augmented when configured: the feed's next batch when it holds `idx`,
    /// else read here. The augmentation draws come from the run's random source at this point,
    /// between the previous step's draws and this step's gate sample, so they stay here.
    pub fn train_input(&mut self, data: Examples<'_>, idx: &[usize]) -> Result<Vec<Val>> {
        match data {
            Examples::Images(d) => Ok(vec![self.image_input(d, idx)?]),
            Examples::Tokens(t) => Ok(self.token_inputs(t, idx)),
        }
    }

    /// The token examples `idx`: one `[batch, seq_len]` value per graph input.
    fn token_inputs(&self, data: &TokenData, idx: &[usize]) -> Vec<Val> {
        let device = self.device();
        data.read(idx)
            .0
            .into_iter()
            .map(|v| Val::from_f32(v, &[idx.len(), data.seq_len], &device))
            .collect()
    }

    fn image_input(&mut self, data: &Dataset, idx: &[usize]) -> Result<Val> {
        let ahead = self
            .feed
            .as_mut()
            .filter(|f| f.next_indices() == Some(idx))
            .and_then(|f| f.next_batch());
        let mut pixels = match ahead {
            Some(batch) => batch?,
            None => data.read(idx)?,
        };
        if let Some(aug) = &self.cfg.augment {
            aug.apply(
                &mut pixels,
                idx.len(),
                data.channels,
                data.height,
                data.width,
                &mut self.rng,
            )?;
        }
        Ok(self.input(pixels, idx))
    }

    pub fn labels(&self, data: Examples<'_>, idx: &[usize]) -> Tensor<1, Int> {
        let v: Vec<i64> = idx.iter().map(|&i| data.label(i) as i64).collect();
        Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), &self.device())
    }

    /// Per gated group: may its gate take one draw per example (it multiplies a value with
    /// spatial dimensions)?
    pub fn per_example(&self) -> Vec<bool> {
        self.net
            .gated
            .iter()
            .map(|g| g.rows_are_examples && g.positions.iter().any(|&(_, rank, _)| rank >= 3))
            .collect()
    }

    /// Each gated group's gate parameters (HC log alpha, ARM phi, or Dep-L0 generator output).
    pub fn logits(&self) -> Vec<Tensor<1>> {
        match &self.generator {
            Some(g) => g.forward(),
            None => self.gates.logits.iter().map(|a| a.val()).collect(),
        }
    }

    pub fn gate_values_host(&self) -> Vec<Vec<f32>> {
        self.logits()
            .into_iter()
            .map(|a| host_f32(a.detach()))
            .collect()
    }

    fn test_gates(&self) -> Vec<Vec<f32>> {
        methods::test_gates(self.method.as_ref(), &self.gate_values_host())
    }

    fn eval_gates(&self) -> Vec<Tensor<2>> {
        self.test_gates()
            .into_iter()
            .map(|v| {
                let c = v.len();
                self.net.tensor2(v, 1, c)
            })
            .collect()
    }

    /// Kept (non-zero test-time) gates per gated group.
    pub fn kept_counts(&self) -> Vec<usize> {
        self.test_gates()
            .iter()
            .map(|v| v.iter().filter(|&&z| z > 0.0).count())
            .collect()
    }

    /// Accuracy on `indices` of `data` with the deterministic gates, in eval mode. The passes run
    /// off autodiff (`forward_eval`): burn-autodiff would keep forward-only work until the next
    /// backward, 22 GB for the 10% hold-out of 100k 3x32x32 images on ResNet-20.
    pub fn accuracy(&self, data: Examples<'_>, indices: &[usize]) -> Result<f64> {
        let gates = self.eval_gates();
        let mut correct = 0usize;
        let mut count = |chunk: &[usize], inputs: Vec<Val>| -> Result<()> {
            let logits = self.net.forward_eval(inputs, &gates)?;
            let pred = host_f32(logits.argmax(1).float().reshape([chunk.len()]));
            correct += chunk
                .iter()
                .zip(pred)
                .filter(|&(&i, p)| data.label(i) as f32 == p)
                .count();
            Ok(())
        };
        match data {
            Examples::Images(d) => {
                let batches = Loader::new(d, indices.to_vec(), 256, Prefetch::for_data(d));
                for (chunk, pixels) in indices.chunks(256).zip(batches) {
                    count(chunk, vec![self.input(pixels?, chunk)])?;
                }
            }
            Examples::Tokens(t) => {
                for chunk in indices.chunks(256) {
                    count(chunk, self.token_inputs(t, chunk))?;
                }
            }
        }
        Ok(if indices.is_empty() {
            0.0
        } else {
            correct as f64 / indices.len() as f64
        })
    }

    /// The deterministic MACs of the network now: by the kept gates, or for a method without
    /// gates, without its dead channels.
    pub fn deterministic_macs(&self, kept: &[usize]) -> Result<f64> {
        if self.method.has_gates() {
            Ok(self.cost.deterministic(kept))
        } else {
            methods::swp::macs_without_dead(&self.net.trained_graph())
        }
    }
}

/// Optimiser steps of the whole run: every epoch's batches, or `max_steps` when fewer.
fn total_steps(cfg: &TrainConfig, examples: usize) -> usize {
    let all = cfg.epochs * examples.div_ceil(cfg.batch_size.max(1));
    cfg.max_steps.map_or(all, |m| m.min(all))
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
