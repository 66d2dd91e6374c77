//! Cast and the mask logic of token models on computed data (on constants they are folded at
//! import): Equal/Less/Greater, Not and Where, as exporters write attention masks.
//!
//! The interpreter holds every value as f32: a bool is 0 or 1, an integer is exact below 2^24.
//! So a cast to a float type is the identity, to an integer type truncates toward zero, and to
//! bool is "not zero"; comparisons give 0/1.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::{MAX_RANK, padded};
use crate::groups::ChannelCx;
use crate::ir::shape::broadcast;
use crate::ir::{Node, Op};
use crate::onnx::pb::tensor_proto::DataType;
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// What a cast does to an f32-held value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastKind {
    Float,
    Integer,
    Bool,
}

/// `Op::Cast`: `to` is the ONNX data type code written back at export.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub to: i32,
    pub kind: CastKind,
}

/// `Op::Logic`: comparisons, Not and Where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logic {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    Not,
    /// Inputs: condition, x, y.
    Where,
}

fn cast_kind(to: i32) -> Option<CastKind> {
    match DataType::try_from(to).ok()? {
        DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16 => {
            Some(CastKind::Float)
        }
        DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint8
        | DataType::Uint16
        | DataType::Uint32
        | DataType::Uint64 => Some(CastKind::Integer),
        DataType::Bool => Some(CastKind::Bool),
        _ => None,
    }
}

pub(crate) fn import_cast(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let to = cx.attrs.int("to", 0) as i32;
    let kind = cast_kind(to).ok_or_else(|| {
        cx.attrs
            .err(format!("cast to data type {to} is not supported"))
    })?;
    Ok((Op::Cast(Cast { to, kind }), vec![0]))
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let (op, inputs) = match cx.node.op_type.as_str() {
        "Equal" => (Logic::Equal, vec![0, 1]),
        "Less" => (Logic::Less, vec![0, 1]),
        "Greater" => (Logic::Greater, vec![0, 1]),
        "LessOrEqual" => (Logic::LessOrEqual, vec![0, 1]),
        "GreaterOrEqual" => (Logic::GreaterOrEqual, vec![0, 1]),
        "Not" => (Logic::Not, vec![0]),
        "Where" => (Logic::Where, vec![0, 1, 2]),
        other => return Err(cx.unsupported(other)),
    };
    Ok((Op::Logic(op), inputs))
}

impl OpRules for Cast {
    fn onnx_type(&self) -> &'static str {
        "Cast"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.int("to", self.to as i64);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        Ok(ins.first().copied().unwrap_or(&[]).to_vec())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        match self.kind {
            CastKind::Float => x,
            CastKind::Integer => x.map(|t| t.int().float()),
            CastKind::Bool => x.map(|t| t.not_equal_elem(0.0).float()),
        }
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        let k = k?;
        Some(match self.kind {
            CastKind::Float => k,
            CastKind::Integer => k.trunc(),
            CastKind::Bool => f32::from(k != 0.0),
        })
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

/// The inputs expanded to their common (broadcast) shape, with its rank.
fn expanded(vals: Vec<Val>) -> (Vec<crate::exec::value::T6>, usize) {
    let shapes: Vec<Vec<usize>> = vals.iter().map(Val::dims).collect();
    let out = shapes
        .iter()
        .skip(1)
        .try_fold(shapes[0].clone(), |acc, s| broadcast(&acc, s))
        .unwrap_or_else(|e| unreachable!("checked by the shape rule: {e}"));
    let target = padded(&out);
    (
        vals.into_iter().map(|v| v.t.expand(target)).collect(),
        out.len(),
    )
}

impl OpRules for Logic {
    fn onnx_type(&self) -> &'static str {
        match self {
            Logic::Equal => "Equal",
            Logic::Less => "Less",
            Logic::Greater => "Greater",
            Logic::LessOrEqual => "LessOrEqual",
            Logic::GreaterOrEqual => "GreaterOrEqual",
            Logic::Not => "Not",
            Logic::Where => "Where",
        }
    }

    fn export(&self, _cx: &mut ExportCx) {}

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let first = ins.first().copied().unwrap_or(&[]).to_vec();
        let out = ins
            .iter()
            .skip(1)
            .try_fold(first, |acc, s| broadcast(&acc, s))?;
        if out.len() > MAX_RANK {
            return Err(format!("output rank {} exceeds {MAX_RANK}", out.len()));
        }
        Ok(out)
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        if *self == Logic::Not {
            return x.map(|t| t.equal_elem(0.0).float());
        }
        let (mut t, rank) = expanded(std::iter::once(x).chain(ins).collect());
        let out = match self {
            Logic::Where => {
                let (y, v, c) = (t.remove(2), t.remove(1), t.remove(0));
                y.mask_where(c.not_equal_elem(0.0), v)
            }
            compare => {
                let (b, a) = (t.remove(1), t.remove(0));
                match compare {
                    Logic::Equal => a.equal(b),
                    Logic::Less => a.lower(b),
                    Logic::Greater => a.greater(b),
                    Logic::LessOrEqual => a.lower_equal(b),
                    Logic::GreaterOrEqual => a.greater_equal(b),
                    Logic::Not | Logic::Where => unreachable!("handled above"),
                }
                .float()
            }
        };
        Val::new(out, rank)
    }

    /// Masks are built from token inputs, not from channels: an analysed input stays whole.
    fn channels(&self, cx: &mut ChannelCx) {
        cx.block_inputs("mask logic");
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, _k: Option<f32>) -> Option<f32> {
        None
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::exec::value::host_f32;

    fn val(v: &[f32], shape: &[usize]) -> Val {
        Val::from_f32(v.to_vec(), shape, &Device::flex())
    }

    #[test]
    fn casts_truncate_to_integers_and_test_for_zero_to_bool() {
        let x = || val(&[-1.7, 2.9, 0.0, 3.0], &[4]);
        let cast = |to: DataType| {
            let to = to as i32;
            let kind = cast_kind(to).unwrap();
            host_f32(Cast { to, kind }.eval(x(), vec![]).t)
        };
        assert_eq!(cast(DataType::Int64), vec![-1.0, 2.0, 0.0, 3.0]);
        assert_eq!(cast(DataType::Bool), vec![1.0, 1.0, 0.0, 1.0]);
        assert_eq!(cast(DataType::Float), vec![-1.7, 2.9, 0.0, 3.0]);
        assert_eq!(cast_kind(DataType::String as i32), None);
    }

    /// The mask idiom `Where(Equal(mask, 0), -inf-ish, scores)` with broadcasting.
    #[test]
    fn where_and_equal_broadcast_like_a_mask() {
        let mask = val(&[1.0, 0.0], &[1, 2]);
        let zero = val(&[0.0], &[]);
        let padded = Logic::Equal.eval(mask, vec![zero]);
        assert_eq!(host_f32(padded.t.clone()), vec![0.0, 1.0]);
        let scores = val(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let low = val(&[f32::MIN], &[]);
        let out = Logic::Where.eval(padded, vec![low, scores]);
        assert_eq!(out.dims(), vec![2, 2]);
        assert_eq!(host_f32(out.t), vec![1.0, f32::MIN, 3.0, f32::MIN]);
        assert_eq!(Logic::Where.shape(&[&[1, 2], &[], &[2, 2]]), Ok(vec![2, 2]));
        let not = Logic::Not.eval(val(&[1.0, 0.0], &[2]), vec![]);
        assert_eq!(host_f32(not.t), vec![0.0, 1.0]);
    }
}
