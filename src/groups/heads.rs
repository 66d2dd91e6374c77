//! Attention heads as a channel group (timm-style attention, both PyTorch exporters).
//!
//! A qkv linear layer's output `[B, N, P*H*D]` is reshaped to `[B, N, P, H, D]` (P = 3: q, k
//! and v), permuted, split into its P parts, multiplied batch-wise (QK^T, softmax, AV) with the
//! head axis as a batch axis, and merged back to `[B, N, H*D]` for the output projection. Head
//! `h` is the block of D columns at `p*H*D + h*D` in every part, so one group of H channels
//! covers all parts: the producer's output is P segments of `{H channels, block D}`.
//!
//! The first pass only finds such a Reshape and records the producer; the next pass starts the
//! producer's group as heads, follows it through the ops below and gates it where the heads
//! are merged back (the input of the merging Reshape, one value per head, as CoFi's head mask).
//! Anything else that reads a head-carrying value before that gate fixes the group.
//! The dynamo export transposes K by folding the heads into the batch axis
//! (`[B*H, N, D]`, transpose, `[B, H, D, N]`): that fold is followed as a marker that only a
//! Transpose keeping axis 0 or the Reshape that unfolds it may read.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{ChannelCx, Segment};
use crate::ir::{Node, Op};

/// (parts, heads, head_dim) of a head-split producer.
pub type Split = (usize, usize, usize);

/// Head-group state of one analysis pass.
#[derive(Default)]
pub struct Heads {
    /// Producer node -> its head split (from earlier passes).
    pub known: BTreeMap<String, Split>,
    /// Head splits found in this pass that `known` lacks.
    pub found: BTreeMap<String, Split>,
    /// Groups that are attention heads.
    pub(super) groups: HashSet<usize>,
    /// Head-carrying values before their gate.
    before_gate: HashSet<String>,
    /// Values with the heads folded into a batch axis: value -> (group, heads, that axis).
    pub(super) folded: HashMap<String, (usize, usize, usize)>,
    /// Head values that repeat each head of an earlier value (see [`super::gqa`]) -> that value.
    pub(super) repeat_source: HashMap<String, String>,
}

/// Follows head groups through `cx.node`; true when the node was handled here (the ordinary
/// channel rule is skipped).
pub fn follow(cx: &mut ChannelCx) -> bool {
    let n = cx.node;
    if let Some(&split) = cx.a.heads.known.get(&n.name) {
        if let (0, heads, _) = split {
            return super::gqa::broadcast_heads(cx, heads);
        }
        return produce(cx, split);
    }
    if matches!(n.op, Op::Reshape { .. }) {
        if find_split(cx) {
            return true;
        }
        super::mha::find_fold_split(cx);
    }
    let folded = n
        .inputs
        .iter()
        .find_map(|v| cx.a.heads.folded.get(v).copied());
    let carried: Vec<(usize, Vec<Segment>)> = (0..n.inputs.len())
        .filter_map(|i| heads_input(cx, i).map(|s| (i, s)))
        .collect();
    if let Some((g, h, axis)) = folded {
        follow_folded(cx, g, h, axis);
        return true;
    }
    let Some((first, segs)) = carried.first().cloned() else {
        return false;
    };
    let ax = cx.axis(first);
    let rank = cx.shape(&n.inputs[first]).len();
    let before = n.inputs.iter().any(|v| cx.a.heads.before_gate.contains(v));
    let ok = match &n.op {
        // The output projection reads the merged heads like any linear layer.
        Op::MatMul if cx.is_const(&n.inputs[1]) && ax + 1 == rank && !before => return false,
        // nn.MultiheadAttention's out_proj: a Gemm over the merged heads `[N*B, H*D]`.
        Op::Gemm { .. } if ax == 1 && rank == 2 && !before => return false,
        Op::MatMul if carried.len() == 1 && first == 0 && super::gqa::find_broadcast(cx, &segs) => {
            return true;
        }
        Op::MatMul => {
            carried.len() == 2
                && first == 0
                && cx.axis(1) == ax
                && ax + 2 < rank
                && cx.shape(&n.inputs[0])[..rank - 2] == cx.shape(&n.inputs[1])[..rank - 2]
        }
        Op::Binary(_) => binary_ok(cx, &carried, ax),
        // Elementwise (rotary embedding's Neg).
        Op::Activation(_) => true,
        // Rotary embedding's rotate-half joins halves of head_dim, off the head axis.
        Op::Concat { axis } => {
            carried.len() == n.inputs.len()
                && crate::ir::shape::norm_axis(*axis, rank).is_ok_and(|a| a != ax)
                && carried.iter().all(|(i, s)| cx.axis(*i) == ax && *s == segs)
        }
        Op::Expand(_) if carried.len() == 1 && first == 0 => {
            return super::gqa::expand(cx, segs, ax, before) || block_here(cx);
        }
        // After the head axis (a legacy softmax flattens from its axis on, so this holds too).
        Op::Softmax { axis, .. } => crate::ir::shape::norm_axis(*axis, rank).is_ok_and(|a| a > ax),
        Op::Slice(s) => !s.axes.contains(&ax) && !s.axes.contains(&1),
        Op::Squeeze(s) if !s.axes.contains(&ax) => {
            let shift = s.axes.iter().filter(|&&a| a < ax).count();
            set(cx, segs, ax - shift, before);
            return true;
        }
        Op::Unsqueeze(u) => {
            let to = (0..rank + u.axes.len())
                .filter(|p| !u.axes.contains(p))
                .nth(ax)
                .unwrap_or(ax);
            set(cx, segs, to, before);
            return true;
        }
        Op::Transpose { perm } => {
            let to = perm.iter().position(|&p| p == ax).unwrap_or(ax);
            set(cx, segs, to, before);
            return true;
        }
        Op::Reshape { shape } => return reshape(cx, &segs, ax, shape, before),
        _ => false,
    };
    if ok {
        for (i, other) in carried.iter().skip(1) {
            if let (Some(a), Some(b)) = (segs.first(), other.first())
                && cx.axis(*i) == ax
            {
                if a.width == b.width && a.block == b.block {
                    cx.union(a.group, b.group);
                    super::gqa::gate_on_values(cx, a.group);
                } else {
                    super::gqa::regroup_queries(cx, a, b);
                }
            }
        }
        set(cx, segs, ax, before);
    } else {
        block_all(cx, "op that does not follow attention heads");
    }
    true
}

