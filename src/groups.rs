//! Dependency analysis: which channel axes are tied together and can be pruned as one group.
//!
//! Every Conv output channel axis and every Gemm/MatMul output neuron axis starts a group. The
//! channel axis (axis 1) of each value is described as a list of segments, one per group, so
//! Concat can place several groups side by side and Flatten can turn a channel into a block of
//! H x W features. Ops that keep axis 1 pass the segments through; Add/Mul of two computed values
//! and depthwise convs tie groups (union-find); anything the analysis cannot prove safe marks the
//! groups it touches as not prunable, with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::ir::{Graph, Node, Op};

mod bert;
mod gqa;
mod heads;
mod hidden;
mod mha;

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
    /// The channel axis of each value whose channels are not on axis 1 (a token sequence's
    /// last axis after a transformer's linear layer).
    pub axes: HashMap<String, usize>,
    /// LayerNorm outputs that normalise over a group's channels (a transformer's hidden
    /// width) -> that group: the gated network normalises them over the open channels only.
    pub norms: HashMap<String, usize>,
    /// Groups that are attention heads: an Add of two head values (a rotary embedding) is not
    /// a residual stream.
    pub heads: HashSet<usize>,
}

impl ChannelAnalysis {
    /// The axis along which `value`'s channels lie (axis 1 unless recorded otherwise).
    pub fn channel_axis(&self, value: &str) -> usize {
        self.axes.get(value).copied().unwrap_or(1)
    }
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
    /// LayerNorm nodes that normalise over this group's channels (a transformer's hidden
    /// width): their scale and bias are sliced with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub normalised_by: Vec<String>,
}

struct Analysis {
    parent: Vec<usize>,
    width: Vec<usize>,
    producers: Vec<Vec<String>>,
    tensors: Vec<Vec<String>>,
    consumers: Vec<Vec<String>>,
    blocked: Vec<Option<String>>,
    maps: HashMap<String, Vec<Segment>>,
    /// Channel axis of the values in `maps` whose channels are not on axis 1.
    axes: HashMap<String, usize>,
    /// (group, value) pairs where channels are produced (convs, gemms, depthwise convs).
    sources: Vec<(usize, String)>,
    /// Split-in-group state (see [`Cuts`]).
    cuts: Cuts,
    /// Attention-head state (see [`heads`]).
    heads: heads::Heads,
    /// Hidden-width state (see [`hidden`]).
    hidden: hidden::Hidden,
}

/// A Split (or Slice) that cuts one producer's channels into pieces. The analysis runs again
/// with the producer starting one group per piece; each piece's gate sits where the Split
/// hands it out, since the producer's output holds several groups. Until then the producer's
/// output (and whatever it flows into) is "ungated": a node that reads a piece there as an
/// input dimension blocks it, as pruning it would change what that node sees.
#[derive(Default)]
struct Cuts {
    /// Producer node -> offsets inside its output where a piece begins (from earlier passes).
    known: BTreeMap<String, BTreeSet<usize>>,
    /// Cuts found in this pass that `known` lacks.
    found: BTreeMap<String, BTreeSet<usize>>,
    /// The node that started each group with `produce`.
    producer_of: HashMap<usize, String>,
    /// Groups that are pieces of a cut producer output.
    pieces: HashSet<usize>,
    /// Values that carry pieces before their gate.
    ungated: HashSet<String>,
}

/// Passes of the analysis at most: one per nesting level of cuts found.
const MAX_PASSES: usize = 4;

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

    fn set(&mut self, value: &str, segs: Vec<Segment>, from_ungated: bool) {
        if from_ungated && segs.iter().any(|s| self.cuts.pieces.contains(&s.group)) {
            self.cuts.ungated.insert(value.to_string());
        }
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

/// What a channel rule (in `ops/`) sees of the analysis: the node, shapes, constants, the
/// layouts of its inputs, and the operations that build groups.
pub struct ChannelCx<'a> {
    a: &'a mut Analysis,
    graph: &'a Graph,
    shapes: &'a HashMap<String, Vec<usize>>,
    pub node: &'a Node,
    /// Does the node's rule follow channels on an axis other than 1 ([`crate::ops::follows_any_axis`])?
    any_axis: bool,
}

