//! The cost term of the loss: `lambda * E[MACs] / dense MACs`, METHODS' expected L0, or a MACs
//! budget whose multiplier is updated by dual ascent.

use burn::prelude::*;

use super::Penalty;
use super::step::scalar;
use super::trainer::Trainer;
use crate::gates::penalty::l0_group_penalty_t;

impl Trainer<'_> {
    /// The penalty (differentiable) and the expected MACs, from each gated group's expected
    /// open count.
    pub(super) fn penalty(&self, open: &[Tensor<1>]) -> (Tensor<1>, f64) {
        if open.is_empty() {
            return (
                Tensor::<1>::zeros([1], &self.device()),
                self.cost.dense_macs,
            );
        }
        let e = self.cost.expected(open);
        let expected = scalar(e.clone().detach());
        let fraction = e / self.cost.dense_macs as f32;
        let pressure = match (&self.cfg.penalty, self.cfg.target_macs) {
            // A budget: no pressure once E[MACs] is within it, so gates stop closing there
            // (closed hard-concrete gates get no data gradient and would not reopen).
            (_, Some(target)) => (fraction - target as f32).clamp_min(0.0) * self.lambda as f32,
            (Penalty::Macs, None) => fraction * self.lambda as f32,
            (Penalty::L0 { group_lambda }, None) => {
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

    /// Dual ascent on the multiplier of the budget constraint `E[MACs] <= target`.
    pub(super) fn dual_ascent(&mut self, expected_macs: f64) {
        if let Some(target) = self.cfg.target_macs {
            let gap = expected_macs / self.cost.dense_macs - target;
            self.lambda = (self.lambda + 0.1 * gap).max(0.0);
        }
    }
}
