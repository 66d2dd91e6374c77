//! The cost term of the loss: `lambda * E[MACs] / dense MACs`, METHODS' expected L0, or budgets
//! (`--target-macs`, `--target-params`) held by CoFi's Lagrangian.
//!
//! Per budget, with `s` the expected fraction of dense (MACs or parameters) and `t` the target
//! of this step: `lambda1 (s - t) + lambda2 (s - t)^2`. The multipliers start at 0 and rise by
//! Adam's gradient ascent on the same expression (as CoFi's), so the pressure grows while the
//! network is over its budget and `lambda1` turns negative (it pushes gates open again) when it
//! is under; `lambda1` ascends on the gap expected a few tens of steps ahead (see
//! [`Multipliers::ascend`]). `t` ramps linearly from 1 (dense) to the target
//! over the first [`DEFAULT_WARMUP`] of the steps, so gates close while the weights adapt instead
//! of all at once.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::Penalty;
use super::step::scalar;
use super::trainer::Trainer;
use crate::gates::penalty::l0_group_penalty_t;

/// Share of the training steps over which a budget's target ramps from 1 down to the target.
pub const DEFAULT_WARMUP: f64 = 0.3;

/// Ascent rate of the multipliers per step. The ascent is Adam's, as CoFi's (its multipliers
/// are parameters of an Adam optimiser with a negated rate), so a multiplier moves about this
/// much per step whatever the gap's size: the linear one falls as fast as it rose once the
/// network is under its budget, instead of unwinding at `rate * gap` (which left L0-HC at 0.21
/// of MACs for a 0.3 target), and the quadratic one, whose gradient `(s - t)^2` is never
/// negative, grows steadily into a spring that holds `s` at `t` from both sides.
const ASCENT_RATE: f64 = 0.1;

/// **[ours]** Dep-L0's ascent rate (budget runs): its generator moves a logit up to about
/// 0.3 per step against L0-HC's 0.1, so the gates answer a multiplier faster, and at L0-HC's
/// rate the quadratic multiplier wound up to 35-41 on the ViT and drove overshoots of the
/// budget (0.38 of MACs for a 0.5 target) that closed and reopened channels.
const DEP_L0_ASCENT_RATE: f64 = 0.05;

/// **[ours]** Dep-L0's share of the steps over which the target ramps down: the ViT at
/// `--target-macs 0.5` lost 1.46 points on average over seeds 0-2 with 0.15, 1.73 with
/// [`DEFAULT_WARMUP`] and 1.84 with 0.5 (BENCHMARKS.md): with gates that answer within tens of
/// steps, a shorter ramp leaves the weights longer to train at the final widths.
const DEP_L0_WARMUP: f64 = 0.15;

/// Adam's moment decays and epsilon for the multipliers (Adam's defaults).
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

/// One multiplier and its Adam moments. Stored as the floats' bits: serde_json's default
/// float parsing may be one ulp off, and a resume must be bit-identical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ascent {
    #[serde(with = "bits")]
    pub value: f64,
    #[serde(with = "bits")]
    pub m: f64,
    #[serde(with = "bits")]
    pub v: f64,
}

/// An `f64` as its IEEE bits (`u64`), for an exact JSON round trip.
mod bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

impl Ascent {
    /// One Adam ascent step (`steps` counts this one) along `grad`.
    fn step(&mut self, grad: f64, steps: usize, rate: f64) {
        self.m = BETA1 * self.m + (1.0 - BETA1) * grad;
        self.v = BETA2 * self.v + (1.0 - BETA2) * grad * grad;
        let m_hat = self.m / (1.0 - BETA1.powi(steps as i32));
        let v_hat = self.v / (1.0 - BETA2.powi(steps as i32));
        self.value += rate * m_hat / (v_hat.sqrt() + EPSILON);
    }
}

/// How many steps ahead the linear multiplier's ascent looks, along the gap's recent trend.
const HORIZON: f64 = 50.0;

/// Decay of the gap's per-step trend (an exponential average of its changes).
const TREND_DECAY: f64 = 0.9;

/// The two multipliers of one budget constraint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Multipliers {
    pub linear: Ascent,
    pub quadratic: Ascent,
    /// Ascent steps taken (Adam's bias correction).
    pub steps: usize,
    /// The last gap and the average change of the gap per step.
    #[serde(with = "bits")]
    pub last_gap: f64,
    #[serde(with = "bits")]
    pub trend: f64,
}

