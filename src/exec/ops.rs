//! One kernel per IR op, written once against burn's backend-agnostic tensor API.
//! Shapes were checked by static inference when the plan was built, so these do not re-check.

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};

use super::value::{MAX_RANK, Val, padded};
use crate::ir::shape::{norm_axis, reshape_target};
use crate::ir::{Activation, BinaryOp, Op, Window};

/// 2-D window parameters; a 1-D window becomes a 1 x L window.
struct Window2 {
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [(usize, usize); 2],
    dilation: [usize; 2],
}

fn window2(w: &Window) -> Window2 {
    if w.spatial_rank() == 1 {
        Window2 {
            kernel: [1, w.kernel[0]],
            stride: [1, w.strides[0]],
            pads: [(0, 0), (w.pads[0], w.pads[1])],
            dilation: [1, w.dilations[0]],
        }
    } else {
        Window2 {
            kernel: [w.kernel[0], w.kernel[1]],
            stride: [w.strides[0], w.strides[1]],
            pads: [(w.pads[0], w.pads[2]), (w.pads[1], w.pads[3])],
            dilation: [w.dilations[0], w.dilations[1]],
        }
    }
}

/// Per-channel vector (shape [C]) broadcast against an (N, C, ...) value.
fn per_channel(v: &Val, x_rank: usize) -> T6Like {
    let c = v.dims()[0];
    let mut shape = vec![1; x_rank];
    shape[1] = c;
    v.t.clone().reshape(padded(&shape))
}

type T6Like = Tensor<MAX_RANK>;

fn activation(act: Activation, t: T6Like) -> T6Like {
    match act {
        Activation::Relu => activation::relu(t),
        Activation::LeakyRelu { alpha } => activation::leaky_relu(t, alpha as f64),
        Activation::Clip { min, max } => {
            let t = if min.is_finite() { t.clamp_min(min) } else { t };
            if max.is_finite() { t.clamp_max(max) } else { t }
        }
        Activation::Sigmoid => activation::sigmoid(t),
        Activation::HardSigmoid { alpha, beta } => {
            activation::hard_sigmoid(t, alpha as f64, beta as f64)
        }
        Activation::HardSwish => {
            let gate = activation::hard_sigmoid(t.clone(), 1.0 / 6.0, 0.5);
            t * gate
        }
        Activation::Tanh => activation::tanh(t),
    }
}

/// Numpy matmul: rank-1 operands are promoted, batch dims broadcast.
fn matmul(a: Val, b: Val) -> Val {
    let (da, db) = (a.dims(), b.dims());
    let out = crate::ir::shape::matmul_shape(&da, &db).expect("checked at plan time");
    let a2 = if da.len() == 1 {
        a.reshape(&[1, da[0]])
    } else {
        a
    };
    let b2 = if db.len() == 1 {
        b.reshape(&[db[0], 1])
    } else {
        b
    };
    // Expand both to the common batch shape so burn's batched matmul sees equal batch dims.
    let (sa, sb) = (a2.t.dims(), b2.t.dims());
    let mut batch_a = sa;
    let mut batch_b = sb;
    for i in 0..MAX_RANK - 2 {
        let d = sa[i].max(sb[i]);
        batch_a[i] = d;
        batch_b[i] = d;
    }
    let prod = a2.t.expand(batch_a).matmul(b2.t.expand(batch_b));
    Val::new(prod.reshape(padded(&out)), out.len())
}

