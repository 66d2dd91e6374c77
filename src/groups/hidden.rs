//! The hidden width of a transformer (CoFi's hidden-dimension mask) as one channel group.
//!
//! The residual stream `[B, N, C]` carries the same C channels through every block: the patch
//! embedding's output channels, the class token and positional embedding (Add constants, or a
//! constant padded into place), every LayerNorm's scale and bias, every projection's input
//! rows (qkv, MLP fc1, the classifier) and every output projection's columns (attention proj,
//! MLP fc2), which the residual Adds tie together. The ordinary rules follow channels on axis
//! 1; here they are followed through the ops that carry the stream on its last axis: the
//! patch embedding's `[B, C, H, W] -> [B, C, HW]` reshape and transpose, padding of the token
//! axis, Adds of constants, LayerNormalization over the channel axis, and the slice that takes
//! the class token out. A token model's embedding tables (`Gather` of ids) start the group:
//! their columns are its channels.
//!
//! LayerNormalization mixes the channels it normalises: removing dims changes its mean and
//! variance. The gated network therefore normalises over the open channels only (those whose
//! gate value is not 0) and writes 0 at the closed ones, which is what the pruned network's
//! LayerNorm computes over the kept channels. Each such LayerNorm is recorded (`norms`) so the
//! interpreter and the masked reference apply that rule (see `ops::layer_norm`).
//!
//! The rules here apply only to graphs with a LayerNormalization over the last axis (a
//! transformer), so convolutional networks are analysed exactly as before.

use super::{ChannelCx, Segment};
use crate::ir::{Graph, Op};

/// Hidden-width state of one analysis pass.
#[derive(Default)]
pub struct Hidden {
    /// Does the graph normalise a token sequence over its last axis (a transformer)?
    active: bool,
    /// (group, LayerNorm output) of each LayerNorm over a group's channels.
    pub norms: Vec<(usize, String)>,
}

impl Hidden {
    pub fn new(graph: &Graph, shapes: &std::collections::HashMap<String, Vec<usize>>) -> Self {
        // A LayerNorm over a token sequence's last axis, or its written-out form (a mean over
        // the last axis of a [B, N, C] value), which is then refused with its reason.
        let active = graph.nodes.iter().any(|n| {
            let Some(s) = shapes.get(&n.inputs[0]) else {
                return false;
            };
            let last = |axes: &[i64]| {
                s.len() == 3 && axes.len() == 1 && reduces(axes, s.len() - 1, s.len())
            };
            match &n.op {
                Op::LayerNorm(ln) => s.len() >= 3 && ln.first_axis(s.len()) == Ok(s.len() - 1),
                Op::ReduceMean { axes, .. } => last(axes),
                Op::Reduce(r) => last(&r.axes),
                _ => false,
            }
        });
        Hidden {
            active,
            norms: Vec::new(),
        }
    }
}

