//! Reductions: ReduceMean.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op, Tensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// The fields of `Op::ReduceMean`; `axes` empty means all axes.
pub struct ReduceMean<'a> {
    pub axes: &'a [i64],
    pub keepdims: bool,
}

pub(crate) fn import_mean(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let axes = if cx.opset < 18 {
        a.ints("axes").unwrap_or_default()
    } else {
        cx.const_input(1)?
            .map(|t| t.to_i64_vec())
            .unwrap_or_default()
    };
    let keepdims = a.int("keepdims", 1) != 0;
    if axes.is_empty() && a.int("noop_with_empty_axes", 0) != 0 {
        return Ok((Op::Identity, vec![0]));
    }
    Ok((Op::ReduceMean { axes, keepdims }, vec![0]))
}

impl OpRules for ReduceMean<'_> {
    fn onnx_type(&self) -> &'static str {
        "ReduceMean"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("keepdims", self.keepdims as i64);
        if !self.axes.is_empty() {
            if cx.opset < 18 {
                cx.ints("axes", self.axes.to_vec());
            } else {
                let t = Tensor::i64(vec![self.axes.len()], self.axes.to_vec());
                let name = cx.add_const("axes", t);
                cx.inputs.push(name);
            }
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let mut reduced = vec![false; x.len()];
        if self.axes.is_empty() {
            reduced.iter_mut().for_each(|r| *r = true);
        }
        for &a in self.axes {
            reduced[norm_axis(a, x.len())?] = true;
        }
        Ok(x.iter()
            .zip(&reduced)
            .filter_map(|(&d, &r)| match (r, self.keepdims) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(d),
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
        let dims = x.dims();
        let off = x.offset();
        let mut reduced: Vec<usize> = if self.axes.is_empty() {
            (0..dims.len()).collect()
        } else {
            self.axes
                .iter()
                .map(|&a| norm_axis(a, dims.len()).expect("checked at plan time"))
                .collect()
        };
        reduced.sort();
        reduced.dedup();
        let padded_axes: Vec<usize> = reduced.iter().map(|a| a + off).collect();
        let y = Val::new(x.t.mean_dims(&padded_axes), dims.len());
        if self.keepdims {
            y
        } else {
            let out: Vec<usize> = (0..dims.len())
                .filter(|i| !reduced.contains(i))
                .map(|i| dims[i])
                .collect();
            y.reshape(&out)
        }
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let rank = cx.rank();
        if let Some(segs) = cx.input(0) {
            let keeps_axis1 = !self.axes.is_empty()
                && self.axes.iter().all(|&ax| {
                    let ax = if ax < 0 { ax + rank as i64 } else { ax };
                    ax >= 2
                })
                && (self.keepdims || rank >= 2);
            if keeps_axis1 {
                cx.set_output(segs);
            } else {
                cx.block(&segs, "reduction over the channel axis");
            }
        }
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
