//! Attention heads of BERT-style encoders (HuggingFace form), as both PyTorch exporters write
//! them once the shape chains are folded: separate q, k and v linear layers, each
//!
//! MatMul `[B, N, H*D]` (+ bias) -> Reshape `[B, N, H, D]` -> Transpose (heads to axis 1; K
//! also moves D before N) -> QK^T, scale, additive mask `[B, 1, 1, N]`, softmax, AV ->
//! Transpose `[B, N, H, D]` -> Reshape `[B, N, H*D]` -> output projection.
//!
//! Each of q, k and v starts its own head group (see [`super::heads`]); QK^T joins q's and
//! k's, AV joins v's, so the block's heads are one group of H channels with three producers
//! (head h is D columns of each of q, k and v, and D rows of the output projection), gated
//! at the merge like timm's.

use super::{ChannelCx, Segment};
use crate::ir::Op;

/// First pass: `[B, N, H*D] -> [B, N, H, D]` whose every reader is a Transpose that brings
/// the heads next to the batch axis (so a plain `[.., P, E]` part split, which
/// nn.MultiheadAttention's in_proj reshape looks like, is not taken for heads).
pub(super) fn is_head_split(cx: &ChannelCx, i: &[usize], o: &[usize]) -> bool {
    let n = cx.node;
    let shape_ok = i.len() == 3
        && o.len() == 4
        && i[..2] == o[..2]
        && o[2] >= 2
        && o[3] >= 2
        && o[2] * o[3] == i[2];
    let out = &n.outputs[0];
    let mut readers = cx
        .graph
        .nodes
        .iter()
        .filter(|m| m.inputs.contains(out))
        .peekable();
    shape_ok
        && readers.peek().is_some()
        && readers.all(|m| {
            matches!(&m.op, Op::Transpose { perm } if perm.first() == Some(&0) && perm.get(1) == Some(&2))
        })
}

/// Later passes: the same split of a head group's `{H, block D}` layout.
pub(super) fn is_split_of(i: &[usize], o: &[usize], ax: usize, s: &Segment) -> bool {
    ax == 2
        && i.len() == 3
        && o.len() == 4
        && i[..2] == o[..2]
        && s.block > 1
        && o[2] == s.width
        && o[3] == s.block
}

/// A computed value without channels that is one value for every head (size 1 on the head
/// axis), as BERT's additive attention mask `[B, 1, 1, N]`.
pub(super) fn is_head_broadcast(cx: &ChannelCx, v: &str, ax: usize, rank: usize) -> bool {
    if cx.a.maps.contains_key(v) || cx.a.heads.folded.contains_key(v) {
        return false;
    }
    let shape = cx.shape(v);
    let Some(off) = rank.checked_sub(shape.len()) else {
        return false;
    };
    ax < off || shape[ax - off] == 1
}
