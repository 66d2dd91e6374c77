//! One optimiser step: the method's gate sample, the forward pass, data loss (plus
//! distillation), the cost penalty, gradients (autograd plus the method's estimator), the
//! optimiser updates and the method's after-step hook.

use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::net;
use super::trainer::{GateParams, Trainer};
use crate::data::Examples;
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::exec::value::host_f32;

pub(super) fn scalar(t: Tensor<1>) -> f64 {
    host_f32(t)[0] as f64
}

/// What one step reports.
pub(super) struct StepLosses {
    pub data: f64,
    pub penalty: f64,
    pub expected_macs: f64,
}

impl Trainer<'_> {
    /// One optimiser step on the examples `idx` of `data`.
    pub fn step(
        &mut self,
        data: Examples<'_>,
        idx: &[usize],
        opt_w: &mut ModuleOptimizer,
        opt_g: &mut ModuleOptimizer,
    ) -> Result<StepLosses> {
        let x = self.train_input(data, idx)?;
        let y = self.labels(data, idx);
        let ce = CrossEntropyLoss::new(None, &self.device());
        let groups = self.net.gated.len();
        let logits = self.logits();
        let per_example = self.per_example();
        let device = self.device();
        let sample = self
            .method
            .sample(&logits, idx.len(), &per_example, &mut self.rng, &device);
        let out = self.net.forward_train(x.clone(), &sample.gates)?;
        let data_loss = self.distilled(ce.forward(out.clone(), y.clone()), &x, out)?;
        let open = self.method.expected_open(&logits);
        let (penalty, expected) = self.penalty(&open);
        let loss = data_loss.clone() + penalty.clone();
        let loss_value = scalar(data_loss.clone().detach());
        if !loss_value.is_finite() {
            return Err(Error::Diverged(format!(
                "the loss became {loss_value} at epoch step; the last good checkpoint is kept"
            )));
        }
        let mut grads = loss.backward();
        let gw = GradientsParams::from_module(&mut grads, &self.net.weights);
        let mut gg = match &self.generator {
            Some(g) => GradientsParams::from_module(&mut grads, g),
            None => GradientsParams::from_module(&mut grads, &self.gates),
        };
        // Estimates of the data term's gradient w.r.t. the gate parameters (ARM / AR), added
        // to the penalty's.
        let net = &self.net;
        let mut pass_b = |masks: Vec<Tensor<2>>| -> Result<f32> {
            let logits_b = net.forward_eval_train_bn(x.clone(), &masks)?;
            Ok(scalar(ce.forward(logits_b, y.clone()).detach()) as f32)
        };
        let extra = self
            .method
            .extra_grad(&logits, &sample, loss_value as f32, &mut pass_b)?;
        if let Some(extra) = extra {
            for (a, est) in self.gates.logits.iter().zip(extra) {
                let total = match gg.remove::<1>(a.id) {
                    Some(g) => g + est,
                    None => est,
                };
                gg.register(a.id, total);
            }
        }
        let weights = std::mem::replace(&mut self.net.weights, net::Weights { params: Vec::new() });
        self.net.weights = opt_w.step(self.lr_now, weights, gw);
        if let Some(g) = self.generator.take() {
            self.generator = Some(opt_g.step(self.cfg.gate_lr, g, gg));
        } else if groups > 0 {
            let gates = std::mem::replace(&mut self.gates, GateParams { logits: Vec::new() });
            self.gates = opt_g.step(self.cfg.gate_lr, gates, gg);
        }
        self.method.after_step(
            &mut self.net.weights.params,
            &self.net.prunable_weight,
            &mut self.rng,
        );
        self.dual_ascent(expected);
        Ok(StepLosses {
            data: loss_value,
            penalty: scalar(penalty.detach()),
            expected_macs: expected,
        })
    }

    /// Adds Hinton et al.'s soft-target term when distilling:
    /// `T^2 * KL(softmax(t/T) || softmax(s/T))`, batch mean.
    fn distilled(&self, data_loss: Tensor<1>, x: &[Val], out: Tensor<2>) -> Result<Tensor<1>> {
        let weight = self.cfg.distill_weight;
        let Some(teacher) = self.teacher.as_ref().filter(|_| weight > 0.0) else {
            return Ok(data_loss);
        };
        let t = self.cfg.distill_temperature as f32;
        let logits_t = teacher.forward(x.to_vec())?.remove(0).to2().detach();
        let p_t = burn::tensor::activation::softmax(logits_t.clone() / t, 1);
        let log_p_t = burn::tensor::activation::log_softmax(logits_t / t, 1);
        let log_p_s = burn::tensor::activation::log_softmax(out / t, 1);
        let kl = (p_t * (log_p_t - log_p_s)).sum_dim(1).mean();
        Ok(data_loss + kl * (weight as f32 * t * t))
    }
}
