//! Binary elementwise ops with numpy broadcasting: Add, Sub, Mul, Div, Pow.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::shape::{broadcast, norm_axis};
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::{SurgeryCx, slice_axis};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// Numpy power; the exponent may be a constant or a computed value.
    Pow,
}

impl BinaryOp {
    /// The op on one pair of scalars (surgery's constant propagation).
    pub fn scalar(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
        }
    }
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let op = match cx.node.op_type.as_str() {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        other => return Err(cx.unsupported(other)),
    };
    legacy_broadcast(cx)?;
    Ok((Op::Binary(op), vec![0, 1]))
}

/// Opset < 7 binary ops broadcast B against A starting at `axis` (not numpy's suffix rule).
/// Where that differs from numpy, B is reshaped with trailing 1s by an inserted Reshape.
fn legacy_broadcast(cx: &ImportCx) -> Result<()> {
    let a = &cx.attrs;
    if cx.opset >= 7 || a.int("broadcast", 0) == 0 || !a.has("axis") {
        return Ok(());
    }
    let (Some(xa), Some(xb)) = (cx.input_shape(0), cx.input_shape(1)) else {
        return Err(a.err("input shape unknown"));
    };
    let axis = norm_axis(a.int("axis", 0), xa.len()).map_err(|e| a.err(e))?;
    if axis + xb.len() > xa.len() {
        return Err(a.err(format!(
            "cannot broadcast {xb:?} into {xa:?} at axis {axis}"
        )));
    }
    if axis + xb.len() == xa.len() {
        return Ok(()); // same as numpy's rule
    }
    let mut target: Vec<i64> = xb.iter().map(|&d| d as i64).collect();
    target.extend(std::iter::repeat_n(1, xa.len() - axis - xb.len()));
    let value = format!("{}__aligned_for_{}", cx.input_name(1)?, cx.name);
    cx.feed_input_through(1, Op::Reshape { shape: target }, "align", value);
    Ok(())
}

/// Is a constant broadcast along the channel axis only (a per-channel scale or shift), or a
/// scalar?
fn per_channel_or_scalar(shape: &[usize], x_rank: usize, axis: usize) -> bool {
    let n: usize = shape.iter().product();
    if n == 1 {
        return true;
    }
    // Aligned from the right against an (N, C, ...) value: only the C position may exceed 1.
    let off = x_rank as isize - shape.len() as isize;
    shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || i as isize + off == axis as isize)
}

impl OpRules for BinaryOp {
    fn onnx_type(&self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Pow => "Pow",
        }
    }

    fn export(&self, cx: &mut ExportCx) {
        if cx.opset < 7 {
            cx.int("broadcast", 1);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        broadcast(x, ins.get(1).ok_or("missing second operand")?)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, mut ins: Vec<Val>) -> Val {
        let y = ins.remove(0);
        let rank = x.rank.max(y.rank);
        let t = match self {
            BinaryOp::Add => x.t + y.t,
            BinaryOp::Sub => x.t - y.t,
            BinaryOp::Mul => x.t * y.t,
            BinaryOp::Div => x.t / y.t,
            BinaryOp::Pow => x.t.powf(y.t),
        };
        Val::new(t, rank)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        let (x, y) = (cx.input(0), cx.input(1));
        match (x, y) {
            (Some(sx), Some(sy)) => {
                let same = sx.len() == sy.len()
                    && sx
                        .iter()
                        .zip(&sy)
                        .all(|(p, q)| p.width == q.width && p.block == q.block);
                if same {
                    for (p, q) in sx.iter().zip(&sy) {
                        cx.union(p.group, q.group);
                    }
                    cx.set_output(sx);
                } else {
                    cx.block(&sx, "operands with different channel layouts");
                    cx.block(&sy, "operands with different channel layouts");
                }
            }
            (Some(segs), None) | (None, Some(segs)) => {
                let (analysed, other) = if cx.input(0).is_some() {
                    (0, 1)
                } else {
                    (1, 0)
                };
                let (axis, other) = (cx.axis(analysed), &n.inputs[other]);
                let out_rank = cx.shape(&n.outputs[0]).len();
                // A channel axis other than 1 keeps its place only when the operand has full rank.
                if axis != 1 && cx.shape(&n.inputs[analysed]).len() != out_rank {
                    cx.block(&segs, "operand broadcast to a higher rank");
                } else if cx.is_const(other)
                    && per_channel_or_scalar(cx.shape(other), out_rank, axis)
                {
                    cx.set_output(segs);
                } else if axis != 1 {
                    cx.block(
                        &segs,
                        "add to a token sequence whose channels are not followed (transformer residual stream / hidden width: not analysed yet)",
                    );
                } else {
                    cx.block(&segs, "operand not aligned with the channel axis");
                }
            }
            (None, None) => {}
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, _k: Option<f32>) -> Option<f32> {
        let other = |i: usize| -> Option<f32> {
            let name = &n.inputs[i];
            if cx.analysed(name) {
                cx.state(name, f)
            } else {
                let t = cx.init(name)?;
                let v = t.to_f32_vec();
                if v.len() == 1 {
                    Some(v[0])
                } else {
                    v.get(f).copied()
                }
            }
        };
        match (other(0), other(1)) {
            (Some(a), Some(b)) => Some(self.scalar(a, b)),
            _ => None,
        }
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        let out = n.outputs[0].clone();
        if let Some(k) = cx.kept(&out) {
            let out_rank = cx.shape(&out).len();
            for i in 0..2 {
                let name = n.inputs[i].clone();
                if cx.analysed(&name) {
                    continue;
                }
                if let Some(t) = cx.init(&name).cloned() {
                    let channel_axis = cx.channel_axis(&out) as isize;
                    let axis = channel_axis + t.shape.len() as isize - out_rank as isize;
                    if axis >= 0 && t.shape[axis as usize] > 1 {
                        cx.set_init(n, &name, slice_axis(&t, axis as usize, &k))?;
                    }
                }
            }
        }
        Ok(())
    }
}
