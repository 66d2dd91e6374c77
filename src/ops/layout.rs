//! Data movement without arithmetic: Flatten, Reshape, Transpose, Concat, Pad, Identity (and
//! Dropout, which is Identity in eval mode).

use burn::prelude::*;
use burn::tensor::ops::PadMode as BurnPadMode;

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::MAX_RANK;
use crate::groups::{ChannelCx, Segment};
use crate::ir::shape::{norm_axis, reshape_target};
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

impl PadMode {
    pub fn onnx_name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
        }
    }
}

/// The fields of `Op::Flatten`.
pub struct Flatten {
    pub axis: i64,
}

/// The fields of `Op::Reshape`. ONNX semantics: 0 copies the input dim (allowzero = 0), -1 is
/// inferred.
pub struct Reshape<'a> {
    pub shape: &'a [i64],
}

/// The fields of `Op::Transpose`.
pub struct Transpose<'a> {
    pub perm: &'a [usize],
}

/// The fields of `Op::Concat`.
pub struct Concat {
    pub axis: i64,
}

/// The fields of `Op::Pad`: `pads` as in ONNX (all begins, then all ends); negative pads crop
/// (constant mode only).
pub struct Pad<'a> {
    pub pads: &'a [i64],
    pub mode: PadMode,
    pub value: f32,
}

/// `Op::Identity`: Dropout (eval) and Identity both pass their input through.
pub struct Identity;

pub(crate) fn import_flatten(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    Ok((
        Op::Flatten {
            axis: cx.attrs.int("axis", 1),
        },
        vec![0],
    ))
}

pub(crate) fn import_reshape(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let allowzero = a.int("allowzero", 0) != 0;
    let shape = if cx.opset < 5 {
        a.ints("shape").unwrap_or_default()
    } else {
        import_reshape_target(cx, allowzero)?
    };
    Ok((Op::Reshape { shape }, vec![0]))
}

/// Resolves Reshape's shape input, turning batch-dependent elements into 0 or -1: the value in
/// the two import probes differs exactly where the batch size enters.
/// With `allowzero` a 0 in the target is a literal 0 (refused); a batch-dependent
/// element still becomes 0 (copy) or -1, which needs no allowzero on export.
fn import_reshape_target(cx: &ImportCx, allowzero: bool) -> Result<Vec<i64>> {
    let a = &cx.attrs;
    let input = cx
        .node
        .input
        .get(1)
        .ok_or_else(|| a.err("shape input is required"))?;
    let Some((t0, t1)) = cx.probe_consts(1) else {
        return Err(a.err(format!(
            "shape input '{input}' must be computable at import (constant or from static shapes)"
        )));
    };
    let (t0, t1) = (t0.to_i64_vec(), t1.to_i64_vec());
    let (x0, x1) = cx
        .probe_shapes(0)
        .ok_or_else(|| a.err("input shape unknown"))?;
    let mut out = Vec::with_capacity(t0.len());
    for (i, (&p, &q)) in t0.iter().zip(&t1).enumerate() {
        if p == q {
            if allowzero && p == 0 {
                return Err(a.err("allowzero = 1 with a 0 in the target shape is not supported"));
            }
            out.push(p);
        } else if x0.get(i) == Some(&(p as usize)) && x1.get(i) == Some(&(q as usize)) {
            out.push(0);
        } else {
            out.push(-1);
        }
    }
    if out.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(a.err(format!(
            "target shape {t0:?} has more than one batch-dependent dim"
        )));
    }
    Ok(out)
}

pub(crate) fn import_transpose(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let rank = cx
        .input_shape(0)
        .map(|s| s.len())
        .ok_or_else(|| a.err("input shape unknown"))?;
    let perm = match a.usizes("perm")? {
        Some(p) => p,
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(a.err(format!("perm {perm:?} is not a permutation of 0..{rank}")));
    }
    Ok((Op::Transpose { perm }, vec![0]))
}

pub(crate) fn import_concat(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    // Opsets 1-3 default to axis 1; later ones require the attribute.
    if !a.has("axis") && cx.opset >= 4 {
        return Err(a.err("axis is required"));
    }
    Ok((
        Op::Concat {
            axis: a.int("axis", 1),
        },
        (0..cx.node.input.len()).collect(),
    ))
}

