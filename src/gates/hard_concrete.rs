//! Hard concrete gates (METHODS §1), used by L0-HC and Dep-L0.
//!
//! A gate with logit `a` ("log alpha") is sampled in training as
//!
//! ```text
//! u ~ Uniform(1e-6, 1 - 1e-6)
//! s = sigma((ln u - ln(1-u) + a) / T)
//! sbar = s * (hi - lo) + lo          // "stretched", unclamped
//! z = clamp(sbar, 0, 1)
//! ```
//!
//! and replaced at test time by `zhat = clamp(sigma(a) * (hi - lo) + lo, 0, 1)`.
//! The scalar `f64` functions are the reference; the `*_t` functions are the same formulas on
//! burn tensors of any rank, differentiable under autodiff (sigmoid, log, clamp only).

use super::sigmoid;
use burn::prelude::{Device, Tensor};
use burn::tensor::activation;

/// Temperature `T = 2/3`.
pub const TEMPERATURE: f64 = 2.0 / 3.0;
/// Lower end of the stretch interval.
pub const LO: f64 = -0.1;
/// Upper end of the stretch interval.
pub const HI: f64 = 1.1;
/// `c0 = T * ln(-lo/hi) = (2/3) ln(1/11)`; `P(z != 0) = sigma(a - c0)`.
pub const C0: f64 = -1.598_596_848_532_247;
/// Noise is drawn from `Uniform(NOISE_EPS, 1 - NOISE_EPS)`.
pub const NOISE_EPS: f64 = 1e-6;
/// AMLab clamps logits to `[ln 0.01, ln 100]` after every optimiser step.
pub const LOGIT_MIN: f64 = -4.605_170_185_988_091;
/// See [`LOGIT_MIN`].
pub const LOGIT_MAX: f64 = 4.605_170_185_988_091;

/// `c0` computed from its definition (equals [`C0`]).
pub fn c0() -> f64 {
    TEMPERATURE * (-LO / HI).ln()
}

/// `P(z != 0) = sigma(a - c0)`.
pub fn prob_open(a: f64) -> f64 {
    sigmoid(a - C0)
}

/// `d P(z != 0) / da = p (1 - p)`.
pub fn prob_open_grad(a: f64) -> f64 {
    let p = prob_open(a);
    p * (1.0 - p)
}

/// `P(z = 0) = 1 - P(z != 0)`.
pub fn prob_zero(a: f64) -> f64 {
    1.0 - prob_open(a)
}

/// `P(z = 1) = P(sbar >= 1) = sigma(a - T ln((1 - lo)/(hi - 1))) = sigma(a + c0)`.
pub fn prob_one(a: f64) -> f64 {
    sigmoid(a - TEMPERATURE * ((1.0 - LO) / (HI - 1.0)).ln())
}

/// The unclamped stretched sample `sbar = sigma((ln u - ln(1-u) + a)/T) * (hi-lo) + lo`.
pub fn stretched(a: f64, u: f64) -> f64 {
    sigmoid((u.ln() - (1.0 - u).ln() + a) / TEMPERATURE) * (HI - LO) + LO
}

/// The training sample `z = clamp(sbar, 0, 1)` for noise `u` in (0, 1).
pub fn sample(a: f64, u: f64) -> f64 {
    stretched(a, u).clamp(0.0, 1.0)
}

/// The deterministic test-time gate `zhat = clamp(sigma(a)*(hi-lo)+lo, 0, 1)`.
pub fn test_gate(a: f64) -> f64 {
    (sigmoid(a) * (HI - LO) + LO).clamp(0.0, 1.0)
}

/// A gate is pruned iff `zhat == 0`, that is iff `a <= -ln 11`.
pub fn is_pruned(a: f64) -> bool {
    test_gate(a) <= 0.0
}

/// Initial logit for an "initial drop rate" `d`: `ln((1-d)/d)` (AMLab; add N(0, 0.01^2) noise).
pub fn init_logit(drop_rate: f64) -> f64 {
    ((1.0 - drop_rate) / drop_rate).ln()
}

/// AMLab's post-step clamp of a logit to `[ln 0.01, ln 100]`.
pub fn clamp_logit(a: f64) -> f64 {
    a.clamp(LOGIT_MIN, LOGIT_MAX)
}

