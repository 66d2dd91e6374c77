//! Squeeze and Unsqueeze on computed data (on constants they are folded at import): reshapes
//! that remove or insert unit axes. Channels pass through when axis 1 stays axis 1.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::Squeeze`: removes the unit axes `axes` (sorted, of the input).
#[derive(Debug, Clone, PartialEq)]
pub struct Squeeze {
    pub axes: Vec<usize>,
}

/// `Op::Unsqueeze`: inserts unit axes at `axes` (sorted, of the output).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsqueeze {
    pub axes: Vec<usize>,
}

/// The axes attribute (opset < 13) or input (13+), normalised against `rank` and sorted.
fn axes(cx: &ImportCx, rank: impl Fn(usize) -> usize) -> Result<Option<Vec<usize>>> {
    let a = &cx.attrs;
    let given = if cx.opset < 13 {
        a.ints("axes")
    } else {
        cx.const_input(1)?.map(|t| t.to_i64_vec())
    };
    let Some(given) = given else { return Ok(None) };
    let r = rank(given.len());
    let mut axes = given
        .iter()
        .map(|&ax| norm_axis(ax, r).map_err(|e| a.err(e)))
        .collect::<Result<Vec<_>>>()?;
    axes.sort();
    axes.dedup();
    Ok(Some(axes))
}

pub(crate) fn import_squeeze(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let x = cx
        .input_shape(0)
        .ok_or_else(|| cx.attrs.err("input shape unknown"))?
        .clone();
    // Without axes, every unit axis of the static shape (the batch axis is never 1 in the
    // import probes, so it stays).
    let axes =
        axes(cx, |_| x.len())?.unwrap_or_else(|| (0..x.len()).filter(|&i| x[i] == 1).collect());
    Ok((Op::Squeeze(Squeeze { axes }), vec![0]))
}

pub(crate) fn import_unsqueeze(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let rank = cx
        .input_shape(0)
        .ok_or_else(|| cx.attrs.err("input shape unknown"))?
        .len();
    let axes = axes(cx, |n| rank + n)?.ok_or_else(|| cx.attrs.err("axes is required"))?;
    Ok((Op::Unsqueeze(Unsqueeze { axes }), vec![0]))
}

fn export_axes(axes: &[usize], cx: &mut ExportCx) {
    let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
    if cx.opset < 13 {
        cx.ints("axes", axes);
    } else {
        let name = cx.add_const("axes", IrTensor::i64(vec![axes.len()], axes));
        cx.inputs.push(name);
    }
}

/// Reshape kernel shared by both: the shape rule gives the target.
fn reshape(rules: &dyn OpRules, x: Val) -> Val {
    let dims = x.dims();
    let target = rules.shape(&[&dims]).expect("checked at plan time");
    x.reshape(&target)
}

/// Channels pass through when no axis before the channel axis moves (all axes from 2 on).
fn channels(axes: &[usize], cx: &mut ChannelCx) {
    if axes.iter().all(|&a| a >= 2) {
        cx.pass_through();
    } else if let Some(segs) = cx.input(0) {
        cx.block(&segs, "squeeze or unsqueeze that moves the channel axis");
    }
}

impl OpRules for Squeeze {
    fn onnx_type(&self) -> &'static str {
        "Squeeze"
    }

    fn export(&self, cx: &mut ExportCx) {
        export_axes(&self.axes, cx);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        if let Some(&bad) = self.axes.iter().find(|&&a| x.get(a) != Some(&1)) {
            return Err(format!("axis {bad} of {x:?} is not a unit axis"));
        }
        Ok((0..x.len())
            .filter(|i| !self.axes.contains(i))
            .map(|i| x[i])
            .collect())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        reshape(self, x)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        channels(&self.axes, cx);
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for Unsqueeze {
    fn onnx_type(&self) -> &'static str {
        "Unsqueeze"
    }

    fn export(&self, cx: &mut ExportCx) {
        export_axes(&self.axes, cx);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let rank = x.len() + self.axes.len();
        if self.axes.iter().any(|&a| a >= rank) || rank > 6 {
            return Err(format!("axes {:?} do not fit input {x:?}", self.axes));
        }
        let mut dims = x.iter();
        Ok((0..rank)
            .map(|i| {
                if self.axes.contains(&i) {
                    1
                } else {
                    *dims.next().unwrap_or(&1)
                }
            })
            .collect())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        reshape(self, x)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        channels(&self.axes, cx);
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