fn block_here(cx: &mut ChannelCx) -> bool {
    block_all(cx, "op that does not follow attention heads");
    true
}

/// Blocks every analysed input of the node (head groups and any other group it reads, since
/// the node's ordinary rule is skipped).
fn block_all(cx: &mut ChannelCx, what: &str) {
    for v in &cx.node.inputs {
        if let Some(segs) = cx.a.maps.get(v).cloned() {
            cx.block(&segs, what);
        }
    }
}

/// The layout of input `i` when it carries attention heads.
fn heads_input(cx: &ChannelCx, i: usize) -> Option<Vec<Segment>> {
    let v = cx.node.inputs.get(i)?;
    let segs = cx.a.maps.get(v)?;
    let heads = &cx.a.heads.groups;
    segs.iter()
        .any(|s| heads.contains(&s.group))
        .then(|| segs.clone())
}

pub(super) fn set(cx: &mut ChannelCx, segs: Vec<Segment>, axis: usize, before_gate: bool) {
    let out = cx.node.outputs[0].clone();
    if before_gate {
        cx.a.heads.before_gate.insert(out.clone());
    }
    // Axis 1 is recorded too: a head value's axis must never read as a CNN's channel axis.
    // (Merged heads `[N*B, H*D]` are plain features: a Gemm reads them as such.)
    if before_gate || axis != 1 || cx.shape(&out).len() != 2 {
        cx.a.axes.insert(out.clone(), axis);
    }
    cx.a.set(&out, segs, false);
}

/// First pass: a Reshape `[B, N, P*H*D] -> [B, N, P, H, D]` of one linear layer's output, or
/// BERT's `[B, N, H*D] -> [B, N, H, D]` of each of q, k and v (see [`super::bert`]).
fn find_split(cx: &mut ChannelCx) -> bool {
    let n = cx.node;
    let Some(segs) = cx.a.maps.get(&n.inputs[0]).cloned() else {
        return false;
    };
    let (i, o) = (
        cx.shape(&n.inputs[0]).to_vec(),
        cx.shape(&n.outputs[0]).to_vec(),
    );
    let [seg] = segs.as_slice() else {
        return false;
    };
    if cx.a.heads.groups.contains(&seg.group) || i.len() != 3 || cx.axis(0) != 2 || seg.block != 1 {
        return false;
    }
    let split = match o.len() {
        5 if i[..2] == o[..2] && o[2] * o[3] * o[4] == i[2] && o[3] >= 2 => (o[2], o[3], o[4]),
        4 if super::bert::is_head_split(cx, &i, &o) => (1, o[2], o[3]),
        _ => return false,
    };
    let root = cx.a.find(seg.group);
    let producer = match cx.a.producers[root].as_slice() {
        [p] if root == seg.group => p.clone(),
        _ => return false,
    };
    let is_linear = cx
        .graph
        .nodes
        .iter()
        .any(|m: &Node| m.name == producer && matches!(m.op, Op::MatMul));
    if !is_linear {
        return false;
    }
    cx.a.heads.found.insert(producer, split);
    cx.block(&segs, "attention heads (analysed in the next pass)");
    true
}

