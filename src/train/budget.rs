//! The cost term of the loss: `lambda * E[MACs] / dense MACs`, METHODS' expected L0, or budgets
//! (`--target-macs`, `--target-params`) held by CoFi's Lagrangian.
//!
//! Per budget, with `s` the expected fraction of dense (MACs or parameters) and `t` the target
//! of this step: `lambda1 (s - t) + lambda2 (s - t)^2`. The multipliers start at 0 and rise by
//! gradient ascent on the same expression (`lambda1 += rate (s - t)`, `lambda2 += rate (s - t)^2`),
//! so the pressure grows while the network is over its budget and `lambda1` turns negative (it
//! pushes gates open again) when it is under. `t` ramps linearly from 1 (dense) to the target
//! over the first [`DEFAULT_WARMUP`] of the steps, so gates close while the weights adapt instead
//! of all at once.

use burn::prelude::*;

use super::Penalty;
use super::step::scalar;
use super::trainer::Trainer;
use crate::gates::penalty::l0_group_penalty_t;

/// Share of the training steps over which a budget's target ramps from 1 down to the target.
pub const DEFAULT_WARMUP: f64 = 0.3;

/// Gradient-ascent rate of the multipliers, per step and per unit of fraction over the target.
const ASCENT_RATE: f64 = 0.1;

/// The two multipliers of one budget constraint.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Multipliers {
    pub linear: f64,
    pub quadratic: f64,
}

impl Multipliers {
    /// One ascent step on `gap = s - t`.
    fn ascend(&mut self, gap: f64) {
        let rate = ASCENT_RATE;
        self.linear += rate * gap;
        self.quadratic += rate * gap * gap;
    }
}

/// The budgets' state during training: multipliers, the step count for the ramp, and the last
/// expected fractions.
#[derive(Debug, Clone, Default)]
pub struct BudgetState {
    pub macs: Multipliers,
    pub params: Multipliers,
    pub step: usize,
    /// Steps of the whole run (the ramp's length is a share of it).
    pub total_steps: usize,
    /// Gaps `s - t` of the step in progress (MACs, parameters).
    gaps: (Option<f64>, Option<f64>),
}

impl BudgetState {
    pub fn new(total_steps: usize) -> Self {
        BudgetState {
            total_steps,
            ..Default::default()
        }
    }

    /// The target of this step: 1 at the start, `target` from the end of the warm-up on.
    pub fn ramped(&self, target: f64, warmup: f64) -> f64 {
        let ramp = (warmup * self.total_steps as f64).max(1.0);
        let progress = (self.step as f64 / ramp).min(1.0);
        1.0 - (1.0 - target) * progress
    }
}

/// `lambda1 (s - t) + lambda2 (s - t)^2` as a differentiable term.
fn lagrangian(fraction: Tensor<1>, target: f64, m: Multipliers) -> Tensor<1> {
    let gap = fraction - target as f32;
    gap.clone() * m.linear as f32 + gap.clone() * gap * m.quadratic as f32
}

impl Trainer<'_> {
    /// The penalty (differentiable) and the expected MACs, from each gated group's expected
    /// open count.
    pub(super) fn penalty(&mut self, open: &[Tensor<1>]) -> (Tensor<1>, f64) {
        if open.is_empty() {
            return (
                Tensor::<1>::zeros([1], &self.device()),
                self.cost.dense_macs,
            );
        }
        let e = self.cost.expected(open);
        let expected = scalar(e.clone().detach());
        let fraction = e / self.cost.dense_macs as f32;
        if self.cfg.target_macs.is_some() || self.cfg.target_params.is_some() {
            return (self.budget_pressure(fraction, open), expected);
        }
        let pressure = match &self.cfg.penalty {
            Penalty::Macs => fraction * self.lambda as f32,
            Penalty::L0 { group_lambda } => {
                let lambdas: Vec<f64> = self
                    .net
                    .gated
                    .iter()
                    .map(|g| group_lambda.get(&g.group).copied().unwrap_or(self.lambda))
                    .collect();
                l0_group_penalty_t(
                    open,
                    &lambdas,
                    &self.group_sizes,
                    self.n_train,
                    &self.device(),
                )
            }
        };
        (pressure, expected)
    }

    /// The Lagrangian of each budget given, at this step's ramped targets; records the gaps for
    /// the ascent after the step.
    fn budget_pressure(&mut self, macs_fraction: Tensor<1>, open: &[Tensor<1>]) -> Tensor<1> {
        let warmup = self.cfg.budget_warmup;
        let mut pressure = Tensor::<1>::zeros([1], &self.device());
        let mut gaps = (None, None);
        if let Some(target) = self.cfg.target_macs {
            let t = self.budget.ramped(target, warmup);
            gaps.0 = Some(scalar(macs_fraction.clone().detach()) - t);
            pressure = pressure + lagrangian(macs_fraction, t, self.budget.macs);
        }
        if let Some(target) = self.cfg.target_params {
            let t = self.budget.ramped(target, warmup);
            let fraction = self.cost.expected_params(open) / self.cost.dense_params.max(1.0) as f32;
            gaps.1 = Some(scalar(fraction.clone().detach()) - t);
            pressure = pressure + lagrangian(fraction, t, self.budget.params);
        }
        self.budget.gaps = gaps;
        pressure
    }

    /// Gradient ascent on the budgets' multipliers after a step, and the ramp's step count.
    /// `lambda` (what the history shows) follows the MACs budget's linear multiplier, else the
    /// parameters'.
    pub(super) fn dual_ascent(&mut self, _expected_macs: f64) {
        let (macs, params) = std::mem::take(&mut self.budget.gaps);
        if let Some(gap) = macs {
            self.budget.macs.ascend(gap);
        }
        if let Some(gap) = params {
            self.budget.params.ascend(gap);
        }
        if macs.is_some() || params.is_some() {
            self.budget.step += 1;
            self.lambda = if macs.is_some() {
                self.budget.macs.linear
            } else {
                self.budget.params.linear
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_ramps_from_dense_to_the_target_over_the_warmup() {
        let mut b = BudgetState::new(100);
        assert_eq!(b.ramped(0.3, 0.3), 1.0);
        b.step = 15;
        assert!((b.ramped(0.3, 0.3) - 0.65).abs() < 1e-12);
        for step in [30, 31, 100] {
            b.step = step;
            assert!((b.ramped(0.3, 0.3) - 0.3).abs() < 1e-12);
        }
    }

    #[test]
    fn multipliers_rise_over_budget_and_the_linear_one_falls_under_it() {
        let mut m = Multipliers::default();
        m.ascend(0.2);
        assert!(m.linear > 0.0 && m.quadratic > 0.0);
        let q = m.quadratic;
        m.ascend(-0.5);
        assert!(m.linear < 0.0 && m.quadratic > q);
    }
}
