//! The Dep-L0 logit generator (METHODS §3).
//!
//! A chain of affine maps `h_j = ln(100) * tanh(W_j h_{j-1} + b_j)` with `h_0 = ones(n0)`; `h_j`
//! is the hard-concrete logit vector of gated layer `j`. With forward dependency the chain runs
//! from the first gated layer to the last; with backward dependency it is built from the last to
//! the first and its output list is reversed, so [`DepGenerator::forward`] always returns the
//! logits in network order.
//!
//! Init: `W_j ~ U(+-1/sqrt(fan_in))`, `b_j ~ N(3, 0.01^2)`. **[ours]** `W_j` is stored divided by
//! [`step_scale`] so that Adam's per-entry step does not saturate the chain.
//!
//! **[ours]** Budget runs (`scaled`) change three more things, all measured on models/vit at
//! `--target-macs 0.5` (BENCHMARKS.md, "Dep-L0 on the ViT"), where the reference chain
//! saturated: every logit at +-4.6 within 25 steps, `tanh' ~ 0`, and the budget's multipliers
//! swinging +-20 while no gate moved.
//! - A wall on the pre-activations: [`DepGenerator::wall_penalty`] adds
//!   `WALL_WEIGHT * sum relu(|z| - WALL)^2`, so `z` stays where `tanh` still answers and a
//!   closed gate can reopen within tens of steps (a clamp that moved the biases let `W` grow
//!   without bound instead).
//! - The init: every logit starts at L0-HC's [`BUDGET_INIT_LOGIT`] (`b_j = atanh(3 / ln 100)`)
//!   and `W_j` at a tenth of the reference's range, so that no gate is closed at step 0 (the
//!   reference init closed 16 of the ViT's 384 MLP gates before training).
//! - The generator's Adam steps are [`BUDGET_STEP`] of the gate lr, for `W_j` and `b_j` alike
//!   (both stored divided by that factor).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::{Device, Tensor};
use burn::tensor::{TensorData, activation};

/// Bias mean at init.
pub const BIAS_INIT_MEAN: f64 = 3.0;
/// Bias standard deviation at init.
pub const BIAS_INIT_STD: f64 = 0.01;

/// **[ours]** Budget runs: the logit every gate starts at (L0-HC's init logit).
pub const BUDGET_INIT_LOGIT: f64 = 3.0;
/// **[ours]** Budget runs: `W_j`'s init range as a share of the reference's `1/sqrt(fan_in)`.
pub const BUDGET_WEIGHT_INIT: f64 = 0.1;
/// **[ours]** Budget runs: the generator's step as a share of the gate lr.
pub const BUDGET_STEP: f64 = 0.3;
/// **[ours]** Budget runs: `|z|` beyond this is penalised (`ln(100) tanh(1.5) = 4.16`).
pub const WALL: f64 = 1.5;
/// **[ours]** Weight of the wall penalty: large enough to outweigh the data and budget
/// gradients that reach a gate through `tanh'` beyond the wall (about 1e-4 to 1e-3 per gate).
pub const WALL_WEIGHT: f64 = 0.01;

/// The generator. Its parameters (one [`Linear`] per gated layer) train jointly with the network
/// (Adam, lr 1e-3 in the reference).
#[derive(Module, Debug)]
pub struct DepGenerator {
    /// Maps in chain order (network order for forward dependency, reversed for backward); each
    /// weight is stored divided by [`step_scale`] (use [`DepGenerator::weight`] for `W_j`).
    pub layers: Vec<Linear>,
    /// Length of the constant all-ones input.
    #[module(skip)]
    pub n0: usize,
    /// Backward dependency (chain built from the last gated layer to the first).
    #[module(skip)]
    pub backward: bool,
    /// **[ours]** Budget runs: weights stored divided by [`step_scale`] and [`BUDGET_STEP`],
    /// biases by [`BUDGET_STEP`], the budget init and the wall (see the module docs).
    #[module(skip)]
    pub scaled: bool,
}

/// Chain order of the widths: network order, or reversed for backward dependency.
fn chain_widths(widths: &[usize], backward: bool) -> Vec<usize> {
    let mut w = widths.to_vec();
    if backward {
        w.reverse();
    }
    w
}

