//! Everything the project knows about each op, one file per op family, and the one registry of
//! supported ops.
//!
//! A family file holds, for its ops: the ONNX import (attributes and attribute-like inputs ->
//! typed op + data inputs), the export attributes, the shape rule, the cost, the burn kernel,
//! which inputs are weights (with their channel axes), the channel rule of the dependency
//! analysis and the slicing / constant-propagation rule of the surgery. The trait [`OpRules`]
//! has no default methods, so a family that forgets a rule does not compile; [`with_rules`] is
//! an exhaustive match, so a new `Op` variant does not compile until it names its rules.
//!
//! Adding an op to an existing payload enum (a unary function, a binary op): the variant and
//! its rules in the family file, plus one line in [`IMPORTERS`]. Adding a new kind of op: a
//! family file with its payload type and rules, one line in [`IMPORTERS`], the variant
//! `Op::Name(Payload)` in `ir::Op` and its arm in [`with_rules`]. An op with several outputs is
//! imported as one single-output op per output ([`PER_OUTPUT_IMPORTERS`]).
//!
//! The ops that predate this layout keep their struct-like `Op` variants (code matches on their
//! fields); [`with_rules`] hands their fields to the family as a borrowed view (`conv::Conv`).

pub mod conv;
pub mod conv_transpose;
pub mod elementwise;
pub mod expand;
pub mod gather;
pub mod layer_norm;
pub mod layout;
pub mod linear;
pub mod logic;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod slice;
pub mod softmax;
pub mod squeeze;
pub mod unary;
pub mod window;

use crate::error::Result;
use crate::exec::Val;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// Shape rules report plain strings; the caller names the node.
pub type ShapeResult = std::result::Result<Vec<usize>, String>;

/// What a weight input is for: learnable parameters, or statistics that are buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// A learnable weight matrix or kernel (pruned by weight masks, scored by importance).
    Kernel,
    /// A learnable bias or shift.
    Bias,
    /// A BatchNorm scale: learnable, one value per channel.
    Scale,
    /// Running statistics: buffers, not parameters.
    Statistic,
}

/// One input of an op that holds weights, and the axes along which its channels lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightInput {
    pub input: usize,
    pub kind: WeightKind,
    /// Axis indexed by the op's output channels (rows of a conv kernel, columns of a MatMul B).
    pub out_axis: Option<usize>,
    /// Axis indexed by the op's input channels.
    pub in_axis: Option<usize>,
}

impl WeightInput {
    /// Learnable (counted as parameters, trained), as opposed to running statistics.
    pub fn trainable(&self) -> bool {
        self.kind != WeightKind::Statistic
    }
}

/// The rules of one op. Implemented by each op's payload (or a view of its fields).
pub trait OpRules {
    /// The ONNX op type the op is written as.
    fn onnx_type(&self) -> &'static str;
    /// Attributes (and attribute-like constant inputs) of the exported node.
    fn export(&self, cx: &mut ExportCx);
    /// Output shape from input shapes.
    fn shape(&self, ins: &[&[usize]]) -> ShapeResult;
    /// Multiply-accumulates for one evaluation (input and output shapes at the batch used).
    fn macs(&self, ins: &[&[usize]], out: &[usize]) -> u64;
    /// Inputs holding weights, with their channel axes.
    fn weights(&self) -> Vec<WeightInput>;
    /// The burn kernel: first input and the others.
    fn eval(&self, x: Val, ins: Vec<Val>) -> Val;
    /// Channel rule of the dependency analysis: how axis-1 layouts flow through the op.
    fn channels(&self, cx: &mut ChannelCx);
    /// Value of a removed feature of the output in the masked reference, given its value `k`
    /// in the first input (`None`: not a constant).
    fn removed_value(
        &self,
        cx: &SurgeryCx,
        n: &Node,
        feature: usize,
        k: Option<f32>,
    ) -> Option<f32>;
    /// Slicing rule of the surgery: cut this node's weights (or attributes) to the kept channels.
    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()>;
}

