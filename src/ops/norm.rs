//! BatchNormalization (eval-mode statistics; training mode lives in the interpreter's frame).

use burn::prelude::*;

use super::{OpRules, ShapeResult, WeightInput, WeightKind};
use crate::error::Result;
use crate::exec::value::{MAX_RANK, padded};
use crate::exec::{BatchStats, Val};
use crate::groups::ChannelCx;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::{SurgeryCx, slice_axis};

/// The fields of `Op::BatchNorm`. Inputs: X, scale, bias, mean, var.
pub struct BatchNorm {
    pub epsilon: f32,
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    if a.int("spatial", 1) == 0 {
        return Err(a.err("spatial = 0 (per-activation statistics) is not supported"));
    }
    if a.int("training_mode", 0) != 0 {
        return Err(a.err("training_mode = 1 is not supported (export the model in eval mode)"));
    }
    Ok((
        Op::BatchNorm {
            epsilon: a.float("epsilon", 1e-5),
        },
        vec![0, 1, 2, 3, 4],
    ))
}

/// Per-channel vector (shape [C]) broadcast against an (N, C, ...) value.
pub(crate) fn per_channel(v: &Val, x_rank: usize) -> Tensor<MAX_RANK> {
    let c = v.dims()[0];
    let mut shape = vec![1; x_rank];
    shape[1] = c;
    v.t.clone().reshape(padded(&shape))
}

/// The normalisation of one channel's constant value `k` (surgery's constant propagation).
pub(crate) fn normalise_scalar(
    k: f32,
    scale: f32,
    bias: f32,
    mean: f32,
    var: f32,
    eps: f32,
) -> f32 {
    (k - mean) / (var + eps).sqrt() * scale + bias
}

impl OpRules for BatchNorm {
    fn onnx_type(&self) -> &'static str {
        "BatchNormalization"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.float("epsilon", self.epsilon);
        if cx.opset < 7 {
            cx.int("is_test", 1);
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        if x.len() < 2 {
            return Err(format!("input {x:?} has no channel axis"));
        }
        for p in &ins[1..] {
            if **p != [x[1]] {
                return Err(format!(
                    "parameter shape {p:?} does not match {} channels",
                    x[1]
                ));
            }
        }
        Ok(x.to_vec())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        let per_channel = |input, kind| WeightInput {
            input,
            kind,
            out_axis: Some(0),
            in_axis: Some(0),
        };
        vec![
            per_channel(1, WeightKind::Scale),
            per_channel(2, WeightKind::Bias),
            per_channel(3, WeightKind::Statistic),
            per_channel(4, WeightKind::Statistic),
        ]
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let r = x.rank;
        let (scale, bias, mean, var) = (&ins[0], &ins[1], &ins[2], &ins[3]);
        let inv_std = (per_channel(var, r) + self.epsilon).sqrt().recip();
        let y =
            (x.t - per_channel(mean, r)) * (inv_std * per_channel(scale, r)) + per_channel(bias, r);
        Val::new(y, r)
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, k: Option<f32>) -> Option<f32> {
        k.and_then(|k| {
            let p = |i: usize| cx.init(&n.inputs[i]).map(|t| t.to_f32_vec()[f]);
            let (s, b, m, v) = (p(1)?, p(2)?, p(3)?, p(4)?);
            Some(normalise_scalar(k, s, b, m, v, self.epsilon))
        })
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        if let Some(k) = cx.kept(&n.inputs[0]) {
            for i in 1..5 {
                let name = n.inputs[i].clone();
                let t = slice_axis(cx.constant(n, &name)?, 0, &k);
                cx.set_init(n, &name, t)?;
            }
        }
        Ok(())
    }
}

/// BatchNormalization with batch statistics (training mode). Returns the normalised value and
/// the detached batch mean and unbiased variance, for running-statistic updates.
pub fn batch_norm_train(ins: Vec<Val>, epsilon: f32) -> (Val, BatchStats) {
    let (y, stats, _) = batch_norm_train_scaled(ins, epsilon, None, false);
    (y, stats)
}

