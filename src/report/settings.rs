//! The `settings` record of a run report: every option that shaped the result.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::data::preprocess::Preprocessing;
use crate::train::{Method, Optimizer, Penalty, Schedule, TrainConfig};

/// The backend a run executes on (`--device`): cpu always, wgpu and cuda when compiled in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Wgpu,
    Cuda,
}

/// Direction of Dep-L0's generator chain (`--dep-chain`, METHODS section 3).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DepChain {
    /// First gated layer to last.
    Forward,
    /// Last gated layer to first, its outputs reversed.
    Backward,
}

/// Every option that shaped a run's result, seed included (report schema 1, `settings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    pub method: Method,
    /// The dataset directory as given (or the shipped subset's path).
    pub data: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub gate_lr: f64,
    pub lambda: f64,
    pub target_macs: Option<f64>,
    pub seed: u64,
    pub val_fraction: f64,
    pub max_steps: Option<usize>,
    pub round_to: Option<usize>,
    pub device: Device,
    pub latency_runs: usize,
    pub init_logit: f64,
    pub arm_k: f64,
    pub swp_kappa: f64,
    pub weight_decay: f64,
    pub checkpoint_dir: Option<PathBuf>,
    pub resume: bool,
    // Options added after the first reports of schema 1: absent in those, read as what the
    // runs that wrote them did.
    #[serde(default = "defaults::optimizer")]
    pub optimizer: Optimizer,
    #[serde(default = "defaults::schedule")]
    pub schedule: Schedule,
    #[serde(default = "defaults::penalty")]
    pub penalty: Penalty,
    #[serde(default)]
    pub distill_weight: f64,
    #[serde(default = "defaults::distill_temperature")]
    pub distill_temperature: f64,
    #[serde(default)]
    pub augment: bool,
    #[serde(default)]
    pub gate_residual: bool,
    #[serde(default = "defaults::dep_chain")]
    pub dep_chain: DepChain,
    #[serde(default = "defaults::dep_n0")]
    pub dep_n0: usize,
    /// How inputs were prepared: the mean and std applied to [0, 1] pixels, their source
    /// (`option`, `preset`, `model` metadata or `format-default`) and an image folder's resize.
    /// Absent when the format default applied and changed nothing (IDX and image folders
    /// without options), and in reports written before the field existed (which used the
    /// format default: CIFAR-10 statistics for CIFAR data, none otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    /// `--input-shape` values that sized the model's symbolic dims, as given; absent when none
    /// was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_shape: Vec<String>,
    /// `--target-params`: the fraction of dense parameters asked for; absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_params: Option<f64>,
}

/// What runs did before an option existed.
mod defaults {
    use super::*;

    pub fn optimizer() -> Optimizer {
        Optimizer::Adam
    }
    pub fn schedule() -> Schedule {
        Schedule::Constant
    }
    pub fn penalty() -> Penalty {
        Penalty::Macs
    }
    pub fn distill_temperature() -> f64 {
        4.0
    }
    pub fn dep_chain() -> DepChain {
        DepChain::Forward
    }
    pub fn dep_n0() -> usize {
        64
    }
}

/// The options of a run that are not part of its [`TrainConfig`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub data: String,
    pub val_fraction: f64,
    pub round_to: Option<usize>,
    pub device: Device,
    pub latency_runs: usize,
    /// None: the format default that changes nothing (see [`Settings::preprocessing`]).
    pub preprocessing: Option<Preprocessing>,
    /// `--input-shape` values, as given.
    pub input_shape: Vec<String>,
}

impl Settings {
    /// The record of one run trained with `cfg`.
    pub fn new(cfg: &TrainConfig, run: &RunOptions) -> Settings {
        Settings {
            method: cfg.method,
            data: run.data.clone(),
            epochs: cfg.epochs,
            batch_size: cfg.batch_size,
            lr: cfg.lr,
            gate_lr: cfg.gate_lr,
            lambda: cfg.lambda,
            target_macs: cfg.target_macs,
            seed: cfg.seed,
            val_fraction: run.val_fraction,
            max_steps: cfg.max_steps,
            round_to: run.round_to,
            device: run.device,
            latency_runs: run.latency_runs,
            init_logit: cfg.init_logit,
            arm_k: cfg.arm_k,
            swp_kappa: cfg.swp_kappa,
            weight_decay: cfg.weight_decay,
            checkpoint_dir: cfg.checkpoint_dir.clone(),
            resume: cfg.resume,
            optimizer: cfg.optimizer.clone(),
            schedule: cfg.schedule.clone(),
            penalty: cfg.penalty.clone(),
            distill_weight: cfg.distill_weight,
            distill_temperature: cfg.distill_temperature,
            augment: cfg.augment.is_some(),
            gate_residual: cfg.gate_residual,
            dep_chain: if cfg.dep_backward {
                DepChain::Backward
            } else {
                DepChain::Forward
            },
            dep_n0: cfg.dep_n0,
            preprocessing: run.preprocessing.clone(),
            input_shape: run.input_shape.clone(),
            target_params: cfg.target_params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record keeps the keys and values of the hand-built JSON it replaced.
    #[test]
    fn settings_serialise_as_the_report_always_wrote_them() {
        let mut cfg = TrainConfig::new(Method::DepL0);
        cfg.dep_backward = true;
        cfg.optimizer = Optimizer::Sgd {
            momentum: 0.9,
            nesterov: true,
        };
        let run = RunOptions {
            data: "d".into(),
            val_fraction: 0.1,
            round_to: Some(4),
            device: Device::Cpu,
            latency_runs: 10,
            preprocessing: None,
            input_shape: Vec::new(),
        };
        let v = serde_json::to_value(Settings::new(&cfg, &run)).unwrap();
        let want = serde_json::json!({
            "method": "dep-l0", "data": "d", "epochs": 3, "batch_size": 128, "lr": 1e-3,
            "gate_lr": 0.1, "lambda": 1.0, "target_macs": null, "seed": 0, "val_fraction": 0.1,
            "max_steps": null, "round_to": 4, "device": "cpu", "latency_runs": 10,
            "init_logit": 3.0, "arm_k": 7.0, "swp_kappa": 0.05, "weight_decay": 0.0,
            "checkpoint_dir": null, "resume": false,
            "optimizer": {"Sgd": {"momentum": 0.9, "nesterov": true}}, "schedule": "Constant",
            "penalty": "Macs", "distill_weight": 0.0, "distill_temperature": 4.0,
            "augment": false, "gate_residual": false, "dep_chain": "backward", "dep_n0": 64,
        });
        assert_eq!(v, want);
        let back: Settings = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, Settings::new(&cfg, &run));
        // Reports written before the later options existed still read, as those runs ran.
        let mut old = v;
        for key in ["optimizer", "schedule", "penalty", "distill_weight"] {
            old.as_object_mut().unwrap().remove(key);
        }
        let read: Settings = serde_json::from_value(old).unwrap();
        assert_eq!(read.optimizer, Optimizer::Adam);
        assert_eq!(read.penalty, Penalty::Macs);
    }
}
