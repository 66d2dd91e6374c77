//! Binary gates with the ARM and AR gradient estimators (L0-ARM / L0-AR, METHODS §2).
//!
//! Each gate has a real parameter `phi` and an open probability `p = G(phi)`. Per minibatch one
//! `u ~ Uniform(0, 1)` is drawn per gate; pass A uses the mask `1[u < p]` (with autograd for the
//! weights), pass B (ARM only) the antithetic mask `1[u > 1 - p]`. With `F_A`, `F_B` the two data
//! losses, the gate gradient is
//!
//! ```text
//! ARM: grad_phi = c * (F_B - F_A) * (u - 1/2)
//! AR : grad_phi = c * F_A * (1 - 2u)
//! ```
//!
//! where `c = k` in the reference code ([`GradScaling::Reference`]) and
//! `c = G'(phi) / (p (1 - p))` for the exactly unbiased form ([`GradScaling::Unbiased`]).
//! The two agree for the scaled sigmoid; they differ for the hard sigmoid (§2 caveat i).
//! The analytic penalty's gradient through `p = G(phi)` is added by autograd ([`Param::prob_t`]).
//!
//! These are the f64 reference formulas, with the variants METHODS describes (hard sigmoid,
//! unbiased scaling, sign test rule). Training runs the f32 tensor forms in
//! [`crate::methods::l0_arm`], whose tests pin them to METHODS §10 and to these functions.

use super::sigmoid;
use burn::prelude::Tensor;
use burn::tensor::activation;

/// The choice of `G` in `p = G(phi)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param {
    /// `p = sigma(k * phi)` (the reference default, `k = 7`).
    Sigmoid { k: f64 },
    /// `p = clamp(k * phi / 7 + 1/2, 0, 1)`.
    HardSigmoid { k: f64 },
}

impl Default for Param {
    fn default() -> Self {
        Param::Sigmoid { k: 7.0 }
    }
}

/// Which factor multiplies the ARM/AR estimate (§2 caveat i).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GradScaling {
    /// The reference code's factor `k` for both choices of `G`.
    #[default]
    Reference,
    /// `G'(phi) / (p (1 - p))`: exactly unbiased for any `G` (0 where `p` is 0 or 1).
    Unbiased,
}

/// ARM (two forward passes) or AR (one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Estimator {
    #[default]
    Arm,
    Ar,
}

impl Estimator {
    /// Forward passes per minibatch.
    pub fn forward_passes(self) -> usize {
        match self {
            Estimator::Arm => 2,
            Estimator::Ar => 1,
        }
    }
}

/// Test-time rule (§2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TestRule {
    /// `m = p if p >= t else 0` (reference default, `t = 0.5`).
    Threshold { t: f64 },
    /// `m = 1[phi > 0]`.
    Sign,
}

impl Default for TestRule {
    fn default() -> Self {
        TestRule::Threshold { t: 0.5 }
    }
}

impl TestRule {
    /// The test-time multiplier of a gate.
    pub fn apply(self, param: Param, phi: f64) -> f64 {
        match self {
            TestRule::Threshold { t } => test_gate(param.prob(phi), t),
            TestRule::Sign => test_gate_sign(phi),
        }
    }
}

impl Param {
    /// The slope `k`.
    pub fn k(self) -> f64 {
        match self {
            Param::Sigmoid { k } | Param::HardSigmoid { k } => k,
        }
    }

