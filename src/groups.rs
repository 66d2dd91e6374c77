//! Dependency analysis: which channel axes are tied together and can be pruned as one group.
//!
//! Every Conv output channel axis and every Gemm/MatMul output neuron axis starts a group. The
//! channel axis (axis 1) of each value is described as a list of segments, one per group, so
//! Concat can place several groups side by side and Flatten can turn a channel into a block of
//! H x W features. Ops that keep axis 1 pass the segments through; Add/Mul of two computed values
//! and depthwise convs tie groups (union-find); anything the analysis cannot prove safe marks the
//! groups it touches as not prunable, with the reason.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::ir::{Graph, Op};

/// A run of channels along axis 1 that belongs to one group; each channel spans `block` features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub group: usize,
    pub width: usize,
    pub block: usize,
}

/// The groups plus, for every value whose axis 1 is understood, its layout as segments.
#[derive(Debug, Clone)]
pub struct ChannelAnalysis {
    pub groups: Vec<ChannelGroup>,
    /// Segment `group` fields are indices into `groups`.
    pub layouts: HashMap<String, Vec<Segment>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChannelGroup {
    pub id: usize,
    pub width: usize,
    /// Nodes whose output channels/neurons make up this group.
    pub producers: Vec<String>,
    /// Values whose axis 1 carries (part of) this group.
    pub tensors: Vec<String>,
    /// Nodes that read this group's channels as an input dimension (conv in-channels, gemm in-features).
    pub consumers: Vec<String>,
    pub prunable: bool,
    /// Why the group cannot be pruned, when it cannot.
    pub reason: Option<String>,
    /// Values where a gate (or a pruning mask) multiplies this group's channels: each
    /// producer's output, or the output of a BatchNormalization that is its only reader.
    pub gates: Vec<String>,
}

struct Analysis {
    parent: Vec<usize>,
    width: Vec<usize>,
    producers: Vec<Vec<String>>,
    tensors: Vec<Vec<String>>,
    consumers: Vec<Vec<String>>,
    blocked: Vec<Option<String>>,
    maps: HashMap<String, Vec<Segment>>,
    /// (group, value) pairs where channels are produced (convs, gemms, depthwise convs).
    sources: Vec<(usize, String)>,
}

impl Analysis {
    fn find(&mut self, g: usize) -> usize {
        let p = self.parent[g];
        if p == g {
            return g;
        }
        let root = self.find(p);
        self.parent[g] = root;
        root
    }

    fn new_group(&mut self, producer: &str, width: usize) -> usize {
        let id = self.parent.len();
        self.parent.push(id);
        self.width.push(width);
        self.producers.push(vec![producer.to_string()]);
        self.tensors.push(Vec::new());
        self.consumers.push(Vec::new());
        self.blocked.push(None);
        id
    }

    fn block(&mut self, segs: &[Segment], reason: &str) {
        for s in segs {
            let r = self.find(s.group);
            self.blocked[r].get_or_insert_with(|| reason.to_string());
        }
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        self.parent[rb] = ra;
        let moved = std::mem::take(&mut self.producers[rb]);
        self.producers[ra].extend(moved);
        let moved = std::mem::take(&mut self.consumers[rb]);
        self.consumers[ra].extend(moved);
        if let Some(reason) = self.blocked[rb].take() {
            self.blocked[ra].get_or_insert(reason);
        }
    }

    fn set(&mut self, value: &str, segs: Vec<Segment>) {
        for s in &segs {
            self.tensors[s.group].push(value.to_string());
        }
        self.maps.insert(value.to_string(), segs);
    }

    fn consume(&mut self, segs: &[Segment], node: &str) {
        for s in segs {
            let r = self.find(s.group);
            if !self.consumers[r].iter().any(|c| c == node) {
                self.consumers[r].push(node.to_string());
            }
        }
    }
}

/// Is a constant broadcast along axis 1 only (a per-channel scale or shift), or a scalar?
fn per_channel_or_scalar(shape: &[usize], x_rank: usize) -> bool {
    let n: usize = shape.iter().product();
    if n == 1 {
        return true;
    }
    // Aligned from the right against an (N, C, ...) value: only the C position may exceed 1.
    let off = x_rank as isize - shape.len() as isize;
    shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || i as isize + off == 1)
}

/// The channel groups of a graph.
///
/// ```
/// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lenet5/model.onnx");
/// let graph = compress::onnx::import_file(&path)?;
/// let groups = compress::groups::analyse(&graph)?;
/// let widths: Vec<usize> = groups.iter().filter(|g| g.prunable).map(|g| g.width).collect();
/// assert_eq!(widths, vec![20, 50, 500]); // conv1, conv2, fc1; the logits are fixed
/// # Ok::<(), compress::Error>(())
/// ```
pub fn analyse(graph: &Graph) -> Result<Vec<ChannelGroup>> {
    Ok(analyse_layouts(graph)?.groups)
}