impl ChannelCx<'_> {
    /// The layout of input `i`, when its axis 1 is understood.
    pub fn input(&self, i: usize) -> Option<Vec<Segment>> {
        let v = self.node.inputs.get(i)?;
        if !self.any_axis && self.a.axes.contains_key(v) {
            return None;
        }
        self.a.maps.get(v).cloned()
    }

    /// The axis along which input `i`'s channels lie (1 unless recorded otherwise).
    pub fn axis(&self, i: usize) -> usize {
        self.node
            .inputs
            .get(i)
            .and_then(|v| self.a.axes.get(v))
            .copied()
            .unwrap_or(1)
    }

    /// Rank of the first input.
    pub fn rank(&self) -> usize {
        self.node
            .inputs
            .first()
            .and_then(|v| self.shapes.get(v))
            .map_or(0, |s| s.len())
    }

    /// Static shape of a value at batch size 1.
    pub fn shape(&self, value: &str) -> &[usize] {
        &self.shapes[value]
    }

    pub fn is_const(&self, value: &str) -> bool {
        self.graph.initializers.contains_key(value)
    }

    /// A reason naming this node.
    fn why(&self, what: &str) -> String {
        format!(
            "{what} at node '{}' ({})",
            self.node.name,
            self.node.op.onnx_type()
        )
    }

    /// Marks the groups of `segs` unprunable because of `what` at this node.
    pub fn block(&mut self, segs: &[Segment], what: &str) {
        let reason = self.why(what);
        self.a.block(segs, &reason);
    }

    /// Marks one group unprunable because of `what` at this node.
    pub fn block_group(&mut self, group: usize, what: &str) {
        self.a.blocked[group] = Some(self.why(what));
    }

    /// Marks the groups of every analysed input unprunable.
    pub fn block_inputs(&mut self, what: &str) {
        for i in 0..self.node.inputs.len() {
            if let Some(segs) = self.input(i) {
                self.block(&segs, what);
            }
        }
    }

    /// Does this node read a value that carries split pieces before their gate?
    fn reads_ungated(&self) -> bool {
        self.node
            .inputs
            .iter()
            .any(|v| self.a.cuts.ungated.contains(v))
    }

    /// This node reads the groups of `segs` as an input dimension.
    pub fn consume(&mut self, segs: &[Segment]) {
        if self.reads_ungated() {
            let pieces: Vec<Segment> = segs
                .iter()
                .filter(|s| self.a.cuts.pieces.contains(&s.group))
                .copied()
                .collect();
            self.block(&pieces, "read before the split that gates it");
        }
        self.a.consume(segs, &self.node.name);
    }

    /// A slice of channels `[begin, end)` of `segs` (step 1) cuts through the segments it
    /// overlaps in part. Each such segment that one producer started alone is recorded, so the
    /// next pass starts it as pieces. Only a value that is one group end to end is cut: behind
    /// a Concat the pieces would be handed out by the Concat, not by this Split, and the cut
    /// stays blocked with its own reason.
    pub fn cut(&mut self, segs: &[Segment], begin: usize, end: usize) {
        if segs.len() != 1 {
            return;
        }
        let mut offset = 0;
        for s in segs {
            let (lo, hi) = (offset, offset + s.width * s.block);
            offset = hi;
            let partial = lo < end && hi > begin && !(lo >= begin && hi <= end);
            if !partial {
                continue;
            }
            let root = self.a.find(s.group);
            let producer = match self.a.cuts.producer_of.get(&s.group) {
                Some(p) if s.block == 1 && root == s.group && self.a.producers[root].len() == 1 => {
                    p.clone()
                }
                _ => continue,
            };
            let known = self.a.cuts.known.get(&producer);
            for at in [begin, end] {
                if at > lo && at < hi && !known.is_some_and(|k| k.contains(&(at - lo))) {
                    let found = self.a.cuts.found.entry(producer.clone()).or_default();
                    found.insert(at - lo);
                }
            }
        }
    }

    /// This node's output is one whole piece of a cut producer output: the piece's gate goes
    /// here.
    pub fn gate_piece(&mut self, seg: Segment) {
        if self.a.cuts.pieces.contains(&seg.group) {
            let out = self.node.outputs[0].clone();
            self.a.cuts.ungated.remove(&out);
            self.add_source(seg.group, &out);
        }
    }

    /// Starts a group of `width` channels produced by this node.
    pub fn new_group(&mut self, width: usize) -> usize {
        self.a.new_group(&self.node.name, width)
    }

    /// `value` is where `group`'s channels are produced (a gate goes there).
    pub fn add_source(&mut self, group: usize, value: &str) {
        self.a.sources.push((group, value.to_string()));
    }

    /// The channels of `a` and `b` must be pruned together.
    pub fn union(&mut self, a: usize, b: usize) {
        self.a.union(a, b);
    }

    /// This node produces a new group of `width` channels at its output (a gate goes there),
    /// unprunable for `blocked` when given; returns the group.
    pub fn produce(&mut self, width: usize, blocked: Option<&str>) -> usize {
        let out = self.node.outputs[0].clone();
        let cuts = self.a.cuts.known.get(&self.node.name).cloned();
        if let Some(cuts) = cuts.filter(|c| blocked.is_none() && c.iter().all(|&at| at < width)) {
            return self.produce_pieces(width, &cuts);
        }
        let g = self.new_group(width);
        self.a.cuts.producer_of.insert(g, self.node.name.clone());
        self.add_source(g, &out);
        if let Some(what) = blocked {
            self.block_group(g, what);
        }
        self.set_output(vec![Segment {
            group: g,
            width,
            block: 1,
        }]);
        g
    }

    /// One group per piece between the cuts; the gates go where the pieces are handed out.
    fn produce_pieces(&mut self, width: usize, cuts: &BTreeSet<usize>) -> usize {
        let mut bounds: Vec<usize> = std::iter::once(0).chain(cuts.iter().copied()).collect();
        bounds.push(width);
        let mut segs = Vec::new();
        for w in bounds.windows(2) {
            let g = self.new_group(w[1] - w[0]);
            self.a.cuts.pieces.insert(g);
            segs.push(Segment {
                group: g,
                width: w[1] - w[0],
                block: 1,
            });
        }
        let out = self.node.outputs[0].clone();
        self.a.set(&out, segs.clone(), false);
        self.a.cuts.ungated.insert(out);
        segs[0].group
    }

    /// The layout of this node's output, on the channel axis of its first analysed input.
    pub fn set_output(&mut self, segs: Vec<Segment>) {
        let axis = (0..self.node.inputs.len())
            .find(|&i| self.input(i).is_some())
            .map_or(1, |i| self.axis(i));
        self.set_output_on(segs, axis);
    }

    /// The layout of this node's output, its channels on `axis`.
    pub fn set_output_on(&mut self, segs: Vec<Segment>, axis: usize) {
        let from_ungated = self.reads_ungated();
        let out = &self.node.outputs[0];
        if axis != 1 {
            self.a.axes.insert(out.clone(), axis);
        }
        self.a.set(out, segs, from_ungated);
    }

    /// The output has the first input's layout (ops that keep axis 1 channel by channel).
    pub fn pass_through(&mut self) {
        if let Some(segs) = self.input(0) {
            self.set_output(segs);
        }
    }
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
        // A MatMul's bias is a separate Add (a transformer's linear layer): the gate goes after
        // it, so a closed channel is 0 where the layer's output is read.
        [add]
            if matches!(add.op, Op::Binary(crate::ir::BinaryOp::Add))
                && produced_by_matmul(graph, value)
                && add
                    .inputs
                    .iter()
                    .any(|i| graph.initializers.contains_key(i))
                && !graph.outputs.iter().any(|o| o.name == value) =>
        {
            add.outputs[0].clone()
        }
        _ => value.to_string(),
    }
}

