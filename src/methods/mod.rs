//! Gate methods (METHODS §1-4): one [`GateMethod`] implementation per file, and everything
//! training asks of a method goes through that trait: the initial gate parameters, the gate
//! values of a training step (with the noise they need), the expected open count the cost is
//! built from, the deterministic test-time value, the extra gradient of estimators such as
//! ARM/AR, and what happens after an optimiser step (SWP's weight zeroing).
//!
//! - [`l0_hc`]: hard concrete gates with free logits (L0-HC).
//! - [`l0_arm`]: exactly binary gates with the ARM (two passes) or AR (one pass) estimator.
//! - [`dep_l0`]: hard concrete gates whose logits a generator network outputs (Dep-L0).
//! - [`swp`]: stochastic weight pruning, no gates; dead channels are found after training.
//! - [`select`]: which channel groups get a gate.
//! - [`plan`]: from trained gate parameters to a keep plan and the gated reference graph.
//!
//! The tensor functions these files run in training are the ones their unit tests pin to
//! METHODS §10.

pub mod budget_fit;
pub mod cost;
pub mod dep_l0;
pub mod l0_arm;
pub mod l0_hc;
pub mod plan;
pub mod select;
pub mod swp;

use burn::module::Param;
use burn::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::exec::value::T6;
use crate::gates::DepGenerator;

/// The project's random source.
pub use crate::rng::Rng;
use crate::rng::RngExt;

/// Which gate method trains the network.
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
    /// L0 with hard concrete gates (Louizos et al. 2018).
    #[value(name = "l0-hc")]
    L0Hc,
    /// Binary gates with the ARM estimator (Li & Ji 2019).
    #[value(name = "l0-arm")]
    L0Arm,
    /// Binary gates with the AR estimator (Li & Ji 2019).
    #[value(name = "l0-ar")]
    L0Ar,
    /// Hard concrete gates whose logits a generator outputs (Li & Ji 2021).
    #[value(name = "dep-l0")]
    DepL0,
    /// Stochastic weight pruning (Ben-Guigui et al.).
    #[value(name = "swp")]
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

    /// This method with its settings, as the trait training calls.
    pub fn build(self, s: &Settings) -> Box<dyn GateMethod> {
        match self {
            Method::L0Hc => Box::new(l0_hc::L0Hc {
                init_logit: s.init_logit,
            }),
            Method::L0Arm | Method::L0Ar => Box::new(l0_arm::L0Arm {
                k: s.arm_k,
                init_logit: s.init_logit,
                estimator: if self == Method::L0Arm {
                    l0_arm::Estimator::Arm
                } else {
                    l0_arm::Estimator::Ar
                },
            }),
            Method::DepL0 => Box::new(dep_l0::DepL0 {
                n0: s.dep_n0,
                backward: s.dep_backward,
                seed: s.seed,
                scaled: s.dep_scaled,
            }),
            Method::Swp => Box::new(swp::Swp { kappa: s.swp_kappa }),
        }
    }
}

/// The settings that shape a method's parameters and sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// HC: initial logit (log alpha); ARM/AR: `k * phi` at init.
    pub init_logit: f64,
    /// ARM/AR: slope k of `p = sigmoid(k * phi)`.
    pub arm_k: f64,
    /// SWP: `tau = kappa * std(W)`.
    pub swp_kappa: f64,
    /// Dep-L0: width of the generator's all-ones input.
    pub dep_n0: usize,
    /// Dep-L0: chain from the last gated layer to the first.
    pub dep_backward: bool,
    /// Dep-L0: seed of the generator's init.
    pub seed: u64,
    /// Dep-L0: scale the generator's Adam steps (budget runs; `gates::dep_l0::step_scale`).
    pub dep_scaled: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            init_logit: 3.0,
            arm_k: 7.0,
            swp_kappa: 0.05,
            dep_n0: 64,
            dep_backward: false,
            seed: 0,
            dep_scaled: false,
        }
    }
}

/// Where the gate parameters of a run come from.
pub enum GateInit {
    /// One trainable vector per gated group (HC log alpha, ARM phi).
    Free(Vec<Tensor<1>>),
    /// Dep-L0: a generator outputs every group's logits.
    Generator(DepGenerator),
}

