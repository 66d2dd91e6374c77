//! Slice on computed data (on constants it is folded at import), and Split, imported as one
//! Slice per piece. On the channel axis it keeps
//! whole channel groups only (the pieces of a Concat, like a Split would), so each piece is its
//! own range; on the other axes channels pass through.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::MAX_RANK;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::Slice`: ONNX semantics (negative starts/ends count from the end, out-of-range values
/// clamp). `axes` are non-negative and as long as `starts`, `ends` and `steps`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Vec<usize>,
    pub steps: Vec<i64>,
}

/// One axis of a slice resolved against its length: first index, step and element count.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    start: i64,
    step: i64,
    len: usize,
}

fn resolve(start: i64, end: i64, step: i64, dim: usize) -> Range {
    let d = dim as i64;
    let wrap = |v: i64| if v < 0 { v + d } else { v };
    let (start, end) = if step > 0 {
        (wrap(start).clamp(0, d), wrap(end).clamp(0, d))
    } else {
        (wrap(start).clamp(0, d - 1), wrap(end).clamp(-1, d - 1))
    };
    let span = if step > 0 { end - start } else { start - end };
    let len = if span <= 0 {
        0
    } else {
        (span + step.abs() - 1) / step.abs()
    };
    Range {
        start,
        step,
        len: len as usize,
    }
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let rank = cx
        .input_shape(0)
        .map(|s| s.len())
        .ok_or_else(|| a.err("input shape unknown"))?;
    let ints =
        |i: usize| -> Result<Option<Vec<i64>>> { Ok(cx.const_input(i)?.map(|t| t.to_i64_vec())) };
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        (a.ints("starts"), a.ints("ends"), a.ints("axes"), None)
    } else {
        (ints(1)?, ints(2)?, ints(3)?, ints(4)?)
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Err(a.err("starts and ends are required"));
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(a.err("starts, ends, axes and steps differ in length"));
    }
    if steps.contains(&0) {
        return Err(a.err("a step of 0"));
    }
    let axes = axes
        .iter()
        .map(|&ax| norm_axis(ax, rank).map_err(|e| a.err(e)))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        Op::Slice(Slice {
            starts,
            ends,
            axes,
            steps,
        }),
        vec![0],
    ))
}

/// Gather on computed data with one constant index (a class token taken out of the token
/// axis, `x[:, 0]`): a Slice of that one position, then a Squeeze of the axis for a scalar
/// index. Gather with several indices or computed indices is not handled here.
pub(crate) fn import_gather(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let x = cx
        .input_shape(0)
        .ok_or_else(|| a.err("input shape unknown"))?;
    let axis = norm_axis(a.int("axis", 0), x.len()).map_err(|e| a.err(e))?;
    let Some(idx) = cx.const_input(1)? else {
        return Err(a.err("indices must be a constant"));
    };
    let [i] = idx.to_i64_vec()[..] else {
        return Err(a.err(format!(
            "indices of shape {:?}: only one index is supported on computed data",
            idx.shape
        )));
    };
    let dim = x[axis] as i64;
    let at = if i < 0 { i + dim } else { i };
    if !(0..dim).contains(&at) {
        return Err(a.err(format!("index {i} out of range for dim {dim}")));
    }
    let piece = Op::Slice(Slice {
        starts: vec![at],
        ends: vec![at + 1],
        axes: vec![axis],
        steps: vec![1],
    });
    if !idx.shape.is_empty() {
        return Ok((piece, vec![0]));
    }
    let value = format!("{}__slice", cx.name);
    cx.feed_input_through(0, piece, "slice", value);
    Ok((
        Op::Squeeze(super::squeeze::Squeeze { axes: vec![axis] }),
        vec![0],
    ))
}

/// Split: one Slice per output along `axis` (sizes from the `split` input or attribute, else
/// equal pieces, the last one smaller when the axis does not divide).
pub(crate) fn import_split(cx: &ImportCx) -> Result<Vec<(Op, Vec<usize>)>> {
    let a = &cx.attrs;
    let x = cx
        .input_shape(0)
        .ok_or_else(|| a.err("input shape unknown"))?;
    let axis = norm_axis(a.int("axis", 0), x.len()).map_err(|e| a.err(e))?;
    let dim = x[axis] as i64;
    let outputs = cx.node.output.len();
    let given = if cx.opset < 13 {
        a.ints("split")
    } else {
        cx.const_input(1)?.map(|t| t.to_i64_vec())
    };
    let sizes = match given.filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => {
            let pieces = a.int("num_outputs", outputs as i64).max(1);
            let chunk = (dim + pieces - 1) / pieces;
            (0..pieces).map(|k| chunk.min(dim - k * chunk)).collect()
        }
    };
    if sizes.len() != outputs || sizes.iter().sum::<i64>() != dim || sizes.iter().any(|&s| s < 0) {
        return Err(a.err(format!(
            "split sizes {sizes:?} do not cover axis {axis} of {x:?} with {outputs} outputs"
        )));
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&size| {
            let piece = Slice {
                starts: vec![start],
                ends: vec![start + size],
                axes: vec![axis],
                steps: vec![1],
            };
            start += size;
            (Op::Slice(piece), vec![0])
        })
        .collect())
}

