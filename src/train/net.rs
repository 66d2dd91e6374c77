//! A graph made trainable: its weights as burn parameters, a gate vector per prunable channel
//! group multiplying the group at its gate positions, BatchNorm running statistics.

use std::collections::HashMap;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::Result;
use crate::exec::value::{T6, host_f32, padded};
use crate::exec::{BatchStats, Frame, Network, Val};
use crate::groups::ChannelAnalysis;
use crate::ir::{Graph, Op, Tensor as HostTensor};

/// Parameter ids are fixed (not random) so that saved optimiser state maps back onto the
/// parameters of a rebuilt network when a run resumes.
pub const WEIGHT_IDS: u64 = 1_000_000;
pub const GATE_IDS: u64 = 2_000_000;
pub const GENERATOR_IDS: u64 = 3_000_000;

/// A trainable parameter with a fixed id.
pub fn param_with_id<const D: usize>(id: u64, t: Tensor<D>) -> Param<Tensor<D>> {
    let mut p = Param::from_tensor(t.detach());
    p.id = burn::module::ParamId::from(id);
    p
}

/// Trainable weights: conv and linear weights and biases, BatchNorm scale and shift, learned
/// constants (`ir::learned`: MatMul bias Adds, positional embeddings, class tokens).
#[derive(Module, Debug)]
pub struct Weights {
    pub params: Vec<Param<T6>>,
}

/// One gated channel group.
#[derive(Debug, Clone)]
pub struct GatedGroup {
    /// Group id in the channel analysis.
    pub group: usize,
    pub width: usize,
    /// Producer names, for reports.
    pub name: String,
    /// (slot, rank, channel axis) of each value the gate multiplies.
    pub positions: Vec<(usize, usize, usize)>,
    /// (slot, rank) of each LayerNorm normalised over this group's channels (a hidden width).
    pub norms: Vec<(usize, usize)>,
    /// Does axis 0 of every gated value hold the examples? Not where a linear layer reads a
    /// token sequence folded into rows (`[tokens x batch, C]`); such a gate takes one draw
    /// for the batch.
    pub rows_are_examples: bool,
}

/// A parameter: which slot it replaces, its rank, its initializer name.
#[derive(Debug, Clone)]
struct ParamSlot {
    slot: usize,
    rank: usize,
    name: String,
}

/// BatchNorm bookkeeping: step index -> (mean slot, var slot).
#[derive(Debug, Clone)]
struct BnNode {
    mean: usize,
    var: usize,
}

pub struct GatedNet {
    pub net: Network,
    pub graph: Graph,
    pub analysis: ChannelAnalysis,
    pub weights: Weights,
    pub gated: Vec<GatedGroup>,
    params: Vec<ParamSlot>,
    bn: HashMap<usize, BnNode>,
    /// Current running statistics by slot (detached).
    pub(crate) running: HashMap<usize, Val>,
    /// ONNX momentum: running = momentum * running + (1 - momentum) * batch.
    pub bn_momentum: f32,
    /// Per parameter: is it a conv/linear weight matrix? Resolved once, read every SWP step.
    pub(crate) prunable_weight: Vec<bool>,
}

