//! Grouped-query attention (LLaMA-style decoders, both PyTorch exporters): q has H heads, k and
//! v have KV heads, and each kv head serves G = H / KV consecutive q heads. After import:
//!
//! q, k, v MatMul -> Reshape `[B, N, heads, D]` -> Transpose (heads to axis 1) -> rotary
//! embedding (`x * cos + rotate_half(x) * sin`, rotate-half by Slice/Neg/Concat on the last
//! axis, cos/sin constants `[N, D]`) -> k and v repeated to the q heads (`repeat_kv`: Unsqueeze
//! `[B, KV, 1, N, D]` -> Expand `[B, KV, G, N, D]` -> Reshape `[B, KV*G, N, D]`) -> QK^T, scale,
//! causal mask, softmax, AV -> Transpose -> Reshape `[B, N, H*D]` -> o projection.
//!
//! The channel is one kv group: a kv head with the G q heads that share it. Pruning whole kv
//! groups keeps the repeat factor G, so every head count in the file (q's split H = KV*G, k's
//! and v's split KV, the Expand's KV, the repeat's KV*G, the merge's KV*G*D) is rewritten to
//! what survives and the structure stays valid by construction. head_dim is never a channel
//! (the rotary tables are per head_dim).
//!
//! k and v start groups of KV heads like BERT's (see [`super::bert`]); the repeat turns them
//! into `{KV, block G}` on the head axis. The pass that sees q (H heads, block 1) meet a
//! repeated k of `{KV, block G}` at QK^T records q's producer again with KV channels of G*D
//! columns, so the next pass lays q out as `{KV, block G}` too and QK^T joins q's and k's
//! groups, AV v's. The gate sits on v before the repeat (one value per kv head, block 1): a
//! kv group's output is linear in its v, so scaling v scales the G heads' output, which is
//! the head mask of CoFi per kv group.
//!
//! With one kv head (multi-query attention) the channel is a q head instead: k and v are one
//! head broadcast to all q heads (`Expand [B, 1, 1, N, D] -> [B, 1, H, N, D]`, Reshape
//! `[B, H, N, D]`), so the pass that sees q meet such a value at QK^T records that Expand (as
//! the split `(0, H, 0)`); the next pass starts a head group of H channels at each such Expand
//! (no gate there: zeroing k would not close a head), QK^T and AV join them with q's heads,
//! and the gate sits at the merge as for BERT. Pruning rewrites the Expand's H and the
//! Reshape's H to the q heads that survive.

use super::{ChannelCx, Segment};
use crate::ir::Op;

/// `[B, N, KV*G*D] -> [B, N, KV*G, D]`: q split into H heads while its channels are kv groups
/// of G*D columns; the head axis becomes `{KV, block G}`.
pub(super) fn split_groups(i: &[usize], o: &[usize], ax: usize, s: &Segment) -> Option<Segment> {
    let ok = ax == 2
        && i.len() == 3
        && o.len() == 4
        && i[..2] == o[..2]
        && o[3] >= 1
        && s.block > o[3]
        && s.block.is_multiple_of(o[3])
        && o[2] == s.width * (s.block / o[3]);
    ok.then(|| Segment {
        block: s.block / o[3],
        ..*s
    })
}

/// An Expand of a head value that only broadcasts size-1 axes other than the head axis
/// (`[B, KV, 1, N, D] -> [B, KV, G, N, D]`): the heads keep their layout. The value before it
/// is remembered as where a gate can sit, when the heads are one value each there.
pub(super) fn expand(cx: &mut ChannelCx, segs: Vec<Segment>, ax: usize, before: bool) -> bool {
    let n = cx.node;
    let (i, o) = (
        cx.shape(&n.inputs[0]).to_vec(),
        cx.shape(&n.outputs[0]).to_vec(),
    );
    let keeps =
        i.len() == o.len() && i[ax] == o[ax] && i.iter().zip(&o).all(|(&a, &b)| a == b || a == 1);
    if !keeps {
        return false;
    }
    if let [s] = segs.as_slice()
        && s.block == 1
    {
        let (from, to) = (n.inputs[0].clone(), n.outputs[0].clone());
        cx.a.heads.repeat_source.insert(to, from);
    }
    super::heads::set(cx, segs, ax, before);
    true
}

/// `[B, KV, G, N, D] -> [B, KV*G, N, D]` of an Expand's output that repeated each head G
/// times: the head axis becomes `{KV, block G}` (LLaMA's `repeat_kv`).
pub(super) fn repeat(cx: &mut ChannelCx, segs: &[Segment], ax: usize, before: bool) -> bool {
    let n = cx.node;
    let (i, o) = (cx.shape(&n.inputs[0]), cx.shape(&n.outputs[0]));
    let Some(source) = cx.a.heads.repeat_source.get(&n.inputs[0]).cloned() else {
        return false;
    };
    let [s] = segs else { return false };
    let ok = o.len() + 1 == i.len()
        && ax + 1 < i.len()
        && o[..ax] == i[..ax]
        && o[ax] == i[ax] * i[ax + 1]
        && o[ax + 1..] == i[ax + 2..]
        && i[ax] == s.width * s.block;
    if !ok {
        return false;
    }
    let repeated = Segment {
        block: s.block * i[ax + 1],
        ..*s
    };
    let out = n.outputs[0].clone();
    cx.a.heads.repeat_source.insert(out, source);
    super::heads::set(cx, vec![repeated], ax, before);
    true
}