/// The gate values of one training step.
pub struct TrainSample {
    /// Per gated group, `[rows, C]`: one row shared by the batch or one per example.
    pub gates: Vec<Tensor<2>>,
    /// Per gated group, the `[1, C]` noise an estimator reuses after the backward pass (ARM/AR);
    /// empty for reparameterised methods.
    pub noise: Vec<Tensor<2>>,
}

/// A second forward pass with other gate values, returning its data loss (ARM's pass B).
pub type PassB<'a> = dyn FnMut(Vec<Tensor<2>>) -> Result<f32> + 'a;

/// Everything training needs to know about a gate method.
pub trait GateMethod {
    fn method(&self) -> Method;

    /// Whether the method trains gates (SWP does not: it zeroes weights).
    fn has_gates(&self) -> bool {
        true
    }

    /// Initial gate parameters for gated groups of these widths (draws from `rng` in group
    /// order when the parameters are free).
    fn init(&self, widths: &[usize], rng: &mut Rng, device: &Device) -> GateInit;

    /// The gate values of a training step for a batch of `batch` examples; `per_example[i]`
    /// says whether group i may take one draw per example.
    fn sample(
        &self,
        logits: &[Tensor<1>],
        batch: usize,
        per_example: &[bool],
        rng: &mut Rng,
        device: &Device,
    ) -> TrainSample;

    /// `P(gate open)` per gate, differentiable in the parameters.
    fn prob_open(&self, logits: Tensor<1>) -> Tensor<1>;

    /// Expected number of open gates of each group (shape `[1]` each): the cost's input.
    fn expected_open(&self, logits: &[Tensor<1>]) -> Vec<Tensor<1>> {
        logits
            .iter()
            .map(|a| self.prob_open(a.clone()).sum())
            .collect()
    }

    /// Deterministic test-time multiplier of one gate with parameter `param` (0: pruned).
    fn test_value(&self, param: f32) -> f32;

    /// Gradient of the data term w.r.t. the gate parameters that autograd cannot give (ARM/AR),
    /// one vector per group, added to autograd's. `f_a` is the step's data loss; `pass_b` runs
    /// a second pass with other gates. None: autograd's gradient is all there is.
    fn extra_grad(
        &self,
        _logits: &[Tensor<1>],
        _sample: &TrainSample,
        _f_a: f32,
        _pass_b: &mut PassB<'_>,
    ) -> Result<Option<Vec<Tensor<1>>>> {
        Ok(None)
    }

    /// Runs after every optimiser step on the weights; `prunable[i]` says whether weight i is a
    /// conv/linear matrix.
    fn after_step(&self, _weights: &mut Vec<Param<T6>>, _prunable: &[bool], _rng: &mut Rng) {}

    /// The settings that shape the parameters, as recorded in checkpoints (a resume must match
    /// them); empty when nothing beyond method and seed does.
    fn variant(&self) -> String {
        String::new()
    }
}

/// Deterministic test-time gate values of each gated group.
pub fn test_gates(method: &dyn GateMethod, params: &[Vec<f32>]) -> Vec<Vec<f32>> {
    params
        .iter()
        .map(|v| v.iter().map(|&a| method.test_value(a)).collect())
        .collect()
}

/// Free parameters around `init`, with a uniform jitter of +-0.01 (drawn in group order).
fn jittered(init: f32, widths: &[usize], rng: &mut Rng, device: &Device) -> Vec<Tensor<1>> {
    widths
        .iter()
        .map(|&width| {
            let v: Vec<f32> = (0..width)
                .map(|_| init + rng.random_range(-0.01f32..0.01))
                .collect();
            Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [width]), device)
        })
        .collect()
}

/// Uploads host values as a `[rows, cols]` tensor.
fn tensor2(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(burn::tensor::TensorData::new(values, [rows, cols]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn value_names_match_parse_and_name() {
        for m in Method::value_variants() {
            let v = m.to_possible_value().unwrap();
            assert_eq!(v.get_name(), m.name());
            assert_eq!(Method::parse(v.get_name()), Some(*m));
            assert_eq!(Method::from_str(m.name(), false), Ok(*m));
            assert_eq!(m.build(&Settings::default()).method(), *m);
        }
    }
}