pub(crate) fn import_pad(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let (pads, mode, value, axes) = if cx.opset < 11 {
        let pads = a
            .ints("pads")
            .or_else(|| a.ints("paddings"))
            .ok_or_else(|| a.err("pads is required"))?;
        (
            pads,
            a.string("mode", "constant"),
            a.float("value", 0.0),
            None,
        )
    } else {
        let pads = cx
            .const_input(1)?
            .ok_or_else(|| a.err("pads input is required"))?
            .to_i64_vec();
        let value = match cx.const_input(2)? {
            Some(t) => t.to_f32_vec().first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        let axes = cx.const_input(3)?.map(|t| t.to_i64_vec());
        (pads, a.string("mode", "constant"), value, axes)
    };
    let mode = match mode.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => return Err(a.err(format!("mode '{other}' is not supported"))),
    };
    if mode != PadMode::Constant && pads.iter().any(|&p| p < 0) {
        return Err(a.err("negative pads are only supported in constant mode"));
    }
    let rank = cx
        .input_shape(0)
        .map(|s| s.len())
        .ok_or_else(|| a.err("input shape unknown"))?;
    let pads = match axes {
        None => pads,
        Some(axes) => {
            // Expand per-axis pads to the full rank.
            let mut full = vec![0; 2 * rank];
            for (k, &ax) in axes.iter().enumerate() {
                let ax = norm_axis(ax, rank).map_err(|e| a.err(e))?;
                full[ax] = pads[k];
                full[ax + rank] = pads[k + axes.len()];
            }
            full
        }
    };
    Ok((Op::Pad { pads, mode, value }, vec![0]))
}

pub(crate) fn import_dropout(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    if cx.node.output.get(1).is_some_and(|s| !s.is_empty()) {
        // The mask output is only meaningful in training; refuse rather than guess.
        return Err(cx.attrs.err("the mask output is not supported"));
    }
    // Opset 12+: a training_mode input that is not a constant false means real dropout.
    if cx.present(2) {
        let training = cx.const_input(2).ok().flatten();
        if !training.is_some_and(|t| t.to_i64_vec().iter().all(|&v| v == 0)) {
            return Err(cx.attrs.err("training mode (input 2) is not supported"));
        }
    }
    Ok((Op::Identity, vec![0]))
}

pub(crate) fn import_identity(_cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    Ok((Op::Identity, vec![0]))
}

fn first(ins: &[&[usize]]) -> Vec<usize> {
    ins.first().copied().unwrap_or(&[]).to_vec()
}

/// Channel rule of the flatten forms: each channel becomes a block of its spatial features.
fn flatten_channels(cx: &mut ChannelCx) {
    if let Some(segs) = cx.input(0) {
        let spatial: usize = cx.shape(&cx.node.inputs[0])[2..].iter().product();
        let segs = segs
            .iter()
            .map(|s| Segment {
                block: s.block * spatial,
                ..*s
            })
            .collect();
        cx.set_output(segs);
    }
}

/// A removed channel's constant, read at its first feature of the flattened block.
fn flattened_value(cx: &SurgeryCx, n: &Node, f: usize) -> Option<f32> {
    let x = &n.inputs[0];
    let spatial: usize = cx.shape(x)[2..].iter().product();
    cx.state(x, f / spatial.max(1))
}

impl OpRules for Flatten {
    fn onnx_type(&self) -> &'static str {
        "Flatten"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("axis", self.axis);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = first(ins);
        let a = if self.axis < 0 {
            self.axis + x.len() as i64
        } else {
            self.axis
        };
        if a < 0 || a > x.len() as i64 {
            return Err(format!(
                "axis {} is out of range for rank {}",
                self.axis,
                x.len()
            ));
        }
        let a = a as usize;
        Ok(vec![x[..a].iter().product(), x[a..].iter().product()])
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let dims = x.dims();
        let target = self.shape(&[&dims]).expect("checked at plan time");
        x.reshape(&target)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let rank = cx.rank();
        if self.axis == 1 || self.axis == 1 - rank as i64 {
            flatten_channels(cx);
        } else {
            cx.block_inputs("op without a channel pruning rule");
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, _: Option<f32>) -> Option<f32> {
        flattened_value(cx, n, f)
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for Reshape<'_> {
    fn onnx_type(&self) -> &'static str {
        "Reshape"
    }

