//! L0-ARM and L0-AR (METHODS §2): exactly binary gates `b = 1[u < p]` with `p = sigmoid(k phi)`,
//! one `u` per gate per minibatch. The data term's gradient w.r.t. `phi` comes from an
//! estimator, not from autograd:
//!
//! ```text
//! ARM: grad_phi = k * (F_B - F_A) * (u - 1/2)   (pass B with the antithetic mask 1[u > 1 - p])
//! AR : grad_phi = k * F_A * (1 - 2u)            (one pass)
//! ```
//!
//! The cost's `P(open)` is `p` (autograd adds its gradient); at test time a gate keeps `p` when
//! `p >= 0.5`, else it is pruned. The tensor functions here are what training runs; the f64
//! reference math (and the hard-sigmoid and unbiased-scaling variants) is in
//! [`crate::gates::arm`].

use burn::prelude::*;
use burn::tensor::activation;

use super::{GateInit, GateMethod, Method, PassB, Rng, TrainSample};
use crate::error::Result;
use crate::rng::RngExt;

/// Which estimator gives the data term's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// Two forward passes (A and the antithetic B), one backward.
    Arm,
    /// One forward and one backward pass.
    Ar,
}

/// L0-ARM / L0-AR with slope `k` and every `k * phi` starting at `init_logit` (+-0.01/k).
#[derive(Debug, Clone)]
pub struct L0Arm {
    pub k: f64,
    pub init_logit: f64,
    pub estimator: Estimator,
}

impl L0Arm {
    fn k32(&self) -> f32 {
        self.k as f32
    }
}

impl GateMethod for L0Arm {
    fn method(&self) -> Method {
        match self.estimator {
            Estimator::Arm => Method::L0Arm,
            Estimator::Ar => Method::L0Ar,
        }
    }

    fn init(&self, widths: &[usize], rng: &mut Rng, device: &Device) -> GateInit {
        let init = (self.init_logit / self.k) as f32;
        GateInit::Free(super::jittered(init, widths, rng, device))
    }

    fn sample(
        &self,
        logits: &[Tensor<1>],
        _batch: usize,
        _per_example: &[bool],
        rng: &mut Rng,
        device: &Device,
    ) -> TrainSample {
        let mut gates = Vec::with_capacity(logits.len());
        let mut noise = Vec::with_capacity(logits.len());
        for a in logits {
            let c = a.dims()[0];
            let values: Vec<f32> = (0..c).map(|_| rng.random::<f32>()).collect();
            let u = super::tensor2(values, 1, c, device);
            let p = prob_open_t(a.clone().detach(), self.k32()).reshape([1, c]);
            gates.push(mask_a(u.clone(), p));
            noise.push(u);
        }
        TrainSample { gates, noise }
    }

    fn prob_open(&self, logits: Tensor<1>) -> Tensor<1> {
        prob_open_t(logits, self.k32())
    }

    fn test_value(&self, param: f32) -> f32 {
        test_value(param, self.k32())
    }

    fn extra_grad(
        &self,
        logits: &[Tensor<1>],
        sample: &TrainSample,
        f_a: f32,
        pass_b: &mut PassB<'_>,
    ) -> Result<Option<Vec<Tensor<1>>>> {
        let k = self.k32();
        let f_b = match self.estimator {
            Estimator::Arm => {
                let masks_b = sample
                    .noise
                    .iter()
                    .zip(logits)
                    .map(|(u, a)| {
                        let c = u.dims()[1];
                        let p = prob_open_t(a.clone().detach(), k).reshape([1, c]);
                        mask_b(u.clone(), p)
                    })
                    .collect();
                pass_b(masks_b)?
            }
            Estimator::Ar => 0.0,
        };
        let grads = sample
            .noise
            .iter()
            .map(|u| {
                let c = u.dims()[1];
                let u = u.clone().reshape([c]);
                match self.estimator {
                    Estimator::Arm => arm_grad(u, f_a, f_b, k),
                    Estimator::Ar => ar_grad(u, f_a, k),
                }
            })
            .collect();
        Ok(Some(grads))
    }
}

/// `p = sigmoid(k * phi)`, elementwise and differentiable.
pub fn prob_open_t<const D: usize>(phi: Tensor<D>, k: f32) -> Tensor<D> {
    activation::sigmoid(phi * k)
}

/// Pass-A mask `1[u < p]` as 0/1 floats (`u` and `p` of the same shape).
pub fn mask_a<const D: usize>(u: Tensor<D>, p: Tensor<D>) -> Tensor<D> {
    u.lower(p).float()
}

/// Pass-B (antithetic) mask `1[u > 1 - p]` as 0/1 floats.
pub fn mask_b<const D: usize>(u: Tensor<D>, p: Tensor<D>) -> Tensor<D> {
    u.greater(p.neg() + 1.0).float()
}

