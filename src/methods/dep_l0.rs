//! Dep-L0 (METHODS §3): hard concrete gates whose logits a generator network outputs, layer by
//! layer; sampling, cost and test rule are L0-HC's ([`super::l0_hc`]). The generator itself is
//! [`crate::gates::DepGenerator`].

use burn::prelude::*;

use super::{GateInit, GateMethod, Method, Rng, TrainSample, l0_hc};
use crate::gates::DepGenerator;
use crate::gates::dep_l0::WALL;
use crate::gates::hard_concrete as hc;

/// Dep-L0 with an all-ones generator input of width `n0`, chained forward or backward, its
/// init drawn from `seed`.
#[derive(Debug, Clone)]
pub struct DepL0 {
    pub n0: usize,
    pub backward: bool,
    pub seed: u64,
    /// **[ours]** Budget runs: the generator's budget form (scaled steps, the budget init and
    /// the wall on its pre-activations, [`crate::gates::dep_l0`]) and the floor-corrected
    /// expected count ([`GateMethod::expected_open`] below).
    pub scaled: bool,
}

impl GateMethod for DepL0 {
    fn method(&self) -> Method {
        Method::DepL0
    }

    /// The generator (seeded by itself, so the shared `rng` is not drawn from); no parameters
    /// when there is nothing to gate.
    fn init(&self, widths: &[usize], _rng: &mut Rng, device: &Device) -> GateInit {
        if widths.is_empty() {
            return GateInit::Free(Vec::new());
        }
        GateInit::Generator(DepGenerator::new_seeded(
            widths,
            self.n0,
            self.backward,
            self.scaled,
            self.seed,
            device,
        ))
    }

    fn sample(
        &self,
        logits: &[Tensor<1>],
        batch: usize,
        per_example: &[bool],
        rng: &mut Rng,
        device: &Device,
    ) -> TrainSample {
        l0_hc::sample_step(logits, batch, per_example, rng, device)
    }

    fn prob_open(&self, logits: Tensor<1>) -> Tensor<1> {
        hc::prob_open_t(logits)
    }

    /// **[ours]** Budget runs count each gate's `P(open)` between its values at the wall,
    /// mapped to [0, 1]: a gate held shut at the wall still has `P(open)` 0.072, so the plain
    /// count held the ViT's expected MACs at 0.5 with the closed gates' kept share at 0.46, and
    /// the export then reopened 14-28 channels that had not trained. Without a budget the
    /// count is the reference's.
    fn expected_open(&self, logits: &[Tensor<1>]) -> Vec<Tensor<1>> {
        if !self.scaled {
            return logits
                .iter()
                .map(|a| self.prob_open(a.clone()).sum())
                .collect();
        }
        let bound = 100f64.ln() * WALL.tanh();
        let (shut, open) = (hc::prob_open(-bound), hc::prob_open(bound));
        logits
            .iter()
            .map(|a| ((self.prob_open(a.clone()) - shut as f32) / (open - shut) as f32).sum())
            .collect()
    }

    fn test_value(&self, param: f32) -> f32 {
        l0_hc::test_value(param)
    }

    /// The chain direction and input width shape the generator's parameters. (Recorded in
    /// checkpoints in this exact form, so it stays as written.)
    fn variant(&self) -> String {
        let chain = if self.backward { "backward" } else { "forward" };
        format!("--dep-chain {chain} --dep-n0 {}", self.n0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::value::host_f32;

    /// §10.8 through the method: zero generator weights and biases 3 give P(open) = 0.997936.
    #[test]
    fn generator_logits_through_the_method() {
        let dev = Device::flex();
        let m = DepL0 {
            n0: 64,
            backward: false,
            seed: 0,
            scaled: false,
        };
        let g = DepGenerator::new_zero_weights(&[64, 128], 64, false, 3.0, &dev);
        for a in g.forward() {
            let p = host_f32(m.prob_open(a.clone()));
            assert!(p.iter().all(|&x| (x as f64 - 0.997936).abs() < 1e-6));
            let z = host_f32(a).into_iter().map(|x| m.test_value(x));
            assert!(z.into_iter().all(|x| x == 1.0));
        }
        assert!(matches!(
            m.init(&[], &mut crate::rng::seeded(0), &dev),
            GateInit::Free(v) if v.is_empty()
        ));
        assert_eq!(m.variant(), "--dep-chain forward --dep-n0 64");
    }
}
