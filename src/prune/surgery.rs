//! Channel surgery: one walk over the graph that slices every tensor a pruned group touches.
//!
//! Removed channels are exactly zero at their gate positions (the masked reference). Some ops
//! turn that zero into a constant (a BatchNorm shift, a sigmoid, a depthwise conv's bias); such
//! constants are tracked per removed feature and folded into the bias of the next layer that
//! reads them, so the pruned model computes exactly what the masked reference computes.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::groups::ChannelAnalysis;
use crate::ir::{Graph, Node, Tensor};

/// Value of each removed feature (index along axis 1) in the masked reference:
/// `Some(k)` when it is the constant k everywhere, `None` when it is not constant.
type Removed = BTreeMap<usize, Option<f32>>;

/// Elements of `t` whose index along `axis` is in `keep`, in that order.
pub fn slice_axis(t: &Tensor, axis: usize, keep: &[usize]) -> Tensor {
    let outer: usize = t.shape[..axis].iter().product();
    let dim = t.shape[axis];
    let inner: usize = t.shape[axis + 1..].iter().product();
    let src = t.to_f32_vec();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let start = (o * dim + k) * inner;
            out.extend_from_slice(&src[start..start + inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[axis] = keep.len();
    Tensor::f32(shape, out)
}

/// The surgery's state as a slicing rule (in `ops/`) sees it: which features survive, what the
/// removed ones carry, the constants, and the shapes of the original graph.
pub struct SurgeryCx<'a> {
    analysis: &'a ChannelAnalysis,
    keep: &'a BTreeMap<usize, Vec<usize>>,
    shapes: HashMap<String, Vec<usize>>,
    /// Gate value -> group.
    gates: HashMap<&'a str, usize>,
    removed: HashMap<String, Removed>,
    /// Gate value -> per-channel constant of dead channels (None: removed channels are masked).
    gate_constants: Option<&'a HashMap<String, Vec<f32>>>,
    inits: BTreeMap<String, Tensor>,
    uses: HashMap<String, usize>,
}

impl SurgeryCx<'_> {
    /// Axis-1 feature indices of `value` that survive, or None when nothing of it is pruned.
    pub fn kept(&self, value: &str) -> Option<Vec<usize>> {
        let segs = self.analysis.layouts.get(value)?;
        if !segs.iter().any(|s| self.keep.contains_key(&s.group)) {
            return None;
        }
        let mut out = Vec::new();
        let mut offset = 0;
        for s in segs {
            match self.keep.get(&s.group) {
                Some(k) => {
                    for &c in k {
                        out.extend((0..s.block).map(|j| offset + c * s.block + j));
                    }
                }
                None => out.extend(offset..offset + s.width * s.block),
            }
            offset += s.width * s.block;
        }
        Some(out)
    }

    /// Static shape of a value of the original graph at batch size 1.
    pub fn shape(&self, value: &str) -> &[usize] {
        &self.shapes[value]
    }

    /// The axis along which `value`'s channels lie.
    pub fn channel_axis(&self, value: &str) -> usize {
        self.analysis.channel_axis(value)
    }

    /// Is the channel axis of `value` described by the analysis (a computed, channel-tracked
    /// value)?
    pub fn analysed(&self, value: &str) -> bool {
        self.analysis.layouts.contains_key(value)
    }

    /// Is `value` a LayerNorm output normalised over its group's channels (a hidden width)?
    pub fn normalised(&self, value: &str) -> bool {
        self.analysis.norms.contains_key(value)
    }

    /// Removed axis-1 features of `value`.
    pub fn removed_features(&self, value: &str) -> Vec<usize> {
        match self.kept(value) {
            None => Vec::new(),
            Some(kept) => {
                let n = self.shapes[value][self.channel_axis(value)];
                let mut is_kept = vec![false; n];
                kept.iter().for_each(|&f| is_kept[f] = true);
                (0..n).filter(|&f| !is_kept[f]).collect()
            }
        }
    }

    pub fn state(&self, value: &str, feature: usize) -> Option<f32> {
        self.removed
            .get(value)
            .and_then(|r| r.get(&feature).copied().flatten())
    }

    pub fn init(&self, name: &str) -> Option<&Tensor> {
        self.inits.get(name)
    }

    /// A node input that slicing needs as a constant (the analysis blocks groups where it is not).
    pub fn constant(&self, node: &Node, name: &str) -> Result<&Tensor> {
        self.init(name).ok_or_else(|| {
            Error::node(
                &node.name,
                node.op.onnx_type(),
                format!("'{name}' is not a constant"),
            )
        })
    }

    /// Replaces an initializer; a weight shared by several nodes cannot be sliced for one.
    pub fn set_init(&mut self, node: &Node, name: &str, t: Tensor) -> Result<()> {
        if self.uses.get(name).copied().unwrap_or(0) > 1 && self.inits.get(name) != Some(&t) {
            return Err(Error::node(
                &node.name,
                node.op.onnx_type(),
                format!(
                    "weight '{name}' is shared with another node and cannot be pruned for one of them"
                ),
            ));
        }
        self.inits.insert(name.to_string(), t);
        Ok(())
    }

    /// Value of the reference for each removed feature of a node's output.
    fn propagate(&self, n: &Node) -> Removed {
        let out = &n.outputs[0];
        let removed = self.removed_features(out);
        if self.gates.contains_key(out.as_str()) {
            // At a gate position a removed channel is 0 (masked), or, for dead channels, the
            // constant the network really computes there.
            let dead = self.gate_constants.and_then(|c| c.get(out.as_str()));
            return removed
                .into_iter()
                .map(|f| (f, Some(dead.map_or(0.0, |v| v[f]))))
                .collect();
        }
        let x = n.inputs.first().map(String::as_str).unwrap_or("");
        removed
            .into_iter()
            .map(|f| {
                let k = self.state(x, f);
                let v = crate::ops::with_rules(&n.op, |r| r.removed_value(self, n, f, k));
                (f, v)
            })
            .collect()
    }

    /// Removed input features of a consumer that carry a non-zero constant, with that constant.
    pub fn constants_read(&self, n: &Node) -> Result<Vec<(usize, f32)>> {
        let x = &n.inputs[0];
        let mut out = Vec::new();
        for f in self.removed_features(x) {
            match self.state(x, f) {
                Some(0.0) => {}
                Some(k) => out.push((f, k)),
                None => {
                    return Err(Error::node(
                        &n.name,
                        n.op.onnx_type(),
                        format!(
                            "removed input channel {f} is not constant in the masked network, so it cannot be removed exactly"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    fn node(&mut self, n: &Node) -> Result<Node> {
        let mut n = n.clone();
        let out = n.outputs[0].clone();
        let state = self.propagate(&n);
        let op = n.op.clone();
        crate::ops::with_rules(&op, |r| r.slice(self, &mut n))?;
        if !state.is_empty() {
            self.removed.insert(out, state);
        }
        Ok(n)
    }
}

/// Applies a normalised keep plan (group id -> kept channels) to a graph.
pub fn apply(
    graph: &Graph,
    analysis: &ChannelAnalysis,
    keep: &BTreeMap<usize, Vec<usize>>,
    gate_constants: Option<&HashMap<String, Vec<f32>>>,
) -> Result<Graph> {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for n in &graph.nodes {
        for i in &n.inputs {
            *uses.entry(i.clone()).or_default() += 1;
        }
    }
    let mut gates = HashMap::new();
    for (id, g) in analysis.groups.iter().enumerate() {
        for v in &g.gates {
            gates.insert(v.as_str(), id);
        }
    }
    let shapes = graph.infer_shapes(1)?;
    // Groups closed whole: their sublayers go (the plan admits that only where they can).
    let mut branches = Vec::new();
    for (&id, _) in keep.iter().filter(|(_, k)| k.is_empty()) {
        let group = &analysis.groups[id];
        let found = super::sublayer::group_branches(graph, analysis, &shapes, group);
        branches.extend(found.ok_or_else(|| {
            Error::Usage(format!(
                "group {id} cannot be closed whole: keep at least one channel"
            ))
        })?);
    }
    let mut walk = SurgeryCx {
        analysis,
        keep,
        shapes,
        gates,
        removed: HashMap::new(),
        gate_constants,
        inits: graph.initializers.clone(),
        uses,
    };
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for n in &graph.nodes {
        nodes.push(walk.node(n)?);
    }
    let mut pruned = Graph {
        nodes,
        initializers: walk.inits,
        ..graph.clone()
    };
    if !branches.is_empty() {
        super::sublayer::remove(&mut pruned, &branches);
    }
    pruned.validate()?;
    pruned.infer_shapes(1)?;
    Ok(pruned)
}