/// **[ours]** The factor between the stored generator weight and the `W_j` the chain uses:
/// `1 / (fan_in * max|h_{j-1}|)`, with `max|h_0| = 1` and `ln 100` after that.
///
/// Adam moves every stored entry by up to the learning rate per step whatever its gradient's
/// size, so an unscaled `W_j` moves `z_j = W_j h_{j-1} + b_j` by up to `lr * sum|h_{j-1}|`:
/// 0.1 * 800 * 4.6 = 368 per step for LeNet-5's fc2 gates at the gate lr 0.1. Measured on
/// LeNet-5 (subset, `--target-macs 0.3`), `z` went from 3 +- 2.6 at init to a mean of 21 and a
/// standard deviation of 36 within 50 steps, every gate with `|z| > 2`; there `tanh'` is ~0, the
/// gates froze half open and half closed, and training ended at an expected 0.45-0.51 of the
/// dense MACs whatever the budget's multiplier. With the factor the `W` route moves `z` by at
/// most the learning rate per step, as the bias does. The function and its init are the
/// reference's (`W_j` is drawn as in §3 and stored divided by the factor); only the step size
/// of `W` under Adam changes. A larger factor (50x) reaches a budget sooner in short runs but
/// saturates again on long ones (3 epochs, T = 0.3: expected 0.53, accuracy 0.65). Only budget runs use it: without a budget the fixed penalty is too
/// weak to close gates at this pace in short runs (LeNet-5 subset, 2 epochs: MACs ratio 0.78
/// with it, 0.40 without, where the saturated gates freeze at random), so that behaviour stays.
pub fn step_scale(j: usize, fan_in: usize) -> f64 {
    let input_bound = if j == 0 { 1.0 } else { 100f64.ln() };
    1.0 / (fan_in.max(1) as f64 * input_bound)
}

fn layer_bias(layer: &Linear) -> Tensor<1> {
    match &layer.bias {
        Some(b) => b.val(),
        None => Tensor::<1>::zeros([layer.weight.dims()[1]], &layer.weight.device()),
    }
}