impl Slice {
    /// Resolved range of each sliced axis of an input shape, as (axis, range).
    fn ranges(&self, x: &[usize]) -> Vec<(usize, Range)> {
        (0..self.axes.len())
            .map(|i| {
                let ax = self.axes[i];
                let r = resolve(self.starts[i], self.ends[i], self.steps[i], x[ax]);
                (ax, r)
            })
            .collect()
    }

    /// The slice of axis 1, if any, resolved against the input's channel count.
    fn channel_range(&self, x: &[usize]) -> Option<Range> {
        self.ranges(x)
            .into_iter()
            .find(|&(ax, _)| ax == 1)
            .map(|(_, r)| r)
    }
}

impl OpRules for Slice {
    fn onnx_type(&self) -> &'static str {
        "Slice"
    }

    fn export(&self, cx: &mut ExportCx) {
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        if cx.opset < 10 {
            cx.ints("starts", self.starts.clone());
            cx.ints("ends", self.ends.clone());
            cx.ints("axes", axes);
            return;
        }
        let n = self.starts.len();
        for (what, v) in [
            ("starts", self.starts.clone()),
            ("ends", self.ends.clone()),
            ("axes", axes),
            ("steps", self.steps.clone()),
        ] {
            let name = cx.add_const(what, IrTensor::i64(vec![n], v));
            cx.inputs.push(name);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        if let Some(&bad) = self.axes.iter().find(|&&a| a >= x.len()) {
            return Err(format!("axis {bad} is out of range for input {x:?}"));
        }
        let mut out = x.to_vec();
        for (ax, r) in self.ranges(x) {
            out[ax] = r.len;
        }
        if out.contains(&0) {
            return Err(format!("slice of {x:?} is empty"));
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
        let dims = x.dims();
        let off = x.offset();
        let mut slices: [burn::tensor::Slice; MAX_RANK] =
            std::array::from_fn(|_| burn::tensor::Slice::full());
        for (ax, r) in self.ranges(&dims) {
            let last = r.start + (r.len as i64 - 1) * r.step;
            // burn reads a slice as a forward range walked from its far end when the step is
            // negative.
            let (from, to) = if r.step > 0 {
                (r.start, last + 1)
            } else {
                (last, r.start + 1)
            };
            slices[off + ax] =
                burn::tensor::Slice::new(from as isize, Some(to as isize), r.step as isize);
        }
        x.map(|t| t.slice(slices))
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let Some(segs) = cx.input(0) else { return };
        let x = cx.shape(&cx.node.inputs[0]).to_vec();
        let Some(r) = self.channel_range(&x) else {
            cx.set_output(segs);
            return;
        };
        // Keep the segments lying wholly inside [start, start + len); a cut through a group
        // would leave part of its channels behind.
        let (begin, end) = (r.start as usize, r.start as usize + r.len);
        let mut offset = 0;
        let mut inside = Vec::new();
        let mut aligned = r.step == 1;
        for s in &segs {
            let (lo, hi) = (offset, offset + s.width * s.block);
            if lo >= begin && hi <= end {
                inside.push(*s);
            } else if lo < end && hi > begin {
                aligned = false;
            }
            offset = hi;
        }
        if aligned {
            cx.set_output(inside.clone());
            if let [piece] = inside.as_slice() {
                cx.gate_piece(*piece);
            }
        } else {
            // A later pass may start the cut groups as pieces (`ChannelCx::cut`).
            if r.step == 1 {
                cx.cut(&segs, begin, end);
            }
            cx.block(&segs, "slice that cuts through a channel group");
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, k: Option<f32>) -> Option<f32> {
        let x = &n.inputs[0];
        if cx.channel_axis(x) != 1 {
            // Channels on another axis (a token sequence): this slice does not cut them.
            return k;
        }
        match self.channel_range(cx.shape(x)) {
            Some(r) => cx.state(x, r.start as usize + f),
            None => k,
        }
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        let x = n.inputs[0].clone();
        if cx.channel_axis(&x) != 1 {
            return Ok(());
        }
        let (Some(r), Some(kept)) = (self.channel_range(cx.shape(&x)), cx.kept(&x)) else {
            return Ok(());
        };
        // The channel range moves to where its surviving channels now lie.
        let (begin, end) = (r.start as usize, r.start as usize + r.len);
        let before = kept.iter().filter(|&&c| c < begin).count() as i64;
        let within = kept.iter().filter(|&&c| c >= begin && c < end).count() as i64;
        let mut s = self.clone();
        for i in 0..s.axes.len() {
            if s.axes[i] == 1 {
                s.starts[i] = before;
                s.ends[i] = before + within;
            }
        }
        n.op = Op::Slice(s);
        Ok(())
    }
}