/// Where the gate of a produced value sits: after a BatchNormalization that is its only reader.
fn gate_position(graph: &Graph, value: &str) -> String {
    let readers: Vec<&crate::ir::Node> = graph
        .nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == value))
        .collect();
    match readers.as_slice() {
        [bn] if matches!(bn.op, Op::BatchNorm { .. })
            && bn.inputs[0] == value
            && !graph.outputs.iter().any(|o| o.name == value) =>
        {
            bn.outputs[0].clone()
        }
        _ => value.to_string(),
    }
}

pub fn analyse_layouts(graph: &Graph) -> Result<ChannelAnalysis> {
    let shapes = graph.infer_shapes(1)?;
    let mut a = Analysis {
        parent: vec![],
        width: vec![],
        producers: vec![],
        tensors: vec![],
        consumers: vec![],
        blocked: vec![],
        maps: HashMap::new(),
        sources: vec![],
    };
    let is_const = |name: &str| graph.initializers.contains_key(name);
    for n in &graph.nodes {
        let out = &n.outputs[0];
        let in_map = |i: usize, a: &Analysis| n.inputs.get(i).and_then(|v| a.maps.get(v).cloned());
        let x = in_map(0, &a);
        let rank = n
            .inputs
            .first()
            .and_then(|v| shapes.get(v))
            .map_or(0, |s| s.len());
        let why = |what: &str| format!("{what} at node '{}' ({})", n.name, n.op.onnx_type());
        match &n.op {
            Op::Conv { group, .. } => {
                let w = &shapes[&n.inputs[1]];
                let (c_out, c_in_per_group) = (w[0], w[1]);
                let c_in = c_in_per_group * group;
                let depthwise = *group > 1 && c_in_per_group == 1 && c_out == c_in;
                // Slicing needs the weight (both axes) and the bias (output axis) as constants.
                let weight_const = is_const(&n.inputs[1]);
                let bias_const = n.inputs.get(2).is_none_or(|b| is_const(b));
                if depthwise {
                    // Each output channel reads exactly its own input channel: a pass-through
                    // that also produces the group's channels (so it gets a gate too).
                    if let Some(segs) = x {
                        if !(weight_const && bias_const) {
                            a.block(&segs, &why("non-constant weight or bias"));
                        }
                        if let [only] = segs.as_slice() {
                            a.sources.push((only.group, out.clone()));
                        }
                        a.set(out, segs);
                    }
                    continue;
                }
                if let Some(segs) = &x {
                    if *group > 1 {
                        a.block(segs, &why("grouped convolution"));
                    } else if !weight_const {
                        a.block(segs, &why("non-constant weight"));
                    } else {
                        a.consume(segs, &n.name);
                    }
                }
                let g = a.new_group(&n.name, c_out);
                a.sources.push((g, out.clone()));
                if *group > 1 {
                    a.blocked[g] = Some(why("grouped convolution"));
                } else if !(weight_const && bias_const) {
                    a.blocked[g] = Some(why("non-constant weight or bias"));
                }
                a.set(
                    out,
                    vec![Segment {
                        group: g,
                        width: c_out,
                        block: 1,
                    }],
                );
            }
            Op::Gemm {
                trans_a, trans_b, ..
            } => {
                let w = &shapes[&n.inputs[1]];
                let width = if *trans_b { w[0] } else { w[1] };
                let weight_const = is_const(&n.inputs[1]);
                if let Some(segs) = &x {
                    if *trans_a || !weight_const {
                        a.block(segs, &why("non-constant or transposed operand"));
                    } else {
                        a.consume(segs, &n.name);
                    }
                }
                let g = a.new_group(&n.name, width);
                a.sources.push((g, out.clone()));
                if !weight_const {
                    a.blocked[g] = Some(why("non-constant weight"));
                }
                a.set(
                    out,
                    vec![Segment {
                        group: g,
                        width,
                        block: 1,
                    }],
                );
            }
            Op::MatMul => {
                let w = &shapes[&n.inputs[1]];
                if rank == 2 && w.len() == 2 && is_const(&n.inputs[1]) {
                    if let Some(segs) = &x {
                        a.consume(segs, &n.name);
                    }
                    let g = a.new_group(&n.name, w[1]);
                    a.set(
                        out,
                        vec![Segment {
                            group: g,
                            width: w[1],
                            block: 1,
                        }],
                    );
                } else {
                    for i in 0..2 {
                        if let Some(segs) = in_map(i, &a) {
                            a.block(&segs, &why("matrix product of computed values"));
                        }
                    }
                }
            }
            Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Identity
            | Op::MaxPool { .. }
            | Op::AveragePool { .. }
            | Op::GlobalAveragePool => {
                if let Some(segs) = x {
                    a.set(out, segs);
                }
            }
            Op::Pad { pads, .. } => {
                if let Some(segs) = x {
                    if rank > 1 && (pads[1] != 0 || pads[1 + rank] != 0) {
                        a.block(&segs, &why("padding along the channel axis"));
                    } else {
                        a.set(out, segs);
                    }
                }
            }
            Op::Binary(_) => {
                let y = in_map(1, &a);
                match (x, y) {
                    (Some(sx), Some(sy)) => {
                        let same = sx.len() == sy.len()
                            && sx
                                .iter()
                                .zip(&sy)
                                .all(|(p, q)| p.width == q.width && p.block == q.block);
                        if same {
                            for (p, q) in sx.iter().zip(&sy) {
                                a.union(p.group, q.group);
                            }
                            a.set(out, sx);
                        } else {
                            a.block(&sx, &why("operands with different channel layouts"));
                            a.block(&sy, &why("operands with different channel layouts"));
                        }
                    }
                    (Some(segs), None) | (None, Some(segs)) => {
                        let other = if in_map(0, &a).is_some() {
                            &n.inputs[1]
                        } else {
                            &n.inputs[0]
                        };
                        let x_rank = shapes[out].len();
                        if is_const(other) && per_channel_or_scalar(&shapes[other], x_rank) {
                            a.set(out, segs);
                        } else {
                            a.block(&segs, &why("operand not aligned with the channel axis"));
                        }
                    }
                    (None, None) => {}
                }
            }
            Op::Flatten { axis } if *axis == 1 || *axis == 1 - rank as i64 => {
                if let Some(segs) = x {
                    let spatial: usize = shapes[&n.inputs[0]][2..].iter().product();
                    let segs = segs
                        .iter()
                        .map(|s| Segment {
                            block: s.block * spatial,
                            ..*s
                        })
                        .collect();
                    a.set(out, segs);
                }
            }
            Op::Reshape { .. } => {
                if let Some(segs) = x {
                    let (i, o) = (&shapes[&n.inputs[0]], &shapes[out]);
                    // Only the flatten form [N, C, ...] -> [N, C * ...] keeps channels identifiable.
                    if o.len() == 2 && i.len() >= 2 && o[0] == i[0] {
                        let spatial: usize = i[2..].iter().product();
                        let segs = segs
                            .iter()
                            .map(|s| Segment {
                                block: s.block * spatial,
                                ..*s
                            })
                            .collect();
                        a.set(out, segs);
                    } else {
                        a.block(&segs, &why("reshape that moves the channel axis"));
                    }
                }
            }
            Op::Concat { axis } => {
                let maps: Vec<Option<Vec<Segment>>> =
                    (0..n.inputs.len()).map(|i| in_map(i, &a)).collect();
                let on_channels = *axis == 1 || *axis == 1 - rank as i64;
                if on_channels && maps.iter().all(|m| m.is_some()) {
                    a.set(out, maps.into_iter().flatten().flatten().collect());
                } else {
                    for segs in maps.into_iter().flatten() {
                        a.block(
                            &segs,
                            &why(
                                "concatenation with an unanalysed operand or off the channel axis",
                            ),
                        );
                    }
                }
            }
            Op::ReduceMean { axes, keepdims } => {
                if let Some(segs) = x {
                    let keeps_axis1 = !axes.is_empty()
                        && axes.iter().all(|&ax| {
                            let ax = if ax < 0 { ax + rank as i64 } else { ax };
                            ax >= 2
                        })
                        && (*keepdims || rank >= 2);
                    if keeps_axis1 {
                        a.set(out, segs);
                    } else {
                        a.block(&segs, &why("reduction over the channel axis"));
                    }
                }
            }
            _ => {
                for i in 0..n.inputs.len() {
                    if let Some(segs) = in_map(i, &a) {
                        a.block(&segs, &why("op without a channel pruning rule"));
                    }
                }
            }
        }
    }
    for o in &graph.outputs {
        if let Some(segs) = a.maps.get(&o.name).cloned() {
            a.block(&segs, &format!("reaches graph output '{}'", o.name));
        }
    }
    // Collect one record per union-find root.
    let mut out = Vec::new();
    let mut root_index: HashMap<usize, usize> = HashMap::new();
    for g in 0..a.parent.len() {
        let r = a.find(g);
        let idx = *root_index.entry(r).or_insert_with(|| {
            out.push(ChannelGroup {
                id: out.len(),
                width: a.width[r],
                producers: a.producers[r].clone(),
                tensors: Vec::new(),
                consumers: a.consumers[r].clone(),
                prunable: a.blocked[r].is_none(),
                reason: a.blocked[r].clone(),
                gates: Vec::new(),
            });
            out.len() - 1
        });
        let tensors = a.tensors[g].clone();
        out[idx].tensors.extend(tensors);
    }
    for (g, value) in std::mem::take(&mut a.sources) {
        let idx = root_index[&a.find(g)];
        out[idx].gates.push(gate_position(graph, &value));
    }
    for g in &mut out {
        g.tensors.sort();
        g.tensors.dedup();
    }
    let mut layouts = HashMap::new();
    for (value, segs) in std::mem::take(&mut a.maps) {
        let segs = segs
            .into_iter()
            .map(|s| Segment {
                group: root_index[&a.find(s.group)],
                ..s
            })
            .collect();
        layouts.insert(value, segs);
    }
    Ok(ChannelAnalysis {
        groups: out,
        layouts,
    })
}
