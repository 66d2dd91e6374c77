//! A gate multiplying a value per channel (and per example) on the CPU (burn flex with
//! autodiff): one pass forward, one pass for each gradient, with its own autodiff backward.
//!
//! As a broadcast multiply on the interpreter's rank-6 values, burn computed the gate gradient
//! as a full-size product followed by strided reductions over every broadcast axis, about 5 ms
//! per gated LeNet-5 conv output at batch 128 (an eighth of its step).
//! Values are viewed as (N, M, C, S): M the axes between the batch and the channel axis, S those
//! after it; the gate is (G, C) with G = N (a draw per example) or 1 (shared by the batch).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::Val;

/// Per-channel scaling of (N, M, C, S) values by (G, C) gates, G = N or 1.
#[backend_extension(Flex, Autodiff)]
pub trait ChannelScale: Backend {
    /// `y[n, m, c, s] = x[n, m, c, s] * g[n or 0, c]`.
    fn channel_scale(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self>;

    /// (G, C): `sum dy * x` over M and S (and over N when G = 1), not tracked.
    fn channel_scale_gate_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        gate_rows: usize,
    ) -> FloatTensor<Self>;
}

/// Sum of `a_k * b_k` in 16 independent f32 lanes (so that it vectorises), widened to f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(xa).zip(xb) {
            *lane += x * y;
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let d = t.layout().shape();
    [d[0], d[1], d[2], d[3]]
}

impl ChannelScale for Flex {
    fn channel_scale(x: FlexTensor, g: FlexTensor) -> FlexTensor {
        let (x, g) = (x.to_contiguous(), g.to_contiguous());
        let [n, m, c, s] = dims4(&x);
        let (xv, gv): (&[f32], &[f32]) = (x.storage(), g.storage());
        let shared = gv.len() == c;
        let example = m * c * s;
        let mut y = vec![0.0f32; xv.len()];
        if example > 0 {
            y.par_chunks_mut(example)
                .zip(xv.par_chunks(example))
                .enumerate()
                .for_each(|(b, (y_b, x_b))| {
                    let gate = if shared { gv } else { &gv[b * c..][..c] };
                    for (i, (y_s, x_s)) in y_b.chunks_mut(s).zip(x_b.chunks(s)).enumerate() {
                        let k = gate[i % c];
                        for (o, v) in y_s.iter_mut().zip(x_s) {
                            *o = v * k;
                        }
                    }
                });
        }
        FlexTensor::from_data(TensorData::new(y, vec![n, m, c, s]))
    }

    fn channel_scale_gate_grad(x: FlexTensor, dy: FlexTensor, gate_rows: usize) -> FlexTensor {
        let (x, dy) = (x.to_contiguous(), dy.to_contiguous());
        let [n, m, c, s] = dims4(&x);
        let (xv, dyv): (&[f32], &[f32]) = (x.storage(), dy.storage());
        let example = m * c * s;
        // Per example and channel, summed over M then S in order (independent of threads).
        let per_example: Vec<Vec<f64>> = (0..n)
            .into_par_iter()
            .map(|b| {
                let mut sums = vec![0.0f64; c];
                for i in 0..m * c {
                    let at = b * example + i * s;
                    sums[i % c] += dot(&xv[at..][..s], &dyv[at..][..s]);
                }
                sums
            })
            .collect();
        let out: Vec<f32> = if gate_rows == 1 {
            (0..c)
                .map(|ch| per_example.iter().map(|e| e[ch]).sum::<f64>() as f32)
                .collect()
        } else {
            per_example.iter().flatten().map(|&v| v as f32).collect()
        };
        FlexTensor::from_data(TensorData::new(out, vec![gate_rows, c]))
    }
}

impl<B: Backend + ChannelScale, C: CheckpointStrategy> ChannelScale for Autodiff<B, C> {
    fn channel_scale(x: FloatTensor<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        match ScaleBackward
            .prepare::<C>([x.node(), g.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gate = g.primitive().clone();
                let y = B::channel_scale(x.into_primitive(), g.into_primitive());
                prep.finish((x_state, gate), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::channel_scale(x.into_primitive(), g.into_primitive()))
            }
        }
    }

    fn channel_scale_gate_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        gate_rows: usize,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::channel_scale_gate_grad(
            x.into_primitive(),
            dy.into_primitive(),
            gate_rows,
        ))
    }
}

#[derive(Debug)]
struct ScaleBackward;

impl<B: Backend + ChannelScale> Backward<B, 2> for ScaleBackward {
    type State = (NodeId, B::FloatTensorPrimitive);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_g] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, gate) = ops.state;
        if let Some(node) = node_g {
            let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
            let rows = gate.shape()[0];
            grads.register::<B>(node.id, B::channel_scale_gate_grad(x, dy.clone(), rows));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::channel_scale(dy, gate));
        }
    }
}

/// `x * scale` where `scale` (same rank) is 1 on every axis but the batch axis (1 or N) and
/// one channel axis after it; `None` when the kernel does not apply (not autodiff flex, not
/// f32, another broadcast pattern), so that the caller multiplies as usual.
pub fn scale(x: &Val, scale: &Val) -> Option<Val> {
    if !super::conv_grad::gemm_grad_applies(&x.t.device())
        || x.t.dtype() != DType::F32
        || scale.t.dtype() != DType::F32
        || x.rank < 2
        || scale.rank != x.rank
    {
        return None;
    }
    let (dx, ds) = (x.dims(), scale.dims());
    let n = dx[0];
    let rows = ds[0];
    if rows != n && rows != 1 {
        return None;
    }
    let channel = (1..x.rank).find(|&a| ds[a] != 1).unwrap_or(1);
    if (1..x.rank).any(|a| a != channel && ds[a] != 1) || ds[channel] != dx[channel] {
        return None;
    }
    let c = dx[channel];
    let m: usize = dx[1..channel].iter().product();
    let s: usize = dx[channel + 1..].iter().product();
    let x4 = x.t.clone().reshape([n, m, c, s]);
    let g = scale.t.clone().reshape([rows, c]);
    let y = Tensor::<4>::from_dispatch(<Dispatch as ChannelScale>::channel_scale(
        x4.into_dispatch(),
        g.into_dispatch(),
    ));
    Some(Val::new(y.reshape(super::value::padded(&dx)), x.rank))
}
