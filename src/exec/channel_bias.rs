//! A convolution's bias added per channel on the CPU (burn flex with autodiff): one pass
//! forward, and the bias gradient (`sum dy` per channel) in one pass back.
//!
//! As a broadcast add, burn's backward reduced the output gradient over batch, height and width
//! one strided axis at a time (a few ms per LeNet-5 conv at batch 128). Values are (N, C, S).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Per-channel bias of (N, C, S) values.
#[backend_extension(Flex, Autodiff)]
pub trait ChannelBias: Backend {
    /// `y[n, c, s] = x[n, c, s] + b[c]`.
    fn channel_bias_add(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [C]: `sum dy` over N and S (not tracked).
    fn channel_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let d = t.layout().shape();
    [d[0], d[1], d[2]]
}

/// Sum in 16 independent f32 lanes (so that it vectorises), widened to f64.
fn lane_sum(a: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 16];
    let chunks = a.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += v;
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

impl ChannelBias for Flex {
    fn channel_bias_add(x: FlexTensor, b: FlexTensor) -> FlexTensor {
        let (x, b) = (x.to_contiguous(), b.to_contiguous());
        let [n, c, s] = dims3(&x);
        let (xv, bv): (&[f32], &[f32]) = (x.storage(), b.storage());
        let mut y = vec![0.0f32; xv.len()];
        if c * s > 0 {
            y.par_chunks_mut(c * s)
                .zip(xv.par_chunks(c * s))
                .for_each(|(y_b, x_b)| {
                    for ((y_c, x_c), &k) in y_b.chunks_mut(s).zip(x_b.chunks(s)).zip(bv) {
                        for (o, v) in y_c.iter_mut().zip(x_c) {
                            *o = v + k;
                        }
                    }
                });
        }
        FlexTensor::from_data(TensorData::new(y, vec![n, c, s]))
    }

    fn channel_bias_grad(dy: FlexTensor) -> FlexTensor {
        let dy = dy.to_contiguous();
        let [n, c, s] = dims3(&dy);
        let dyv: &[f32] = dy.storage();
        // Per channel, over examples in order (independent of the thread count).
        let sums: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..n)
                    .map(|b| lane_sum(&dyv[(b * c + ch) * s..][..s]))
                    .sum::<f64>() as f32
            })
            .collect();
        FlexTensor::from_data(TensorData::new(sums, vec![c]))
    }
}

impl<B: Backend + ChannelBias, C: CheckpointStrategy> ChannelBias for Autodiff<B, C> {
    fn channel_bias_add(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        BiasBackward
            .prepare::<C>([x.node(), b.node()])
            .compute_bound()
            .stateless(B::channel_bias_add(x.into_primitive(), b.into_primitive()))
    }

    fn channel_bias_grad(dy: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::channel_bias_grad(dy.into_primitive()))
    }
}

#[derive(Debug)]
struct BiasBackward;

impl<B: Backend + ChannelBias> Backward<B, 2> for BiasBackward {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::channel_bias_grad(dy.clone()));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dy);
        }
    }
}

/// `x + b` per channel of an (N, C, H, W) value on autodiff flex (the caller checks the device).
pub fn add(x: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let y = Tensor::<3>::from_dispatch(<Dispatch as ChannelBias>::channel_bias_add(
        x.reshape([n, c, h * w]).into_dispatch(),
        b.into_dispatch(),
    ));
    y.reshape([n, c, h, w])
}
