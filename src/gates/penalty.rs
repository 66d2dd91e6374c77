//! Expected-cost penalties (METHODS §1, §2, §3) and the weight counts of §7.
//!
//! - AMLab / l0-arm form: `R = (1/N) sum_l sum_g p_g (lambda_l n_g + 0.5 rho ||w_g||^2)`, where
//!   `p_g = P(z_g != 0)` (HC) or `p_g = G(phi_g)` (ARM) and `n_g` is the number of weights the
//!   gate switches off (§0). The L2 term is optional.
//! - Dep-L0 form: `R = lambda sum_l k_l^2 E_{l-1} E_l` with `E_l = sum_g p_g`, `E_0` given
//!   (3 for RGB); no 1/N.
//!
//! Scalar `f64` functions are the reference; the `*_t` functions take per-layer probability
//! tensors and return a differentiable `Tensor<1>` of shape `[1]`.

use burn::prelude::Tensor;
use burn::tensor::TensorData;

/// Expected-L0 sum before the 1/N: `sum_l sum_g p_g * lambda_l * n_g`.
pub fn l0_sum(probs: &[Vec<f64>], lambdas: &[f64], group_sizes: &[Vec<f64>]) -> f64 {
    assert_eq!(probs.len(), lambdas.len(), "one lambda per gated layer");
    assert_eq!(
        probs.len(),
        group_sizes.len(),
        "one n_g list per gated layer"
    );
    probs
        .iter()
        .zip(lambdas)
        .zip(group_sizes)
        .map(|((p, &lam), n)| {
            assert_eq!(p.len(), n.len(), "one n_g per gate");
            lam * p.iter().zip(n).map(|(p, n)| p * n).sum::<f64>()
        })
        .sum()
}

/// Expected-L0 cost `(1/N) sum_l sum_g p_g lambda_l n_g` (no L2).
pub fn l0_cost(probs: &[Vec<f64>], lambdas: &[f64], group_sizes: &[Vec<f64>], n_train: f64) -> f64 {
    l0_sum(probs, lambdas, group_sizes) / n_train
}

/// Expected-L0 cost with the gate-weighted L2 term:
/// `(1/N) sum_l sum_g p_g (lambda_l n_g + 0.5 rho ||w_g||^2)`.
/// `sq_norms[l][g] = ||w_g||^2` of the group of gate `g` in layer `l`.
pub fn l0_cost_l2(
    probs: &[Vec<f64>],
    lambdas: &[f64],
    group_sizes: &[Vec<f64>],
    sq_norms: &[Vec<f64>],
    rho: f64,
    n_train: f64,
) -> f64 {
    assert_eq!(probs.len(), sq_norms.len());
    let l2: f64 = probs
        .iter()
        .zip(sq_norms)
        .map(|(p, w)| {
            assert_eq!(p.len(), w.len());
            p.iter().zip(w).map(|(p, w)| p * 0.5 * rho * w).sum::<f64>()
        })
        .sum();
    (l0_sum(probs, lambdas, group_sizes) + l2) / n_train
}

/// Expected number of open gates of a layer, `E_l = sum_g p_g`.
pub fn expected_open(probs: &[f64]) -> f64 {
    probs.iter().sum()
}

/// Dep-L0 cost `lambda * sum_l k_l^2 E_{l-1} E_l`, with `E_0 = e0`.
pub fn dep_l0_cost(
    expected_open_per_layer: &[f64],
    kernel_sizes: &[f64],
    lambda: f64,
    e0: f64,
) -> f64 {
    assert_eq!(expected_open_per_layer.len(), kernel_sizes.len());
    let mut prev = e0;
    let mut sum = 0.0;
    for (&e, &k) in expected_open_per_layer.iter().zip(kernel_sizes) {
        sum += k * k * prev * e;
        prev = e;
    }
    lambda * sum
}

fn first_device(probs: &[Tensor<1>]) -> burn::prelude::Device {
    probs
        .first()
        .expect("penalty needs at least one gated layer")
        .device()
}