fn produced_by_matmul(graph: &Graph, value: &str) -> bool {
    graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::MatMul) && n.outputs[0] == value)
}

/// One walk of the channel rules over the graph, with the cuts known from earlier passes.
fn pass(
    graph: &Graph,
    shapes: &HashMap<String, Vec<usize>>,
    known: BTreeMap<String, BTreeSet<usize>>,
    heads_known: BTreeMap<String, heads::Split>,
) -> Analysis {
    let mut a = Analysis {
        parent: vec![],
        width: vec![],
        producers: vec![],
        tensors: vec![],
        consumers: vec![],
        blocked: vec![],
        maps: HashMap::new(),
        axes: HashMap::new(),
        sources: vec![],
        cuts: Cuts {
            known,
            ..Cuts::default()
        },
        heads: heads::Heads::with_known(heads_known),
        hidden: hidden::Hidden::new(graph, shapes),
    };
    for n in &graph.nodes {
        let mut cx = ChannelCx {
            a: &mut a,
            graph,
            shapes,
            node: n,
            any_axis: true,
        };
        if heads::follow(&mut cx) || hidden::follow(&mut cx) {
            continue;
        }
        let any_axis = crate::ops::follows_any_axis(&n.op);
        if !any_axis {
            let read = n
                .inputs
                .iter()
                .enumerate()
                .filter(|&(i, _)| crate::ops::reads_values(&n.op, i));
            for (_, v) in read {
                if let (true, Some(segs)) = (a.axes.contains_key(v), a.maps.get(v).cloned()) {
                    let reason = format!(
                        "channels on the last axis of a token sequence read at node '{}' ({}), which does not follow them (transformer channel groups: not analysed yet)",
                        n.name,
                        n.op.onnx_type()
                    );
                    a.block(&segs, &reason);
                }
            }
        }
        let mut cx = ChannelCx {
            a: &mut a,
            graph,
            shapes,
            node: n,
            any_axis,
        };
        crate::ops::with_rules(&n.op, |r| r.channels(&mut cx));
    }
    a
}