/// Calls `f` with the rules of `op`. The one place that maps `Op` variants to rules.
pub fn with_rules<R>(op: &Op, f: impl FnOnce(&dyn OpRules) -> R) -> R {
    match op {
        Op::Conv { window, group } => f(&conv::Conv {
            window,
            group: *group,
        }),
        Op::BatchNorm { epsilon } => f(&norm::BatchNorm { epsilon: *epsilon }),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => f(&linear::Gemm {
            alpha: *alpha,
            beta: *beta,
            trans_a: *trans_a,
            trans_b: *trans_b,
        }),
        Op::MatMul => f(&linear::MatMul),
        Op::Binary(b) => f(b),
        Op::Activation(a) => f(a),
        Op::Softmax { axis, log, legacy } => f(&softmax::Softmax {
            axis: *axis,
            log: *log,
            legacy: *legacy,
        }),
        Op::MaxPool { window, ceil_mode } => f(&pool::MaxPool {
            window,
            ceil_mode: *ceil_mode,
        }),
        Op::AveragePool {
            window,
            ceil_mode,
            count_include_pad,
        } => f(&pool::AveragePool {
            window,
            ceil_mode: *ceil_mode,
            count_include_pad: *count_include_pad,
        }),
        Op::GlobalAveragePool => f(&pool::GlobalAveragePool),
        Op::ReduceMean { axes, keepdims } => f(&reduce::ReduceMean {
            axes,
            keepdims: *keepdims,
        }),
        Op::Flatten { axis } => f(&layout::Flatten { axis: *axis }),
        Op::Reshape { shape } => f(&layout::Reshape { shape }),
        Op::Transpose { perm } => f(&layout::Transpose { perm }),
        Op::Concat { axis } => f(&layout::Concat { axis: *axis }),
        Op::Pad { pads, mode, value } => f(&layout::Pad {
            pads,
            mode: *mode,
            value: *value,
        }),
        Op::Identity => f(&layout::Identity),
        Op::ConvTranspose(c) => f(c),
        Op::Resize(r) => f(r),
        Op::Slice(s) => f(s),
        Op::Reduce(r) => f(r),
        Op::Squeeze(s) => f(s),
        Op::Unsqueeze(u) => f(u),
        Op::Gather(g) => f(g),
        Op::Cast(c) => f(c),
        Op::Logic(l) => f(l),
        Op::Expand(e) => f(e),
        Op::LayerNorm(l) => f(l),
    }
}

