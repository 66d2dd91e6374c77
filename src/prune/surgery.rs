//! Channel surgery: one walk over the graph that slices every tensor a pruned group touches.
//!
//! Removed channels are exactly zero at their gate positions (the masked reference). Some ops
//! turn that zero into a constant (a BatchNorm shift, a sigmoid, a depthwise conv's bias); such
//! constants are tracked per removed feature and folded into the bias of the next layer that
//! reads them, so the pruned model computes exactly what the masked reference computes.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::groups::ChannelAnalysis;
use crate::ir::{Activation, BinaryOp, Graph, Node, Op, PadMode, Tensor};

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

fn act(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                alpha * x
            }
        }
        Activation::Clip { min, max } => x.clamp(min, max),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Tanh => x.tanh(),
    }
}

fn binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
    }
}

struct Walk<'a> {
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

impl Walk<'_> {
    /// Axis-1 feature indices of `value` that survive, or None when nothing of it is pruned.
    fn kept(&self, value: &str) -> Option<Vec<usize>> {
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

    fn removed_features(&self, value: &str) -> Vec<usize> {
        match self.kept(value) {
            None => Vec::new(),
            Some(kept) => {
                let n = self.shapes[value][1];
                let mut is_kept = vec![false; n];
                kept.iter().for_each(|&f| is_kept[f] = true);
                (0..n).filter(|&f| !is_kept[f]).collect()
            }
        }
    }

    fn state(&self, value: &str, feature: usize) -> Option<f32> {
        self.removed
            .get(value)
            .and_then(|r| r.get(&feature).copied().flatten())
    }

    fn init(&self, name: &str) -> Option<&Tensor> {
        self.inits.get(name)
    }

    /// A node input that slicing needs as a constant (the analysis blocks groups where it is not).
    fn constant(&self, node: &Node, name: &str) -> Result<&Tensor> {
        self.init(name).ok_or_else(|| {
            Error::node(
                &node.name,
                node.op.onnx_type(),
                format!("'{name}' is not a constant"),
            )
        })
    }

    /// Replaces an initializer; a weight shared by several nodes cannot be sliced for one.
    fn set_init(&mut self, node: &Node, name: &str, t: Tensor) -> Result<()> {
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
                let v = match &n.op {
                    Op::BatchNorm { epsilon } => k.and_then(|k| {
                        let p = |i: usize| self.init(&n.inputs[i]).map(|t| t.to_f32_vec()[f]);
                        let (s, b, m, v) = (p(1)?, p(2)?, p(3)?, p(4)?);
                        Some((k - m) / (v + epsilon).sqrt() * s + b)
                    }),
                    Op::Activation(a) => k.map(|k| act(*a, k)),
                    Op::MaxPool { .. }
                    | Op::GlobalAveragePool
                    | Op::ReduceMean { .. }
                    | Op::Identity => k,
                    Op::AveragePool {
                        window,
                        count_include_pad,
                        ..
                    } => {
                        if *count_include_pad && window.pads.iter().any(|&p| p > 0) {
                            None
                        } else {
                            k
                        }
                    }
                    Op::Pad { pads, mode, value } => match mode {
                        PadMode::Constant if pads.iter().any(|&p| p != 0) => {
                            k.filter(|k| k == value)
                        }
                        _ => k,
                    },
                    Op::Binary(op) => {
                        let other = |i: usize| -> Option<f32> {
                            let name = &n.inputs[i];
                            if self.analysis.layouts.contains_key(name) {
                                self.state(name, f)
                            } else {
                                let t = self.init(name)?;
                                let v = t.to_f32_vec();
                                if v.len() == 1 {
                                    Some(v[0])
                                } else {
                                    v.get(f).copied()
                                }
                            }
                        };
                        match (other(0), other(1)) {
                            (Some(a), Some(b)) => Some(binary(*op, a, b)),
                            _ => None,
                        }
                    }
                    Op::Concat { .. } => {
                        let mut offset = 0;
                        let mut found = None;
                        for i in &n.inputs {
                            let w = self.shapes[i][1];
                            if f < offset + w {
                                found = self.state(i, f - offset);
                                break;
                            }
                            offset += w;
                        }
                        found
                    }
                    Op::Flatten { .. } | Op::Reshape { .. } => {
                        let spatial: usize = self.shapes[x][2..].iter().product();
                        self.state(x, f / spatial.max(1))
                    }
                    Op::Conv { window, .. } => {
                        // Only depthwise convs pass channels through; a zero input gives the bias.
                        let bias = n
                            .inputs
                            .get(2)
                            .and_then(|b| self.init(b))
                            .map_or(0.0, |b| b.to_f32_vec()[f]);
                        match k {
                            Some(0.0) => Some(bias),
                            Some(k) if window.pads.iter().all(|&p| p == 0) => {
                                let w = self
                                    .init(&n.inputs[1])
                                    .map(|w| slice_axis(w, 0, &[f]).to_f32_vec());
                                w.map(|w| k * w.iter().sum::<f32>() + bias)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                (f, v)
            })
            .collect()
    }

    /// Removed input features of a consumer that carry a non-zero constant, with that constant.
    fn constants_read(&self, n: &Node) -> Result<Vec<(usize, f32)>> {
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
        match n.op.clone() {
            // A conv that loses no channel on either side is left as it is (its weight need not
            // even be a constant).
            Op::Conv { window, group }
                if self.kept(&n.inputs[0]).is_some() || self.kept(&out).is_some() =>
            {
                let w = self.constant(&n, &n.inputs[1])?.clone();
                let c_in = self.shapes[&n.inputs[0]][1];
                let depthwise = group > 1 && w.shape[1] == 1 && w.shape[0] == c_in;
                if depthwise {
                    if let Some(k) = self.kept(&n.inputs[0]) {
                        self.set_init(&n, &n.inputs[1].clone(), slice_axis(&w, 0, &k))?;
                        if let Some(b) = n.inputs.get(2).cloned() {
                            let bt = slice_axis(self.constant(&n, &b)?, 0, &k);
                            self.set_init(&n, &b, bt)?;
                        }
                        n.op = Op::Conv {
                            window,
                            group: k.len(),
                        };
                    }
                } else {
                    let mut w = w;
                    let folds = self.constants_read(&n)?;
                    if !folds.is_empty() {
                        if window.pads.iter().any(|&p| p > 0) {
                            return Err(Error::node(
                                &n.name,
                                "Conv",
                                "a removed input channel carries a non-zero constant into a padded convolution; it cannot be folded exactly",
                            ));
                        }
                        let per_out: usize = w.shape[1..].iter().product();
                        let per_in: usize = w.shape[2..].iter().product();
                        let wv = w.to_f32_vec();
                        let mut bias = match n.inputs.get(2) {
                            Some(b) => self.constant(&n, b)?.to_f32_vec(),
                            None => vec![0.0; w.shape[0]],
                        };
                        for (o, b) in bias.iter_mut().enumerate() {
                            for &(c, k) in &folds {
                                let start = o * per_out + c * per_in;
                                *b += k * wv[start..start + per_in].iter().sum::<f32>();
                            }
                        }
                        let name = n
                            .inputs
                            .get(2)
                            .cloned()
                            .unwrap_or_else(|| format!("{}__bias", n.name));
                        self.set_init(&n, &name, Tensor::f32(vec![bias.len()], bias))?;
                        if n.inputs.len() < 3 {
                            n.inputs.push(name);
                        }
                    }
                    if let Some(k) = self.kept(&n.inputs[0]) {
                        w = slice_axis(&w, 1, &k);
                    }
                    if let Some(k) = self.kept(&out) {
                        w = slice_axis(&w, 0, &k);
                        if let Some(b) = n.inputs.get(2).cloned() {
                            let bt = slice_axis(self.constant(&n, &b)?, 0, &k);
                            self.set_init(&n, &b, bt)?;
                        }
                    }
                    self.set_init(&n, &n.inputs[1].clone(), w)?;
                }
            }
            Op::BatchNorm { .. } => {
                if let Some(k) = self.kept(&n.inputs[0]) {
                    for i in 1..5 {
                        let name = n.inputs[i].clone();
                        let t = slice_axis(self.constant(&n, &name)?, 0, &k);
                        self.set_init(&n, &name, t)?;
                    }
                }
            }
            Op::Gemm {
                alpha,
                beta,
                trans_b,
                ..
            } => self.linear(&mut n, trans_b, alpha, beta)?,
            Op::MatMul => self.linear(&mut n, false, 1.0, 1.0)?,
            Op::Binary(_) => {
                if let Some(k) = self.kept(&out) {
                    let out_rank = self.shapes[&out].len();
                    for i in 0..2 {
                        let name = n.inputs[i].clone();
                        if self.analysis.layouts.contains_key(&name) {
                            continue;
                        }
                        if let Some(t) = self.init(&name).cloned() {
                            let axis = 1 + t.shape.len() as isize - out_rank as isize;
                            if axis >= 0 && t.shape[axis as usize] > 1 {
                                self.set_init(&n, &name, slice_axis(&t, axis as usize, &k))?;
                            }
                        }
                    }
                }
            }
            // The analysis only admits the flatten form [N, C*...]: recompute it.
            Op::Reshape { shape } if self.kept(&n.inputs[0]).is_some() => {
                n.op = Op::Reshape {
                    shape: if shape[0] == -1 {
                        vec![-1, self.kept(&out).map_or(0, |k| k.len()) as i64]
                    } else {
                        vec![shape[0], -1]
                    },
                };
            }
            _ => {}
        }
        if !state.is_empty() {
            self.removed.insert(out, state);
        }
        Ok(n)
    }

    /// Gemm / MatMul with a constant weight: slice outputs by the node's own group and inputs by
    /// the incoming layout, folding removed constant inputs into the bias.
    fn linear(&mut self, n: &mut Node, trans_b: bool, alpha: f32, beta: f32) -> Result<()> {
        let op = n.op.onnx_type();
        let out = n.outputs[0].clone();
        let Some(mut w) = self.init(&n.inputs[1]).cloned() else {
            return Ok(());
        };
        let (in_axis, out_axis) = if trans_b { (1, 0) } else { (0, 1) };
        let folds = self.constants_read(n)?;
        if !folds.is_empty() {
            if beta == 0.0 || matches!(n.op, Op::MatMul) {
                return Err(Error::node(
                    &n.name,
                    op,
                    "a removed input carries a non-zero constant and the layer has no bias to fold it into",
                ));
            }
            let width = w.shape[out_axis];
            let wv = w.to_f32_vec();
            let mut bias = match n.inputs.get(2) {
                Some(c) => {
                    let t = self.constant(n, c)?;
                    let v = t.to_f32_vec();
                    if v.len() == 1 {
                        vec![v[0]; width]
                    } else if v.len() == width {
                        v
                    } else {
                        return Err(Error::node(&n.name, op, "bias is not one value per output"));
                    }
                }
                None => vec![0.0; width],
            };
            for (o, b) in bias.iter_mut().enumerate() {
                for &(j, k) in &folds {
                    let wij = if trans_b {
                        wv[o * w.shape[1] + j]
                    } else {
                        wv[j * w.shape[1] + o]
                    };
                    *b += alpha * wij * k / beta;
                }
            }
            let name = n
                .inputs
                .get(2)
                .cloned()
                .unwrap_or_else(|| format!("{}__bias", n.name));
            self.set_init(n, &name, Tensor::f32(vec![width], bias))?;
            if n.inputs.len() < 3 {
                n.inputs.push(name);
            }
        }
        if let Some(k) = self.kept(&n.inputs[0]) {
            w = slice_axis(&w, in_axis, &k);
        }
        if let Some(k) = self.kept(&out) {
            w = slice_axis(&w, out_axis, &k);
            if let Some(c) = n.inputs.get(2).cloned()
                && let Some(t) = self.init(&c).cloned()
                && t.len() > 1
            {
                let axis = t.shape.len() - 1;
                self.set_init(n, &c, slice_axis(&t, axis, &k))?;
            }
        }
        self.set_init(n, &n.inputs[1].clone(), w)?;
        Ok(())
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
    let mut walk = Walk {
        analysis,
        keep,
        shapes: graph.infer_shapes(1)?,
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
    let pruned = Graph {
        nodes,
        initializers: walk.inits,
        ..graph.clone()
    };
    pruned.validate()?;
    pruned.infer_shapes(1)?;
    Ok(pruned)
}
