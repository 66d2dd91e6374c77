//! L0-HC (METHODS §1): one free hard-concrete logit per gate, reparameterised samples, the
//! closed-form `P(z != 0)` as cost and `zhat` at test time. Dep-L0 shares the sampling, cost and
//! test rule ([`super::dep_l0`]); only where the logits come from differs.

use burn::prelude::*;

use super::{GateInit, GateMethod, Method, Rng, TrainSample};
use crate::gates::hard_concrete as hc;

/// L0-HC with every logit starting at `init_logit` (+-0.01).
#[derive(Debug, Clone)]
pub struct L0Hc {
    pub init_logit: f64,
}

impl GateMethod for L0Hc {
    fn method(&self) -> Method {
        Method::L0Hc
    }

    fn init(&self, widths: &[usize], rng: &mut Rng, device: &Device) -> GateInit {
        GateInit::Free(super::jittered(self.init_logit as f32, widths, rng, device))
    }

    fn sample(
        &self,
        logits: &[Tensor<1>],
        batch: usize,
        per_example: &[bool],
        rng: &mut Rng,
        device: &Device,
    ) -> TrainSample {
        sample_step(logits, batch, per_example, rng, device)
    }

    fn prob_open(&self, logits: Tensor<1>) -> Tensor<1> {
        hc::prob_open_t(logits)
    }

    fn test_value(&self, param: f32) -> f32 {
        test_value(param)
    }
}

/// Host noise `u ~ Uniform(1e-6, 1 - 1e-6)` for `n` gates, drawn in order from `rng`.
pub fn noise(n: usize, rng: &mut Rng) -> Vec<f32> {
    hc::draw_noise(rng, n)
        .into_iter()
        .map(|u| u as f32)
        .collect()
}

/// Training gate values `z = clamp(sbar, 0, 1)` of one group: logits `[C]`, noise `[rows, C]`.
pub fn gates(logits: Tensor<1>, u: Tensor<2>) -> Tensor<2> {
    let [rows, c] = u.dims();
    hc::sample_t(logits.reshape([1, c]).expand([rows, c]), u)
}

/// The hard-concrete training sample of every group: one row of noise per example where the
/// group allows it, else one row shared by the batch.
pub fn sample_step(
    logits: &[Tensor<1>],
    batch: usize,
    per_example: &[bool],
    rng: &mut Rng,
    device: &Device,
) -> TrainSample {
    let gates = logits
        .iter()
        .zip(per_example)
        .map(|(a, &each)| {
            let c = a.dims()[0];
            let rows = if each { batch } else { 1 };
            let u = super::tensor2(noise(rows * c, rng), rows, c, device);
            self::gates(a.clone(), u)
        })
        .collect();
    TrainSample {
        gates,
        noise: Vec::new(),
    }
}

/// The deterministic test-time gate `zhat` of a logit (computed in f64).
pub fn test_value(a: f32) -> f32 {
    hc::test_gate(a as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::value::host_f32;

    fn t1(v: &[f32], dev: &Device) -> Tensor<1> {
        Tensor::<1>::from_data(burn::tensor::TensorData::new(v.to_vec(), [v.len()]), dev)
    }

    /// §10.1 through the method's cost function.
    #[test]
    fn prob_open_pins() {
        let dev = Device::flex();
        let ln100 = 100f32.ln();
        let m = L0Hc { init_logit: 3.0 };
        let p = host_f32(m.prob_open(t1(&[0.0, 3.0, ln100, -ln100, 4f32.ln()], &dev)));
        for (got, want) in p
            .iter()
            .zip([0.831822, 0.990034, 0.997983, 0.047130, 0.951887])
        {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let e = host_f32(m.expected_open(&[t1(&[0.0, 0.0], &dev)])[0].clone());
        assert!((e[0] as f64 - 2.0 * 0.831822).abs() < 2e-6);
    }

    /// §10.4 through the training sampler, on fixed noise.
    #[test]
    fn fixed_noise_gates() {
        let dev = Device::flex();
        let u = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(vec![0.5f32, 0.3, 0.9, 0.05], [4, 1]),
            &dev,
        );
        let z = host_f32(gates(t1(&[0.0], &dev), u));
        assert!((z[0] - 0.5).abs() < 1e-6);
        assert!((z[1] as f64 - 0.162914).abs() < 1e-6);
        assert_eq!(z[2], 1.0);
        assert_eq!(z[3], 0.0);
    }

    /// §10.5 through the method's test rule.
    #[test]
    fn test_values() {
        let m = L0Hc { init_logit: 3.0 };
        assert!((m.test_value(0.0) - 0.5).abs() < 1e-6);
        assert!((m.test_value(4f32.ln()) - 0.86).abs() < 1e-6);
        assert!((m.test_value((7.0f32 / 3.0).ln()) - 0.74).abs() < 1e-6);
        assert_eq!(m.test_value(3.0), 1.0);
        assert_eq!(m.test_value(-2.3979), 0.0);
        assert!(m.test_value(-2.3978) > 0.0);
    }

    /// Noise rows: per example where allowed, shared otherwise; values in the noise interval.
    #[test]
    fn sample_shapes_and_noise() {
        let dev = Device::flex();
        let mut rng = crate::rng::seeded(4);
        let s = sample_step(
            &[t1(&[3.0; 5], &dev), t1(&[3.0; 2], &dev)],
            8,
            &[true, false],
            &mut rng,
            &dev,
        );
        assert_eq!(s.gates[0].dims(), [8, 5]);
        assert_eq!(s.gates[1].dims(), [1, 2]);
        assert!(s.noise.is_empty());
        let u = noise(1000, &mut crate::rng::seeded(5));
        assert!(u.iter().all(|&x| x > 0.0 && x < 1.0));
        assert_eq!(u, noise(1000, &mut crate::rng::seeded(5)));
    }
}