/// ARM: `k * (f_b - f_a) * (u - 1/2)` per gate.
pub fn arm_grad<const D: usize>(u: Tensor<D>, f_a: f32, f_b: f32, k: f32) -> Tensor<D> {
    (u - 0.5) * (k * (f_b - f_a))
}

/// AR: `k * f_a * (1 - 2u)` per gate.
pub fn ar_grad<const D: usize>(u: Tensor<D>, f_a: f32, k: f32) -> Tensor<D> {
    (u * -2.0 + 1.0) * (k * f_a)
}

/// Test-time multiplier (the reference rule, in f32): `p` when `p >= 0.5`, else 0.
pub fn test_value(phi: f32, k: f32) -> f32 {
    let p = 1.0 / (1.0 + (-k * phi).exp());
    if p >= 0.5 { p } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::value::host_f32;
    use crate::gates::arm as reference;
    use std::collections::HashMap;

    fn t2(v: Vec<f32>, rows: usize, cols: usize, dev: &Device) -> Tensor<2> {
        super::super::tensor2(v, rows, cols, dev)
    }

    const T: [f64; 3] = [0.45, 0.3, 0.8];
    const PHI: [f32; 3] = [0.0, 0.5, -0.3];

    fn f(z: &[f32], t: &[f64]) -> f64 {
        z.iter().zip(t).map(|(&z, &t)| (z as f64 - t).powi(2)).sum()
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Which {
        Arm,
        ArmSwapped,
        Ar,
    }

    /// Mean and standard error of the training estimator over `n` draws of `u`, with
    /// `f(b) = sum (b - t)^2` as the data term. Masks and gradients go through the tensor
    /// functions training runs (the gradient once per distinct pair of losses).
    fn estimate(which: Which, phi: &[f32], t: &[f64], k: f32, n: usize, seed: u64) -> Stats {
        let dev = Device::flex();
        let m = phi.len();
        let mut rng = crate::rng::seeded(seed);
        let u_host: Vec<f32> = (0..n * m).map(|_| rng.random::<f32>()).collect();
        let u = t2(u_host.clone(), n, m, &dev);
        let p = prob_open_t(t2(phi.to_vec(), 1, m, &dev), k).expand([n, m]);
        let a = host_f32(mask_a(u.clone(), p.clone()));
        let b = host_f32(mask_b(u, p));
        let mut by_loss: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
        for i in 0..n {
            let f_a = f(&a[i * m..(i + 1) * m], t) as f32;
            let f_b = f(&b[i * m..(i + 1) * m], t) as f32;
            by_loss
                .entry((f_a.to_bits(), f_b.to_bits()))
                .or_default()
                .push(i);
        }
        let (mut s1, mut s2) = (vec![0.0f64; m], vec![0.0f64; m]);
        for ((fa, fb), rows) in by_loss {
            let (f_a, f_b) = (f32::from_bits(fa), f32::from_bits(fb));
            let sub: Vec<f32> = rows
                .iter()
                .flat_map(|&i| u_host[i * m..(i + 1) * m].iter().copied())
                .collect();
            let u = t2(sub, rows.len(), m, &dev);
            let g = host_f32(match which {
                Which::Arm => arm_grad(u, f_a, f_b, k),
                Which::ArmSwapped => arm_grad(u, f_b, f_a, k),
                Which::Ar => ar_grad(u, f_a, k),
            });
            for (j, x) in g.iter().enumerate() {
                s1[j % m] += *x as f64;
                s2[j % m] += (*x as f64) * (*x as f64);
            }
        }
        let nf = n as f64;
        let mean: Vec<f64> = s1.iter().map(|s| s / nf).collect();
        let se = (0..m)
            .map(|v| ((s2[v] / nf - mean[v] * mean[v]) * nf / (nf - 1.0) / nf).sqrt())
            .collect();
        Stats { mean, se }
    }

    struct Stats {
        mean: Vec<f64>,
        se: Vec<f64>,
    }

    /// `k p (1 - p) ((1 - t)^2 - t^2)`.
    fn exact(phi: &[f32], t: &[f64], k: f64) -> Vec<f64> {
        phi.iter()
            .zip(t)
            .map(|(&x, &t)| {
                let p = crate::gates::sigmoid(k * x as f64);
                k * p * (1.0 - p) * ((1.0 - t).powi(2) - t * t)
            })
            .collect()
    }

    /// §10.9 through the training estimator: ARM and AR unbiased within 3 s.e., ARM's variance
    /// 25 to 120 times lower, swapping passes A and B negates ARM and is caught.
    #[test]
    fn training_estimators_are_unbiased() {
        let ex = exact(&PHI, &T, 7.0);
        for (v, q) in [0.175000, 0.079668, -0.408218].into_iter().enumerate() {
            assert!((ex[v] - q).abs() < 1e-6, "exact[{v}] = {}", ex[v]);
        }
        let n = 2_000_000;
        let arm = estimate(Which::Arm, &PHI, &T, 7.0, n, 11);
        let ar = estimate(Which::Ar, &PHI, &T, 7.0, n, 12);
        let swapped = estimate(Which::ArmSwapped, &PHI, &T, 7.0, n, 11);
        for (v, &exv) in ex.iter().enumerate() {
            let (m, se) = (arm.mean[v], arm.se[v]);
            assert!((m - exv).abs() < 3.0 * se, "ARM[{v}] {m} +- {se}");
            assert!(se > 2e-4 && se < 1e-3, "ARM s.e. {se}");
            let (m, se) = (ar.mean[v], ar.se[v]);
            assert!((m - exv).abs() < 3.0 * se, "AR[{v}] {m} +- {se}");
            assert!(se > 2e-3 && se < 8e-3, "AR s.e. {se}");
            let ratio = (ar.se[v] / arm.se[v]).powi(2);
            assert!(ratio > 25.0 && ratio < 120.0, "variance ratio {ratio}");
            assert!((swapped.mean[v] + arm.mean[v]).abs() < 1e-12);
            let (m, se) = (swapped.mean[v], swapped.se[v]);
            assert!((m - exv).abs() > 3.0 * se, "swap not detected at {v}");
        }
    }

    /// §10.10 through the training estimator: phi = 0, k = 1, t = 0.45 -> 0.025.
    #[test]
    fn single_gate() {
        assert!((exact(&[0.0], &[0.45], 1.0)[0] - 0.025).abs() < 1e-12);
        for which in [Which::Arm, Which::Ar] {
            let s = estimate(which, &[0.0], &[0.45], 1.0, 1_000_000, 21);
            assert!((s.mean[0] - 0.025).abs() < 3.0 * s.se[0], "{}", s.mean[0]);
        }
    }

    /// The training functions on fixed noise equal the f64 reference formulas.
    #[test]
    fn fixed_noise_matches_reference() {
        let dev = Device::flex();
        let u = [0.1f32, 0.7, 0.45, 0.2, 0.8];
        let phi = [0.0f32, 0.5, -0.3, 0.05, -0.02];
        let p = host_f32(prob_open_t(t2(phi.to_vec(), 1, 5, &dev), 7.0));
        let pr: Vec<f64> = phi
            .iter()
            .map(|&x| crate::gates::sigmoid(7.0 * x as f64))
            .collect();
        for i in 0..5 {
            assert!((p[i] as f64 - pr[i]).abs() < 1e-6);
        }
        let ut = t2(u.to_vec(), 1, 5, &dev);
        let pt = t2(p.clone(), 1, 5, &dev);
        let u64s: Vec<f64> = u.iter().map(|&x| x as f64).collect();
        let p64s: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        assert_eq!(
            host_f32(mask_a(ut.clone(), pt.clone())),
            reference::masks_a(&u64s, &p64s)
        );
        assert_eq!(
            host_f32(mask_b(ut.clone(), pt)),
            reference::masks_b(&u64s, &p64s)
        );
        let g = host_f32(arm_grad(ut.clone(), 1.3, 0.4, 7.0));
        let r = reference::arm_grad(1.3, 0.4, &u64s, 7.0);
        let g_ar = host_f32(ar_grad(ut, 1.3, 7.0));
        let r_ar = reference::ar_grad(1.3, &u64s, 7.0);
        for i in 0..5 {
            assert!((g[i] as f64 - r[i]).abs() < 1e-5, "ARM {i}");
            assert!((g_ar[i] as f64 - r_ar[i]).abs() < 1e-5, "AR {i}");
        }
        // u = 0.1, F_A = 1.3, F_B = 0.4, k = 7: 7 * (0.4 - 1.3) * (0.1 - 0.5) = 2.52
        assert!((g[0] - 2.52).abs() < 1e-5);
        // AR: 7 * 1.3 * (1 - 0.2) = 7.28
        assert!((g_ar[0] - 7.28).abs() < 1e-5);
    }

    /// §2 test rule, in the f32 form training runs: keep `p` when `p >= 0.5`.
    #[test]
    fn test_rule() {
        let m = L0Arm {
            k: 7.0,
            init_logit: 3.0,
            estimator: Estimator::Arm,
        };
        assert_eq!(m.test_value(0.0), 0.5);
        assert_eq!(m.test_value(-0.01), 0.0);
        for phi in [-0.5f32, -0.01, 0.0, 0.01, 0.3] {
            let r =
                reference::test_gate(reference::Param::Sigmoid { k: 7.0 }.prob(phi as f64), 0.5);
            assert!((m.test_value(phi) as f64 - r).abs() < 1e-6, "phi {phi}");
            assert_eq!(m.test_value(phi) == 0.0, r == 0.0);
        }
        // at init p = sigmoid(init_logit)
        let mut rng = crate::rng::seeded(1);
        let GateInit::Free(v) = m.init(&[4], &mut rng, &Device::flex()) else {
            panic!("free parameters")
        };
        let p = host_f32(m.prob_open(v[0].clone()));
        assert!(p.iter().all(|&x| (x - 0.952574).abs() < 1e-2));
    }
}
