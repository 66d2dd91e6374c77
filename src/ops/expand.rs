//! Expand on computed data (on constants it is folded at import): broadcasts a value (an
//! attention mask, a position-id row) to a target shape, numpy's two-way rule.
//!
//! The target is an attribute-like constant input. A target entry that follows the batch size
//! (computed from a Shape) must equal the input's own dim there: it is stored as 1, which
//! broadcasting turns into that dim at any batch size.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::{MAX_RANK, padded};
use crate::groups::ChannelCx;
use crate::ir::shape::broadcast;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::Expand`: broadcasts the input against `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expand {
    pub shape: Vec<usize>,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let (Some((a, b)), Some((xa, xb))) = (cx.probe_consts(1), cx.probe_shapes(0)) else {
        return Err(cx
            .attrs
            .err("the target shape (input 1) must be a constant"));
    };
    let (a, b) = (a.to_i64_vec(), b.to_i64_vec());
    let mut shape = Vec::with_capacity(a.len());
    for (i, (&p, &q)) in a.iter().zip(&b).enumerate() {
        // The input dim aligned (from the right) with target entry i, in each probe.
        let at = |x: &[usize]| (x.len() + i).checked_sub(a.len()).map(|k| x[k] as i64);
        let follows_input = at(xa) == Some(p) && at(xb) == Some(q);
        if p == q && p >= 0 {
            shape.push(p as usize);
        } else if follows_input {
            shape.push(1);
        } else {
            return Err(cx.attrs.err(format!(
                "target entry {i} depends on the batch size but not as the input's dim"
            )));
        }
    }
    Ok((Op::Expand(Expand { shape }), vec![0]))
}

impl OpRules for Expand {
    fn onnx_type(&self) -> &'static str {
        "Expand"
    }

    fn export(&self, cx: &mut ExportCx) {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let name = cx.add_const("shape", IrTensor::i64(vec![shape.len()], shape));
        cx.inputs.push(name);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let out = broadcast(ins.first().copied().unwrap_or(&[]), &self.shape)?;
        if out.len() > MAX_RANK {
            return Err(format!("output rank {} exceeds {MAX_RANK}", out.len()));
        }
        Ok(out)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let out = self
            .shape(&[&x.dims()])
            .unwrap_or_else(|e| unreachable!("checked at plan time: {e}"));
        Val::new(x.t.expand(padded(&out)), out.len())
    }

    /// Axis 1 keeps its channels only when the target leaves the leading axes alone.
    fn channels(&self, cx: &mut ChannelCx) {
        if cx.rank() >= 2 && self.shape.len() + 2 <= cx.rank() {
            cx.pass_through();
        } else {
            cx.block_inputs("expand that may move the channel axis");
        }
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
