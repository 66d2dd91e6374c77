//! Conv (1-D and 2-D, grouped and depthwise).

use burn::tensor::ops::ConvOptions;

use super::window::{self, Window};
use super::{OpRules, ShapeResult, WeightInput, WeightKind};
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::exec::conv_grad::conv2d_train;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op, Tensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::{SurgeryCx, slice_axis};

/// The fields of `Op::Conv`. Inputs: X, W, optional B.
pub struct Conv<'a> {
    pub window: &'a Window,
    pub group: usize,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let w = cx
        .input_shape_of_rank(1, 3)?
        .ok_or_else(|| a.err("weight shape unknown"))?;
    let x = cx
        .input_shape(0)
        .ok_or_else(|| a.err("input shape unknown"))?;
    let kernel = a.usizes("kernel_shape")?.unwrap_or_else(|| w[2..].to_vec());
    let window = window::import(cx, kernel, x)?;
    let group = a.int("group", 1);
    if group < 1 {
        return Err(a.err(format!("group {group} must be positive")));
    }
    let mut ins = vec![0, 1];
    if cx.present(2) {
        ins.push(2);
    }
    Ok((
        Op::Conv {
            window,
            group: group as usize,
        },
        ins,
    ))
}

impl Conv<'_> {
    /// Each output channel reads exactly its own input channel.
    fn depthwise(&self, weight: &[usize]) -> bool {
        let (c_out, c_in_per_group) = (weight[0], weight[1]);
        self.group > 1 && c_in_per_group == 1 && c_out == c_in_per_group * self.group
    }
}

