//! 2-D convolution for training on the CPU (burn flex): a backend extension whose forward,
//! input gradient and weight gradient are per-example gemms on flex (`conv_gemm`), with its own
//! autodiff backward.
//!
//! burn's generic backward computes the weight gradient as a convolution with batch and channels
//! swapped, whose "batch" is the input channel count: a 1-channel stem runs as one serial task
//! with huge im2col rows (10x slower than the gemm here); its input gradient is a transposed
//! convolution through flex's 3-D path, and flex's forward converts the input to NHWC on one
//! thread. Other backends keep burn's conv2d and backward (the trait's defaults).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;

use super::conv_gemm;

/// A convolution without bias whose autodiff backward computes its gradients with
/// `conv2d_input_grad` and `conv2d_weight_grad` (per-example gemms on flex).
#[backend_extension(Flex, Autodiff)]
pub trait GemmGradConv: Backend {
    /// Without autodiff this is plain conv2d.
    fn conv2d_gemm_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The weight gradient of conv2d given the output gradient `dy` (burn's by default).
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, dy, options)
    }

    /// The input gradient of conv2d given the output gradient `dy` (burn's by default).
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, dy, options)
    }
}

impl GemmGradConv for Flex {
    fn conv2d_gemm_grad(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        if !conv_gemm::applies(&x, &weight, options.groups) {
            return Self::conv2d(x, weight, None, options);
        }
        conv_gemm::forward(&x, &weight, &options)
    }

    fn conv2d_weight_grad(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 || dy.dtype() != DType::F32 {
            return Self::conv2d_weight_backward(x, weight, dy, options);
        }
        conv_gemm::weight_grad(&x, &dy, weight.shape().as_slice(), &options)
    }

    fn conv2d_input_grad(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if !conv_gemm::applies(&x, &weight, options.groups) || dy.dtype() != DType::F32 {
            return Self::conv2d_x_backward(x, weight, dy, options);
        }
        conv_gemm::input_grad(x.shape().as_slice(), &weight, &dy, &options)
    }
}

impl<B: Backend + GemmGradConv, C: CheckpointStrategy> GemmGradConv for Autodiff<B, C> {
    fn conv2d_gemm_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match GemmGrad
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let y = B::conv2d_gemm_grad(
                    x.into_primitive(),
                    weight.into_primitive(),
                    options.clone(),
                );
                prep.finish((x_state, w_state, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_gemm_grad(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}

#[derive(Debug)]
struct GemmGrad;

impl<B: Backend + GemmGradConv> Backward<B, 2> for GemmGrad {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, w_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_state);
        if let Some(node) = node_w {
            let dw = B::conv2d_weight_grad(x.clone(), w.clone(), dy.clone(), options.clone());
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::conv2d_input_grad(x, w, dy, options));
        }
    }
}

/// Whether `conv2d_train` takes the gemm path on this device (burn flex with autodiff; other
/// backends keep burn's conv2d and their own backward).
pub fn gemm_grad_applies(device: &Device) -> bool {
    device.is_autodiff() && device.clone().inner() == Device::flex()
}

/// conv2d with a bias; on flex the per-example gemms (off autodiff too: validation and `eval`
/// run there, and flex's own conv forward is slower), with autodiff their gradients as well.
pub fn conv2d_train(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if x.device().inner() != Device::flex() {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let y = Tensor::<4>::from_dispatch(<Dispatch as GemmGradConv>::conv2d_gemm_grad(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ));
    match bias {
        Some(b) => super::channel_bias::add(y, b),
        None => y,
    }
}