/// Differentiable [`l0_cost`]: `probs[l]` has one entry per gate of layer `l`.
///
/// # Panics
/// If `probs` is empty or the lengths disagree.
pub fn l0_cost_t(
    probs: Vec<Tensor<1>>,
    lambdas: &[f64],
    group_sizes: &[Vec<f64>],
    n_train: f64,
) -> Tensor<1> {
    assert_eq!(probs.len(), lambdas.len(), "one lambda per gated layer");
    assert_eq!(
        probs.len(),
        group_sizes.len(),
        "one n_g list per gated layer"
    );
    let device = first_device(&probs);
    let mut total = Tensor::<1>::zeros([1], &device);
    for ((p, &lam), n) in probs.into_iter().zip(lambdas).zip(group_sizes) {
        let len = p.dims()[0];
        assert_eq!(len, n.len(), "one n_g per gate");
        let nt = Tensor::<1>::from_data(
            TensorData::new(n.iter().map(|&x| x as f32).collect::<Vec<f32>>(), [len]),
            &device,
        );
        total = total + (p * nt).sum().mul_scalar(lam / n_train);
    }
    total
}

/// The expected-L0 penalty as training computes it, one term per gated group:
/// `sum_g open_g * (lambda_g * n_g / N)`, where `open_g` (shape `[1]`) is the group's expected
/// open count and `n_g` the weights one of its gates switches off (all gates of a group own
/// the same number). Equals [`l0_cost`] for that layout.
pub fn l0_group_penalty_t(
    open: &[Tensor<1>],
    lambdas: &[f64],
    group_sizes: &[f64],
    n_train: f64,
    device: &burn::prelude::Device,
) -> Tensor<1> {
    let mut r = Tensor::<1>::zeros([1], device);
    for ((o, &lambda), &n) in open.iter().zip(lambdas).zip(group_sizes) {
        r = r + o.clone() * (lambda * n / n_train) as f32;
    }
    r
}

/// Differentiable [`l0_cost_l2`]: `sq_norms[l]` holds `||w_g||^2` per gate (differentiable in the
/// weights, e.g. `w.powi_scalar(2).sum_dim(..)`).
pub fn l0_cost_l2_t(
    probs: Vec<Tensor<1>>,
    lambdas: &[f64],
    group_sizes: &[Vec<f64>],
    sq_norms: Vec<Tensor<1>>,
    rho: f64,
    n_train: f64,
) -> Tensor<1> {
    assert_eq!(probs.len(), sq_norms.len());
    let l2 = probs
        .iter()
        .zip(sq_norms)
        .map(|(p, w)| (p.clone() * w).sum().mul_scalar(0.5 * rho / n_train))
        .reduce(|a, b| a + b);
    let l0 = l0_cost_t(probs, lambdas, group_sizes, n_train);
    match l2 {
        Some(l2) => l0 + l2,
        None => l0,
    }
}

/// Differentiable [`dep_l0_cost`] from per-layer probability tensors (`E_l = sum(probs[l])`).
///
/// # Panics
/// If `probs` is empty or `kernel_sizes` has a different length.
pub fn dep_l0_cost_t(
    probs: Vec<Tensor<1>>,
    kernel_sizes: &[f64],
    lambda: f64,
    e0: f64,
) -> Tensor<1> {
    assert_eq!(probs.len(), kernel_sizes.len());
    let device = first_device(&probs);
    let mut total = Tensor::<1>::zeros([1], &device);
    let mut prev: Option<Tensor<1>> = None;
    for (p, &k) in probs.into_iter().zip(kernel_sizes) {
        let e = p.sum();
        let term = match prev {
            None => e.clone().mul_scalar(e0),
            Some(pe) => pe * e.clone(),
        };
        total = total + term.mul_scalar(lambda * k * k);
        prev = Some(e);
    }
    total
}