pub fn analyse_layouts(graph: &Graph) -> Result<ChannelAnalysis> {
    let shapes = graph.infer_shapes(1)?;
    let mut a = pass(graph, &shapes, BTreeMap::new(), BTreeMap::new());
    for _ in 1..MAX_PASSES {
        if a.cuts.found.is_empty() && a.heads.found.is_empty() {
            break;
        }
        let mut known = std::mem::take(&mut a.cuts.known);
        for (producer, at) in std::mem::take(&mut a.cuts.found) {
            known.entry(producer).or_default().extend(at);
        }
        let mut heads_known = std::mem::take(&mut a.heads.known);
        heads_known.extend(std::mem::take(&mut a.heads.found));
        a = pass(graph, &shapes, known, heads_known);
    }
    let heads = std::mem::take(&mut a.heads);
    let unmerged = heads.unmerged(&a.sources.clone(), |g| a.find(g));
    a.heads = heads;
    for g in unmerged {
        let width = a.width[g];
        let seg = Segment {
            group: g,
            width,
            block: 1,
        };
        a.block(&[seg], "attention heads that are never merged back");
    }
    // A piece that no Split hands out whole has no gate position.
    let pieces: Vec<usize> = a.cuts.pieces.iter().copied().collect();
    for g in pieces {
        if !a.sources.iter().any(|(s, _)| *s == g) {
            a.block(
                &[Segment {
                    group: g,
                    width: a.width[g],
                    block: 1,
                }],
                "split piece that is never handed out whole",
            );
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
                normalised_by: Vec::new(),
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
    let norms: HashMap<String, usize> = std::mem::take(&mut a.hidden.norms)
        .into_iter()
        .map(|(g, value)| (value, root_index[&a.find(g)]))
        .collect();
    for n in &graph.nodes {
        if let Some(&g) = norms.get(&n.outputs[0]) {
            out[g].normalised_by.push(n.name.clone());
        }
    }
    let head_ids: Vec<usize> = a.heads.groups().collect();
    let heads: HashSet<usize> = head_ids
        .into_iter()
        .map(|g| root_index[&a.find(g)])
        .collect();
    Ok(ChannelAnalysis {
        groups: out,
        layouts,
        axes: std::mem::take(&mut a.axes),
        norms,
        heads,
    })
}