/// QK^T (or AV) of q with H heads of block 1 and a repeated k (or v) of `{KV, block G}`: q's
/// producer is recorded with KV channels of G*D columns for the next pass.
pub(super) fn regroup_queries(cx: &mut ChannelCx, q: &Segment, kv: &Segment) {
    if q.block != 1 || kv.block < 2 || q.width != kv.width * kv.block {
        return;
    }
    let root = cx.a.find(q.group);
    let producer = match cx.a.producers[root].as_slice() {
        [p] if root == q.group => p.clone(),
        _ => return,
    };
    let Some(&(1, heads, dim)) = cx.a.heads.known.get(&producer) else {
        return;
    };
    if heads == q.width {
        let split = (1, kv.width, kv.block * dim);
        cx.a.heads.found.insert(producer, split);
        let seg = Segment { block: 1, ..*q };
        cx.block(&[seg], "grouped-query heads (analysed in the next pass)");
    }
}

/// AV with a repeated v: the gate of the joined group goes on v before the repeat, one value
/// per kv head.
pub(super) fn gate_on_values(cx: &mut ChannelCx, group: usize) {
    let n = cx.node;
    if !matches!(n.op, Op::MatMul) {
        return;
    }
    if let Some(source) = cx.a.heads.repeat_source.get(&n.inputs[1]).cloned() {
        cx.add_source(group, &source);
    }
}

/// `[B, 1, H, N, D] -> [B, H, N, D]`: a size-1 axis before the head axis dropped (never the
/// batch axis, which is 1 in the analysis's shapes).
pub(super) fn drops_unit_axis(i: &[usize], o: &[usize], ax: usize) -> bool {
    ax >= 2
        && o.len() + 1 == i.len()
        && i[ax - 1] == 1
        && o[..ax - 1] == i[..ax - 1]
        && o[ax - 1..] == i[ax..]
}

/// The Expand that broadcasts one kv head to `heads` q heads, when `value` comes from it
/// through a Reshape dropping the size-1 kv axis and Transposes.
fn broadcast_of<'g>(cx: &ChannelCx<'g>, value: &str, heads: usize) -> Option<&'g crate::ir::Node> {
    let graph = cx.graph;
    let producer = |v: &str| {
        graph
            .nodes
            .iter()
            .find(|m| m.outputs.iter().any(|o| o == v))
    };
    let mut node = producer(value)?;
    while matches!(node.op, Op::Transpose { .. }) {
        node = producer(&node.inputs[0])?;
    }
    if !matches!(node.op, Op::Reshape { .. }) {
        return None;
    }
    let expand = producer(&node.inputs[0])?;
    let (i, o) = (cx.shape(&expand.inputs[0]), cx.shape(&expand.outputs[0]));
    let (r, m) = (cx.shape(&node.inputs[0]), cx.shape(&node.outputs[0]));
    let axis = (0..o.len()).find(|&a| i.get(a) == Some(&1) && o[a] == heads)?;
    let ok = matches!(expand.op, Op::Expand(_))
        && i.len() == o.len()
        && axis >= 1
        && i[axis - 1] == 1
        && drops_unit_axis(r, m, axis);
    ok.then_some(expand)
}

/// QK^T (or AV) of q's H heads with a computed operand that is one kv head broadcast to them
/// (multi-query attention): the Expand is recorded to start a head group in the next pass.
pub(super) fn find_broadcast(cx: &mut ChannelCx, segs: &[Segment]) -> bool {
    let n = cx.node;
    let [q] = segs else { return false };
    if q.block != 1 {
        return false;
    }
    let Some(expand) = broadcast_of(cx, &n.inputs[1], q.width) else {
        return false;
    };
    let name = expand.name.clone();
    if cx.a.heads.known.contains_key(&name) {
        return false;
    }
    cx.a.heads.found.insert(name, (0, q.width, 0));
    cx.block(segs, "multi-query heads (analysed in the next pass)");
    true
}

/// Later passes: a recorded Expand starts a head group of `heads` channels at its output,
/// with no gate of its own (it joins q's heads at QK^T and AV).
pub(super) fn broadcast_heads(cx: &mut ChannelCx, heads: usize) -> bool {
    let n = cx.node;
    let (i, o) = (cx.shape(&n.inputs[0]), cx.shape(&n.outputs[0]));
    let Some(axis) = (0..o.len()).find(|&a| i.get(a) == Some(&1) && o[a] == heads) else {
        return false;
    };
    let g = cx.new_group(heads);
    cx.a.heads.groups.insert(g);
    let seg = Segment {
        group: g,
        width: heads,
        block: 1,
    };
    super::heads::set(cx, vec![seg], axis, true);
    true
}