/// Later passes: the qkv linear layer starts a head group of H channels.
fn produce(cx: &mut ChannelCx, (parts, heads, dim): Split) -> bool {
    let rank = cx.rank();
    if let Some(segs) = cx.input(0) {
        if cx.axis(0) + 1 == rank {
            cx.consume(&segs);
        } else {
            cx.block(&segs, "linear layer over an axis other than the channels'");
        }
    }
    let g = cx.new_group(heads);
    cx.a.heads.groups.insert(g);
    let seg = Segment {
        group: g,
        width: heads,
        block: dim,
    };
    set(cx, vec![seg; parts], rank - 1, true);
    true
}

/// Binary ops: with another head value on the same axis, or with a constant that is one value
/// per channel of the head axis (a bias) or broadcast along it (a scale).
fn binary_ok(cx: &ChannelCx, carried: &[(usize, Vec<Segment>)], ax: usize) -> bool {
    let n = cx.node;
    let rank = cx.shape(&n.outputs[0]).len();
    n.inputs.iter().enumerate().all(|(i, v)| {
        if carried.iter().any(|(j, _)| *j == i) {
            return cx.axis(i) == ax && cx.shape(v).len() == rank;
        }
        let Some(t) = cx.graph.initializers.get(v) else {
            return super::bert::is_head_broadcast(cx, v, ax, rank);
        };
        let full = cx.shape(&n.outputs[0])[ax];
        let off = rank as isize - t.shape.len() as isize;
        // Off the head axis a constant may vary (rotary tables `[N, D]`, a causal mask
        // `[N, N]`) as long as it does not widen the head value.
        let widens = carried
            .iter()
            .any(|(j, _)| cx.shape(&n.inputs[*j]) != cx.shape(&n.outputs[0]));
        !widens
            && t.shape.iter().enumerate().all(|(k, &d)| {
                let at = k as isize + off;
                d == 1 || d == full || at != ax as isize
            })
    })
}