/// The noise distribution `Uniform(1e-6, 1 - 1e-6)`.
pub fn noise_distribution() -> rand::distr::Uniform<f64> {
    rand::distr::Uniform::new(NOISE_EPS, 1.0 - NOISE_EPS).expect("a constant, non-empty range")
}

/// `n` noise values `u ~ Uniform(1e-6, 1 - 1e-6)` from the project's generator.
pub fn draw_noise(rng: &mut crate::rng::Rng, n: usize) -> Vec<f64> {
    use crate::rng::RngExt;
    rng.sample_iter(noise_distribution()).take(n).collect()
}

// ------------------------------------------------------------------------------------------------
// burn-tensor versions

/// `P(z != 0) = sigma(a - c0)`, elementwise and differentiable.
pub fn prob_open_t<const D: usize>(log_alpha: Tensor<D>) -> Tensor<D> {
    activation::sigmoid(log_alpha.sub_scalar(C0))
}

/// The unclamped stretched sample `sbar`, elementwise. `u` must broadcast against `log_alpha`
/// (same rank; size-1 dimensions broadcast), e.g. `log_alpha: [1, C]`, `u: [B, C]`.
pub fn stretched_t<const D: usize>(log_alpha: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    let noise_logit = u.clone().log() - u.neg().add_scalar(1.0).log();
    activation::sigmoid((noise_logit + log_alpha).div_scalar(TEMPERATURE))
        .mul_scalar(HI - LO)
        .add_scalar(LO)
}

/// The training sample `z = clamp(sbar, 0, 1)`, differentiable w.r.t. `log_alpha`
/// (gradient 0 where the clamp is active, as in PyTorch's hardtanh).
pub fn sample_t<const D: usize>(log_alpha: Tensor<D>, u: Tensor<D>) -> Tensor<D> {
    stretched_t(log_alpha, u).clamp(0.0, 1.0)
}

/// The deterministic test-time gate `zhat`, elementwise.
pub fn test_gate_t<const D: usize>(log_alpha: Tensor<D>) -> Tensor<D> {
    activation::sigmoid(log_alpha)
        .mul_scalar(HI - LO)
        .add_scalar(LO)
        .clamp(0.0, 1.0)
}

