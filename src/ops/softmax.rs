//! Softmax and LogSoftmax.

use burn::prelude::*;
use burn::tensor::activation;

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::MAX_RANK;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// The fields of `Op::Softmax`. `legacy` is the opset < 13 form: the input is coerced to 2-D
/// at `axis`.
pub struct Softmax {
    pub axis: i64,
    pub log: bool,
    pub legacy: bool,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let legacy = cx.opset < 13;
    Ok((
        Op::Softmax {
            axis: cx.attrs.int("axis", if legacy { 1 } else { -1 }),
            log: cx.node.op_type == "LogSoftmax",
            legacy,
        },
        vec![0],
    ))
}

impl OpRules for Softmax {
    fn onnx_type(&self) -> &'static str {
        if self.log { "LogSoftmax" } else { "Softmax" }
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("axis", self.axis);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        norm_axis(self.axis, x.len())?;
        Ok(x.to_vec())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let dims = x.dims();
        let a = norm_axis(self.axis, dims.len()).expect("checked at plan time");
        let f = |t: Tensor<MAX_RANK>, dim: usize| {
            if self.log {
                activation::log_softmax(t, dim)
            } else {
                activation::softmax(t, dim)
            }
        };
        if self.legacy && a + 1 < dims.len() {
            // Opset < 13: softmax over the flattened trailing block [a..].
            let outer: usize = dims[..a].iter().product();
            let inner: usize = dims[a..].iter().product();
            let flat = x.reshape(&[outer, inner]);
            let off = flat.offset();
            Val::new(f(flat.t, off + 1), 2).reshape(&dims)
        } else {
            let off = x.offset();
            x.map(|t| f(t, off + a))
        }
    }

    fn channels(&self, cx: &mut ChannelCx) {
        // Over an axis after the channels (an attention map, a per-channel spatial softmax)
        // each channel is normalised on its own.
        match norm_axis(self.axis, cx.rank()) {
            Ok(a) if a >= 2 => cx.pass_through(),
            _ => cx.block_inputs("op without a channel pruning rule"),
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        // A constant row normalises to 1 / L (log: -ln L) over the L elements it spans.
        let x = cx.shape(&n.inputs[0]);
        let a = norm_axis(self.axis, x.len()).ok()?;
        let len: usize = if self.legacy {
            x[a..].iter().product()
        } else {
            x[a]
        };
        k.map(|_| {
            if self.log {
                -(len as f32).ln()
            } else {
                1.0 / len as f32
            }
        })
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
