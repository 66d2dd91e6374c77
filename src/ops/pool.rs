//! Pooling: MaxPool, AveragePool, GlobalAveragePool. Each pools every channel on its own.

use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};

use super::window::{self, Window};
use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::max_pool as tiled;
use crate::exec::value::MAX_RANK;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// The fields of `Op::MaxPool`.
pub struct MaxPool<'a> {
    pub window: &'a Window,
    pub ceil_mode: bool,
}

/// The fields of `Op::AveragePool`.
pub struct AveragePool<'a> {
    pub window: &'a Window,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// `Op::GlobalAveragePool`.
pub struct GlobalAveragePool;

fn required_window(cx: &ImportCx) -> Result<Window> {
    let a = &cx.attrs;
    let x = cx
        .input_shape(0)
        .ok_or_else(|| a.err("input shape unknown"))?;
    let kernel = a
        .usizes("kernel_shape")?
        .ok_or_else(|| a.err("kernel_shape is required"))?;
    window::import(cx, kernel, x)
}

pub(crate) fn import_max(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    if cx.node.output.get(1).is_some_and(|s| !s.is_empty()) {
        return Err(cx.attrs.err("the Indices output is not supported"));
    }
    let window = required_window(cx)?;
    Ok((
        Op::MaxPool {
            window,
            ceil_mode: cx.attrs.int("ceil_mode", 0) != 0,
        },
        vec![0],
    ))
}

pub(crate) fn import_average(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let window = required_window(cx)?;
    if window.dilations.iter().any(|&d| d != 1) {
        return Err(a.err("dilated average pooling is not supported"));
    }
    Ok((
        Op::AveragePool {
            window,
            ceil_mode: a.int("ceil_mode", 0) != 0,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        },
        vec![0],
    ))
}

pub(crate) fn import_global_average(_cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    Ok((Op::GlobalAveragePool, vec![0]))
}

fn channels_of(x: &[usize]) -> usize {
    *x.get(1).unwrap_or(&0)
}

impl OpRules for MaxPool<'_> {
    fn onnx_type(&self) -> &'static str {
        "MaxPool"
    }

    fn export(&self, cx: &mut ExportCx) {
        let v10 = cx.opset >= 10;
        window::export(self.window, cx, v10);
        if v10 {
            cx.int("ceil_mode", self.ceil_mode as i64);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        window::out_shape(x, self.window, channels_of(x), self.ceil_mode)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let w = window::window2(self.window);
        let x4 = x.to4();
        if tiled::applies(&x4, w.kernel, w.stride, w.pads, w.dilation, self.ceil_mode) {
            return Val::from4(tiled::tiled_max_pool(x4, w.kernel), x.rank);
        }
        let opts = MaxPoolOptions::new(w.kernel)
            .with_stride(w.stride)
            .with_padding_pairs(w.pads)
            .with_dilation(w.dilation)
            .with_ceil_mode(self.ceil_mode);
        Val::from4(max_pool2d(x4, opts), x.rank)
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

impl OpRules for AveragePool<'_> {
    fn onnx_type(&self) -> &'static str {
        "AveragePool"
    }

    fn export(&self, cx: &mut ExportCx) {
        window::export(self.window, cx, false);
        if cx.opset >= 10 {
            cx.int("ceil_mode", self.ceil_mode as i64);
        }
        cx.int("count_include_pad", self.count_include_pad as i64);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        window::out_shape(x, self.window, channels_of(x), self.ceil_mode)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let w = window::window2(self.window);
        let opts = AvgPoolOptions::new(w.kernel)
            .with_stride(w.stride)
            .with_padding_pairs(w.pads)
            .with_count_include_pad(self.count_include_pad)
            .with_ceil_mode(self.ceil_mode);
        Val::from4(avg_pool2d(x.to4(), opts), x.rank)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        // Padding counted in the average dilutes a constant near the borders.
        if self.count_include_pad && self.window.pads.iter().any(|&p| p > 0) {
            None
        } else {
            k
        }
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

impl OpRules for GlobalAveragePool {
    fn onnx_type(&self) -> &'static str {
        "GlobalAveragePool"
    }

    fn export(&self, _cx: &mut ExportCx) {}

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        if x.len() < 3 {
            return Err(format!("expects (N, C, spatial...), got {x:?}"));
        }
        let mut out = x.to_vec();
        out[2..].iter_mut().for_each(|d| *d = 1);
        Ok(out)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        let off = x.offset();
        let rank = x.rank;
        let axes: Vec<usize> = (off + 2..MAX_RANK).collect();
        Val::new(x.t.mean_dims(&axes), rank)
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
