//! ConvTranspose (1-D and 2-D, symmetric pads): the upsampling convolution of U-Net style
//! decoders. Its weight is [C_in, C_out / group, k...], so input channels are the weight's
//! axis 0 and output channels its axis 1.

use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;

use super::window::{Window, window2};
use super::{OpRules, ShapeResult, WeightInput, WeightKind, numel};
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::{SurgeryCx, slice_axis};

/// `Op::ConvTranspose`. Inputs: X, W, optional B.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose {
    pub window: Window,
    pub group: usize,
    /// Extra size added at the end of each spatial axis of the output.
    pub output_padding: Vec<usize>,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let w = cx
        .input_shape_of_rank(1, 3)?
        .ok_or_else(|| a.err("weight shape unknown"))?;
    let kernel = a.usizes("kernel_shape")?.unwrap_or_else(|| w[2..].to_vec());
    let sr = kernel.len();
    if !(1..=2).contains(&sr) {
        return Err(a.err(format!(
            "only 1-D and 2-D transposed convolutions are supported (kernel {kernel:?})"
        )));
    }
    if a.has("output_shape") {
        return Err(a.err("output_shape is not supported (give pads and output_padding)"));
    }
    let auto_pad = a.string("auto_pad", "NOTSET");
    if auto_pad != "NOTSET" && auto_pad != "VALID" {
        return Err(a.err(format!("auto_pad '{auto_pad}' is not supported")));
    }
    let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; sr]);
    let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; sr]);
    let pads = a.usizes("pads")?.unwrap_or_else(|| vec![0; 2 * sr]);
    let output_padding = a.usizes("output_padding")?.unwrap_or_else(|| vec![0; sr]);
    if strides.len() != sr
        || dilations.len() != sr
        || pads.len() != 2 * sr
        || output_padding.len() != sr
    {
        return Err(a.err("strides, dilations, pads or output_padding do not match the kernel"));
    }
    if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
        return Err(a.err("zero stride, dilation or kernel size"));
    }
    if (0..sr).any(|i| pads[i] != pads[i + sr]) {
        return Err(a.err(format!("asymmetric pads {pads:?} are not supported")));
    }
    let group = a.int("group", 1);
    if group < 1 {
        return Err(a.err(format!("group {group} must be positive")));
    }
    let mut ins = vec![0, 1];
    if cx.present(2) {
        ins.push(2);
    }
    Ok((
        Op::ConvTranspose(ConvTranspose {
            window: Window {
                kernel,
                strides,
                pads,
                dilations,
            },
            group: group as usize,
            output_padding,
        }),
        ins,
    ))
}

impl OpRules for ConvTranspose {
    fn onnx_type(&self) -> &'static str {
        "ConvTranspose"
    }

    fn export(&self, cx: &mut ExportCx) {
        super::window::export(&self.window, cx, true);
        cx.int("group", self.group as i64);
        cx.ints(
            "output_padding",
            self.output_padding.iter().map(|&p| p as i64).collect(),
        );
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let w = ins.get(1).ok_or("missing weight")?;
        let win = &self.window;
        let sr = win.spatial_rank();
        if x.len() != sr + 2 || w.len() != sr + 2 || x[1] != w[0] || w[0] % self.group != 0 {
            return Err(format!(
                "input {x:?} does not fit weight {w:?} with group {}",
                self.group
            ));
        }
        if w[2..] != win.kernel[..] {
            return Err(format!(
                "kernel_shape {:?} differs from weight {w:?}",
                win.kernel
            ));
        }
        let c_out = w[1] * self.group;
        if let Some(b) = ins.get(2)
            && **b != [c_out]
        {
            return Err(format!(
                "bias shape {b:?} does not match {c_out} output channels"
            ));
        }
        let mut out = vec![x[0], c_out];
        for i in 0..sr {
            let span = win.dilations[i] * (win.kernel[i] - 1) + 1;
            let full = win.strides[i] * (x[2 + i] - 1) + self.output_padding[i] + span;
            let cut = win.pad_begin(i) + win.pad_end(i);
            if full <= cut {
                return Err(format!(
                    "pads {:?} leave no output for input {x:?}",
                    win.pads
                ));
            }
            out.push(full - cut);
        }
        Ok(out)
    }

    fn macs(&self, ins: &[&[usize]], _out: &[usize]) -> u64 {
        // Each input element is spread over (C_out / group) x kernel outputs.
        let x = ins.first().copied().unwrap_or(&[]);
        let w = ins.get(1).copied().unwrap_or(&[]);
        numel(x) * numel(&w[1..])
    }

    fn weights(&self) -> Vec<WeightInput> {
        vec![
            WeightInput {
                input: 1,
                kind: WeightKind::Kernel,
                out_axis: Some(1),
                in_axis: Some(0),
            },
            WeightInput {
                input: 2,
                kind: WeightKind::Bias,
                out_axis: Some(0),
                in_axis: None,
            },
        ]
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let w = window2(&self.window);
        let rank = x.rank;
        let out_pad = if self.output_padding.len() == 1 {
            [0, self.output_padding[0]]
        } else {
            [self.output_padding[0], self.output_padding[1]]
        };
        let opts = ConvTransposeOptions::new(
            w.stride,
            [w.pads[0].0, w.pads[1].0],
            out_pad,
            w.dilation,
            self.group,
        );
        let bias = ins.get(1).map(|b| b.t.clone().reshape([b.dims()[0]]));
        Val::from4(conv_transpose2d(x.to4(), ins[0].to4(), bias, opts), rank)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        let w = cx.shape(&n.inputs[1]).to_vec();
        let c_out = w[1] * self.group;
        let weight_const = cx.is_const(&n.inputs[1]);
        let bias_const = n.inputs.get(2).is_none_or(|b| cx.is_const(b));
        if let Some(segs) = &cx.input(0) {
            if self.group > 1 {
                cx.block(segs, "grouped transposed convolution");
            } else if !weight_const {
                cx.block(segs, "non-constant weight");
            } else {
                cx.consume(segs);
            }
        }
        let blocked = if self.group > 1 {
            Some("grouped transposed convolution")
        } else if !(weight_const && bias_const) {
            Some("non-constant weight or bias")
        } else {
            None
        };
        cx.produce(c_out, blocked);
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, _: Option<f32>) -> Option<f32> {
        None
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        let out = n.outputs[0].clone();
        if cx.kept(&n.inputs[0]).is_none() && cx.kept(&out).is_none() {
            return Ok(());
        }
        // A constant input channel spreads unevenly near the borders and between strides, so
        // it cannot be folded into the bias.
        if !cx.constants_read(n)?.is_empty() {
            return Err(Error::node(
                &n.name,
                "ConvTranspose",
                "a removed input channel carries a non-zero constant into a transposed convolution; it cannot be folded exactly",
            ));
        }
        let mut w = cx.constant(n, &n.inputs[1])?.clone();
        if let Some(k) = cx.kept(&n.inputs[0]) {
            w = slice_axis(&w, 0, &k);
        }
        if let Some(k) = cx.kept(&out) {
            w = slice_axis(&w, 1, &k);
            if let Some(b) = n.inputs.get(2).cloned() {
                let bt = slice_axis(cx.constant(n, &b)?, 0, &k);
                cx.set_init(n, &b, bt)?;
            }
        }
        cx.set_init(n, &n.inputs[1].clone(), w)?;
        Ok(())
    }
}
