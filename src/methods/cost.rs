//! Expected and deterministic MACs and parameters of a gated network, from the graph's channel
//! layouts.
//!
//! A Conv/Gemm/MatMul costs `macs * (active inputs / inputs) * (active outputs / outputs)`:
//! exact for the pruned network when the counts are the kept channels, and the expected cost
//! under independent gates when they are sums of open probabilities (differentiable).
//! Parameters follow the same rule per learnable tensor: its element count scaled by the active
//! fraction of each side whose channels lie along one of its axes (a kernel's rows and columns,
//! a bias's or BN scale's only axis), counted once per tensor as [`crate::ir::cost`] does.

use std::collections::HashMap;

use burn::prelude::*;

use crate::error::Result;
use crate::groups::{ChannelAnalysis, Segment};
use crate::ir::{Graph, Op};

/// Active fraction of one side (input or output features) of a layer.
#[derive(Debug, Clone)]
struct Side {
    /// (gated group index, features per channel) for each gated segment.
    gated: Vec<(usize, f64)>,
    /// Features of segments without a gate.
    fixed: f64,
    total: f64,
}

#[derive(Debug, Clone)]
struct Term {
    /// MACs or parameters at full width.
    amount: f64,
    input: Option<Side>,
    output: Option<Side>,
    /// Gate vector whose group, closed whole, removes this term's node with its sublayer
    /// (the term then scales by min(open, 1); see [`crate::prune::sublayer`]).
    whole: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct CostModel {
    terms: Vec<Term>,
    param_terms: Vec<Term>,
    pub dense_macs: f64,
    pub dense_params: f64,
    /// Per gate vector: may its group be closed whole (its sublayer removed)?
    pub closable: Vec<bool>,
}

fn side(segs: Option<&Vec<Segment>>, gated_index: &HashMap<usize, usize>) -> Option<Side> {
    let segs = segs?;
    let mut s = Side {
        gated: Vec::new(),
        fixed: 0.0,
        total: 0.0,
    };
    for seg in segs {
        let features = (seg.width * seg.block) as f64;
        s.total += features;
        match gated_index.get(&seg.group) {
            Some(&g) => s.gated.push((g, seg.block as f64)),
            None => s.fixed += features,
        }
    }
    (!s.gated.is_empty()).then_some(s)
}

impl CostModel {
    /// `gated_groups[i]` is the analysis group id behind gate vector i.
    pub fn new(graph: &Graph, analysis: &ChannelAnalysis, gated_groups: &[usize]) -> Result<Self> {
        let cost = crate::ir::cost::graph_cost(graph, 1)?;
        let shapes = graph.infer_shapes(1)?;
        let index: HashMap<usize, usize> = gated_groups
            .iter()
            .enumerate()
            .map(|(i, &g)| (g, i))
            .collect();
        let (removal, closable) = sublayer_nodes(graph, analysis, &shapes, gated_groups);
        let mut terms = Vec::new();
        for (n, c) in graph.nodes.iter().zip(&cost.per_node) {
            if c.macs == 0 {
                continue;
            }
            let layout = |v: &str| analysis.layouts.get(v);
            let (input, output) = match &n.op {
                Op::Conv { group, .. } => {
                    let w = &shapes[&n.inputs[1]];
                    if *group > 1 && w[1] == 1 {
                        (side(layout(&n.inputs[0]), &index), None) // depthwise: cost per channel
                    } else if *group > 1 {
                        (None, None)
                    } else {
                        (
                            side(layout(&n.inputs[0]), &index),
                            side(layout(&n.outputs[0]), &index),
                        )
                    }
                }
                // A product of two activations (attention's QK^T and AV): its channels (heads)
                // are a batch axis of both inputs and the output, so they scale it once.
                Op::MatMul if !graph.initializers.contains_key(&n.inputs[1]) => {
                    (side(layout(&n.inputs[0]), &index), None)
                }
                op if crate::ops::output_kernel(op).is_some() => (
                    side(layout(&n.inputs[0]), &index),
                    side(layout(&n.outputs[0]), &index),
                ),
                _ => (None, None),
            };
            terms.push(Term {
                amount: c.macs as f64,
                whole: whole_of(&removal, &n.name, &input, &output),
                input,
                output,
            });
        }
        Ok(CostModel {
            terms,
            param_terms: param_terms(graph, analysis, &index, &removal),
            dense_macs: cost.macs as f64,
            dense_params: cost.params as f64,
            closable,
        })
    }

    /// Expected MACs given each gate vector's expected number of open channels (shape `[1]` each).
    pub fn expected(&self, open: &[Tensor<1>]) -> Tensor<1> {
        expected_sum(&self.terms, open)
    }

    /// Expected parameters, as [`CostModel::expected`] for MACs.
    pub fn expected_params(&self, open: &[Tensor<1>]) -> Tensor<1> {
        expected_sum(&self.param_terms, open)
    }

    /// Exact MACs when gate vector i keeps `kept[i]` channels.
    pub fn deterministic(&self, kept: &[usize]) -> f64 {
        deterministic_sum(&self.terms, kept)
    }

    /// Exact parameters when gate vector i keeps `kept[i]` channels.
    pub fn deterministic_params(&self, kept: &[usize]) -> f64 {
        deterministic_sum(&self.param_terms, kept)
    }

