//! Max pooling over non-overlapping windows (stride = kernel, no padding, no dilation) on the
//! CPU (burn flex): a backend extension with its own autodiff backward, for training and eval.
//!
//! flex's pooling walks a general 3-D window per output element and, under autodiff, writes an
//! i64 index tensor: LeNet-5's two 2x2 pools took a third of its training step. Here the forward
//! is one pass; the backward scans each window of the saved input again for its maximum (the
//! same tie rule: first maximum, a NaN wins) and writes the output gradient there.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Max pooling over non-overlapping `kernel` windows of (N, C, H, W) values.
#[backend_extension(Flex, Autodiff)]
pub trait TiledMaxPool: Backend {
    /// (N, C, H / kh, W / kw): the maximum of each window.
    fn tiled_max_pool(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self>;

    /// dL/dx given dL/dy: each window's gradient goes to its (first) maximum.
    fn tiled_max_pool_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        kernel: [usize; 2],
    ) -> FloatTensor<Self>;
}

/// Whether a window's value `v` replaces the maximum so far (flex's and PyTorch's rule: the
/// first maximum stays, a NaN wins).
#[inline(always)]
fn replaces(v: f32, max: f32) -> bool {
    // `|`, not `||`: no branch, so that the window loops compile to selects.
    (v > max) | v.is_nan()
}

/// Pool geometry of a contiguous (N, C, H, W) tensor.
struct Tiles {
    batch: usize,
    planes: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
}

impl Tiles {
    fn new(x: &FlexTensor, kernel: [usize; 2]) -> Self {
        let d = x.layout().shape();
        Tiles {
            batch: d[0],
            planes: d[1],
            height: d[2],
            width: d[3],
            kernel,
        }
    }

    fn out(&self) -> [usize; 2] {
        [self.height / self.kernel[0], self.width / self.kernel[1]]
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    /// The flat offset (within its plane) of the maximum of window (oh, ow), without
    /// branches on the data (random maxima mispredict).
    #[inline(always)]
    fn argmax(&self, plane: &[f32], [kh, kw]: [usize; 2], oh: usize, ow: usize) -> usize {
        let start = oh * kh * self.width + ow * kw;
        let (mut best, mut max) = (start, plane[start]);
        for ih in 0..kh {
            let row = start + ih * self.width;
            for (iw, &v) in plane[row..][..kw].iter().enumerate() {
                let take = replaces(v, max);
                best = if take { row + iw } else { best };
                max = if take { v } else { max };
            }
        }
        best
    }

    /// Writes the maximum of every window of one plane of x (`kernel` = self.kernel, passed
    /// so that a constant 2x2 unrolls).
    #[inline(always)]
    fn pool_plane(&self, [kh, kw]: [usize; 2], x_p: &[f32], y_p: &mut [f32]) {
        let [oh, ow] = self.out();
        for (i, y_row) in y_p.chunks_exact_mut(ow).enumerate().take(oh) {
            for (j, y) in y_row.iter_mut().enumerate() {
                let start = i * kh * self.width + j * kw;
                let mut max = x_p[start];
                for ih in 0..kh {
                    for &v in &x_p[start + ih * self.width..][..kw] {
                        max = if replaces(v, max) { v } else { max };
                    }
                }
                *y = max;
            }
        }
    }

    /// Writes each window's gradient to its maximum in one (zeroed) plane of dx.
    #[inline(always)]
    fn scatter_plane(&self, kernel: [usize; 2], x_p: &[f32], dy_p: &[f32], dx_p: &mut [f32]) {
        let [oh, ow] = self.out();
        for i in 0..oh {
            for j in 0..ow {
                dx_p[self.argmax(x_p, kernel, i, j)] = dy_p[i * ow + j];
            }
        }
    }
}

impl TiledMaxPool for Flex {
    fn tiled_max_pool(x: FlexTensor, kernel: [usize; 2]) -> FlexTensor {
        let x = x.to_contiguous();
        let t = Tiles::new(&x, kernel);
        let xv: &[f32] = x.storage();
        let [oh, ow] = t.out();
        let (out_plane, planes) = (oh * ow, t.planes);
        let mut y = vec![0.0f32; t.batch * planes * out_plane];
        if out_plane * planes > 0 {
            // One task per example: per-plane tasks are too small for rayon.
            y.par_chunks_mut(planes * out_plane)
                .zip(xv.par_chunks(planes * t.plane()))
                .for_each(|(y_b, x_b)| {
                    let pairs = y_b.chunks_mut(out_plane).zip(x_b.chunks(t.plane()));
                    for (y_p, x_p) in pairs {
                        match kernel {
                            [2, 2] => t.pool_plane([2, 2], x_p, y_p),
                            _ => t.pool_plane(kernel, x_p, y_p),
                        }
                    }
                });
        }
        FlexTensor::from_data(TensorData::new(y, vec![t.batch, planes, oh, ow]))
    }

