//! Stochastic weight pruning (METHODS §4, our defaults): no gates. After every optimiser step
//! each conv/linear weight is zeroed with probability `exp(-(|w| / tau)^2)`, `tau = kappa *
//! std(W)`; after training, channels whose producer weights are all zero are dead and removed.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use super::{GateInit, GateMethod, Method, Rng, TrainSample};
use crate::error::Result;
use crate::exec::value::T6;
use crate::ir::Graph;
use crate::prune::{GroupKeep, KeepPlan};
use crate::rng::RngExt;

/// SWP with `tau = kappa * std(W)`; kappa 0 is plain (dense) fine-tuning.
#[derive(Debug, Clone)]
pub struct Swp {
    pub kappa: f64,
}

impl GateMethod for Swp {
    fn method(&self) -> Method {
        Method::Swp
    }

    fn has_gates(&self) -> bool {
        false
    }

    fn init(&self, _widths: &[usize], _rng: &mut Rng, _device: &Device) -> GateInit {
        GateInit::Free(Vec::new())
    }

    fn sample(
        &self,
        _logits: &[Tensor<1>],
        _batch: usize,
        _per_example: &[bool],
        _rng: &mut Rng,
        _device: &Device,
    ) -> TrainSample {
        TrainSample {
            gates: Vec::new(),
            noise: Vec::new(),
        }
    }

    fn prob_open(&self, logits: Tensor<1>) -> Tensor<1> {
        logits.ones_like()
    }

    fn test_value(&self, _param: f32) -> f32 {
        1.0
    }

    fn after_step(&self, weights: &mut Vec<Param<T6>>, prunable: &[bool], rng: &mut Rng) {
        if self.kappa <= 0.0 {
            return; // kappa 0: plain (dense) fine-tuning, the benchmarks' reference
        }
        let params = std::mem::take(weights);
        *weights = params
            .into_iter()
            .zip(prunable)
            .map(|(p, &prunable)| {
                if prunable {
                    zero_small(p, self.kappa as f32, rng)
                } else {
                    p
                }
            })
            .collect();
    }
}

/// Zeroes each entry of `p` with probability `exp(-(|w| / tau)^2)`, `tau = kappa * std(W)`.
pub fn zero_small(p: Param<T6>, kappa: f32, rng: &mut Rng) -> Param<T6> {
    let id = p.id;
    let w = p.val().detach();
    let device = w.device();
    let shape = w.dims();
    let n: usize = shape.iter().product();
    let mean = w.clone().sum() / n as f32;
    let var = (w.clone() - mean.reshape([1, 1, 1, 1, 1, 1]))
        .powi_scalar(2)
        .sum()
        / n as f32;
    let tau = var.sqrt() * kappa + 1e-12;
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let v = T6::from_data(TensorData::new(v, shape), &device);
    let q = (w.clone().abs() / tau.reshape([1, 1, 1, 1, 1, 1]))
        .powi_scalar(2)
        .neg()
        .exp();
    let keep = v.greater_equal(q).float();
    Param::initialized(id, (w * keep).detach().require_grad())
}

/// Channels whose producer rows are all zero are dead; every other channel of a prunable group
/// is kept.
pub fn dead_channel_plan(graph: &Graph) -> Result<KeepPlan> {
    let groups = crate::groups::analyse(graph)?;
    let mut plan = KeepPlan::default();
    // A dead channel of a hidden width still carries constants (biases, positional
    // embeddings) into the LayerNorms, which normalise over it: it cannot go exactly.
    for g in groups
        .iter()
        .filter(|g| g.prunable && g.normalised_by.is_empty())
    {
        let mut alive = vec![false; g.width];
        for p in &g.producers {
            let Some(node) = graph.nodes.iter().find(|n| &n.name == p) else {
                continue;
            };
            let Some((kernel, axis)) = crate::ops::output_kernel(&node.op).and_then(|k| {
                let w = graph.initializers.get(node.inputs.get(k.input)?)?;
                Some((w, k.out_axis?))
            }) else {
                continue;
            };
            // Element i of the kernel belongs to output channel (i / inner) % width, inner being
            // the size of the axes after the output-channel axis.
            let inner: usize = kernel.shape[axis + 1..].iter().product();
            if kernel.shape[axis] != g.width {
                // A piece of a split output: its dead value sits behind the split, unknown here.
                alive = vec![true; g.width];
                break;
            }
            for (i, x) in kernel.to_f32_vec().iter().enumerate() {
                alive[(i / inner.max(1)) % g.width] |= *x != 0.0;
            }
        }
        plan.groups.push(GroupKeep {
            id: g.id,
            keep: (0..g.width).filter(|&c| alive[c]).collect(),
        });
    }
    Ok(plan)
}

/// MACs of `graph` without its dead channels (SWP's deterministic cost).
pub fn macs_without_dead(graph: &Graph) -> Result<f64> {
    let plan = dead_channel_plan(graph)?;
    let pruned = crate::prune::prune_dead(graph, &plan)?;
    Ok(crate::ir::cost::graph_cost(&pruned.graph, 1)?.macs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::value::host_f32;

    /// Small weights are zeroed far more often than large ones; kappa 0 changes nothing.
    #[test]
    fn zeroing_favours_small_weights() {
        let dev = Device::flex().autodiff();
        let n = 2000;
        let v: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 0 { 0.001 } else { 1.0 })
            .collect();
        let t = T6::from_data(TensorData::new(v, [n, 1, 1, 1, 1, 1]), &dev);
        let p = Param::from_tensor(t);
        let out = host_f32(zero_small(p.clone(), 0.05, &mut crate::rng::seeded(3)).val());
        let small = out.iter().step_by(2).filter(|&&x| x == 0.0).count();
        let large = out.iter().skip(1).step_by(2).filter(|&&x| x == 0.0).count();
        assert!(small > 900 && large < 100, "{small} {large}");
        let mut w = vec![p];
        Swp { kappa: 0.0 }.after_step(&mut w, &[true], &mut crate::rng::seeded(3));
        assert!(host_f32(w[0].val()).iter().all(|&x| x != 0.0));
    }
}
