//! LayerNormalization (opset 17): normalisation over the trailing axes from `axis` on, with a
//! scale and an optional bias shaped like those axes.

use super::{OpRules, ShapeResult, WeightInput, WeightKind};
use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::shape::norm_axis;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::LayerNorm`. Inputs: X, Scale, optional B.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub axis: i64,
    pub epsilon: f32,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    // Mean and InvStdDev are training outputs; a graph that reads them is not supported.
    if cx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(a.err("the Mean / InvStdDev outputs are not supported"));
    }
    let mut ins = vec![0, 1];
    if cx.present(2) {
        ins.push(2);
    }
    Ok((
        Op::LayerNorm(LayerNorm {
            axis: a.int("axis", -1),
            epsilon: a.float("epsilon", 1e-5),
        }),
        ins,
    ))
}

impl LayerNorm {
    /// The first normalised axis of a rank-`rank` input.
    pub(crate) fn first_axis(&self, rank: usize) -> std::result::Result<usize, String> {
        norm_axis(self.axis, rank)
    }

    /// The gated network's LayerNorm over a hidden width (normalised over the last axis only):
    /// mean and variance over the channels whose gate value `z` is not 0, and 0 at the others,
    /// so that it equals the pruned network's LayerNorm over the kept channels. `z` broadcasts
    /// to `x` (one row per example or one for the batch). The open set carries no gradient;
    /// the gate's gradient reaches it through the gated producers of the residual stream.
    pub fn eval_masked(&self, x: Val, ins: Vec<Val>, z: &Val) -> Val {
        let r = x.rank;
        let last = crate::exec::value::MAX_RANK - 1;
        let open = z.t.clone().not_equal_elem(0.0).float();
        let count = open.clone().sum_dim(last).clamp_min(1.0);
        let mean = (x.t.clone() * open.clone()).sum_dim(last) / count.clone();
        let d = (x.t - mean) * open.clone();
        let var = (d.clone() * d.clone()).sum_dim(last) / count;
        let mut y = d * (var + self.epsilon).sqrt().recip() * ins[0].t.clone();
        if let Some(b) = ins.get(1) {
            y = y + b.t.clone() * open;
        }
        Val::new(y, r)
    }
}

impl OpRules for LayerNorm {
    fn onnx_type(&self) -> &'static str {
        "LayerNormalization"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("axis", self.axis);
        cx.float("epsilon", self.epsilon);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let axis = self.first_axis(x.len())?;
        let normalised = &x[axis..];
        for p in ins.get(1..).unwrap_or(&[]) {
            // Scale and bias broadcast to the normalised axes (unidirectionally).
            if p.len() > normalised.len()
                || p.iter()
                    .rev()
                    .zip(normalised.iter().rev())
                    .any(|(&a, &b)| a != 1 && a != b)
            {
                return Err(format!(
                    "parameter shape {p:?} does not broadcast to the normalised dims {normalised:?}"
                ));
            }
        }
        Ok(x.to_vec())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        // The parameters lie along the normalised (trailing) axes, not the channel axis 1.
        let param = |input, kind| WeightInput {
            input,
            kind,
            out_axis: None,
            in_axis: None,
        };
        vec![param(1, WeightKind::Scale), param(2, WeightKind::Bias)]
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let r = x.rank;
        let off = x.offset();
        let axis = self.first_axis(r).expect("checked at plan time");
        let axes: Vec<usize> = (off + axis..off + r).collect();
        let mean = x.t.clone().mean_dims(&axes);
        let centered = x.t - mean;
        let var = (centered.clone() * centered.clone()).mean_dims(&axes);
        let mut y = centered * (var + self.epsilon).sqrt().recip() * ins[0].t.clone();
        if let Some(b) = ins.get(1) {
            y = y + b.t.clone();
        }
        Val::new(y, r)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let rank = cx.rank();
        match self.first_axis(rank) {
            // Normalising over axes after the channel axis treats each channel alone.
            Ok(axis) if axis >= 2 => cx.pass_through(),
            _ => cx.block_inputs("layer normalisation over the channel axis"),
        }
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, _: usize, _: Option<f32>) -> Option<f32> {
        // Over the hidden width the gated network writes 0 at closed channels.
        cx.normalised(&n.outputs[0]).then_some(0.0)
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        // Channels cross a LayerNorm whose normalised axis holds them only as a transformer's
        // hidden width (groups::hidden): its scale and bias lose the removed channels.
        let out = n.outputs[0].clone();
        let (true, Some(kept)) = (cx.normalised(&out), cx.kept(&out)) else {
            return Ok(());
        };
        let width = cx.shape(&out)[cx.channel_axis(&out)];
        let params: Vec<String> = n.inputs.iter().skip(1).cloned().collect();
        for name in params {
            if let Some(t) = cx.init(&name).cloned()
                && t.shape.last() == Some(&width)
            {
                let axis = t.shape.len() - 1;
                cx.set_init(n, &name, crate::prune::surgery::slice_axis(&t, axis, &kept))?;
            }
        }
        Ok(())
    }
}