/// Follows the residual stream through `cx.node`; true when the node was handled here (the
/// ordinary channel rule is skipped).
pub fn follow(cx: &mut ChannelCx) -> bool {
    if !cx.a.hidden.active {
        return false;
    }
    let n = cx.node;
    if let Op::Gather(g) = &n.op {
        return embedding(cx, g.axis);
    }
    let Some((first, segs)) =
        (0..n.inputs.len()).find_map(|i| cx.a.maps.get(&n.inputs[i]).map(|s| (i, s.clone())))
    else {
        return false;
    };
    let ax = cx.axis(first);
    let x = cx.shape(&n.inputs[first]).to_vec();
    let y = cx.shape(&n.outputs[0]).to_vec();
    match &n.op {
        // The patch embedding's [B, C, H, W] -> [B, C, H*W].
        Op::Reshape { .. } if ax == 1 && x.len() == 4 && y.len() == 3 && x[..2] == y[..2] => {
            set(cx, segs, 1)
        }
        // Rows regrouped around a last channel axis ([T*B, C] <-> [T, B, C]).
        Op::Reshape { .. }
            if ax + 1 == x.len() && y.len() >= 2 && y.len() != x.len() && y.last() == x.last() =>
        {
            set(cx, segs, y.len() - 1)
        }
        Op::Transpose { perm } => match perm.iter().position(|&p| p == ax) {
            Some(to) => set(cx, segs, to),
            None => false,
        },
        Op::Pad { pads, .. } if first == 0 && pads[ax] == 0 && pads[ax + x.len()] == 0 => {
            set(cx, segs, ax)
        }
        Op::Slice(s) if first == 0 && !s.axes.contains(&ax) => set(cx, segs, ax),
        Op::Squeeze(s) if first == 0 && !s.axes.contains(&ax) => {
            let shift = s.axes.iter().filter(|&&a| a < ax).count();
            set(cx, segs, ax - shift)
        }
        Op::Binary(_) if ax != 1 && n.inputs.len() == 2 => add_constant(cx, first, segs, ax),
        Op::Concat { axis } => concat(cx, *axis, segs, ax),
        Op::LayerNorm(ln) if first == 0 && ax + 1 == x.len() => {
            if ln.first_axis(x.len()) != Ok(ax) {
                return false;
            }
            match segs.as_slice() {
                [s] if s.block == 1 => {
                    let out = n.outputs[0].clone();
                    cx.a.hidden.norms.push((s.group, out));
                }
                _ => cx.block(&segs, "layer normalisation over several channel groups"),
            }
            set(cx, segs, ax)
        }
        Op::ReduceMean { axes, .. } | Op::Reduce(crate::ops::reduce::Reduce { axes, .. })
            if reduces(axes, ax, x.len()) =>
        {
            cx.block(
                &segs,
                "reduction over the hidden width (a LayerNorm written out as ReduceMean/Sub/Pow/Sqrt/Div is not followed; export it as LayerNormalization, opset 17 or later)",
            );
            true
        }
        _ => false,
    }
}

/// Do reduction `axes` (empty: all) include `ax` of a rank-`rank` input?
fn reduces(axes: &[i64], ax: usize, rank: usize) -> bool {
    axes.is_empty()
        || axes
            .iter()
            .any(|&a| crate::ir::shape::norm_axis(a, rank) == Ok(ax))
}

/// A token embedding `table[V, C]` gathered by ids `[B, N]`: the table's columns start a
/// group on the output's last axis (gated there), sliced with it.
fn embedding(cx: &mut ChannelCx, axis: usize) -> bool {
    let n = cx.node;
    let table = &n.inputs[0];
    let (t, y) = (cx.shape(table).to_vec(), cx.shape(&n.outputs[0]).to_vec());
    if !cx.is_const(table) || axis != 0 || t.len() != 2 || y.len() != 3 {
        return false;
    }
    if n.inputs.iter().any(|v| cx.a.maps.contains_key(v)) {
        return false;
    }
    let g = cx.new_group(t[1]);
    let out = n.outputs[0].clone();
    cx.add_source(g, &out);
    let seg = Segment {
        group: g,
        width: t[1],
        block: 1,
    };
    set(cx, vec![seg], 2)
}

/// The output carries `segs` on `axis`.
fn set(cx: &mut ChannelCx, segs: Vec<Segment>, axis: usize) -> bool {
    cx.set_output_on(segs, axis);
    true
}

/// A token sequence plus (or times) a constant: a bias per channel, a positional embedding
/// `[1, N, C]`, or a class token padded into its place. The constant is sliced with the
/// channels; the other cases (two computed values) are the ordinary rule's.
fn add_constant(cx: &mut ChannelCx, first: usize, segs: Vec<Segment>, ax: usize) -> bool {
    let n = cx.node;
    let other = &n.inputs[1 - first];
    if cx.a.maps.contains_key(other) {
        return false;
    }
    let out = cx.shape(&n.outputs[0]).to_vec();
    if cx.shape(&n.inputs[first]).len() != out.len() {
        return false;
    }
    let fits = |shape: &[usize]| {
        let off = out.len() as isize - shape.len() as isize;
        off >= 0
            && shape.iter().enumerate().all(|(i, &d)| {
                let at = (i as isize + off) as usize;
                d == 1 || d == out[at]
            })
    };
    if cx.is_const(other) {
        if !fits(cx.shape(other)) {
            return false;
        }
        return set(cx, segs, ax);
    }
    // A value computed from constants only (the class token padded in front of the patches,
    // plus the positional embedding): it carries the channels too, so the surgery slices the
    // constants under it.
    let mut chain = Vec::new();
    if !constant_chain(cx, other, ax, out.len(), &mut chain) {
        return false;
    }
    for v in chain {
        cx.a.axes.insert(v.clone(), ax);
        cx.a.set(&v, segs.clone(), false);
    }
    set(cx, segs, ax)
}