    /// MACs and parameters as fractions of dense when gate vector i has `open[i]` channels
    /// open (kept counts, or expected counts: sums of open probabilities).
    pub fn fractions_at(&self, open: &[f64]) -> (f64, f64) {
        (
            sum_at(&self.terms, open) / self.dense_macs.max(1.0),
            sum_at(&self.param_terms, open) / self.dense_params.max(1.0),
        )
    }
}

/// One term per learnable tensor, scaled by the sides whose channels lie along its axes (an
/// axis counts only when its length is the side's width, so a depthwise kernel's size-1 input
/// axis does not). Shared tensors count once.
fn param_terms(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    index: &HashMap<usize, usize>,
    removal: &HashMap<String, usize>,
) -> Vec<Term> {
    let mut seen = std::collections::HashSet::new();
    let mut terms = Vec::new();
    for (n, weights) in graph
        .nodes
        .iter()
        .zip(crate::ir::learned::node_weights(graph))
    {
        for w in weights.into_iter().filter(|w| w.trainable()) {
            let Some(name) = n.inputs.get(w.input) else {
                continue;
            };
            let Some(t) = graph.initializers.get(name) else {
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let along = |axis: Option<usize>, value: Option<&String>| -> Option<Side> {
                let s = side(analysis.layouts.get(value?), index)?;
                let len = *t.shape.get(axis?)? as f64;
                (len == s.total).then_some(s)
            };
            // A LayerNorm over a hidden width and an embedding table hold one value (column)
            // per channel of their output's last axis.
            let out_axis = match &n.op {
                Op::LayerNorm(_) if analysis.norms.contains_key(&n.outputs[0]) => {
                    t.shape.len().checked_sub(1)
                }
                Op::Gather(_) if w.input == 0 && t.shape.len() == 2 => Some(1),
                _ => w.out_axis,
            };
            let output = along(out_axis, n.outputs.first());
            // A per-channel tensor (BN) names one axis for both sides: count it once.
            let input = if w.in_axis == w.out_axis {
                None
            } else {
                along(w.in_axis, n.inputs.first())
            };
            terms.push(Term {
                amount: t.len() as f64,
                whole: whole_of(removal, &n.name, &input, &output),
                input,
                output,
            });
        }
    }
    terms
}

/// Node -> gate vector whose group, closed whole, removes the node (its sublayer); and per
/// gate vector whether its group can be closed whole.
fn sublayer_nodes(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    shapes: &HashMap<String, Vec<usize>>,
    gated_groups: &[usize],
) -> (HashMap<String, usize>, Vec<bool>) {
    let mut out = HashMap::new();
    let mut closable = Vec::with_capacity(gated_groups.len());
    for (i, &g) in gated_groups.iter().enumerate() {
        let group = &analysis.groups[g];
        let removed = crate::prune::sublayer::removed_nodes(graph, analysis, shapes, group);
        closable.push(removed.is_some());
        for n in removed.unwrap_or_default() {
            out.entry(n).or_insert(i);
        }
    }
    (out, closable)
}

/// The whole-group factor of a node's term, unless a side already scales with that group.
fn whole_of(
    removal: &HashMap<String, usize>,
    node: &str,
    input: &Option<Side>,
    output: &Option<Side>,
) -> Option<usize> {
    let g = *removal.get(node)?;
    let scaled = |s: &Option<Side>| {
        s.as_ref()
            .is_some_and(|s| s.gated.iter().any(|&(x, _)| x == g))
    };
    (!scaled(input) && !scaled(output)).then_some(g)
}

fn expected_sum(terms: &[Term], open: &[Tensor<1>]) -> Tensor<1> {
    let device = open.first().map(|t| t.device()).unwrap_or_default();
    let frac = |s: &Option<Side>| -> Option<Tensor<1>> {
        let s = s.as_ref()?;
        let mut acc = Tensor::<1>::full([1], s.fixed as f32, &device);
        for &(g, block) in &s.gated {
            acc = acc + open[g].clone() * block as f32;
        }
        Some(acc / s.total as f32)
    };
    let mut total = Tensor::<1>::zeros([1], &device);
    let mut fixed = 0.0f64;
    for t in terms {
        let term = match (frac(&t.input), frac(&t.output)) {
            (None, None) if t.whole.is_none() => {
                fixed += t.amount;
                continue;
            }
            (None, None) => Tensor::<1>::full([1], t.amount as f32, &device),
            (Some(a), None) | (None, Some(a)) => a * t.amount as f32,
            (Some(a), Some(b)) => a * b * t.amount as f32,
        };
        total = total
            + match t.whole {
                Some(g) => term * open[g].clone().clamp_max(1.0),
                None => term,
            };
    }
    total + fixed as f32
}

fn deterministic_sum(terms: &[Term], kept: &[usize]) -> f64 {
    let kept: Vec<f64> = kept.iter().map(|&k| k as f64).collect();
    sum_at(terms, &kept)
}

fn sum_at(terms: &[Term], kept: &[f64]) -> f64 {
    let frac = |s: &Option<Side>| -> f64 {
        s.as_ref().map_or(1.0, |s| {
            (s.fixed
                + s.gated
                    .iter()
                    .map(|&(g, block)| kept[g] * block)
                    .sum::<f64>())
                / s.total
        })
    };
    terms
        .iter()
        .map(|t| {
            let whole = t.whole.map_or(1.0, |g| kept[g].min(1.0));
            t.amount * frac(&t.input) * frac(&t.output) * whole
        })
        .sum()
}