    /// `p = G(phi)`.
    pub fn prob(self, phi: f64) -> f64 {
        match self {
            Param::Sigmoid { k } => sigmoid(k * phi),
            Param::HardSigmoid { k } => (k * phi / 7.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// `G'(phi)` (for the hard sigmoid: `k/7` strictly inside the linear part, else 0).
    pub fn prob_grad(self, phi: f64) -> f64 {
        match self {
            Param::Sigmoid { k } => {
                let p = sigmoid(k * phi);
                k * p * (1.0 - p)
            }
            Param::HardSigmoid { k } => {
                let x = k * phi / 7.0 + 0.5;
                if x > 0.0 && x < 1.0 { k / 7.0 } else { 0.0 }
            }
        }
    }

    /// `p = G(phi)` on a tensor, differentiable (for the analytic penalty).
    pub fn prob_t<const D: usize>(self, phi: Tensor<D>) -> Tensor<D> {
        match self {
            Param::Sigmoid { k } => activation::sigmoid(phi.mul_scalar(k)),
            Param::HardSigmoid { k } => phi.mul_scalar(k / 7.0).add_scalar(0.5).clamp(0.0, 1.0),
        }
    }

    /// The factor `c` of the estimator for gate parameter `phi`.
    pub fn grad_factor(self, phi: f64, scaling: GradScaling) -> f64 {
        match scaling {
            GradScaling::Reference => self.k(),
            GradScaling::Unbiased => {
                let p = self.prob(phi);
                let v = p * (1.0 - p);
                if v > 0.0 {
                    self.prob_grad(phi) / v
                } else {
                    0.0
                }
            }
        }
    }

    /// [`grad_factor`](Self::grad_factor) for every gate.
    pub fn grad_factors(self, phi: &[f64], scaling: GradScaling) -> Vec<f64> {
        phi.iter().map(|&x| self.grad_factor(x, scaling)).collect()
    }

    /// Reference init mean for an initial drop rate `d`: `logit(1 - d) / k` (the code uses this
    /// for both choices of `G`; add `N(0, (0.01/k)^2)` noise).
    pub fn init_phi(self, drop_rate: f64) -> f64 {
        super::logit(1.0 - drop_rate) / self.k()
    }
}

/// Pass-A mask `1[u < p]`.
pub fn mask_a(u: f64, p: f64) -> bool {
    u < p
}

/// Pass-B (antithetic) mask `1[u > 1 - p]`.
pub fn mask_b(u: f64, p: f64) -> bool {
    u > 1.0 - p
}

/// Pass-A masks as 0/1 floats.
pub fn masks_a(u: &[f64], p: &[f64]) -> Vec<f32> {
    assert_eq!(u.len(), p.len());
    u.iter()
        .zip(p)
        .map(|(&u, &p)| if mask_a(u, p) { 1.0 } else { 0.0 })
        .collect()
}

/// Pass-B masks as 0/1 floats.
pub fn masks_b(u: &[f64], p: &[f64]) -> Vec<f32> {
    assert_eq!(u.len(), p.len());
    u.iter()
        .zip(p)
        .map(|(&u, &p)| if mask_b(u, p) { 1.0 } else { 0.0 })
        .collect()
}

/// `n` gate noises `u ~ Uniform(0, 1)` from the project's generator.
pub fn draw_noise(rng: &mut crate::rng::Rng, n: usize) -> Vec<f64> {
    use crate::rng::RngExt;
    (0..n).map(|_| rng.random::<f64>()).collect()
}

/// ARM: `k * (f_b - f_a) * (u_g - 1/2)` per gate.
pub fn arm_grad(f_a: f64, f_b: f64, u: &[f64], k: f64) -> Vec<f64> {
    u.iter().map(|&u| k * (f_b - f_a) * (u - 0.5)).collect()
}

/// AR: `k * f_a * (1 - 2 u_g)` per gate.
pub fn ar_grad(f_a: f64, u: &[f64], k: f64) -> Vec<f64> {
    u.iter().map(|&u| k * f_a * (1.0 - 2.0 * u)).collect()
}

/// ARM with a per-gate factor (see [`Param::grad_factors`]).
pub fn arm_grad_scaled(f_a: f64, f_b: f64, u: &[f64], factors: &[f64]) -> Vec<f64> {
    assert_eq!(u.len(), factors.len());
    u.iter()
        .zip(factors)
        .map(|(&u, &c)| c * (f_b - f_a) * (u - 0.5))
        .collect()
}

/// AR with a per-gate factor (see [`Param::grad_factors`]).
pub fn ar_grad_scaled(f_a: f64, u: &[f64], factors: &[f64]) -> Vec<f64> {
    assert_eq!(u.len(), factors.len());
    u.iter()
        .zip(factors)
        .map(|(&u, &c)| c * f_a * (1.0 - 2.0 * u))
        .collect()
}

/// Test-time multiplier, reference rule: `p if p >= t else 0`.
pub fn test_gate(p: f64, t: f64) -> f64 {
    if p >= t { p } else { 0.0 }
}

/// Test-time multiplier, alternative rule: `1[phi > 0]`.
pub fn test_gate_sign(phi: f64) -> f64 {
    if phi > 0.0 { 1.0 } else { 0.0 }
}

/// A gate is pruned iff `p < 0.5`.
pub fn is_pruned(p: f64) -> bool {
    p < 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{RngExt, seeded};

    const T: [f64; 3] = [0.45, 0.3, 0.8];
    const PHI: [f64; 3] = [0.0, 0.5, -0.3];

    fn f(z: &[f32], t: &[f64]) -> f64 {
        z.iter().zip(t).map(|(&z, &t)| (z as f64 - t).powi(2)).sum()
    }

    /// Exact gradient of `E f(b)` w.r.t. `phi`: `G'(phi) * ((1-t)^2 - t^2)`.
    fn exact(param: Param, phi: &[f64], t: &[f64]) -> Vec<f64> {
        phi.iter()
            .zip(t)
            .map(|(&x, &t)| param.prob_grad(x) * ((1.0 - t).powi(2) - t * t))
            .collect()
    }

    struct Stats {
        mean: Vec<f64>,
        se: Vec<f64>,
    }

    #[derive(Clone, Copy)]
    enum Which {
        Arm,
        ArmSwapped,
        Ar,
    }

    fn estimate(
        param: Param,
        scaling: GradScaling,
        which: Which,
        phi: &[f64],
        t: &[f64],
        n: usize,
        seed: u64,
    ) -> Stats {
        let m = phi.len();
        let p: Vec<f64> = phi.iter().map(|&x| param.prob(x)).collect();
        let c = param.grad_factors(phi, scaling);
        let mut rng = seeded(seed);
        let (mut s1, mut s2) = (vec![0.0; m], vec![0.0; m]);
        let mut u = vec![0.0; m];
        for _ in 0..n {
            for x in u.iter_mut() {
                *x = rng.random::<f64>();
            }
            let f_a = f(&masks_a(&u, &p), t);
            let g = match which {
                Which::Arm => arm_grad_scaled(f_a, f(&masks_b(&u, &p), t), &u, &c),
                Which::ArmSwapped => arm_grad_scaled(f(&masks_b(&u, &p), t), f_a, &u, &c),
                Which::Ar => ar_grad_scaled(f_a, &u, &c),
            };
            for v in 0..m {
                s1[v] += g[v];
                s2[v] += g[v] * g[v];
            }
        }
        let nf = n as f64;
        let mean: Vec<f64> = s1.iter().map(|s| s / nf).collect();
        let se = (0..m)
            .map(|v| ((s2[v] / nf - mean[v] * mean[v]) * nf / (nf - 1.0) / nf).sqrt())
            .collect();
        Stats { mean, se }
    }

    #[test]
    fn probabilities_and_masks() {
        let s = Param::Sigmoid { k: 7.0 };
        let h = Param::HardSigmoid { k: 7.0 };
        assert_eq!(s.prob(0.0), 0.5);
        assert!((s.prob(0.5) - sigmoid(3.5)).abs() < 1e-15);
        assert!((h.prob(0.2) - 0.7).abs() < 1e-15);
        assert_eq!(h.prob(0.6), 1.0);
        assert_eq!(h.prob(-0.6), 0.0);
        assert_eq!(h.prob_grad(0.2), 1.0);
        assert_eq!(h.prob_grad(0.7), 0.0);
        let d = 1e-6;
        assert!(((s.prob(0.3 + d) - s.prob(0.3 - d)) / (2.0 * d) - s.prob_grad(0.3)).abs() < 1e-7);
        // init: p starts at 1 - d for the sigmoid
        assert!((s.prob(s.init_phi(0.2)) - 0.8).abs() < 1e-12);
        assert!((s.prob(s.init_phi(0.01)) - 0.99).abs() < 1e-12);
        assert_eq!(s.init_phi(0.5), 0.0);
        // masks are antithetic: same u, A and B each Bernoulli(p)
        assert!(mask_a(0.2, 0.3) && !mask_b(0.2, 0.3));
        assert!(!mask_a(0.8, 0.3) && mask_b(0.8, 0.3));
        assert_eq!(masks_a(&[0.1, 0.9], &[0.5, 0.5]), vec![1.0, 0.0]);
        assert_eq!(masks_b(&[0.1, 0.9], &[0.5, 0.5]), vec![0.0, 1.0]);
        // the unbiased factor equals k for the scaled sigmoid
        for x in [-0.3, 0.0, 0.5] {
            assert!((s.grad_factor(x, GradScaling::Unbiased) - 7.0).abs() < 1e-9);
        }
        assert_eq!(h.grad_factor(0.7, GradScaling::Unbiased), 0.0);
        assert_eq!(h.grad_factor(0.7, GradScaling::Reference), 7.0);
        assert_eq!(Estimator::Arm.forward_passes(), 2);
        assert_eq!(Estimator::Ar.forward_passes(), 1);
    }

    #[test]
    fn tensor_prob_matches() {
        use burn::prelude::Device;
        let dev = Device::flex();
        let phi = [-0.7f32, -0.3, 0.0, 0.2, 0.5, 0.9];
        let t = Tensor::<1>::from_data(burn::tensor::TensorData::new(phi.to_vec(), [6]), &dev);
        for param in [Param::Sigmoid { k: 7.0 }, Param::HardSigmoid { k: 7.0 }] {
            let v = crate::exec::value::host_f32(param.prob_t(t.clone()));
            for i in 0..6 {
                assert!((v[i] as f64 - param.prob(phi[i] as f64)).abs() < 1e-6);
            }
        }
    }

    /// §10.9: exact gradient, ARM and AR unbiased within 3 s.e.; swapping A and B is caught.
    #[test]
    fn arm_ar_unbiased() {
        let param = Param::Sigmoid { k: 7.0 };
        let ex = exact(param, &PHI, &T);
        let quoted = [0.175000, 0.079668, -0.408218];
        for v in 0..3 {
            assert!((ex[v] - quoted[v]).abs() < 1e-6, "exact[{v}] = {}", ex[v]);
            // k p (1-p) ((1-t)^2 - t^2)
            let p = param.prob(PHI[v]);
            let alt = 7.0 * p * (1.0 - p) * ((1.0 - T[v]).powi(2) - T[v].powi(2));
            assert!((ex[v] - alt).abs() < 1e-12);
        }
        let n = 2_000_000;
        let arm = estimate(param, GradScaling::Reference, Which::Arm, &PHI, &T, n, 11);
        let ar = estimate(param, GradScaling::Reference, Which::Ar, &PHI, &T, n, 12);
        let swapped = estimate(
            param,
            GradScaling::Reference,
            Which::ArmSwapped,
            &PHI,
            &T,
            n,
            11,
        );
        for (v, &exv) in ex.iter().enumerate() {
            eprintln!(
                "gate {v}: exact {exv:.6} ARM {:.6} +- {:.1e} AR {:.6} +- {:.1e}",
                arm.mean[v], arm.se[v], ar.mean[v], ar.se[v]
            );
            let (m, se) = (arm.mean[v], arm.se[v]);
            assert!((m - exv).abs() < 3.0 * se, "ARM[{v}] {m} +- {se}");
            assert!(se > 2e-4 && se < 1e-3, "ARM s.e. {se}");
            let (m, se) = (ar.mean[v], ar.se[v]);
            assert!((m - exv).abs() < 3.0 * se, "AR[{v}] {m} +- {se}");
            assert!(se > 2e-3 && se < 8e-3, "AR s.e. {se}");
            let ratio = (ar.se[v] / arm.se[v]).powi(2);
            assert!(ratio > 25.0 && ratio < 120.0, "variance ratio {ratio}");
            // swapped passes: exactly the negated estimate, far from the truth
            assert!((swapped.mean[v] + arm.mean[v]).abs() < 1e-12);
            let (m, se) = (swapped.mean[v], swapped.se[v]);
            assert!((m - exv).abs() > 3.0 * se, "swap not detected at {v}");
            assert!((m + exv).abs() < 3.0 * se);
        }
        // the swap is the negation at the level of single draws too
        let u = [0.1, 0.7, 0.45];
        let a = arm_grad(1.3, 0.4, &u, 7.0);
        let b = arm_grad(0.4, 1.3, &u, 7.0);
        for v in 0..3 {
            assert_eq!(a[v], -b[v]);
        }
    }

    /// §10.10: phi = 0, k = 1, t = 0.45 -> 0.025.
    #[test]
    fn single_gate() {
        let param = Param::Sigmoid { k: 1.0 };
        let ex = exact(param, &[0.0], &[0.45]);
        assert!((ex[0] - 0.025).abs() < 1e-12);
        let n = 1_000_000;
        for which in [Which::Arm, Which::Ar] {
            let s = estimate(param, GradScaling::Reference, which, &[0.0], &[0.45], n, 21);
            assert!((s.mean[0] - 0.025).abs() < 3.0 * s.se[0], "{}", s.mean[0]);
        }
        // the plain-slice estimators with a scalar k agree with the scaled ones
        let u = [0.2, 0.9];
        assert_eq!(
            arm_grad(0.3, 0.5, &u, 1.0),
            arm_grad_scaled(0.3, 0.5, &u, &[1.0, 1.0])
        );
        assert_eq!(ar_grad(0.3, &u, 1.0), ar_grad_scaled(0.3, &u, &[1.0, 1.0]));
    }

    /// §2 caveat (i): with the hard sigmoid the reference factor k is biased, the unbiased factor
    /// `G'(phi)/(p(1-p))` is not.
    #[test]
    fn hard_sigmoid_scaling() {
        let param = Param::HardSigmoid { k: 7.0 };
        let phi = [0.1, -0.2, 0.3];
        let ex = exact(param, &phi, &T);
        let n = 1_000_000;
        let unb = estimate(param, GradScaling::Unbiased, Which::Arm, &phi, &T, n, 31);
        let refc = estimate(param, GradScaling::Reference, Which::Arm, &phi, &T, n, 31);
        for v in 0..3 {
            assert!(
                (unb.mean[v] - ex[v]).abs() < 3.0 * unb.se[v],
                "unbiased[{v}]"
            );
            assert!(
                (refc.mean[v] - ex[v]).abs() > 3.0 * refc.se[v],
                "reference[{v}]"
            );
            // reference = k p (1-p) * d/dlogit
            let p = param.prob(phi[v]);
            let r = 7.0 * p * (1.0 - p) * ((1.0 - T[v]).powi(2) - T[v].powi(2));
            assert!((refc.mean[v] - r).abs() < 3.0 * refc.se[v]);
        }
    }

    #[test]
    fn test_time_rules() {
        assert_eq!(test_gate(0.7, 0.5), 0.7);
        assert_eq!(test_gate(0.5, 0.5), 0.5);
        assert_eq!(test_gate(0.49, 0.5), 0.0);
        assert_eq!(test_gate_sign(0.01), 1.0);
        assert_eq!(test_gate_sign(0.0), 0.0);
        assert!(is_pruned(0.49) && !is_pruned(0.5));
        let s = Param::Sigmoid { k: 7.0 };
        // both rules prune the same gates
        for phi in [-0.5, -0.01, 0.01, 0.3] {
            let a = TestRule::default().apply(s, phi);
            let b = TestRule::Sign.apply(s, phi);
            assert_eq!(a == 0.0, b == 0.0, "phi {phi}");
        }
        assert!((TestRule::default().apply(s, 0.3) - sigmoid(2.1)).abs() < 1e-15);
    }

    #[test]
    fn draw_noise_is_deterministic() {
        let a = draw_noise(&mut seeded(9), 50);
        assert_eq!(a, draw_noise(&mut seeded(9), 50));
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
    }
}