/// Head split, merge, and the dynamo export's fold into the batch axis.
fn reshape(cx: &mut ChannelCx, segs: &[Segment], ax: usize, shape: &[i64], before: bool) -> bool {
    let n = cx.node;
    let (i, o) = (
        cx.shape(&n.inputs[0]).to_vec(),
        cx.shape(&n.outputs[0]).to_vec(),
    );
    let head = |s: &Segment| Segment { block: 1, ..*s };
    match segs {
        // [B, N, P*H*D] -> [B, N, P, H, D]: every part one head block wide per head.
        [s, ..]
            if ax == 2
                && i.len() == 3
                && o.len() == 5
                && i[..2] == o[..2]
                && o[3] == s.width
                && o[4] == s.block
                && segs.iter().all(|t| t == s)
                && o[2] == segs.len() =>
        {
            set(cx, vec![head(s)], 3, before);
        }
        // [B, N, H, D] -> [B, N, H*D] (or [N*B, H*D]): the heads are merged; their gate goes
        // on the input.
        // Grouped-query heads `{KV, block G}` are gated on v (see [`super::gqa`]).
        [s] if super::mha::is_merge(&i, &o, ax) => {
            if s.block == 1 {
                let x = n.inputs[0].clone();
                cx.add_source(s.group, &x);
            }
            let merged = Segment {
                block: i[ax + 1] * s.block,
                ..*s
            };
            set(cx, vec![merged], o.len() - 1, false);
        }
        // [B, N, H*D] -> [B, N, H, D] (BERT: q, k and v each split on their own).
        [s] if super::bert::is_split_of(&i, &o, ax, s) => {
            set(cx, vec![head(s)], 2, before);
        }
        // [B, N, KV*G*D] -> [B, N, KV*G, D] (grouped-query attention's q).
        [s] if super::gqa::split_groups(&i, &o, ax, s).is_some() => {
            let heads = super::gqa::split_groups(&i, &o, ax, s);
            set(cx, heads.into_iter().collect(), 2, before);
        }
        // [B, KV, G, N, D] -> [B, KV*G, N, D] (k and v repeated to the q heads).
        _ if super::gqa::repeat(cx, segs, ax, before) => {}
        // [B, 1, H, N, D] -> [B, H, N, D] (one kv head repeated to the q heads).
        [s] if super::gqa::drops_unit_axis(&i, &o, ax) => {
            set(cx, vec![*s], ax - 1, before);
        }
        // [N, B, P*H*D] -> [N, B, P, H*D] (nn.MultiheadAttention's q, k, v parts).
        [s, ..] if super::mha::is_part_split(&i, &o, ax, segs) => {
            set(cx, vec![*s], 3, before);
        }
        // [N, B, H*D] -> [N, B*H, D] (nn.MultiheadAttention folds the heads into the batch).
        [s] if super::mha::is_last_axis_fold(&i, &o, ax, shape, s) => {
            let out = n.outputs[0].clone();
            cx.a.heads.before_gate.insert(out.clone());
            cx.a.heads.folded.insert(out, (s.group, s.width, ax - 1));
        }
        // [B, H, N, D] -> [B*H, N, D] (dynamo's transpose of K).
        [s] if ax == 1
            && i.len() == 4
            && o.len() == 3
            && shape.first() == Some(&-1)
            && o[0] == i[0] * i[1]
            && o[1..] == i[2..] =>
        {
            let out = n.outputs[0].clone();
            cx.a.heads.before_gate.insert(out.clone());
            cx.a.heads.folded.insert(out, (s.group, s.width, 0));
        }
        _ => {
            cx.block(segs, "reshape that does not split or merge attention heads");
        }
    }
    true
}

/// A value with the heads folded into a batch axis (`axis`): only a transpose and the reshape
/// that unfolds `[.., B*H, ..] -> [.., B, H, ..]` may read it.
fn follow_folded(cx: &mut ChannelCx, g: usize, heads: usize, axis: usize) {
    let n = cx.node;
    let (i, o) = (
        cx.shape(&n.inputs[0]).to_vec(),
        cx.shape(&n.outputs[0]).to_vec(),
    );
    let out = n.outputs[0].clone();
    let seg = Segment {
        group: g,
        width: heads,
        block: 1,
    };
    let reads_first = cx.a.heads.folded.contains_key(&n.inputs[0]);
    match &n.op {
        Op::Transpose { perm } if reads_first => {
            let to = perm.iter().position(|&p| p == axis).unwrap_or(axis);
            cx.a.heads.before_gate.insert(out.clone());
            cx.a.heads.folded.insert(out, (g, heads, to));
        }
        Op::Reshape { shape }
            if reads_first
                && shape.get(axis) == Some(&-1)
                && o.len() == i.len() + 1
                && o[axis + 1] == heads
                && o[axis] * heads == i[axis]
                && o[..axis] == i[..axis]
                && o[axis + 2..] == i[axis + 1..] =>
        {
            set(cx, vec![seg], axis + 1, true);
        }
        _ => {
            let what = "op that reads attention heads folded into the batch axis";
            cx.block(&[seg], what);
            block_all(cx, what);
        }
    }
}

impl Heads {
    /// The head groups (raw ids, before union).
    pub fn groups(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups.iter().copied()
    }

    pub fn with_known(known: BTreeMap<String, Split>) -> Self {
        Heads {
            known,
            ..Heads::default()
        }
    }

    /// Head groups that never reach their merging Reshape: they have no gate. `root` maps a
    /// group to its union (BERT's q, k and v groups meet at QK^T and AV; one merge gates all).
    pub fn unmerged(
        &self,
        sources: &[(usize, String)],
        mut root: impl FnMut(usize) -> usize,
    ) -> Vec<usize> {
        let merged: HashSet<usize> = sources.iter().map(|(s, _)| root(*s)).collect();
        let mut groups: Vec<usize> = self.groups.iter().copied().collect();
        groups.sort_unstable();
        groups.retain(|&g| !merged.contains(&root(g)));
        groups
    }
}
