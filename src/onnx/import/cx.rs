//! What an op's importer sees of the import in progress ([`ImportCx`]).

use std::cell::RefCell;

use super::pb::NodeProto;
use super::{Importer, input_name};
use crate::error::{Error, Result};
use crate::ir::{Op, Tensor};
use crate::onnx::attrs::Attrs;

/// What an op's importer (in `crate::ops`) sees: the node, its attributes, the opset, constant
/// inputs and static input shapes.
pub struct ImportCx<'a> {
    pub node: &'a NodeProto,
    /// The node's (unique) name, for error messages.
    pub name: &'a str,
    pub opset: i64,
    pub attrs: Attrs<'a>,
    pub(super) importer: &'a Importer,
    pub(super) rewrites: RefCell<Vec<Rewrite>>,
    /// Values read after the data inputs (an Expand's batch source).
    pub(super) extra_inputs: RefCell<Vec<String>>,
}

/// An input fed through an inserted single-input node before this node reads it.
pub(super) struct Rewrite {
    pub(super) input: usize,
    pub(super) op: Op,
    pub(super) suffix: String,
    pub(super) value: String,
}

impl ImportCx<'_> {
    /// Is input `i` given (not absent nor the empty name)?
    pub fn present(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    /// The name of input `i`; an error naming the node when it has no such input.
    pub fn input_name(&self, i: usize) -> Result<String> {
        input_name(self.node, self.name, i)
    }

    /// A constant input's value, required to be batch independent; `None` when absent.
    pub fn const_input(&self, i: usize) -> Result<Option<Tensor>> {
        self.importer.const_input(self.node, self.name, i)
    }

    /// Static shape of input `i` (at the first probe batch size).
    pub fn input_shape(&self, i: usize) -> Option<&Vec<usize>> {
        self.importer.input_shape(self.node, i)
    }

    /// Static shape of input `i`, which must have at least `min_rank` axes (a crafted model
    /// may feed a vector where a kernel goes); `None` when unknown.
    pub fn input_shape_of_rank(&self, i: usize, min_rank: usize) -> Result<Option<&Vec<usize>>> {
        match self.input_shape(i) {
            Some(s) if s.len() < min_rank => Err(Error::node(
                self.name,
                &self.node.op_type,
                format!("input {i} has shape {s:?}, the op needs at least {min_rank} axes"),
            )),
            shape => Ok(shape),
        }
    }

    /// Input `i`'s constant value at both probe batch sizes (they differ where it depends on
    /// the batch size).
    pub fn probe_consts(&self, i: usize) -> Option<(&Tensor, &Tensor)> {
        let input = self.node.input.get(i)?;
        let c = &self.importer.consts;
        Some((c[0].get(input)?, c[1].get(input)?))
    }

    /// For a constant input `i` that depends on the batch size: the computed value whose Shape
    /// it was derived from, with that value's shape at both probe batch sizes.
    pub fn batch_source(&self, i: usize) -> Option<(&str, &Vec<usize>, &Vec<usize>)> {
        let input = self.node.input.get(i)?;
        let source = self.importer.batch_sources.get(input)?;
        let s = &self.importer.shapes;
        Some((source.as_str(), s[0].get(source)?, s[1].get(source)?))
    }

    /// Appends `value` to the node's inputs, after the data inputs the importer returns.
    pub fn read_extra_input(&self, value: &str) {
        self.extra_inputs.borrow_mut().push(value.to_string());
    }

    /// Input `i`'s static shape at both probe batch sizes.
    pub fn probe_shapes(&self, i: usize) -> Option<(&Vec<usize>, &Vec<usize>)> {
        let input = self.node.input.get(i)?;
        let s = &self.importer.shapes;
        Some((s[0].get(input)?, s[1].get(input)?))
    }

    /// Feeds input `i` through `op` in a node inserted before this one (named
    /// `<node>__<suffix>`), writing `value`, which this node then reads instead of input `i`.
    pub fn feed_input_through(&self, i: usize, op: Op, suffix: &str, value: String) {
        self.rewrites.borrow_mut().push(Rewrite {
            input: i,
            op,
            suffix: suffix.into(),
            value,
        });
    }

    /// Whether an input has a symbolic dim sized by `--input-shape`: resolutions that use static
    /// shapes then hold at that size only.
    pub fn has_sized_inputs(&self) -> bool {
        self.importer.sized
    }

    /// Records that this node was resolved for the given input sizes only (`what` in words),
    /// so an export must not claim other sizes.
    pub fn note_size_dependent(&self, what: impl Into<String>) {
        let what = what.into();
        self.importer.size_dependent.borrow_mut().push(format!(
            "node '{}' ({}): {what}",
            self.name, self.node.op_type
        ));
    }

    /// The error for an op type the importer does not handle.
    pub fn unsupported(&self, op_type: &str) -> Error {
        Error::UnsupportedOp {
            node: self.name.into(),
            op_type: op_type.into(),
            opset: self.opset,
        }
    }
}
