//! Expected and deterministic MACs of a gated network, from the graph's channel layouts.
//!
//! A Conv/Gemm/MatMul costs `macs * (active inputs / inputs) * (active outputs / outputs)`:
//! exact for the pruned network when the counts are the kept channels, and the expected cost
//! under independent gates when they are sums of open probabilities (differentiable).

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
    macs: f64,
    input: Option<Side>,
    output: Option<Side>,
}

#[derive(Debug, Clone)]
pub struct CostModel {
    terms: Vec<Term>,
    pub dense_macs: f64,
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
                op if crate::ops::output_kernel(op).is_some() => (
                    side(layout(&n.inputs[0]), &index),
                    side(layout(&n.outputs[0]), &index),
                ),
                _ => (None, None),
            };
            terms.push(Term {
                macs: c.macs as f64,
                input,
                output,
            });
        }
        Ok(CostModel {
            terms,
            dense_macs: cost.macs as f64,
        })
    }

    /// Expected MACs given each gate vector's expected number of open channels (shape `[1]` each).
    pub fn expected(&self, open: &[Tensor<1>]) -> Tensor<1> {
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
        for t in &self.terms {
            match (frac(&t.input), frac(&t.output)) {
                (None, None) => fixed += t.macs,
                (Some(a), None) | (None, Some(a)) => total = total + a * t.macs as f32,
                (Some(a), Some(b)) => total = total + a * b * t.macs as f32,
            }
        }
        total + fixed as f32
    }

    /// Exact MACs when gate vector i keeps `kept[i]` channels.
    pub fn deterministic(&self, kept: &[usize]) -> f64 {
        let frac = |s: &Option<Side>| -> f64 {
            s.as_ref().map_or(1.0, |s| {
                (s.fixed
                    + s.gated
                        .iter()
                        .map(|&(g, block)| kept[g] as f64 * block)
                        .sum::<f64>())
                    / s.total
            })
        };
        self.terms
            .iter()
            .map(|t| t.macs * frac(&t.input) * frac(&t.output))
            .sum()
    }
}
