//! The closed set of supported operations, with typed attributes.
//!
//! Attribute-like inputs of ONNX (Reshape's shape, Clip's bounds, Pad's pads, ReduceMean's axes)
//! are folded into the attributes at import, so an `Op` is self-contained; the exporter writes
//! them back in the form the model's opset expects.

/// Spatial window parameters shared by Conv and the pools. Vectors have one entry per spatial
/// axis (1 or 2); `pads` holds the begin pads of every axis followed by the end pads (ONNX order).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
}

impl Window {
    pub fn spatial_rank(&self) -> usize {
        self.kernel.len()
    }

    pub fn pad_begin(&self, axis: usize) -> usize {
        self.pads[axis]
    }

    pub fn pad_end(&self, axis: usize) -> usize {
        self.pads[axis + self.spatial_rank()]
    }

    /// Output length of one spatial axis.
    pub fn out_len(&self, axis: usize, input: usize, ceil_mode: bool) -> usize {
        let padded = input + self.pad_begin(axis) + self.pad_end(axis);
        let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
        if padded < span {
            return 0;
        }
        let stride = self.strides[axis];
        let steps = if ceil_mode {
            let mut n = (padded - span).div_ceil(stride);
            // ONNX/PyTorch rule: the last window must start inside the input or left padding.
            if n * stride >= input + self.pad_begin(axis) {
                n -= 1;
            }
            n
        } else {
            (padded - span) / stride
        };
        steps + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

impl PadMode {
    pub fn onnx_name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { alpha: f32 },
    Clip { min: f32, max: f32 },
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Tanh,
}

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
}

impl Op {
    /// The ONNX op type this op is written as.
    pub fn onnx_type(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "Conv",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Gemm { .. } => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(BinaryOp::Add) => "Add",
            Op::Binary(BinaryOp::Sub) => "Sub",
            Op::Binary(BinaryOp::Mul) => "Mul",
            Op::Binary(BinaryOp::Div) => "Div",
            Op::Activation(a) => match a {
                Activation::Relu => "Relu",
                Activation::LeakyRelu { .. } => "LeakyRelu",
                Activation::Clip { .. } => "Clip",
                Activation::Sigmoid => "Sigmoid",
                Activation::HardSigmoid { .. } => "HardSigmoid",
                Activation::HardSwish => "HardSwish",
                Activation::Tanh => "Tanh",
            },
            Op::Softmax { log: false, .. } => "Softmax",
            Op::Softmax { log: true, .. } => "LogSoftmax",
            Op::MaxPool { .. } => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Pad { .. } => "Pad",
            Op::Identity => "Identity",
        }
    }
}

/// ONNX op types accepted by the importer (compute ops plus the shape helpers it folds away).
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Pad",
    "Dropout",
    "Identity",
];

/// Ops folded at import when all their inputs are constant (shape computation chains).
pub const FOLDED_OPS: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Slice",
];