/// Weight counts (weights only, no biases) of METHODS §7 / §10.11.
pub mod arch_weights {
    /// LeNet-5-Caffe weight count, full network 20-50-800-500.
    pub const LENET5_FULL: usize = 430_500;
    /// LeNet-300-100 weight count, full network 784-300-100.
    pub const MLP_FULL: usize = 266_200;
    /// VGG16-CIFAR conv widths.
    pub const VGG16_CIFAR_WIDTHS: [usize; 13] = [
        64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
    ];

    /// LeNet-5 with `c1`, `c2` conv channels, `f1` fc1 inputs and `f2` fc2 inputs:
    /// `c1*25 + c2*c1*25 + f1*f2 + f2*10`.
    pub fn lenet5_weights(c1: usize, c2: usize, f1: usize, f2: usize) -> usize {
        c1 * 25 + c2 * c1 * 25 + f1 * f2 + f2 * 10
    }

    /// MLP with `i` kept inputs and hidden widths `h1`, `h2`: `i*h1 + h1*h2 + h2*10`.
    pub fn mlp_weights(i: usize, h1: usize, h2: usize) -> usize {
        i * h1 + h1 * h2 + h2 * 10
    }

    /// Prune rate `1 - weights/full` as a fraction.
    pub fn prune_rate(weights: usize, full: usize) -> f64 {
        1.0 - weights as f64 / full as f64
    }

    /// VGG16-CIFAR (3x3 convs on 32x32 inputs, max-pool after convs 2, 4, 7, 10, 13, one FC to
    /// `classes`): `(weights, MACs)`.
    pub fn vgg16_cifar(widths: &[usize; 13], classes: usize) -> (usize, usize) {
        let pool_after = [1usize, 3, 6, 9, 12];
        let (mut cin, mut hw) = (3usize, 32usize);
        let (mut w, mut macs) = (0usize, 0usize);
        for (i, &c) in widths.iter().enumerate() {
            w += 9 * cin * c;
            macs += 9 * cin * c * hw * hw;
            cin = c;
            if pool_after.contains(&i) {
                hw /= 2;
            }
        }
        (w + cin * classes, macs + cin * classes)
    }

    /// ResNet-56 for CIFAR (3 stages of 9 basic blocks, widths 16/32/64, 1x1 projection
    /// shortcuts at the two stage transitions, FC to `classes`): `(weights, MACs)`.
    pub fn resnet56_cifar(classes: usize) -> (usize, usize) {
        let (mut w, mut macs) = (0usize, 0usize);
        let mut conv = |cin: usize, cout: usize, k: usize, hw: usize| {
            w += cin * cout * k * k;
            macs += cin * cout * k * k * hw * hw;
        };
        conv(3, 16, 3, 32);
        let mut cin = 16;
        for (stage, (c, hw)) in [(16usize, 32usize), (32, 16), (64, 8)]
            .into_iter()
            .enumerate()
        {
            for block in 0..9 {
                conv(cin, c, 3, hw);
                conv(c, c, 3, hw);
                if stage > 0 && block == 0 {
                    conv(cin, c, 1, hw);
                }
                cin = c;
            }
        }
        (w + 64 * classes, macs + 64 * classes)
    }
}

#[cfg(test)]
mod tests {
    use super::arch_weights::*;
    use super::*;
    use crate::gates::hard_concrete::{prob_open, prob_open_t};
    use burn::prelude::Device;

    use crate::exec::value::host_f32 as to_vec;

    fn tensor(v: &[f64], dev: &Device) -> Tensor<1> {
        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::<1>::from_data(TensorData::new(f, [v.len()]), dev)
    }

    /// LeNet-5 gate layout: (gates, n_g) per gated layer.
    /// conv1: 20 output channels, n_g = C_in*kh*kw = 1*5*5; conv2: 50 channels, n_g = 20*5*5;
    /// fc1: 800 input gates, n_g = out_features = 500; fc2: 500 input gates, n_g = 10.
    const LENET5: [(usize, f64); 4] = [(20, 25.0), (50, 500.0), (800, 500.0), (500, 10.0)];
    /// MLP: input gates n_g = out_features of the layer they feed.
    const MLP: [(usize, f64); 3] = [(784, 300.0), (300, 100.0), (100, 10.0)];