pub fn apply(op: &Op, mut ins: Vec<Val>) -> Val {
    let x = ins.remove(0);
    match op {
        Op::Conv { window, group } => {
            let w = window2(window);
            let rank = x.rank;
            let weight = ins[0].to4();
            let bias = ins.get(1).map(|b| b.t.clone().reshape([b.dims()[0]]));
            let opts = ConvOptions::new_with_padding(w.stride, w.pads, w.dilation, *group);
            Val::from4(conv2d(x.to4(), weight, bias, opts), rank)
        }
        Op::BatchNorm { epsilon } => {
            let r = x.rank;
            let (scale, bias, mean, var) = (&ins[0], &ins[1], &ins[2], &ins[3]);
            let inv_std = (per_channel(var, r) + *epsilon).sqrt().recip();
            let y = (x.t - per_channel(mean, r)) * (inv_std * per_channel(scale, r))
                + per_channel(bias, r);
            Val::new(y, r)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = x.to2();
            let b = ins[0].to2();
            let a = if *trans_a { a.transpose() } else { a };
            let b = if *trans_b { b.transpose() } else { b };
            let mut y = Val::from2(a.matmul(b));
            if *alpha != 1.0 {
                y = y.map(|t| t * *alpha);
            }
            if let Some(c) = ins.get(1) {
                let c = if *beta != 1.0 {
                    c.t.clone() * *beta
                } else {
                    c.t.clone()
                };
                y = y.map(|t| t + c);
            }
            y
        }
        Op::MatMul => matmul(x, ins.remove(0)),
        Op::Binary(b) => {
            let y = ins.remove(0);
            let rank = x.rank.max(y.rank);
            let t = match b {
                BinaryOp::Add => x.t + y.t,
                BinaryOp::Sub => x.t - y.t,
                BinaryOp::Mul => x.t * y.t,
                BinaryOp::Div => x.t / y.t,
            };
            Val::new(t, rank)
        }
        Op::Activation(act) => x.map(|t| activation(*act, t)),
        Op::Softmax { axis, log, legacy } => {
            let dims = x.dims();
            let a = norm_axis(*axis, dims.len()).expect("checked at plan time");
            let f = |t: T6Like, dim: usize| {
                if *log {
                    activation::log_softmax(t, dim)
                } else {
                    activation::softmax(t, dim)
                }
            };
            if *legacy && a + 1 < dims.len() {
                // Opset < 13: softmax over the flattened trailing block [a..].
                let outer: usize = dims[..a].iter().product();
                let inner: usize = dims[a..].iter().product();
                let flat = x.reshape(&[outer, inner]);
                let off = flat.offset();
                Val::new(f(flat.t, off + 1), 2).reshape(&dims)
            } else {
                let off = x.offset();
                x.map(|t| f(t, off + a))
            }
        }
        Op::MaxPool { window, ceil_mode } => {
            let w = window2(window);
            let opts = MaxPoolOptions::new(w.kernel)
                .with_stride(w.stride)
                .with_padding_pairs(w.pads)
                .with_dilation(w.dilation)
                .with_ceil_mode(*ceil_mode);
            Val::from4(max_pool2d(x.to4(), opts), x.rank)
        }
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => {
            let w = window2(window);
            let opts = AvgPoolOptions::new(w.kernel)
                .with_stride(w.stride)
                .with_padding_pairs(w.pads)
                .with_count_include_pad(*count_include_pad)
                .with_ceil_mode(*ceil_mode);
            Val::from4(avg_pool2d(x.to4(), opts), x.rank)
        }
        Op::GlobalAveragePool => {
            let off = x.offset();
            let rank = x.rank;
            let axes: Vec<usize> = (off + 2..MAX_RANK).collect();
            Val::new(x.t.mean_dims(&axes), rank)
        }
        Op::ReduceMean { axes, keepdims } => {
            let dims = x.dims();
            let off = x.offset();
            let mut reduced: Vec<usize> = if axes.is_empty() {
                (0..dims.len()).collect()
            } else {
                axes.iter()
                    .map(|&a| norm_axis(a, dims.len()).expect("checked at plan time"))
                    .collect()
            };
            reduced.sort();
            reduced.dedup();
            let padded_axes: Vec<usize> = reduced.iter().map(|a| a + off).collect();
            let y = Val::new(x.t.mean_dims(&padded_axes), dims.len());
            if *keepdims {
                y
            } else {
                let out: Vec<usize> = (0..dims.len())
                    .filter(|i| !reduced.contains(i))
                    .map(|i| dims[i])
                    .collect();
                y.reshape(&out)
            }
        }
        Op::Flatten { .. } | Op::Reshape { .. } => {
            let dims = x.dims();
            let target = match op {
                Op::Reshape { shape } => {
                    reshape_target(&dims, shape).expect("checked at plan time")
                }
                _ => crate::ir::shape::infer(op, &[&dims]).expect("checked at plan time"),
            };
            x.reshape(&target)
        }
        Op::Transpose { perm } => {
            let off = x.offset();
            let mut axes: [usize; MAX_RANK] = std::array::from_fn(|i| i);
            for (i, &p) in perm.iter().enumerate() {
                axes[off + i] = off + p;
            }
            x.map(|t| t.permute(axes))
        }
        Op::Concat { axis } => {
            let rank = x.rank;
            let a = norm_axis(*axis, rank).expect("checked at plan time") + MAX_RANK - rank;
            let mut all = vec![x.t];
            all.extend(ins.into_iter().map(|v| v.t));
            Val::new(Tensor::cat(all, a), rank)
        }
        Op::Pad { pads, mode, value } => {
            let dims = x.dims();
            let r = dims.len();
            let off = x.offset();
            // Negative pads crop: slice first, then pad with the positive parts.
            let mut ranges: [std::ops::Range<usize>; MAX_RANK] =
                std::array::from_fn(|i| 0..x.t.dims()[i]);
            let mut pairs = vec![(0usize, 0usize); MAX_RANK];
            for i in 0..r {
                let (b, e) = (pads[i], pads[i + r]);
                let lo = if b < 0 { (-b) as usize } else { 0 };
                let hi = dims[i] - if e < 0 { (-e) as usize } else { 0 };
                ranges[off + i] = lo..hi;
                pairs[off + i] = (b.max(0) as usize, e.max(0) as usize);
            }
            let t = x.t.slice(ranges);
            let mode = match mode {
                crate::ir::PadMode::Constant => PadMode::Constant(*value),
                crate::ir::PadMode::Reflect => PadMode::Reflect,
                crate::ir::PadMode::Edge => PadMode::Edge,
            };
            Val::new(t.pad(pairs, mode), r)
        }
        Op::Identity => x,
    }
}

/// BatchNormalization with batch statistics (training mode). Returns the normalised value and
/// the detached batch mean and unbiased variance, for running-statistic updates.
pub fn batch_norm_train(mut ins: Vec<Val>, epsilon: f32) -> (Val, super::BatchStats) {
    let x = ins.remove(0);
    let r = x.rank;
    let off = x.offset();
    let dims = x.dims();
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
    let stats = super::BatchStats {
        mean: mean.detach().reshape([c]),
        var: (var.detach() * unbiased).reshape([c]),
    };
    (Val::new(y, r), stats)
}