/// Token sequences joined on a token axis (not `ax`): timm's and torchvision's
/// `cat(cls_token.expand(B, -1, -1), x)`. Each other input carries the same channels on `ax`
/// (their groups are tied), or is a class token: a learned constant expanded to the batch,
/// read by this Concat only, which then carries the channels too, so the surgery slices it.
/// Anything else is the ordinary rule's (it blocks).
fn concat(cx: &mut ChannelCx, axis: i64, segs: Vec<Segment>, ax: usize) -> bool {
    let n = cx.node;
    let rank = cx.shape(&n.outputs[0]).len();
    if crate::ir::shape::norm_axis(axis, rank).is_ok_and(|a| a == ax) {
        return false;
    }
    let same_layout = |other: &[Segment]| {
        other
            .iter()
            .map(|s| (s.width, s.block))
            .eq(segs.iter().map(|s| (s.width, s.block)))
    };
    let mut ties = Vec::new();
    let mut tokens = Vec::new();
    for (i, v) in n.inputs.iter().enumerate() {
        match cx.a.maps.get(v) {
            Some(other) if cx.axis(i) == ax && same_layout(other) => ties.push(other.clone()),
            Some(_) => return false,
            None if class_token(cx, v, ax, rank) => tokens.push(v.clone()),
            None => return false,
        }
    }
    for other in ties {
        for (a, b) in segs.iter().zip(&other) {
            cx.union(a.group, b.group);
        }
    }
    for v in tokens {
        cx.a.axes.insert(v.clone(), ax);
        cx.a.set(&v, segs.clone(), false);
    }
    set(cx, segs, ax)
}

/// Is `value` a constant of rank `rank`, one value per channel on `ax`, expanded to the batch
/// size (`Expand` reading the batch from a value) and read by the current node only?
fn class_token(cx: &ChannelCx, value: &str, ax: usize, rank: usize) -> bool {
    let Some(p) = cx.graph.nodes.iter().find(|m| m.outputs[0] == value) else {
        return false;
    };
    let Op::Expand(e) = &p.op else {
        return false;
    };
    let token = &p.inputs[0];
    let (t, y) = (cx.shape(token), cx.shape(value));
    let readers = cx
        .graph
        .nodes
        .iter()
        .filter(|m| m.inputs.iter().any(|i| i == value));
    !e.from_input.is_empty()
        && cx.is_const(token)
        && t.len() == rank
        && y.len() == rank
        && t[ax] == y[ax]
        && readers.count() == 1
}

/// Is `value` computed from constants only by Pads (not along `ax`) and Binary ops, each of
/// rank `rank`? Collects the computed values into `chain`.
fn constant_chain(
    cx: &ChannelCx,
    value: &str,
    ax: usize,
    rank: usize,
    chain: &mut Vec<String>,
) -> bool {
    if cx.is_const(value) {
        return true;
    }
    if cx.a.maps.contains_key(value) || cx.shape(value).len() != rank || chain.len() > 8 {
        return false;
    }
    let Some(p) = cx.graph.nodes.iter().find(|m| m.outputs[0] == value) else {
        return false;
    };
    let width = cx.shape(value)[ax];
    // A constant read here is sliced along the channel axis: it must hold one value per
    // channel there (or one for all, broadcast).
    let along = |i: &str, broadcast: bool| {
        let s = cx.shape(i);
        let at = (ax + s.len()).checked_sub(rank);
        s.len() <= rank && at.is_some_and(|a| s[a] == width || (broadcast && s[a] == 1))
    };
    let ok = match &p.op {
        Op::Pad { pads, .. } => {
            pads[ax] == 0
                && pads[ax + rank] == 0
                && along(&p.inputs[0], false)
                && constant_chain(cx, &p.inputs[0], ax, rank, chain)
        }
        Op::Binary(_) => p
            .inputs
            .iter()
            .all(|i| along(i, true) && (cx.is_const(i) || constant_chain(cx, i, ax, rank, chain))),
        _ => false,
    };
    if ok {
        chain.push(value.to_string());
    }
    ok
}
