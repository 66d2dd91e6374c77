//! Reductions over axes: ReduceMean, ReduceSum, ReduceMax, ReduceMin. Over axes from 2 on
//! they keep the channel axis, so channels pass through.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use burn::prelude::*;

use crate::exec::value::MAX_RANK;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// The fields of `Op::ReduceMean`; `axes` empty means all axes.
pub struct ReduceMean<'a> {
    pub axes: &'a [i64],
    pub keepdims: bool,
}

/// `Op::Reduce`: the reductions other than the mean; `axes` empty means all axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Vec<i64>,
    pub keepdims: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

/// Axes and keepdims of a reduction; `None` for an empty axes list with noop_with_empty_axes
/// (an identity). The axes moved from attribute to input at `axes_input_opset`.
fn import_axes(cx: &ImportCx, axes_input_opset: i64) -> Result<Option<(Vec<i64>, bool)>> {
    let a = &cx.attrs;
    let axes = if cx.opset < axes_input_opset {
        a.ints("axes").unwrap_or_default()
    } else {
        cx.const_input(1)?
            .map(|t| t.to_i64_vec())
            .unwrap_or_default()
    };
    let keepdims = a.int("keepdims", 1) != 0;
    if axes.is_empty() && a.int("noop_with_empty_axes", 0) != 0 {
        return Ok(None);
    }
    Ok(Some((axes, keepdims)))
}

pub(crate) fn import_mean(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    Ok(match import_axes(cx, 18)? {
        None => (Op::Identity, vec![0]),
        Some((axes, keepdims)) => (Op::ReduceMean { axes, keepdims }, vec![0]),
    })
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let (kind, axes_input_opset) = match cx.node.op_type.as_str() {
        "ReduceSum" => (ReduceKind::Sum, 13),
        "ReduceMax" => (ReduceKind::Max, 18),
        "ReduceMin" => (ReduceKind::Min, 18),
        other => return Err(cx.unsupported(other)),
    };
    Ok(match import_axes(cx, axes_input_opset)? {
        None => (Op::Identity, vec![0]),
        Some((axes, keepdims)) => (
            Op::Reduce(Reduce {
                kind,
                axes,
                keepdims,
            }),
            vec![0],
        ),
    })
}

/// Export of the axes: attribute before `axes_input_opset`, constant input from it.
fn export_axes(axes: &[i64], keepdims: bool, axes_input_opset: i64, cx: &mut ExportCx) {
    cx.int("keepdims", keepdims as i64);
    if !axes.is_empty() {
        if cx.opset < axes_input_opset {
            cx.ints("axes", axes.to_vec());
        } else {
            let t = IrTensor::i64(vec![axes.len()], axes.to_vec());
            let name = cx.add_const("axes", t);
            cx.inputs.push(name);
        }
    }
}

/// Output shape of a reduction.
fn reduced_shape(axes: &[i64], keepdims: bool, x: &[usize]) -> ShapeResult {
    let mut reduced = vec![false; x.len()];
    if axes.is_empty() {
        reduced.iter_mut().for_each(|r| *r = true);
    }
    for &a in axes {
        reduced[norm_axis(a, x.len())?] = true;
    }
    Ok(x.iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keepdims) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(d),
        })
        .collect())
}

/// Reduces `x` over `axes` with `f` (which keeps the reduced axes as 1s).
fn reduce(
    axes: &[i64],
    keepdims: bool,
    x: Val,
    f: impl FnOnce(Tensor<MAX_RANK>, &[usize]) -> Tensor<MAX_RANK>,
) -> Val {
    let dims = x.dims();
    let off = x.offset();
    let mut reduced: Vec<usize> = if axes.is_empty() {
        (0..dims.len()).collect()
    } else {
        axes.iter()
            .map(|&a| norm_axis(a, dims.len()).expect("checked at plan time"))
            .collect()
    };
    reduced.sort();
    reduced.dedup();
    let padded_axes: Vec<usize> = reduced.iter().map(|a| a + off).collect();
    let y = Val::new(f(x.t, &padded_axes), dims.len());
    if keepdims {
        y
    } else {
        let out: Vec<usize> = (0..dims.len())
            .filter(|i| !reduced.contains(i))
            .map(|i| dims[i])
            .collect();
        y.reshape(&out)
    }
}

/// Channel rule: a reduction over axes from 2 on keeps the channels.
fn reduce_channels(axes: &[i64], keepdims: bool, cx: &mut ChannelCx) {
    let rank = cx.rank();
    if let Some(segs) = cx.input(0) {
        let keeps_axis1 = !axes.is_empty()
            && axes.iter().all(|&ax| {
                let ax = if ax < 0 { ax + rank as i64 } else { ax };
                ax >= 2
            })
            && (keepdims || rank >= 2);
        if keeps_axis1 {
            cx.set_output(segs);
        } else {
            cx.block(&segs, "reduction over the channel axis");
        }
    }
}

impl OpRules for ReduceMean<'_> {
    fn onnx_type(&self) -> &'static str {
        "ReduceMean"
    }

    fn export(&self, cx: &mut ExportCx) {
        export_axes(self.axes, self.keepdims, 18, cx);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        reduced_shape(
            self.axes,
            self.keepdims,
            ins.first().copied().unwrap_or(&[]),
        )
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        reduce(self.axes, self.keepdims, x, |t, axes| t.mean_dims(axes))
    }

    fn channels(&self, cx: &mut ChannelCx) {
        reduce_channels(self.axes, self.keepdims, cx);
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for Reduce {
    fn onnx_type(&self) -> &'static str {
        match self.kind {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
        }
    }

    fn export(&self, cx: &mut ExportCx) {
        let axes_input_opset = match self.kind {
            ReduceKind::Sum => 13,
            ReduceKind::Max | ReduceKind::Min => 18,
        };
        export_axes(&self.axes, self.keepdims, axes_input_opset, cx);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        reduced_shape(
            &self.axes,
            self.keepdims,
            ins.first().copied().unwrap_or(&[]),
        )
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        match self.kind {
            ReduceKind::Sum => reduce(&self.axes, self.keepdims, x, |t, a| t.sum_dims(a)),
            ReduceKind::Max => reduce(&self.axes, self.keepdims, x, |t, a| t.max_dims(a)),
            ReduceKind::Min => reduce(&self.axes, self.keepdims, x, |t, a| t.min_dims(a)),
        }
    }

    fn channels(&self, cx: &mut ChannelCx) {
        reduce_channels(&self.axes, self.keepdims, cx);
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        match self.kind {
            // A constant channel sums to the constant times the elements summed per channel.
            ReduceKind::Sum => {
                let x = cx.shape(&n.inputs[0]);
                let out: usize = cx.shape(&n.outputs[0]).iter().product();
                let count = x.iter().product::<usize>() / out.max(1);
                k.map(|k| k * count as f32)
            }
            ReduceKind::Max | ReduceKind::Min => k,
        }
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
