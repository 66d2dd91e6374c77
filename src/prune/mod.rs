//! Physical pruning: keep plans, the masked reference, and the surgery that removes channels.

pub mod plan;
pub mod reference;
pub mod sublayer;
pub mod surgery;

use std::collections::BTreeMap;

pub use plan::{GroupKeep, KeepPlan};

use crate::error::Result;
use crate::groups::{ChannelAnalysis, analyse_layouts};
use crate::ir::Graph;

#[derive(Debug, Clone)]
pub struct Pruned {
    pub graph: Graph,
    /// The original network with removed channels masked: what `graph` must compute.
    pub reference: Graph,
    pub analysis: ChannelAnalysis,
    /// Normalised plan actually applied (group id -> kept channels), pruned groups only.
    pub keep: BTreeMap<usize, Vec<usize>>,
    /// Things the user should know (groups kept at one channel, ...).
    pub notes: Vec<String>,
}

/// Applies a keep plan: normalise it, build the masked reference, cut the channels.
///
/// ```
/// use compress::prune::{GroupKeep, KeepPlan, prune};
/// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lenet5/model.onnx");
/// let graph = compress::onnx::import_file(&path)?;
/// // Keep 10 of conv1's 20 channels.
/// let plan = KeepPlan { groups: vec![GroupKeep { id: 0, keep: (0..10).collect() }] };
/// let pruned = prune(&graph, &plan, None)?;
/// let (a, b) = (compress::onnx::export(&pruned.graph), compress::onnx::export(&pruned.reference));
/// let v = compress::verify::verify_export(&graph, &b, &a, 2, 1e-4)?;
/// assert!(v.tract.max_abs_diff <= 1e-4);
/// # Ok::<(), compress::Error>(())
/// ```
pub fn prune(graph: &Graph, plan: &KeepPlan, round_to: Option<usize>) -> Result<Pruned> {
    let analysis = analyse_layouts(graph)?;
    let mut notes = Vec::new();
    let removable = sublayer::removable(graph, &analysis);
    let keep = plan::normalise_closing(
        graph,
        &analysis.groups,
        plan,
        round_to,
        &removable,
        &mut notes,
    )?;
    let reference = reference::masked_reference(graph, &analysis, &keep);
    let pruned = surgery::apply(graph, &analysis, &keep, None)?;
    Ok(Pruned {
        graph: pruned,
        reference,
        analysis,
        keep,
        notes,
    })
}

/// Removes dead channels: channels whose producers' weights are all zero (stochastic weight
/// pruning). Such a channel still carries a constant (its bias, through BatchNorm); that constant
/// is folded into the next layer, so the pruned model computes exactly what `graph` computes,
/// and `graph` itself is the reference.
pub fn prune_dead(graph: &Graph, plan: &KeepPlan) -> Result<Pruned> {
    let analysis = analyse_layouts(graph)?;
    let mut notes = Vec::new();
    let keep = plan::normalise(graph, &analysis.groups, plan, None, &mut notes)?;
    let constants = dead_constants(graph, &analysis);
    let pruned = surgery::apply(graph, &analysis, &keep, Some(&constants))?;
    Ok(Pruned {
        graph: pruned,
        reference: graph.clone(),
        analysis,
        keep,
        notes,
    })
}

/// Per gate value, what each channel is when its producer weights are all zero: the bias, passed
/// through the BatchNorm when the gate sits after one.
fn dead_constants(
    graph: &Graph,
    analysis: &ChannelAnalysis,
) -> std::collections::HashMap<String, Vec<f32>> {
    use crate::ir::Op;
    let producer = |v: &str| graph.nodes.iter().find(|n| n.outputs[0] == v);
    let init = |n: &crate::ir::Node, i: usize| {
        n.inputs
            .get(i)
            .and_then(|x| graph.initializers.get(x))
            .map(|t| t.to_f32_vec())
    };
    let mut out = std::collections::HashMap::new();
    for g in &analysis.groups {
        for gate in &g.gates {
            let Some(node) = producer(gate) else { continue };
            let (layer, bn) = match node.op {
                Op::BatchNorm { epsilon } => (producer(&node.inputs[0]), Some((node, epsilon))),
                _ => (Some(node), None),
            };
            let Some(layer) = layer else { continue };
            let bias = crate::ops::weight_inputs(&layer.op)
                .into_iter()
                .find(|w| w.kind == crate::ops::WeightKind::Bias)
                .and_then(|w| init(layer, w.input))
                .filter(|b| b.len() == g.width);
            let mut k = bias.unwrap_or_else(|| vec![0.0; g.width]);
            if let Some((bn, eps)) = bn {
                let (Some(s), Some(b), Some(m), Some(v)) =
                    (init(bn, 1), init(bn, 2), init(bn, 3), init(bn, 4))
                else {
                    continue;
                };
                for c in 0..g.width {
                    k[c] = (k[c] - m[c]) / (v[c] + eps).sqrt() * s[c] + b[c];
                }
            }
            out.insert(gate.clone(), k);
        }
    }
    out
}