    fn export(&self, cx: &mut ExportCx) {
        if cx.opset < 5 {
            cx.ints("shape", self.shape.to_vec());
        } else {
            let t = IrTensor::i64(vec![self.shape.len()], self.shape.to_vec());
            let name = cx.add_const("shape", t);
            cx.inputs.push(name);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        reshape_target(&first(ins), self.shape)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let dims = x.dims();
        let target = reshape_target(&dims, self.shape).expect("checked at plan time");
        x.reshape(&target)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        if let Some(segs) = cx.input(0) {
            let (i, o) = (cx.shape(&n.inputs[0]), cx.shape(&n.outputs[0]));
            // Only the flatten form [N, C, ...] -> [N, C * ...] keeps channels identifiable.
            if o.len() == 2 && i.len() >= 2 && o[0] == i[0] {
                flatten_channels(cx);
            } else {
                cx.block(&segs, "reshape that moves the channel axis");
            }
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, _: Option<f32>) -> Option<f32> {
        let (x, y) = (&n.inputs[0], &n.outputs[0]);
        if cx.shape(y).len() == 2 && cx.channel_axis(x) == 1 {
            return flattened_value(cx, n, f);
        }
        // Attention heads split or merged (`[N, B, H, D] -> [N*B, H*D]` too): output feature f lies in input feature f / ratio.
        let width_in = cx.shape(x)[cx.channel_axis(x)];
        let width_out = cx.shape(y)[cx.channel_axis(y)];
        width_out
            .is_multiple_of(width_in.max(1))
            .then(|| cx.state(x, f / (width_out / width_in.max(1)).max(1)))
            .flatten()
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        let out = &n.outputs[0];
        if cx.shape(out).len() != 2 {
            // Attention heads: the head count (or merged head width) at the output's channel
            // axis becomes what survives; the fold of heads into the batch axis keeps its -1.
            if let Some(kept) = cx.kept(out) {
                let axis = cx.channel_axis(out);
                let mut shape = self.shape.to_vec();
                if shape.get(axis).is_some_and(|&d| d > 0) {
                    shape[axis] = kept.len() as i64;
                }
                n.op = Op::Reshape { shape };
            }
            return Ok(());
        }
        // The analysis only admits the flatten form [N, C*...]: recompute it.
        if cx.kept(&n.inputs[0]).is_some() {
            n.op = Op::Reshape {
                shape: if self.shape[0] == -1 {
                    vec![-1, cx.kept(&n.outputs[0]).map_or(0, |k| k.len()) as i64]
                } else {
                    vec![self.shape[0], -1]
                },
            };
        }
        Ok(())
    }
}

impl OpRules for Transpose<'_> {
    fn onnx_type(&self) -> &'static str {
        "Transpose"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.ints("perm", self.perm.iter().map(|&p| p as i64).collect());
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = first(ins);
        if self.perm.len() != x.len() {
            return Err(format!(
                "perm {:?} does not match rank {}",
                self.perm,
                x.len()
            ));
        }
        Ok(self.perm.iter().map(|&p| x[p]).collect())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let off = x.offset();
        let mut axes: [usize; MAX_RANK] = std::array::from_fn(|i| i);
        for (i, &p) in self.perm.iter().enumerate() {
            axes[off + i] = off + p;
        }
        x.map(|t| t.permute(axes))
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.block_inputs("op without a channel pruning rule");
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        // Channels are followed through a transpose only where their axis moves as a whole.
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for Concat {
    fn onnx_type(&self) -> &'static str {
        "Concat"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("axis", self.axis);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = first(ins);
        let a = norm_axis(self.axis, x.len())?;
        let mut out = x.to_vec();
        for s in &ins[1..] {
            if s.len() != x.len() || s.iter().enumerate().any(|(i, &d)| i != a && d != x[i]) {
                return Err(format!("cannot concatenate {x:?} and {s:?} on axis {a}"));
            }
            out[a] += s[a];
        }
        Ok(out)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let rank = x.rank;
        let a = norm_axis(self.axis, rank).expect("checked at plan time") + MAX_RANK - rank;
        let mut all = vec![x.t];
        all.extend(ins.into_iter().map(|v| v.t));
        Val::new(Tensor::cat(all, a), rank)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let rank = cx.rank();
        let maps: Vec<Option<Vec<Segment>>> =
            (0..cx.node.inputs.len()).map(|i| cx.input(i)).collect();
        let on_channels = self.axis == 1 || self.axis == 1 - rank as i64;
        if on_channels && maps.iter().all(|m| m.is_some()) {
            cx.set_output(maps.into_iter().flatten().flatten().collect());
        } else {
            for segs in maps.into_iter().flatten() {
                cx.block(
                    &segs,
                    "concatenation with an unanalysed operand or off the channel axis",
                );
            }
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, _: Option<f32>) -> Option<f32> {
        // Joined off the channel axis (token sequences): feature f of every input.
        let out = &n.outputs[0];
        let channel = cx.channel_axis(out);
        if norm_axis(self.axis, cx.shape(out).len()) != Ok(channel) {
            let mut states = n.inputs.iter().map(|i| cx.state(i, f));
            let k = states.next().flatten();
            return states.all(|s| s == k).then_some(k).flatten();
        }
        let mut offset = 0;
        for i in &n.inputs {
            let w = cx.shape(i)[1];
            if f < offset + w {
                return cx.state(i, f - offset);
            }
            offset += w;
        }
        None
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for Pad<'_> {
    fn onnx_type(&self) -> &'static str {
        "Pad"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.string("mode", self.mode.onnx_name());
        if cx.opset < 11 {
            cx.ints("pads", self.pads.to_vec());
            cx.float("value", self.value);
        } else {
            let pads = IrTensor::i64(vec![self.pads.len()], self.pads.to_vec());
            let name = cx.add_const("pads", pads);
            cx.inputs.push(name);
            let name = cx.add_const("value", IrTensor::f32(vec![], vec![self.value]));
            cx.inputs.push(name);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = first(ins);
        let pads = self.pads;
        if pads.len() != 2 * x.len() {
            return Err(format!("pads {pads:?} do not match rank {}", x.len()));
        }
        x.iter()
            .enumerate()
            .map(|(i, &d)| {
                let n = d as i64 + pads[i] + pads[i + x.len()];
                if n < 0 {
                    Err(format!("pads {pads:?} crop more than input {x:?}"))
                } else {
                    Ok(n as usize)
                }
            })
            .collect()
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let dims = x.dims();
        let r = dims.len();
        let off = x.offset();
        // Negative pads crop: slice first, then pad with the positive parts.
        let mut ranges: [std::ops::Range<usize>; MAX_RANK] =
            std::array::from_fn(|i| 0..x.t.dims()[i]);
        let mut pairs = vec![(0usize, 0usize); MAX_RANK];
        for i in 0..r {
            let (b, e) = (self.pads[i], self.pads[i + r]);
            let lo = if b < 0 { (-b) as usize } else { 0 };
            let hi = dims[i] - if e < 0 { (-e) as usize } else { 0 };
            ranges[off + i] = lo..hi;
            pairs[off + i] = (b.max(0) as usize, e.max(0) as usize);
        }
        let t = x.t.slice(ranges);
        let mode = match self.mode {
            PadMode::Constant => BurnPadMode::Constant(self.value),
            PadMode::Reflect => BurnPadMode::Reflect,
            PadMode::Edge => BurnPadMode::Edge,
        };
        Val::new(t.pad(pairs, mode), r)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let rank = cx.rank();
        if let Some(segs) = cx.input(0) {
            if rank > 1 && (self.pads[1] != 0 || self.pads[1 + rank] != 0) {
                cx.block(&segs, "padding along the channel axis");
            } else {
                cx.set_output(segs);
            }
        }
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        match self.mode {
            PadMode::Constant if self.pads.iter().any(|&p| p != 0) => {
                k.filter(|k| *k == self.value)
            }
            _ => k,
        }
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        // A constant padded into a token sequence (a class token) loses the removed channels.
        let out = n.outputs[0].clone();
        if let (Some(kept), Some(t)) = (cx.kept(&out), cx.init(&n.inputs[0]).cloned()) {
            let axis = cx.channel_axis(&out);
            let name = n.inputs[0].clone();
            cx.set_init(n, &name, crate::prune::surgery::slice_axis(&t, axis, &kept))?;
        }
        Ok(())
    }
}

impl OpRules for Identity {
    fn onnx_type(&self) -> &'static str {
        "Identity"
    }

    fn export(&self, _cx: &mut ExportCx) {}

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        Ok(first(ins))
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        x
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
