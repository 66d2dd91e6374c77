//! The closed set of supported operations, with typed attributes. Everything known about each
//! op (import, export, shape, cost, kernel, channel and slicing rules) lives in `crate::ops`.
//!
//! Attribute-like inputs of ONNX (Reshape's shape, Clip's bounds, Pad's pads, ReduceMean's axes)
//! are folded into the attributes at import, so an `Op` is self-contained; the exporter writes
//! them back in the form the model's opset expects.

pub use crate::ops::elementwise::BinaryOp;
pub use crate::ops::layout::PadMode;
pub use crate::ops::unary::Activation;
pub use crate::ops::window::Window;
pub use crate::ops::{FOLDED_OPS, SUPPORTED_OPS};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Inputs: X, W, optional B. 1-D or 2-D spatial.
    Conv {
        window: Window,
        group: usize,
    },
    /// Inputs: X, scale, bias, mean, var (eval mode only).
    BatchNorm {
        epsilon: f32,
    },
    /// Inputs: A, B, optional C.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    Binary(BinaryOp),
    Activation(Activation),
    /// `legacy` is the opset < 13 form: the input is coerced to 2-D at `axis`.
    Softmax {
        axis: i64,
        log: bool,
        legacy: bool,
    },
    MaxPool {
        window: Window,
        ceil_mode: bool,
    },
    AveragePool {
        window: Window,
        ceil_mode: bool,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    /// `axes` empty means all axes.
    ReduceMean {
        axes: Vec<i64>,
        keepdims: bool,
    },
    Flatten {
        axis: i64,
    },
    /// ONNX semantics: 0 copies the input dim (allowzero = 0), -1 is inferred.
    Reshape {
        shape: Vec<i64>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: i64,
    },
    /// `pads` as in ONNX (all begins, then all ends); negative pads crop (constant mode only).
    Pad {
        pads: Vec<i64>,
        mode: PadMode,
        value: f32,
    },
    /// Dropout (eval) and Identity both pass their input through.
    Identity,
    // Ops added in the op-family layout carry their payload type from their family file.
    ConvTranspose(crate::ops::conv_transpose::ConvTranspose),
    Resize(crate::ops::resize::Resize),
    Slice(crate::ops::slice::Slice),
    Reduce(crate::ops::reduce::Reduce),
    Squeeze(crate::ops::squeeze::Squeeze),
    Unsqueeze(crate::ops::squeeze::Unsqueeze),
    Gather(crate::ops::gather::Gather),
    Cast(crate::ops::logic::Cast),
    Logic(crate::ops::logic::Logic),
    Expand(crate::ops::expand::Expand),
    LayerNorm(crate::ops::layer_norm::LayerNorm),
}

impl Op {
    /// The ONNX op type this op is written as.
    pub fn onnx_type(&self) -> &'static str {
        crate::ops::onnx_type(self)
    }

    /// Inputs holding weights, with their channel axes.
    pub fn weights(&self) -> Vec<crate::ops::WeightInput> {
        crate::ops::weight_inputs(self)
    }
}