/// Noise tensor from the project's generator ([`crate::rng`]),
/// row-major over `shape`. Bitwise reproducible on every backend.
pub fn noise_seeded_t<const D: usize>(
    shape: [usize; D],
    rng: &mut crate::rng::Rng,
    device: &Device,
) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = draw_noise(rng, n).into_iter().map(|x| x as f32).collect();
    Tensor::<D>::from_data(burn::tensor::TensorData::new(v, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn close(x: f64, y: f64, tol: f64) -> bool {
        (x - y).abs() <= tol
    }

    #[test]
    fn constants() {
        assert!(close(c0(), C0, 1e-15));
        assert!(close(C0, -1.598597, 1e-6));
        assert!(close(LOGIT_MIN, 0.01f64.ln(), 1e-15));
        assert!(close(LOGIT_MAX, 100f64.ln(), 1e-15));
        assert!(close(init_logit(0.2), 1.386294, 1e-6));
        assert!(close(init_logit(0.3), 0.847298, 1e-6));
        assert_eq!(init_logit(0.5), 0.0);
        assert_eq!(clamp_logit(9.0), LOGIT_MAX);
    }

    /// §10.1. METHODS quotes 0.831820 / 0.168180 / 0.990033; the exact values of its own
    /// formula are 0.8318222 / 0.1681778 / 0.9900344 (the quoted ones are 1.4e-6 to 2.2e-6 off,
    /// so they miss the stated 1e-6). METHODS' own LeNet-5 penalty 89420.88 (§10.6) needs the
    /// exact value (0.831820 would give 89420.65). We pin the exact values to 1e-6 and the quoted
    /// ones to 3e-6.
    #[test]
    fn open_probabilities() {
        let ln100 = 100f64.ln();
        assert!(close(prob_open(0.0), 0.831822, 1e-6));
        assert!(close(prob_zero(0.0), 0.168178, 1e-6));
        assert!(close(prob_one(0.0), 0.168178, 1e-6));
        assert!(close(prob_open(3.0), 0.990034, 1e-6));
        assert!(close(prob_open(0.0), 0.831820, 3e-6));
        assert!(close(prob_zero(0.0), 0.168180, 3e-6));
        assert!(close(prob_one(0.0), 0.168180, 3e-6));
        assert!(close(prob_open(3.0), 0.990033, 3e-6));
        assert!(close(prob_open(ln100), 0.997983, 1e-6));
        assert!(close(prob_open(-ln100), 0.047130, 1e-6));
        assert!(close(prob_open(4f64.ln()), 0.951887, 1e-6));
    }

    /// §10.2
    #[test]
    fn derivative_at_zero() {
        assert!(close(prob_open_grad(0.0), 0.139894, 1e-6));
        let h = 1e-5;
        let fd = (prob_open(h) - prob_open(-h)) / (2.0 * h);
        assert!(close(fd, prob_open_grad(0.0), 1e-8));
    }

    fn monte_carlo(a: f64, n: usize, seed: u64) -> (f64, f64, f64) {
        let mut rng = seeded(seed);
        let (mut zeros, mut ones, mut sum) = (0usize, 0usize, 0.0f64);
        for u in draw_noise(&mut rng, n) {
            let z = sample(a, u);
            if z == 0.0 {
                zeros += 1;
            } else if z == 1.0 {
                ones += 1;
            }
            sum += z;
        }
        let n = n as f64;
        (zeros as f64 / n, ones as f64 / n, sum / n)
    }

    /// §10.3 (the quoted E[z] at a = 1 happens to be close to 1/sqrt(2); it is not meant as one)
    #[test]
    #[allow(clippy::approx_constant)]
    fn monte_carlo_fractions() {
        let n = 4_000_000;
        let (z0, z1, m) = monte_carlo(0.0, n, 1);
        eprintln!("a=0: zeros {z0:.5} ones {z1:.5} E[z] {m:.5}");
        assert!(close(z0, 0.1682, 1e-3), "zeros {z0}");
        assert!(close(z1, 0.1682, 1e-3), "ones {z1}");
        assert!(close(m, 0.5, 1e-3), "mean {m}");
        let (z0, z1, m) = monte_carlo(1.0, n, 2);
        eprintln!("a=1: zeros {z0:.5} ones {z1:.5} E[z] {m:.5}");
        assert!(close(z0, 0.0692, 1e-3), "zeros {z0}");
        assert!(close(z1, 0.3547, 1e-3), "ones {z1}");
        assert!(close(m, 0.7071, 1e-3), "mean {m}");
        // closed forms agree with the quoted figures
        assert!(close(prob_zero(1.0), 0.0692, 1e-4));
        assert!(close(prob_one(1.0), 0.3547, 1e-4));
    }

    /// §10.4
    #[test]
    fn fixed_noise_samples() {
        assert!(close(sample(0.0, 0.5), 0.5, 1e-12));
        assert!(close(sample(0.0, 0.3), 0.162914, 1e-6));
        assert_eq!(sample(0.0, 0.9), 1.0);
        assert!(close(stretched(0.0, 0.9), 1.057143, 1e-6));
        assert_eq!(sample(0.0, 0.05), 0.0);
        assert!(stretched(0.0, 0.05) < 0.0);
    }

    /// §10.5
    #[test]
    fn test_gates() {
        assert!(close(test_gate(0.0), 0.5, 1e-12));
        assert!(close(test_gate(4f64.ln()), 0.86, 1e-12));
        assert!(close(test_gate((7.0f64 / 3.0).ln()), 0.74, 1e-12));
        assert_eq!(test_gate(3.0), 1.0);
        assert_eq!(test_gate(2.3979), 1.0);
        for a in [-2.3979, -2.4, -3.0, -10.0] {
            assert_eq!(test_gate(a), 0.0);
            assert!(is_pruned(a));
        }
        assert!(!is_pruned(-2.3978));
        // boundary at -ln 11, to 1e-6
        let b = -(11f64.ln());
        assert!(is_pruned(b - 1e-6));
        assert!(!is_pruned(b + 1e-6));
        let (mut lo, mut hi) = (-5.0, 0.0);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if is_pruned(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        assert!(close(lo, b, 1e-6), "boundary {lo}");
        assert!(close(b, -2.397895, 1e-6));
    }

    #[test]
    fn draw_noise_range_and_determinism() {
        let a = draw_noise(&mut seeded(5), 1000);
        let b = draw_noise(&mut seeded(5), 1000);
        assert_eq!(a, b);
        assert!(a.iter().all(|&u| (NOISE_EPS..1.0 - NOISE_EPS).contains(&u)));
    }

    use crate::exec::value::host_f32 as to_vec;

    /// §10.2 through burn autodiff.
    #[test]
    fn tensor_prob_open_gradient() {
        let dev = Device::flex().autodiff();
        let a = Tensor::<1>::from_data(burn::tensor::TensorData::new(vec![0.0f32, 3.0], [2]), &dev)
            .require_grad();
        let p = prob_open_t(a.clone());
        let pv = to_vec(p.clone());
        assert!(close(pv[0] as f64, 0.831822, 1e-6));
        assert!(close(pv[1] as f64, 0.990034, 1e-6));
        let grads = p.sum().backward();
        let g = to_vec(a.grad(&grads).unwrap());
        assert!(close(g[0] as f64, 0.139894, 1e-5), "grad {}", g[0]);
        assert!(close(g[1] as f64, prob_open_grad(3.0), 1e-5));
    }

    /// `sample_t` / `test_gate_t` match the scalar reference for fixed noise; the sample is
    /// differentiable inside (0, 1) and has zero gradient where clamped.
    #[test]
    fn tensor_samples_match_scalar() {
        let dev = Device::flex().autodiff();
        let a_vals = [0.0f64, 0.0, 0.0, 0.0, 1.0, -1.0, 2.5, 4.582];
        let u_vals = [0.5f64, 0.3, 0.9, 0.05, 0.37, 0.81, 0.02, 0.6];
        let n = a_vals.len();
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let a = Tensor::<1>::from_data(burn::tensor::TensorData::new(f(&a_vals), [n]), &dev)
            .require_grad();
        let u = Tensor::<1>::from_data(burn::tensor::TensorData::new(f(&u_vals), [n]), &dev);
        let z = sample_t(a.clone(), u.clone());
        let zv = to_vec(z.clone());
        let sv = to_vec(stretched_t(a.clone(), u));
        for i in 0..n {
            assert!(
                close(zv[i] as f64, sample(a_vals[i], u_vals[i]), 2e-6),
                "z[{i}]"
            );
            assert!(close(sv[i] as f64, stretched(a_vals[i], u_vals[i]), 2e-6));
        }
        let grads = z.sum().backward();
        let g = to_vec(a.grad(&grads).unwrap());
        for i in 0..n {
            let sb = stretched(a_vals[i], u_vals[i]);
            if (0.0..=1.0).contains(&sb) {
                let s = (sb - LO) / (HI - LO);
                let expect = (HI - LO) * s * (1.0 - s) / TEMPERATURE;
                assert!(close(g[i] as f64, expect, 1e-5), "grad[{i}]");
            } else {
                assert_eq!(g[i], 0.0, "grad[{i}]");
            }
        }
        let tv = to_vec(test_gate_t(Tensor::<1>::from_data(
            burn::tensor::TensorData::new(f(&a_vals), [n]),
            &dev,
        )));
        for i in 0..n {
            assert!(close(tv[i] as f64, test_gate(a_vals[i]), 2e-6));
        }
    }

    #[test]
    fn tensor_noise() {
        let dev = Device::flex();
        let mut r1 = seeded(3);
        let mut r2 = seeded(3);
        let a = to_vec(noise_seeded_t([2, 3], &mut r1, &dev));
        let b = to_vec(noise_seeded_t([2, 3], &mut r2, &dev));
        assert_eq!(a, b);
        assert!(a.iter().all(|&x| x > 0.0 && x < 1.0));
        // broadcasting a [1, C] logit row against [B, C] noise
        let la = Tensor::<2>::zeros([1, 3], &dev);
        let z = sample_t(la, noise_seeded_t([2, 3], &mut seeded(3), &dev));
        assert_eq!(z.dims(), [2, 3]);
        let zv = to_vec(z);
        for i in 0..6 {
            assert!(close(zv[i] as f64, sample(0.0, a[i] as f64), 2e-6));
        }
    }
}