fn linear_from(weight: Tensor<2>, bias: Tensor<1>) -> Linear {
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

impl DepGenerator {
    /// The chain of maps for `widths` (network order), each made by `init(fan_in, width)`.
    fn build(
        widths: &[usize],
        n0: usize,
        backward: bool,
        scaled: bool,
        mut init: impl FnMut(usize, usize) -> (Tensor<2>, Tensor<1>),
    ) -> Self {
        let mut fan_in = n0;
        let layers = chain_widths(widths, backward)
            .into_iter()
            .enumerate()
            .map(|(j, c)| {
                let (w, b) = init(fan_in, c);
                let (w, b) = if scaled {
                    (
                        w.div_scalar(step_scale(j, fan_in) * BUDGET_STEP),
                        b.div_scalar(BUDGET_STEP),
                    )
                } else {
                    (w, b)
                };
                fan_in = c;
                linear_from(w, b)
            })
            .collect();
        DepGenerator {
            layers,
            n0,
            backward,
            scaled,
        }
    }

    /// Reference init from the project's generator seeded with `seed` ([`crate::rng`])
    /// (bitwise reproducible on every backend); `scaled`: a budget run's generator (the
    /// budget init, scaled steps and the wall; module docs).
    pub fn new_seeded(
        widths: &[usize],
        n0: usize,
        backward: bool,
        scaled: bool,
        seed: u64,
        device: &Device,
    ) -> Self {
        use crate::rng::RngExt;
        let mut rng = crate::rng::seeded(seed);
        let (bias_mean, weight_range) = if scaled {
            (
                (BUDGET_INIT_LOGIT / 100f64.ln()).atanh(),
                BUDGET_WEIGHT_INIT,
            )
        } else {
            (BIAS_INIT_MEAN, 1.0)
        };
        let bias =
            rand_distr::Normal::new(bias_mean, BIAS_INIT_STD).expect("constant, valid parameters");
        Self::build(widths, n0, backward, scaled, |fan_in, c| {
            let bound = weight_range / (fan_in as f64).sqrt();
            let w: Vec<f32> = (0..fan_in * c)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let b: Vec<f32> = (0..c).map(|_| rng.sample(bias) as f32).collect();
            (
                Tensor::<2>::from_data(TensorData::new(w, [fan_in, c]), device),
                Tensor::<1>::from_data(TensorData::new(b, [c]), device),
            )
        })
    }

    /// All weights zero and all biases equal to `bias` (METHODS §10.8 uses `bias = 3`):
    /// every logit is then `ln(100) * tanh(bias)`.
    pub fn new_zero_weights(
        widths: &[usize],
        n0: usize,
        backward: bool,
        bias: f64,
        device: &Device,
    ) -> Self {
        Self::build(widths, n0, backward, false, |fan_in, c| {
            (
                Tensor::<2>::zeros([fan_in, c], device),
                Tensor::<1>::full([c], bias, device),
            )
        })
    }

    /// The map's weight `W_j` (shape fan-in x width) as the chain uses it: the stored
    /// parameter, times [`step_scale`] and [`BUDGET_STEP`] when `scaled`.
    pub fn weight(&self, j: usize) -> Tensor<2> {
        let w = self.layers[j].weight.val();
        if !self.scaled {
            return w;
        }
        let fan_in = w.dims()[0];
        w.mul_scalar(step_scale(j, fan_in) * BUDGET_STEP)
    }

    /// The map's bias `b_j` as the chain uses it: the stored parameter, times [`BUDGET_STEP`]
    /// when `scaled`.
    pub fn bias(&self, j: usize) -> Tensor<1> {
        let b = layer_bias(&self.layers[j]);
        if !self.scaled {
            return b;
        }
        b.mul_scalar(BUDGET_STEP)
    }

    /// The pre-activations `z_j = W_j h_{j-1} + b_j` of every map, in chain order.
    pub fn pre_activations(&self) -> Vec<Tensor<1>> {
        self.chain().into_iter().map(|(z, _)| z).collect()
    }

    /// **[ours]** Budget runs: `WALL_WEIGHT * sum relu(|z| - WALL)^2` over every map's
    /// pre-activations (`None` otherwise).
    pub fn wall_penalty(&self) -> Option<Tensor<1>> {
        if !self.scaled {
            return None;
        }
        let device = self.layers.first()?.weight.device();
        let mut penalty = Tensor::<1>::zeros([1], &device);
        for z in self.pre_activations() {
            let over = (z.abs() - WALL as f32).clamp_min(0.0);
            penalty = penalty + (over.clone() * over).sum();
        }
        Some(penalty.mul_scalar(WALL_WEIGHT))
    }

    /// `(z_j, h_j)` of every map, in chain order.
    fn chain(&self) -> Vec<(Tensor<1>, Tensor<1>)> {
        let Some(first) = self.layers.first() else {
            return Vec::new();
        };
        let mut h = Tensor::<2>::ones([1, self.n0], &first.weight.device());
        let mut out = Vec::with_capacity(self.layers.len());
        for (j, layer) in self.layers.iter().enumerate() {
            let z = if self.scaled {
                h.matmul(self.weight(j)) + self.bias(j).unsqueeze_dim(0)
            } else {
                layer.forward(h)
            };
            h = activation::tanh(z.clone()).mul_scalar(100f64.ln());
            let c = h.dims()[1];
            out.push((z.reshape([c]), h.clone().reshape([c])));
        }
        out
    }

    /// Channel counts of the gated layers in network order.
    pub fn widths(&self) -> Vec<usize> {
        let w: Vec<usize> = self.layers.iter().map(|l| l.weight.dims()[1]).collect();
        chain_widths(&w, self.backward)
    }

    /// The HC logit vector of every gated layer, in network order.
    pub fn forward(&self) -> Vec<Tensor<1>> {
        let mut out: Vec<Tensor<1>> = self.chain().into_iter().map(|(_, h)| h).collect();
        if self.backward {
            out.reverse();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::hard_concrete::{prob_open, prob_open_t};
    use crate::gates::penalty::{dep_l0_cost, dep_l0_cost_t};

    const VGG16: [usize; 13] = [
        64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
    ];

    use crate::exec::value::host_f32 as to_vec;

    /// §10.8: zero generator weights, biases 3.
    #[test]
    fn vgg16_zero_weights() {
        let dev = Device::flex();
        for backward in [false, true] {
            let g = DepGenerator::new_zero_weights(&VGG16, 64, backward, 3.0, &dev);
            let logits = g.forward();
            assert_eq!(logits.len(), 13);
            let a = 100f64.ln() * 3f64.tanh();
            assert!((a - 4.582396).abs() < 1e-6);
            assert!((prob_open(a) - 0.997936).abs() < 1e-6);
            let mut probs = Vec::new();
            for (l, t) in logits.iter().enumerate() {
                assert_eq!(t.dims(), [VGG16[l]]);
                let p = prob_open_t(t.clone());
                let pv = to_vec(p.clone());
                assert!(pv.iter().all(|&x| (x as f64 - 0.997936).abs() < 1e-6));
                probs.push(p);
            }
            let e: Vec<f64> = VGG16.iter().map(|&c| c as f64 * prob_open(a)).collect();
            let k = [3.0; 13];
            let r = dep_l0_cost(&e, &k, 1e-6, 3.0);
            assert!((r - 14.6498).abs() < 1e-4, "penalty {r}");
            let rt = to_vec(dep_l0_cost_t(probs, &k, 1e-6, 3.0))[0] as f64;
            assert!((rt - 14.6498).abs() < 1e-4, "tensor penalty {rt}");
            let full: Vec<f64> = VGG16.iter().map(|&c| c as f64).collect();
            assert!((dep_l0_cost(&full, &k, 1e-6, 3.0) - 14.710464).abs() < 1e-9);
        }
    }

    #[test]
    fn chain_order_and_init() {
        let dev = Device::flex();
        let widths = [3usize, 5, 7];
        let n0 = 4;
        for (seed, scaled) in [(42, false), (7, true)] {
            for backward in [false, true] {
                let g = DepGenerator::new_seeded(&widths, n0, backward, scaled, seed, &dev);
                assert_eq!(g.widths(), widths.to_vec());
                let first = &g.layers[0];
                let expect_out = if backward { 7 } else { 3 };
                assert_eq!(first.weight.dims(), [n0, expect_out]);
                let dims: Vec<usize> = g.forward().iter().map(|t| t.dims()[0]).collect();
                assert_eq!(dims, widths.to_vec());
                // W ~ U(+-1/sqrt(fan_in)), b ~ N(3, 0.01^2); budget runs: a tenth of W's range,
                // b ~ N(atanh(3 / ln 100), 0.01^2) (every logit near L0-HC's 3)
                let (range, bias_mean) = match scaled {
                    false => (1.0, 3.0),
                    true => (BUDGET_WEIGHT_INIT as f32, 0.7786),
                };
                let mut fan_in = n0;
                for (j, l) in g.layers.iter().enumerate() {
                    let bound = range / (fan_in as f32).sqrt();
                    let w = to_vec(g.weight(j));
                    assert!(w.iter().all(|x| x.abs() <= bound * (1.0 + 1e-5)));
                    assert!(w.iter().any(|x| *x != 0.0));
                    let b = to_vec(g.bias(j));
                    assert!(b.iter().all(|x| (x - bias_mean).abs() < 0.06));
                    fan_in = l.weight.dims()[1];
                }
                if scaled && !backward {
                    let a = to_vec(g.forward().remove(0));
                    assert!(a.iter().all(|x| (x - BUDGET_INIT_LOGIT as f32).abs() < 0.2));
                }
                for t in g.forward() {
                    let a = to_vec(t);
                    assert!(a.iter().all(|x| x.abs() <= 100f32.ln() + 1e-5));
                }
            }
        }
        // seeded init is reproducible
        let a = DepGenerator::new_seeded(&widths, n0, false, true, 1, &dev);
        let b = DepGenerator::new_seeded(&widths, n0, false, true, 1, &dev);
        for (x, y) in a.forward().into_iter().zip(b.forward()) {
            assert_eq!(to_vec(x), to_vec(y));
        }
    }

    /// Backward dependency reverses the chain: with hand-set weights, the logit of the last
    /// network layer depends only on the input, the first on everything.
    #[test]
    fn backward_dependency_is_reversed() {
        let dev = Device::flex();
        let widths = [2usize, 3];
        let mut g = DepGenerator::new_zero_weights(&widths, 1, true, 0.5, &dev);
        // chain layer 0 produces the network's last layer (width 3); make layer 1 depend on it.
        g.layers[1].weight = Param::from_tensor(Tensor::<2>::full([3, 2], 0.1, &dev));
        let out = g.forward();
        let h_last = 100f64.ln() * 0.5f64.tanh();
        let h_first = 100f64.ln() * (0.5 + 3.0 * 0.1 * h_last).tanh();
        let v1 = to_vec(out[1].clone());
        let v0 = to_vec(out[0].clone());
        assert_eq!(v1.len(), 3);
        assert_eq!(v0.len(), 2);
        assert!(v1.iter().all(|&x| (x as f64 - h_last).abs() < 1e-5));
        assert!(v0.iter().all(|&x| (x as f64 - h_first).abs() < 1e-5));
    }

    /// Budget runs on the ViT's gate widths (4 heads and 128 MLP neurons in each of 3 blocks):
    /// a budget-like pressure of multiplier 20 (the size the reference chain's multipliers
    /// reached) closes gates for 150 steps at the default gate lr, then opens them for 60.
    /// The reference chain saturated there: `|z|` 5-12 after 25 steps on the ViT, where
    /// `tanh' ~ 0` and no gate moved back. With the wall every pre-activation stays under
    /// twice it (`tanh'(3) = 0.01`), and three quarters of the gates the first phase closed
    /// reopen in the second (measured: 383 of 396 closed, 71 still closed after 60 steps;
    /// without the wall `|z|` reaches 3.06 and 371 stay closed).
    #[test]
    fn under_a_swinging_budget_pressure_the_chain_stays_at_its_wall_and_gates_reopen() {
        use burn::optim::{AdamConfig, GradientsParams};
        let dev = Device::flex().autodiff();
        let widths = [4usize, 128, 4, 128, 4, 128];
        let total: usize = widths.iter().sum();
        let mut g = DepGenerator::new_seeded(&widths, 64, false, true, 0, &dev);
        let closed = |g: &DepGenerator| -> usize {
            let shut = |a: Tensor<1>| to_vec(a).iter().filter(|&&x| x <= -11f32.ln()).count();
            g.forward().into_iter().map(shut).sum()
        };
        assert_eq!(closed(&g), 0, "a gate is closed at init");
        let mut opt = AdamConfig::new().init();
        let (mut worst_z, mut closed_by_push) = (0f32, 0);
        for step in 0..210 {
            let push = if step < 150 { 20.0 } else { -20.0 };
            let open = g
                .forward()
                .into_iter()
                .map(|a| prob_open_t(a).sum())
                .reduce(|x, y| x + y)
                .unwrap();
            let loss = open.mul_scalar(push / total as f64) + g.wall_penalty().unwrap();
            let mut grads = loss.backward();
            let grads = GradientsParams::from_module(&mut grads, &g);
            g = opt.step(0.1, g, grads);
            for z in g.pre_activations() {
                worst_z = to_vec(z.abs()).into_iter().fold(worst_z, f32::max);
            }
            if step == 149 {
                closed_by_push = closed(&g);
            }
        }
        assert!(worst_z < 2.0 * WALL as f32, "|z| reached {worst_z}");
        assert!(
            closed_by_push > total * 9 / 10,
            "{closed_by_push} of {total} closed"
        );
        let still = closed(&g);
        assert!(still < total / 4, "{still} of {total} still closed");
    }

    /// The generator is trainable: gradients of a penalty reach every weight and bias.
    #[test]
    fn gradients_reach_generator() {
        let dev = Device::flex().autodiff();
        let g = DepGenerator::new_seeded(&[4, 6, 5], 8, false, true, 7, &dev);
        let probs: Vec<Tensor<1>> = g.forward().into_iter().map(prob_open_t).collect();
        let loss = dep_l0_cost_t(probs, &[3.0, 3.0, 3.0], 1e-3, 3.0);
        let grads = loss.backward();
        for l in &g.layers {
            let gw = to_vec(l.weight.grad(&grads).expect("weight grad"));
            assert!(gw.iter().any(|x| *x != 0.0));
            let gb = to_vec(l.bias.as_ref().unwrap().grad(&grads).expect("bias grad"));
            assert!(gb.iter().all(|x| x.is_finite()) && gb.iter().any(|x| *x != 0.0));
        }
        assert_eq!(g.num_params(), 8 * 4 + 4 + 4 * 6 + 6 + 6 * 5 + 5);
    }
}
