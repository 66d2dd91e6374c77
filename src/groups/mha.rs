//! Attention heads of `nn.MultiheadAttention` (and so `nn.TransformerEncoderLayer`'s reference
//! path), as both PyTorch exporters write it once the shape chains are folded:
//!
//! in_proj MatMul `[N, B, P*E]` (+ bias) -> Reshape `[N, B, P, E]` -> Unsqueeze, Transpose,
//! Squeeze (the parts to the front) -> per part Slice + Squeeze `[N, B, E]` -> Reshape
//! `[N, B*H, D]` (heads folded into the batch) -> Transpose `[B*H, N, D]` -> Reshape
//! `[B, H, N, D]` -> scaled dot product as in timm-style attention -> Transpose `[N, B, H, D]`
//! -> Reshape `[N*B, E]` -> out_proj Gemm.
//!
//! The head count appears only where the heads are folded into the batch, after the parts are
//! split, so the first pass finds those folds and walks back to the in_proj MatMul; the next
//! pass starts that MatMul as a head group (see [`super::heads`]) and follows it forward,
//! checking every step (these predicates), so a walk back that guessed wrong only fixes the
//! group.

use super::{ChannelCx, Segment};
use crate::ir::{BinaryOp, Node, Op};

/// Steps the walk back from a fold to its in_proj MatMul may take at most.
const MAX_WALK: usize = 16;

/// `[N, B, P*E] -> [N, B, P, E]` on the last axis, every part the same head layout.
pub(super) fn is_part_split(i: &[usize], o: &[usize], ax: usize, segs: &[Segment]) -> bool {
    let Some(s) = segs.first() else { return false };
    ax == 2
        && i.len() == 3
        && o.len() == 4
        && i[..2] == o[..2]
        && o[2] == segs.len()
        && segs.len() > 1
        && segs.iter().all(|t| t == s)
        && o[3] == s.width * s.block
        && s.block > 1
}

/// `[.., B, H*D] -> [.., B*H, D]`: the heads of the last axis folded into the axis before it,
/// which the target leaves to the batch size (-1), so it needs no rewrite.
pub(super) fn is_last_axis_fold(
    i: &[usize],
    o: &[usize],
    ax: usize,
    shape: &[i64],
    s: &Segment,
) -> bool {
    ax >= 1
        && ax + 1 == i.len()
        && i.len() == o.len()
        && shape.get(ax - 1) == Some(&-1)
        && s.block > 1
        && o[ax] == s.block
        && o[ax - 1] == i[ax - 1] * s.width
        && o[..ax - 1] == i[..ax - 1]
}

/// `[.., H, D] -> [.., H*D]`, the leading axes kept (timm) or merged (`[N, B, H, D] -> [N*B,
/// H*D]`).
pub(super) fn is_merge(i: &[usize], o: &[usize], ax: usize) -> bool {
    let lead = |d: &[usize]| d.iter().product::<usize>();
    ax + 2 == i.len()
        && o.len() >= 2
        && o.len() <= ax + 1
        && o[o.len() - 1] == i[ax] * i[ax + 1]
        && lead(&o[..o.len() - 1]) == lead(&i[..ax])
        && (o.len() < ax + 1 || o[..ax] == i[..ax])
}

/// First pass: a Reshape `[.., B, E] -> [.., B*H, D]` (the batch left to -1) whose input comes
/// from one constant-weight MatMul through part-splitting ops records that MatMul as a head
/// producer of `P = columns / E` parts of H heads of D columns.
pub(super) fn find_fold_split(cx: &mut ChannelCx) {
    let n = cx.node;
    let Op::Reshape { shape } = &n.op else { return };
    let (i, o) = (cx.shape(&n.inputs[0]), cx.shape(&n.outputs[0]));
    let r = i.len();
    if r < 2 || o.len() != r || o[r - 1] < 1 || !i[r - 1].is_multiple_of(o[r - 1]) {
        return;
    }
    let (e, d) = (i[r - 1], o[r - 1]);
    let h = e / d;
    let ok = h >= 2
        && shape.get(r - 2) == Some(&-1)
        && o[r - 2] == i[r - 2] * h
        && o[..r - 2] == i[..r - 2];
    if !ok {
        return;
    }
    let Some(producer) = walk_back(cx, &n.inputs[0]) else {
        return;
    };
    let cols = cx.shape(&producer.outputs[0]).last().copied().unwrap_or(0);
    if cols == 0 || !cols.is_multiple_of(e) {
        return;
    }
    let name = producer.name.clone();
    if !cx.a.heads.known.contains_key(&name) {
        cx.a.heads.found.insert(name, (cols / e, h, d));
    }
}

/// The constant-weight MatMul that `value` comes from through ops that only move or pick
/// parts of its columns (and a constant bias Add).
fn walk_back<'g>(cx: &ChannelCx<'g>, value: &str) -> Option<&'g Node> {
    let graph = cx.graph;
    let mut v = value.to_string();
    for _ in 0..MAX_WALK {
        let node = graph.nodes.iter().find(|m| m.outputs.contains(&v))?;
        let data = |k: usize| node.inputs.get(k).cloned();
        v = match &node.op {
            Op::MatMul if cx.is_const(&node.inputs[1]) => return Some(node),
            Op::Squeeze(_)
            | Op::Unsqueeze(_)
            | Op::Transpose { .. }
            | Op::Slice(_)
            | Op::Reshape { .. } => data(0)?,
            Op::Binary(BinaryOp::Add) => node
                .inputs
                .iter()
                .find(|x| !cx.is_const(x))
                .filter(|_| node.inputs.iter().any(|x| cx.is_const(x)))?
                .clone(),
            _ => return None,
        };
    }
    None
}