impl OpRules for Conv<'_> {
    fn onnx_type(&self) -> &'static str {
        "Conv"
    }

    fn export(&self, cx: &mut ExportCx) {
        window::export(self.window, cx, true);
        cx.int("group", self.group as i64);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let group = self.group;
        let w = ins.get(1).ok_or("missing weight")?;
        if w.len() != x.len() {
            return Err(format!(
                "weight rank {} does not match input rank {}",
                w.len(),
                x.len()
            ));
        }
        if x.len() < 3 || x[1] != w[1] * group || w[0] % group != 0 {
            return Err(format!(
                "input {x:?} does not fit weight {w:?} with group {group}"
            ));
        }
        if w[2..] != self.window.kernel[..] {
            return Err(format!(
                "kernel_shape {:?} differs from weight {w:?}",
                self.window.kernel
            ));
        }
        if let Some(b) = ins.get(2)
            && **b != [w[0]]
        {
            return Err(format!(
                "bias shape {b:?} does not match {} output channels",
                w[0]
            ));
        }
        window::out_shape(x, self.window, w[0], false)
    }

    fn macs(&self, ins: &[&[usize]], out: &[usize]) -> u64 {
        // Each output element reads (C_in / group) x kernel inputs.
        let w = ins.get(1).copied().unwrap_or(&[]);
        super::numel(out) * super::numel(&w[1..])
    }

    fn weights(&self) -> Vec<WeightInput> {
        vec![
            WeightInput {
                input: 1,
                kind: WeightKind::Kernel,
                out_axis: Some(0),
                in_axis: Some(1),
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
        let w = window::window2(self.window);
        let rank = x.rank;
        let weight = ins[0].to4();
        let bias = ins.get(1).map(|b| b.t.clone().reshape([b.dims()[0]]));
        let opts = ConvOptions::new_with_padding(w.stride, w.pads, w.dilation, self.group);
        Val::from4(conv2d_train(x.to4(), weight, bias, opts), rank)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        let group = self.group;
        let x = cx.input(0);
        let out = &n.outputs[0];
        let w = cx.shape(&n.inputs[1]).to_vec();
        let c_out = w[0];
        let depthwise = self.depthwise(&w);
        // Slicing needs the weight (both axes) and the bias (output axis) as constants.
        let weight_const = cx.is_const(&n.inputs[1]);
        let bias_const = n.inputs.get(2).is_none_or(|b| cx.is_const(b));
        if depthwise {
            // Each output channel reads exactly its own input channel: a pass-through that also
            // produces the group's channels (so it gets a gate too).
            if let Some(segs) = x {
                if !(weight_const && bias_const) {
                    cx.block(&segs, "non-constant weight or bias");
                }
                if let [only] = segs.as_slice() {
                    cx.add_source(only.group, out);
                }
                cx.set_output(segs);
            }
            return;
        }
        if let Some(segs) = &x {
            if group > 1 {
                cx.block(segs, "grouped convolution");
            } else if !weight_const {
                cx.block(segs, "non-constant weight");
            } else {
                cx.consume(segs);
            }
        }
        let blocked = if group > 1 {
            Some("grouped convolution")
        } else if !(weight_const && bias_const) {
            Some("non-constant weight or bias")
        } else {
            None
        };
        cx.produce(c_out, blocked);
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, k: Option<f32>) -> Option<f32> {
        // Only depthwise convs pass channels through; a zero input gives the bias.
        let bias = n
            .inputs
            .get(2)
            .and_then(|b| cx.init(b))
            .map_or(0.0, |b| b.to_f32_vec()[f]);
        match k {
            Some(0.0) => Some(bias),
            Some(k) if self.window.pads.iter().all(|&p| p == 0) => {
                let w = cx
                    .init(&n.inputs[1])
                    .map(|w| slice_axis(w, 0, &[f]).to_f32_vec());
                w.map(|w| k * w.iter().sum::<f32>() + bias)
            }
            _ => None,
        }
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        let out = n.outputs[0].clone();
        // A conv that loses no channel on either side is left as it is (its weight need not
        // even be a constant).
        if cx.kept(&n.inputs[0]).is_none() && cx.kept(&out).is_none() {
            return Ok(());
        }
        let w = cx.constant(n, &n.inputs[1])?.clone();
        let c_in = cx.shape(&n.inputs[0])[1];
        let depthwise = self.group > 1 && w.shape[1] == 1 && w.shape[0] == c_in;
        if depthwise {
            if let Some(k) = cx.kept(&n.inputs[0]) {
                cx.set_init(n, &n.inputs[1].clone(), slice_axis(&w, 0, &k))?;
                if let Some(b) = n.inputs.get(2).cloned() {
                    let bt = slice_axis(cx.constant(n, &b)?, 0, &k);
                    cx.set_init(n, &b, bt)?;
                }
                n.op = Op::Conv {
                    window: self.window.clone(),
                    group: k.len(),
                };
            }
            return Ok(());
        }
        let mut w = w;
        let folds = cx.constants_read(n)?;
        if !folds.is_empty() {
            if self.window.pads.iter().any(|&p| p > 0) {
                return Err(Error::node(
                    &n.name,
                    "Conv",
                    "a removed input channel carries a non-zero constant into a padded convolution; it cannot be folded exactly",
                ));
            }
            let per_out: usize = w.shape[1..].iter().product();
            let per_in: usize = w.shape[2..].iter().product();
            let wv = w.to_f32_vec();
            let mut bias = match n.inputs.get(2) {
                Some(b) => cx.constant(n, b)?.to_f32_vec(),
                None => vec![0.0; w.shape[0]],
            };
            for (o, b) in bias.iter_mut().enumerate() {
                for &(c, k) in &folds {
                    let start = o * per_out + c * per_in;
                    *b += k * wv[start..start + per_in].iter().sum::<f32>();
                }
            }
            let name = n
                .inputs
                .get(2)
                .cloned()
                .unwrap_or_else(|| format!("{}__bias", n.name));
            cx.set_init(n, &name, Tensor::f32(vec![bias.len()], bias))?;
            if n.inputs.len() < 3 {
                n.inputs.push(name);
            }
        }
        if let Some(k) = cx.kept(&n.inputs[0]) {
            w = slice_axis(&w, 1, &k);
        }
        if let Some(k) = cx.kept(&out) {
            w = slice_axis(&w, 0, &k);
            if let Some(b) = n.inputs.get(2).cloned() {
                let bt = slice_axis(cx.constant(n, &b)?, 0, &k);
                cx.set_init(n, &b, bt)?;
            }
        }
        cx.set_init(n, &n.inputs[1].clone(), w)?;
        Ok(())
    }
}
