//! Gather on computed data (on constants it is folded at import): token embeddings (a weight
//! table indexed by token ids, position ids or token-type ids), and computed indices in
//! general. One constant index into computed data (`x[:, 0]`) is imported as a Slice.
//!
//! Indices arrive as f32 values (the interpreter holds int64 inputs as f32, exact below 2^24);
//! negative indices count from the end, as ONNX says. Indices outside the axis are clamped to
//! it, so a bad id cannot read outside the table; data readers reject such ids with a message.

use super::{OpRules, ShapeResult, WeightInput, WeightKind};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::MAX_RANK;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::Gather`: inputs data, indices; picks entries of data along `axis` (normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub axis: usize,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    // One constant index into computed data (`x[:, 0]`) is a Slice (+ Squeeze), whose channel
    // rules the transformer groups use.
    let data_is_computed = cx.probe_consts(0).is_none();
    let one_constant_index = cx
        .const_input(1)
        .ok()
        .flatten()
        .is_some_and(|t| t.len() == 1);
    if data_is_computed && one_constant_index {
        return super::slice::import_gather(cx);
    }
    let rank = cx
        .input_shape(0)
        .ok_or_else(|| cx.attrs.err("input shape unknown"))?
        .len();
    let axis = norm_axis(cx.attrs.int("axis", 0), rank).map_err(|e| cx.attrs.err(e))?;
    Ok((Op::Gather(Gather { axis }), vec![0, 1]))
}

impl OpRules for Gather {
    fn onnx_type(&self) -> &'static str {
        "Gather"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("axis", self.axis as i64);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let idx = ins.get(1).ok_or("missing indices")?;
        if self.axis >= x.len() {
            return Err(format!("axis {} is outside input {x:?}", self.axis));
        }
        let out: Vec<usize> = x[..self.axis]
            .iter()
            .chain(idx.iter())
            .chain(&x[self.axis + 1..])
            .copied()
            .collect();
        if out.len() > MAX_RANK {
            return Err(format!("output rank {} exceeds {MAX_RANK}", out.len()));
        }
        Ok(out)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    /// An embedding table is a learnable weight; its rows are tokens, not channels.
    fn weights(&self) -> Vec<WeightInput> {
        vec![WeightInput {
            input: 0,
            kind: WeightKind::Kernel,
            out_axis: None,
            in_axis: None,
        }]
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let Some(idx) = ins.into_iter().next() else {
            unreachable!("validated: Gather has indices")
        };
        let dims = x.dims();
        let rows = dims[self.axis] as f32;
        let idx_dims = idx.dims();
        let count: usize = idx_dims.iter().product();
        let flat = idx.t.reshape([count]);
        let from_end = flat.clone().lower_elem(0.0).float() * rows;
        let ids = (flat + from_end).clamp(0.0, rows - 1.0).int();
        let picked = x.t.select(MAX_RANK - x.rank + self.axis, ids);
        let out: Vec<usize> = dims[..self.axis]
            .iter()
            .chain(&idx_dims)
            .chain(&dims[self.axis + 1..])
            .copied()
            .collect();
        Val::new(picked, x.rank).reshape(&out)
    }

    /// Channel layouts do not flow through a gather (the vision/token transformer groups name
    /// their own rules); an analysed input stays whole.
    fn channels(&self, cx: &mut ChannelCx) {
        cx.block_inputs("gather");
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, _k: Option<f32>) -> Option<f32> {
        None
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