    fn layout(spec: &[(usize, f64)], logits: &[f64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let probs = spec
            .iter()
            .zip(logits)
            .map(|(&(g, _), &a)| vec![prob_open(a); g])
            .collect();
        let sizes = spec.iter().map(|&(g, n)| vec![n; g]).collect();
        (probs, sizes)
    }

    /// §10.6
    #[test]
    fn lenet5_at_init() {
        let lambdas = [10.0, 0.5, 0.1, 10.0];
        let (probs, sizes) = layout(&LENET5, &[0.0; 4]);
        let sum = l0_sum(&probs, &lambdas, &sizes);
        assert!((sum - 89420.88).abs() < 5e-3, "sum {sum}");
        let r = l0_cost(&probs, &lambdas, &sizes, 60000.0);
        assert!((r - 1.490348).abs() < 1e-6, "R {r}");
        // tensor version, on an autodiff device, with a gradient
        let dev = Device::flex().autodiff();
        let logits: Vec<Tensor<1>> = LENET5
            .iter()
            .map(|&(g, _)| Tensor::<1>::zeros([g], &dev).require_grad())
            .collect();
        let pt = logits.iter().cloned().map(prob_open_t).collect();
        let rt = l0_cost_t(pt, &lambdas, &sizes, 60000.0);
        assert_eq!(rt.dims(), [1]);
        let rv = to_vec(rt.clone())[0] as f64;
        assert!((rv - 1.490348).abs() < 1e-5, "tensor R {rv}");
        let grads = rt.backward();
        let g = to_vec(logits[0].grad(&grads).unwrap());
        // dR/da_g = p(1-p) * lambda * n_g / N for a conv1 gate
        let expect = 0.139894 * 10.0 * 25.0 / 60000.0;
        assert!((g[0] as f64 - expect).abs() < 1e-8);
    }

    /// §10.7
    #[test]
    fn mlp_at_init() {
        let lambdas = [0.1; 3];
        let (probs, sizes) = layout(&MLP, &[4f64.ln(), 0.0, 0.0]);
        let sum = l0_sum(&probs, &lambdas, &sizes);
        assert!((sum - 24967.03).abs() < 5e-3, "sum {sum}");
        let r = l0_cost(&probs, &lambdas, &sizes, 60000.0);
        assert!((r - 0.416117).abs() < 1e-6, "R {r}");
        let dev = Device::flex();
        let pt = probs.iter().map(|p| tensor(p, &dev)).collect();
        let rv = to_vec(l0_cost_t(pt, &lambdas, &sizes, 60000.0))[0] as f64;
        assert!((rv - 0.416117).abs() < 1e-5, "tensor R {rv}");
    }

    /// §10.6 and §10.7 through the penalty training runs (expected open counts per layer).
    #[test]
    fn training_penalty_at_init() {
        let dev = Device::flex();
        let open = |spec: &[(usize, f64)], logits: &[f64]| -> Vec<Tensor<1>> {
            spec.iter()
                .zip(logits)
                .map(|(&(g, _), &a)| prob_open_t(Tensor::<1>::full([g], a, &dev)).sum())
                .collect()
        };
        let sizes = |spec: &[(usize, f64)]| spec.iter().map(|&(_, n)| n).collect::<Vec<_>>();
        let r = l0_group_penalty_t(
            &open(&LENET5, &[0.0; 4]),
            &[10.0, 0.5, 0.1, 10.0],
            &sizes(&LENET5),
            60000.0,
            &dev,
        );
        let rv = to_vec(r)[0] as f64;
        assert!((rv - 1.490348).abs() < 1e-5, "LeNet-5 R {rv}");
        let r = l0_group_penalty_t(
            &open(&MLP, &[4f64.ln(), 0.0, 0.0]),
            &[0.1; 3],
            &sizes(&MLP),
            60000.0,
            &dev,
        );
        let rv = to_vec(r)[0] as f64;
        assert!((rv - 0.416117).abs() < 1e-5, "MLP R {rv}");
    }

    #[test]
    fn l2_term() {
        let probs = vec![vec![0.5, 1.0], vec![0.25]];
        let sizes = vec![vec![2.0, 2.0], vec![4.0]];
        let sq = vec![vec![4.0, 2.0], vec![8.0]];
        let lambdas = [1.0, 2.0];
        // l0: 0.5*2 + 1*2 + 2*0.25*4 = 5; l2 (rho = 2): 0.5*4 + 1*2 + 0.25*8 = 6
        assert!((l0_cost(&probs, &lambdas, &sizes, 1.0) - 5.0).abs() < 1e-12);
        let r = l0_cost_l2(&probs, &lambdas, &sizes, &sq, 2.0, 10.0);
        assert!((r - 1.1).abs() < 1e-12);
        let dev = Device::flex();
        let pt: Vec<Tensor<1>> = probs.iter().map(|p| tensor(p, &dev)).collect();
        let st: Vec<Tensor<1>> = sq.iter().map(|p| tensor(p, &dev)).collect();
        let rt = to_vec(l0_cost_l2_t(pt, &lambdas, &sizes, st, 2.0, 10.0))[0] as f64;
        assert!((rt - 1.1).abs() < 1e-6);
    }

    /// §10.8 (scalar part; the generator side is tested in `dep_l0`).
    #[test]
    fn dep_l0_vgg16() {
        let p = prob_open(100f64.ln() * 3f64.tanh());
        assert!((p - 0.997936).abs() < 1e-6);
        let e: Vec<f64> = VGG16_CIFAR_WIDTHS.iter().map(|&c| c as f64 * p).collect();
        let k = [3.0; 13];
        let r = dep_l0_cost(&e, &k, 1e-6, 3.0);
        assert!((r - 14.6498).abs() < 5e-5, "{r}");
        let full: Vec<f64> = VGG16_CIFAR_WIDTHS.iter().map(|&c| c as f64).collect();
        let r = dep_l0_cost(&full, &k, 1e-6, 3.0);
        assert!((r - 14.710464).abs() < 1e-9);
        // == conv weight count times lambda
        let (w, _) = vgg16_cifar(&VGG16_CIFAR_WIDTHS, 10);
        assert!((r - (w - 512 * 10) as f64 * 1e-6).abs() < 1e-9);
        assert_eq!(expected_open(&[0.5, 0.25]), 0.75);
    }

    /// §10.11
    #[test]
    fn weight_counts() {
        assert_eq!(lenet5_weights(20, 50, 800, 500), LENET5_FULL);
        assert_eq!(lenet5_weights(9, 18, 65, 25), 6_150);
        assert_eq!(lenet5_weights(20, 25, 45, 462), 38_410);
        let pct2 = |w: usize, f: usize| (10000.0 * w as f64 / f as f64).round() / 100.0;
        assert_eq!(pct2(6_150, LENET5_FULL), 1.43);
        assert_eq!(pct2(38_410, LENET5_FULL), 8.92);
        assert_eq!(mlp_weights(784, 300, 100), MLP_FULL);
        assert_eq!(mlp_weights(219, 214, 100), 69_266);
        assert_eq!(mlp_weights(266, 88, 33), 26_642);
        assert_eq!(pct2(69_266, MLP_FULL), 26.02);
        assert_eq!(pct2(26_642, MLP_FULL), 10.01);
        assert!((prune_rate(6_150, LENET5_FULL) - (1.0 - 0.014286)).abs() < 1e-6);
        let (w, macs) = vgg16_cifar(&VGG16_CIFAR_WIDTHS, 10);
        assert_eq!(w, 14_715_584);
        assert_eq!((macs as f64 / 1e5).round() / 10.0, 313.2);
        let (w, macs) = resnet56_cifar(10);
        assert!(
            (w as f64 / 1e6 - 0.85).abs() < 0.005,
            "about 0.85M weights: {w}"
        );
        assert_eq!((macs as f64 / 1e5).round() / 10.0, 125.7);
    }
}