/// Does the op's channel rule follow channels on an axis other than 1 (the last axis of a token
/// sequence after a transformer's linear layer)? The analysis blocks such channels where any
/// other op reads them.
pub fn follows_any_axis(op: &Op) -> bool {
    match op {
        Op::MatMul | Op::Binary(_) | Op::Activation(_) | Op::Identity => true,
        Op::Conv { .. }
        | Op::BatchNorm { .. }
        | Op::Gemm { .. }
        | Op::Softmax { .. }
        | Op::MaxPool { .. }
        | Op::AveragePool { .. }
        | Op::GlobalAveragePool
        | Op::ReduceMean { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Pad { .. }
        | Op::ConvTranspose(_)
        | Op::Resize(_)
        | Op::Slice(_)
        | Op::Reduce(_)
        | Op::Squeeze(_)
        | Op::Unsqueeze(_)
        | Op::LayerNorm(_)
        | Op::Gather(_)
        | Op::Cast(_)
        | Op::Logic(_)
        | Op::Expand(_) => false,
    }
}

/// Whether the op reads input `i`'s values (not only its dims: an Expand's batch source).
pub fn reads_values(op: &Op, i: usize) -> bool {
    !matches!(op, Op::Expand(e) if i == 1 && !e.from_input.is_empty())
}

/// Maps one ONNX node to a typed op and the positions of the inputs it keeps as data.
pub type ImportFn = fn(&ImportCx) -> Result<(Op, Vec<usize>)>;

/// The ONNX op types the importer maps to compute ops: the only list of supported ops.
pub const IMPORTERS: &[(&str, ImportFn)] = &[
    ("Conv", conv::import),
    ("ConvTranspose", conv_transpose::import),
    ("BatchNormalization", norm::import),
    ("LayerNormalization", layer_norm::import),
    ("Gemm", linear::import_gemm),
    ("MatMul", linear::import_matmul),
    ("Add", elementwise::import),
    ("Sub", elementwise::import),
    ("Mul", elementwise::import),
    ("Div", elementwise::import),
    ("Pow", elementwise::import),
    ("Relu", unary::import),
    ("LeakyRelu", unary::import),
    ("Clip", unary::import),
    ("Sigmoid", unary::import),
    ("HardSigmoid", unary::import),
    ("HardSwish", unary::import),
    ("Tanh", unary::import),
    ("Sqrt", unary::import),
    ("Exp", unary::import),
    ("Log", unary::import),
    ("Reciprocal", unary::import),
    ("Neg", unary::import),
    ("Abs", unary::import),
    ("Erf", unary::import),
    ("Gelu", unary::import),
    ("Softmax", softmax::import),
    ("LogSoftmax", softmax::import),
    ("MaxPool", pool::import_max),
    ("AveragePool", pool::import_average),
    ("GlobalAveragePool", pool::import_global_average),
    ("ReduceMean", reduce::import_mean),
    ("ReduceSum", reduce::import),
    ("ReduceMax", reduce::import),
    ("ReduceMin", reduce::import),
    ("Flatten", layout::import_flatten),
    ("Reshape", layout::import_reshape),
    ("Transpose", layout::import_transpose),
    ("Concat", layout::import_concat),
    ("Pad", layout::import_pad),
    ("Dropout", layout::import_dropout),
    ("Identity", layout::import_identity),
    ("Resize", resize::import),
    ("Slice", slice::import),
    ("Squeeze", squeeze::import_squeeze),
    ("Unsqueeze", squeeze::import_unsqueeze),
    ("Gather", gather::import),
    ("Cast", logic::import_cast),
    ("Equal", logic::import),
    ("Less", logic::import),
    ("Greater", logic::import),
    ("LessOrEqual", logic::import),
    ("GreaterOrEqual", logic::import),
    ("Not", logic::import),
    ("Where", logic::import),
    ("Expand", expand::import),
];

/// Maps one ONNX node with several outputs to one single-output op per output.
pub type ImportPerOutputFn = fn(&ImportCx) -> Result<Vec<(Op, Vec<usize>)>>;

/// The ONNX op types with several outputs the importer maps to one op per output.
pub const PER_OUTPUT_IMPORTERS: &[(&str, ImportPerOutputFn)] = &[("Split", slice::import_split)];

const SUPPORTED_COUNT: usize = IMPORTERS.len() + PER_OUTPUT_IMPORTERS.len();
const SUPPORTED_NAMES: [&str; SUPPORTED_COUNT] = {
    let mut names = [""; SUPPORTED_COUNT];
    let mut i = 0;
    while i < IMPORTERS.len() {
        names[i] = IMPORTERS[i].0;
        i += 1;
    }
    let mut j = 0;
    while j < PER_OUTPUT_IMPORTERS.len() {
        names[i + j] = PER_OUTPUT_IMPORTERS[j].0;
        j += 1;
    }
    names
};

/// ONNX op types accepted by the importer as compute ops, in registry order.
pub const SUPPORTED_OPS: &[&str] = &SUPPORTED_NAMES;

/// Ops folded at import when all their inputs are constant (shape computation chains); those
/// also in [`IMPORTERS`] are compute ops on data.
pub const FOLDED_OPS: &[&str] = &[
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Slice",
    "Range",
    "ConstantOfShape",
    "Expand",
];

/// Number of elements of a shape.
pub(crate) fn numel(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

/// The importer of an ONNX op type, if it is supported.
pub fn importer(op_type: &str) -> Option<ImportFn> {
    IMPORTERS
        .iter()
        .find(|(name, _)| *name == op_type)
        .map(|(_, f)| *f)
}

/// The per-output importer of a multi-output ONNX op type, if it is supported.
pub fn per_output_importer(op_type: &str) -> Option<ImportPerOutputFn> {
    PER_OUTPUT_IMPORTERS
        .iter()
        .find(|(name, _)| *name == op_type)
        .map(|(_, f)| *f)
}

/// The ONNX op type an op is written as.
pub fn onnx_type(op: &Op) -> &'static str {
    with_rules(op, |r| r.onnx_type())
}

/// Output shape of an op from its input shapes.
pub fn shape(op: &Op, ins: &[&[usize]]) -> ShapeResult {
    with_rules(op, |r| r.shape(ins))
}

/// Multiply-accumulates of one evaluation.
pub fn macs(op: &Op, ins: &[&[usize]], out: &[usize]) -> u64 {
    with_rules(op, |r| r.macs(ins, out))
}

/// Inputs of an op that hold weights, with their channel axes.
pub fn weight_inputs(op: &Op) -> Vec<WeightInput> {
    with_rules(op, |r| r.weights())
}

/// Input positions of an op that are learnable parameters (trained, counted in the cost).
pub fn trainable_inputs(op: &Op) -> Vec<usize> {
    weight_inputs(op)
        .into_iter()
        .filter(WeightInput::trainable)
        .map(|w| w.input)
        .collect()
}

/// The weight input of an op whose output channels are its rows or columns (conv kernel,
/// linear matrix), with the axis of those output channels.
pub fn output_kernel(op: &Op) -> Option<WeightInput> {
    weight_inputs(op)
        .into_iter()
        .find(|w| w.kind == WeightKind::Kernel && w.out_axis.is_some())
}

/// Runs the op's burn kernel.
pub fn eval(op: &Op, mut ins: Vec<Val>) -> Val {
    let x = ins.remove(0);
    with_rules(op, |r| r.eval(x, ins))
}

/// The supported ONNX op types as a comma-separated list (README, unsupported-op hints).
pub fn supported_ops_list() -> String {
    SUPPORTED_OPS.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_each_op_type_once() {
        let mut names = SUPPORTED_OPS.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SUPPORTED_OPS.len());
        assert!(
            names
                .iter()
                .all(|n| importer(n).is_some() != per_output_importer(n).is_some())
        );
    }

    #[test]
    fn folded_ops_on_data_are_only_those_with_an_importer() {
        let on_data: Vec<&str> = FOLDED_OPS
            .iter()
            .copied()
            .filter(|n| SUPPORTED_OPS.contains(n))
            .collect();
        assert_eq!(
            on_data,
            vec!["Gather", "Unsqueeze", "Squeeze", "Cast", "Slice", "Expand"]
        );
    }

    #[test]
    fn weight_tables_name_the_channel_axes() {
        let conv = Op::Conv {
            window: window::Window {
                kernel: vec![3, 3],
                strides: vec![1, 1],
                pads: vec![0; 4],
                dilations: vec![1, 1],
            },
            group: 1,
        };
        let kernel = output_kernel(&conv).unwrap();
        assert_eq!(
            (kernel.input, kernel.out_axis, kernel.in_axis),
            (1, Some(0), Some(1))
        );
        assert_eq!(trainable_inputs(&conv), vec![1, 2]);
        assert_eq!(trainable_inputs(&Op::MatMul), vec![1]);
        assert_eq!(output_kernel(&Op::MatMul).unwrap().out_axis, Some(1));
        let bn = Op::BatchNorm { epsilon: 1e-5 };
        assert_eq!(trainable_inputs(&bn), vec![1, 2]);
        assert_eq!(weight_inputs(&bn).len(), 4);
        assert!(weight_inputs(&Op::Identity).is_empty());
    }
}
