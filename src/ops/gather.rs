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

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        // An embedding table whose columns are a transformer's hidden width (groups::hidden).
        let out = n.outputs[0].clone();
        if let (Some(kept), Some(t)) = (cx.kept(&out), cx.init(&n.inputs[0]).cloned())
            && t.shape.len() == 2
        {
            let name = n.inputs[0].clone();
            cx.set_init(n, &name, crate::prune::surgery::slice_axis(&t, 1, &kept))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::exec::value::host_f32;

    /// An embedding lookup: rows picked by ids (a negative id counts from the end), and the
    /// table's gradient is the count of each row's uses (so the table trains).
    #[test]
    fn embedding_rows_are_picked_and_the_table_gets_their_gradient() {
        let dev = Device::flex().autodiff();
        let table: Vec<f32> = (0..8).map(|v| v as f32).collect(); // 4 rows x 2
        let t = Val::from_f32(table, &[4, 2], &dev);
        let param = t.t.clone().require_grad();
        let ids = Val::from_f32(vec![1.0, 3.0, 1.0, -4.0], &[2, 2], &dev);
        let op = Gather { axis: 0 };
        assert_eq!(op.shape(&[&[4, 2], &[2, 2]]), Ok(vec![2, 2, 2]));
        let out = op.eval(Val::new(param.clone(), 2), vec![ids]);
        assert_eq!(out.dims(), vec![2, 2, 2]);
        assert_eq!(
            host_f32(out.t.clone()),
            vec![2.0, 3.0, 6.0, 7.0, 2.0, 3.0, 0.0, 1.0]
        );
        let grads = out.t.sum().backward();
        let g = host_f32(param.grad(&grads).expect("the table has a gradient"));
        assert_eq!(g, vec![1.0, 1.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0]);
    }

    /// `x[:, 0]`-style picking along axis 1 with a scalar index removes the axis.
    #[test]
    fn a_scalar_index_on_axis_one_removes_the_axis() {
        let dev = Device::flex();
        let x = Val::from_f32((0..12).map(|v| v as f32).collect(), &[2, 3, 2], &dev);
        let idx = Val::from_f32(vec![2.0], &[], &dev);
        let out = Gather { axis: 1 }.eval(x, vec![idx]);
        assert_eq!(out.dims(), vec![2, 2]);
        assert_eq!(host_f32(out.t), vec![4.0, 5.0, 10.0, 11.0]);
    }
}
