//! The project's own graph IR. It never depends on burn, tract or the protobuf types.

pub mod cost;
pub mod fold;
pub mod graph;
pub mod learned;
pub mod op;
pub mod shape;
pub mod tensor;

pub use graph::{Dim, Dims, ElemType, Graph, ModelMeta, Node, ValueInfo};
pub use op::{Activation, BinaryOp, Op, PadMode, Window};
pub use tensor::{Data, Tensor};