impl Multipliers {
    /// One ascent step on `gap = s - t`: the Lagrangian's gradients are `gap` and `gap^2`.
    /// **[ours]** The linear multiplier ascends on the gap expected [`HORIZON`] steps ahead
    /// (the gap plus its trend): gates close tens of steps after the pressure that closes them
    /// rises, so ascending on today's gap alone keeps raising the pressure while the gates
    /// are already on their way, and the network falls far under its budget once they give
    /// (L0-HC: 0.21 of MACs for a 0.3 target); Dep-L0's saturated gates then cannot reopen.
    fn ascend(&mut self, gap: f64, rate: f64) {
        let horizon = HORIZON;
        if self.steps > 0 {
            self.trend = TREND_DECAY * self.trend + (1.0 - TREND_DECAY) * (gap - self.last_gap);
        }
        self.last_gap = gap;
        self.steps += 1;
        self.linear
            .step(gap + horizon * self.trend, self.steps, rate);
        self.quadratic.step(gap * gap, self.steps, rate);
    }
}

/// The budgets' state during training: multipliers, the step count for the ramp, and the last
/// expected fractions. Checkpoints store it (without the run's length, which comes from the
/// resumed run's settings), so a resume continues the ramp and the multipliers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    pub macs: Multipliers,
    pub params: Multipliers,
    pub step: usize,
    /// Steps of the whole run (the ramp's length is a share of it).
    #[serde(skip)]
    pub total_steps: usize,
    /// Gaps `s - t` of the step in progress (MACs, parameters).
    #[serde(skip)]
    gaps: (Option<f64>, Option<f64>),
}

impl BudgetState {
    pub fn new(total_steps: usize) -> Self {
        BudgetState {
            total_steps,
            ..Default::default()
        }
    }

    /// The state to continue from a checkpoint: `saved`, or, from a checkpoint made before
    /// budgets were stored, the ramp at the checkpoint's `steps` with fresh multipliers.
    pub fn resumed(&self, saved: Option<BudgetState>, steps: usize) -> BudgetState {
        let mut state = saved.unwrap_or(BudgetState {
            step: steps,
            ..Default::default()
        });
        state.total_steps = self.total_steps;
        state
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
    gap.clone() * m.linear.value as f32 + gap.clone() * gap * m.quadratic.value as f32
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
            let mut pressure = self.budget_pressure(fraction, open);
            if let Some(wall) = self.generator.as_ref().and_then(|g| g.wall_penalty()) {
                pressure = pressure + wall;
            }
            return (pressure, expected);
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
        let warmup = match self.generator {
            Some(_) => DEP_L0_WARMUP,
            None => self.cfg.budget_warmup,
        };
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
        let rate = match self.generator {
            Some(_) => DEP_L0_ASCENT_RATE,
            None => ASCENT_RATE,
        };
        if let Some(gap) = macs {
            self.budget.macs.ascend(gap, rate);
        }
        if let Some(gap) = params {
            self.budget.params.ascend(gap, rate);
        }
        if macs.is_some() || params.is_some() {
            self.budget.step += 1;
            self.lambda = if macs.is_some() {
                self.budget.macs.linear.value
            } else {
                self.budget.params.linear.value
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

    /// A checkpoint's JSON gives the multipliers back bit for bit (a resume is bit-identical).
    #[test]
    fn the_state_survives_a_json_round_trip_exactly() {
        let mut b = BudgetState::new(1000);
        for gap in [0.3, 0.123456789, -0.0371, 1.0 / 3.0] {
            b.macs.ascend(gap, ASCENT_RATE);
            b.params.ascend(gap / 7.0, ASCENT_RATE);
            b.step += 1;
        }
        let json = serde_json::to_string(&b).unwrap();
        let back: BudgetState = serde_json::from_str(&json).unwrap();
        assert_eq!(b.resumed(Some(back), 0), b);
        // Checkpoints from before the state was stored resume the ramp at their step.
        let old = b.resumed(None, 4);
        assert_eq!(
            (old.step, old.total_steps, old.macs),
            (4, 1000, Multipliers::default())
        );
    }

    #[test]
    fn multipliers_rise_over_budget_and_the_linear_one_falls_under_it() {
        let mut m = Multipliers::default();
        m.ascend(0.2, ASCENT_RATE);
        assert!(m.linear.value > 0.0 && m.quadratic.value > 0.0);
        let q = m.quadratic.value;
        for _ in 0..3 {
            m.ascend(-0.5, ASCENT_RATE);
        }
        assert!(m.linear.value < 0.0 && m.quadratic.value > q);
    }
}