    fn tiled_max_pool_grad(x: FlexTensor, dy: FlexTensor, kernel: [usize; 2]) -> FlexTensor {
        let x = x.to_contiguous();
        let dy = dy.to_contiguous();
        let t = Tiles::new(&x, kernel);
        let (xv, dyv): (&[f32], &[f32]) = (x.storage(), dy.storage());
        let [oh, ow] = t.out();
        let (out_plane, planes) = (oh * ow, t.planes);
        let mut dx = vec![0.0f32; xv.len()];
        if out_plane * planes > 0 {
            dx.par_chunks_mut(planes * t.plane())
                .zip(xv.par_chunks(planes * t.plane()))
                .zip(dyv.par_chunks(planes * out_plane))
                .for_each(|((dx_b, x_b), dy_b)| {
                    let planes = dx_b
                        .chunks_mut(t.plane())
                        .zip(x_b.chunks(t.plane()))
                        .zip(dy_b.chunks(out_plane));
                    for ((dx_p, x_p), dy_p) in planes {
                        match kernel {
                            [2, 2] => t.scatter_plane([2, 2], x_p, dy_p, dx_p),
                            _ => t.scatter_plane(kernel, x_p, dy_p, dx_p),
                        }
                    }
                });
        }
        FlexTensor::from_data(TensorData::new(dx, x.layout().shape().to_vec()))
    }
}

impl<B: Backend + TiledMaxPool, C: CheckpointStrategy> TiledMaxPool for Autodiff<B, C> {
    fn tiled_max_pool(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self> {
        match PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let y = B::tiled_max_pool(x.into_primitive(), kernel);
                prep.finish((x_state, kernel), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::tiled_max_pool(x.into_primitive(), kernel)),
        }
    }

    fn tiled_max_pool_grad(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        kernel: [usize; 2],
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::tiled_max_pool_grad(
            x.into_primitive(),
            dy.into_primitive(),
            kernel,
        ))
    }
}

#[derive(Debug)]
struct PoolBackward;

impl<B: Backend + TiledMaxPool> Backward<B, 1> for PoolBackward {
    type State = (NodeId, [usize; 2]);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, kernel) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::tiled_max_pool_grad(x, dy, kernel));
        }
    }
}

/// Whether `tiled_max_pool` serves this pooling: burn flex (with or without autodiff), f32,
/// stride equal to the kernel, no padding or dilation, and (with ceil mode) no partial window.
pub fn applies(
    x: &Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [(usize, usize); 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> bool {
    let device = x.device();
    let inner = if device.is_autodiff() {
        device.clone().inner()
    } else {
        device
    };
    let dims = x.dims();
    inner == Device::flex()
        && x.dtype() == DType::F32
        && kernel == stride
        && kernel.iter().all(|&k| k > 0)
        && pads == [(0, 0); 2]
        && dilation == [1, 1]
        && (!ceil_mode || (dims[2].is_multiple_of(kernel[0]) && dims[3].is_multiple_of(kernel[1])))
}

/// Max pooling over non-overlapping `kernel` windows (check `applies` first).
pub fn tiled_max_pool(x: Tensor<4>, kernel: [usize; 2]) -> Tensor<4> {
    Tensor::<4>::from_dispatch(<Dispatch as TiledMaxPool>::tiled_max_pool(
        x.into_dispatch(),
        kernel,
    ))
}