/// What `batch_norm_train_scaled` applied to its output besides the normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub scale: bool,
    pub relu: bool,
}

/// `batch_norm_train`, and when the fused kernels run: its output times `scale` when that is a
/// gate (1 on every axis but the batch axis, 1 or N, and the channel axis), then a ReLU when
/// `relu` (only if any scale was applied too, as the ReLU comes after it). `Applied` says what
/// was done; the caller does the rest.
pub fn batch_norm_train_scaled(
    mut ins: Vec<Val>,
    epsilon: f32,
    scale: Option<&Val>,
    relu: bool,
) -> (Val, BatchStats, Applied) {
    let x = ins.remove(0);
    let r = x.rank;
    let off = x.offset();
    let dims = x.dims();
    if crate::exec::conv_grad::gemm_grad_applies(&x.t.device()) {
        let gate = scale.and_then(|s| channel_gate(&x, s));
        let scaled = gate.is_some();
        let relu = relu && (scaled || scale.is_none());
        let (y, stats) = fused(x, &ins, gate, relu, epsilon);
        return (
            y,
            stats,
            Applied {
                scale: scaled,
                relu,
            },
        );
    }
    let axes: Vec<usize> = (0..MAX_RANK).filter(|&a| a != off + 1).collect();
    let count: usize = dims
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 1)
        .map(|(_, &d)| d)
        .product();
    let mean = x.t.clone().mean_dims(&axes);
    let centered = x.t - mean.clone();
    let var = (centered.clone() * centered.clone()).mean_dims(&axes);
    let (scale, bias) = (&ins[0], &ins[1]);
    let y = centered * ((var.clone() + epsilon).sqrt().recip() * per_channel(scale, r))
        + per_channel(bias, r);
    let c = dims[1];
    let unbiased = if count > 1 {
        count as f32 / (count - 1) as f32
    } else {
        1.0
    };
    let stats = BatchStats {
        mean: mean.detach().reshape([c]),
        var: (var.detach() * unbiased).reshape([c]),
    };
    let applied = Applied {
        scale: false,
        relu: false,
    };
    (Val::new(y, r), stats, applied)
}

/// `scale` as a (G, C) gate over `x`'s channels (axis 1), if it is one: f32, x's rank, G = N or
/// 1, every other axis 1.
fn channel_gate(x: &Val, scale: &Val) -> Option<Tensor<2>> {
    let (dx, ds) = (x.dims(), scale.dims());
    let rows = ds[0];
    let fits = scale.rank == x.rank
        && x.rank >= 2
        && scale.t.dtype() == burn::tensor::DType::F32
        && (rows == 1 || rows == dx[0])
        && ds[1] == dx[1]
        && ds[2..].iter().all(|&d| d == 1);
    fits.then(|| scale.t.clone().reshape([rows, dx[1]]))
}

/// `batch_norm_train` on burn flex with autodiff: one fused kernel each way
/// (`exec::batch_norm`).
fn fused(
    x: Val,
    ins: &[Val],
    gate: Option<Tensor<2>>,
    relu: bool,
    epsilon: f32,
) -> (Val, BatchStats) {
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let channel = |v: &Val| v.t.clone().reshape([c]);
    let (y, stats) = crate::exec::batch_norm::batch_norm_train_fused(
        x.t.reshape([n, c, spatial]),
        channel(&ins[0]),
        channel(&ins[1]),
        gate,
        relu,
        epsilon,
    );
    let count = n * spatial;
    let unbiased = if count > 1 {
        count as f32 / (count - 1) as f32
    } else {
        1.0
    };
    let stats = stats.detach();
    let batch = BatchStats {
        mean: stats.clone().slice([0..1, 0..c]).reshape([c]),
        var: stats.slice([1..2, 0..c]).reshape([c]) * unbiased,
    };
    (Val::new(y.reshape(padded(&dims)), dims.len()), batch)
}
