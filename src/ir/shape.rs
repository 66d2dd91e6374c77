//! Shape helpers shared by the op rules (axes, broadcasting, reshape targets); the rule of each
//! op lives with the op in `crate::ops`. Errors are plain strings; the caller names the node.

use super::op::Op;

use crate::ops::ShapeResult;

/// Normalises a possibly negative axis against a rank.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy-style multidirectional broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> ShapeResult {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Resolves an ONNX Reshape target (0 = copy, -1 = infer) against an input shape.
pub fn reshape_target(input: &[usize], target: &[i64]) -> ShapeResult {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 => out.push(*input.get(i).ok_or_else(|| {
                format!("reshape target {target:?}: 0 at axis {i} has no input dim")
            })?),
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            t if t > 0 => out.push(t as usize),
            _ => return Err(format!("invalid reshape target {target:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {target:?}"
        ));
    }
    Ok(out)
}

/// Output shape of an op from its input shapes (the op's rule in `crate::ops`).
pub fn infer(op: &Op, ins: &[&[usize]]) -> ShapeResult {
    crate::ops::shape(op, ins)
}

pub use crate::ops::linear::matmul_shape;