impl GatedNet {
    /// `gate_groups`: which analysis groups get a gate (normally every prunable one).
    pub fn new(
        graph: &Graph,
        analysis: ChannelAnalysis,
        gate_groups: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let net = Network::new(graph, device)?;
        // Every step reuses the previous step's memory (see exec::resident).
        crate::exec::resident::keep_freed_memory();
        let mut params = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut bn = HashMap::new();
        let mut running = HashMap::new();
        let trainable = crate::ir::learned::trainable_inputs(graph);
        for ((index, n), trainable) in graph.nodes.iter().enumerate().zip(trainable) {
            for i in trainable {
                if let Some(name) = n.inputs.get(i)
                    && graph.initializers.contains_key(name)
                    && seen.insert(name.clone())
                {
                    let slot = net.slot_of(name).expect("initializers have slots");
                    params.push(ParamSlot {
                        slot,
                        rank: graph.initializers[name].shape.len(),
                        name: name.clone(),
                    });
                }
            }
            if let Op::BatchNorm { .. } = n.op {
                let (mean, var) = (
                    net.slot_of(&n.inputs[3]).expect("slot"),
                    net.slot_of(&n.inputs[4]).expect("slot"),
                );
                for s in [mean, var] {
                    if let Some(v) = net.constant(s) {
                        running.insert(s, v.clone());
                    }
                }
                bn.insert(index, BnNode { mean, var });
            }
        }
        let weights = Weights {
            params: params
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    param_with_id(
                        WEIGHT_IDS + i as u64,
                        net.constant(p.slot).expect("constant").t.clone(),
                    )
                })
                .collect(),
        };
        let shapes = graph.infer_shapes(1)?;
        // At batch 1, axis 0 of a value whose rows are the examples is 1.
        let rows_are_examples = |v: &str| shapes[v].first().is_none_or(|&d| d == 1);
        let gated = gate_groups
            .iter()
            .map(|&g| {
                let grp = &analysis.groups[g];
                GatedGroup {
                    group: g,
                    width: grp.width,
                    name: grp.producers.join("+"),
                    positions: grp
                        .gates
                        .iter()
                        .map(|v| {
                            (
                                net.slot_of(v).expect("gate values have slots"),
                                shapes[v].len(),
                                analysis.channel_axis(v),
                            )
                        })
                        .collect(),
                    norms: analysis
                        .norms
                        .iter()
                        .filter(|(_, grp)| **grp == g)
                        .map(|(v, _)| {
                            (
                                net.slot_of(v).expect("norm outputs have slots"),
                                shapes[v].len(),
                            )
                        })
                        .collect(),
                    rows_are_examples: grp.gates.iter().all(|v| rows_are_examples(v)),
                }
            })
            .collect();
        let prunable_weight = params
            .iter()
            .map(|p| {
                p.rank >= 2
                    && graph.nodes.iter().any(|n| {
                        crate::ops::output_kernel(&n.op)
                            .is_some_and(|k| n.inputs.get(k.input) == Some(&p.name))
                    })
            })
            .collect();
        Ok(GatedNet {
            net,
            graph: graph.clone(),
            analysis,
            weights,
            gated,
            params,
            bn,
            running,
            bn_momentum: 0.9,
            prunable_weight,
        })
    }

    /// Is parameter `i` a conv or linear weight matrix (what SWP zeroes)?
    pub fn is_prunable_weight(&self, i: usize) -> bool {
        self.prunable_weight[i]
    }

    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// Gate multipliers for a forward pass. `values[i]` is gate vector i: shape [C] (shared by
    /// the batch) or [N, C] (one draw per example).
    fn scales(&self, values: &[Tensor<2>]) -> HashMap<usize, Val> {
        let mut scales = HashMap::new();
        for (g, z) in self.gated.iter().zip(values) {
            let [n, c] = z.dims();
            for &(slot, rank, axis) in &g.positions {
                let mut shape = vec![1; rank];
                shape[0] = n;
                shape[axis] = c;
                scales.insert(slot, Val::new(z.clone().reshape(padded(&shape)), rank));
            }
        }
        scales
    }

    /// Gate values for the LayerNorms over a gated hidden width, shaped to broadcast along
    /// their last axis.
    fn norm_masks(&self, values: &[Tensor<2>]) -> HashMap<usize, Val> {
        let mut masks = HashMap::new();
        for (g, z) in self.gated.iter().zip(values) {
            let [n, c] = z.dims();
            for &(slot, rank) in &g.norms {
                let mut shape = vec![1; rank];
                shape[0] = n;
                shape[rank - 1] = c;
                masks.insert(slot, Val::new(z.clone().reshape(padded(&shape)), rank));
            }
        }
        masks
    }

    fn overrides(&self, detach: bool) -> HashMap<usize, Val> {
        let mut out: HashMap<usize, Val> = self
            .params
            .iter()
            .zip(&self.weights.params)
            .map(|(p, w)| {
                let t = w.val();
                (
                    p.slot,
                    Val::new(if detach { t.detach() } else { t }, p.rank),
                )
            })
            .collect();
        for (&slot, v) in &self.running {
            out.insert(slot, v.clone());
        }
        out
    }

    /// Training-mode forward: batch statistics in BatchNorm (running statistics updated).
    pub fn forward_train(&mut self, x: Vec<Val>, gates: &[Tensor<2>]) -> Result<Tensor<2>> {
        let mut stats: HashMap<usize, BatchStats> = HashMap::new();
        let frame = Frame {
            overrides: self.overrides(false),
            scales: self.scales(gates),
            norm_masks: self.norm_masks(gates),
            bn_stats: Some(&mut stats),
            inner: false,
        };
        let out = self.net.forward_frame(x, frame)?.remove(0);
        let m = self.bn_momentum;
        for (index, s) in stats {
            let node = &self.bn[&index];
            for (slot, batch) in [(node.mean, s.mean), (node.var, s.var)] {
                let old = &self.running[&slot];
                let c = batch.dims()[0];
                let new = old.t.clone() * m + batch.reshape(padded(&[c])) * (1.0 - m);
                self.running.insert(slot, Val::new(new.detach(), 1));
            }
        }
        Ok(out.to2())
    }

    /// Batch-statistics forward that leaves the running statistics alone (ARM's second pass).
    pub fn forward_eval_train_bn(&self, x: Vec<Val>, gates: &[Tensor<2>]) -> Result<Tensor<2>> {
        let mut stats: HashMap<usize, BatchStats> = HashMap::new();
        let frame = Frame {
            overrides: self.overrides(true),
            scales: self.scales(gates),
            norm_masks: self.norm_masks(gates),
            bn_stats: Some(&mut stats),
            inner: false,
        };
        Ok(self.net.forward_frame(x, frame)?.remove(0).to2())
    }

    /// Evaluation-mode forward (running statistics) on the device's inner backend: no gradient
    /// tracking, and nothing kept in burn-autodiff's graph (it frees forward-only work only at
    /// the next backward: 2 MB per validated 3x32x32 ResNet-20 image otherwise).
    pub fn forward_eval(&self, x: Vec<Val>, gates: &[Tensor<2>]) -> Result<Tensor<2>> {
        let frame = Frame {
            overrides: self.overrides(true),
            scales: self.scales(gates),
            norm_masks: self.norm_masks(gates),
            bn_stats: None,
            inner: true,
        };
        Ok(self.net.forward_frame(x, frame)?.remove(0).to2())
    }

    /// The graph with the current weights and running statistics written back.
    pub fn trained_graph(&self) -> Graph {
        let mut g = self.graph.clone();
        let host = |v: &T6, shape: &[usize]| HostTensor::f32(shape.to_vec(), host_f32(v.clone()));
        for (p, w) in self.params.iter().zip(&self.weights.params) {
            let shape = g.initializers[&p.name].shape.clone();
            g.initializers
                .insert(p.name.clone(), host(&w.val(), &shape));
        }
        let names: HashMap<usize, &String> = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm { .. }))
            .flat_map(|n| [&n.inputs[3], &n.inputs[4]])
            .filter_map(|name| self.net.slot_of(name).map(|s| (s, name)))
            .collect();
        let updates: Vec<(String, HostTensor)> = self
            .running
            .iter()
            .filter_map(|(slot, v)| {
                names
                    .get(slot)
                    .map(|name| ((*name).clone(), host(&v.t, &[v.dims().iter().product()])))
            })
            .collect();
        for (name, t) in updates {
            g.initializers.insert(name, t);
        }
        g
    }

    /// Uploads host values as a [rows, cols] tensor on this device.
    pub fn tensor2(&self, values: Vec<f32>, rows: usize, cols: usize) -> Tensor<2> {
        Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), self.device())
    }
}
