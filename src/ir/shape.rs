//! Static shape rules, one per op. Errors are plain strings; the caller names the node.

use super::op::{Op, Window};

type ShapeResult = Result<Vec<usize>, String>;

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

fn window_out(x: &[usize], window: &Window, out_channels: usize, ceil_mode: bool) -> ShapeResult {
    let sr = window.spatial_rank();
    if x.len() != sr + 2 {
        return Err(format!(
            "expects a rank-{} input (N, C, {} spatial), got {:?}",
            sr + 2,
            sr,
            x
        ));
    }
    let mut out = vec![x[0], out_channels];
    for a in 0..sr {
        let n = window.out_len(a, x[2 + a], ceil_mode);
        if n == 0 {
            return Err(format!(
                "window {:?} does not fit input {:?}",
                window.kernel, x
            ));
        }
        out.push(n);
    }
    Ok(out)
}

pub fn infer(op: &Op, ins: &[&[usize]]) -> ShapeResult {
    let x = ins.first().copied().unwrap_or(&[]);
    match op {
        Op::Conv { window, group } => {
            let w = ins.get(1).ok_or("missing weight")?;
            if w.len() != x.len() {
                return Err(format!(
                    "weight rank {} does not match input rank {}",
                    w.len(),
                    x.len()
                ));
            }
            if x.len() < 3 || x[1] != w[1] * group || w[0] % group != 0 {
                return Err(format!(
                    "input {x:?} does not fit weight {w:?} with group {group}"
                ));
            }
            if w[2..] != window.kernel[..] {
                return Err(format!(
                    "kernel_shape {:?} differs from weight {w:?}",
                    window.kernel
                ));
            }
            if let Some(b) = ins.get(2)
                && **b != [w[0]]
            {
                return Err(format!(
                    "bias shape {b:?} does not match {} output channels",
                    w[0]
                ));
            }
            window_out(x, window, w[0], false)
        }
        Op::BatchNorm { .. } => {
            if x.len() < 2 {
                return Err(format!("input {x:?} has no channel axis"));
            }
            for p in &ins[1..] {
                if **p != [x[1]] {
                    return Err(format!(
                        "parameter shape {p:?} does not match {} channels",
                        x[1]
                    ));
                }
            }
            Ok(x.to_vec())
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let b = ins.get(1).ok_or("missing B")?;
            if x.len() != 2 || b.len() != 2 {
                return Err(format!("expects 2-D A and B, got {x:?} and {b:?}"));
            }
            let (m, k) = if *trans_a { (x[1], x[0]) } else { (x[0], x[1]) };
            let (kb, n) = if *trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != kb {
                return Err(format!("inner dims differ: A {x:?}, B {b:?}"));
            }
            if let Some(c) = ins.get(2) {
                let bc = broadcast(c, &[m, n])?;
                if bc != [m, n] {
                    return Err(format!("C {c:?} does not broadcast to [{m}, {n}]"));
                }
            }
            Ok(vec![m, n])
        }
        Op::MatMul => {
            let b = ins.get(1).ok_or("missing B")?;
            matmul_shape(x, b)
        }
        Op::Binary(_) => broadcast(x, ins.get(1).ok_or("missing second operand")?),
        Op::Activation(_) | Op::Identity => Ok(x.to_vec()),
        Op::Softmax { axis, .. } => {
            norm_axis(*axis, x.len())?;
            Ok(x.to_vec())
        }
        Op::MaxPool { window, ceil_mode } => {
            window_out(x, window, *x.get(1).unwrap_or(&0), *ceil_mode)
        }
        Op::AveragePool {
            window, ceil_mode, ..
        } => window_out(x, window, *x.get(1).unwrap_or(&0), *ceil_mode),
        Op::GlobalAveragePool => {
            if x.len() < 3 {
                return Err(format!("expects (N, C, spatial...), got {x:?}"));
            }
            let mut out = x.to_vec();
            out[2..].iter_mut().for_each(|d| *d = 1);
            Ok(out)
        }
        Op::ReduceMean { axes, keepdims } => {
            let mut reduced = vec![false; x.len()];
            if axes.is_empty() {
                reduced.iter_mut().for_each(|r| *r = true);
            }
            for &a in axes {
                reduced[norm_axis(a, x.len())?] = true;
            }
            Ok(x.iter()
                .zip(&reduced)
                .filter_map(|(&d, &r)| match (r, keepdims) {
                    (true, true) => Some(1),
                    (true, false) => None,
                    (false, _) => Some(d),
                })
                .collect())
        }
        Op::Flatten { axis } => {
            let a = if *axis < 0 {
                *axis + x.len() as i64
            } else {
                *axis
            };
            if a < 0 || a > x.len() as i64 {
                return Err(format!("axis {axis} is out of range for rank {}", x.len()));
            }
            let a = a as usize;
            Ok(vec![x[..a].iter().product(), x[a..].iter().product()])
        }
        Op::Reshape { shape } => reshape_target(x, shape),
        Op::Transpose { perm } => {
            if perm.len() != x.len() {
                return Err(format!("perm {perm:?} does not match rank {}", x.len()));
            }
            Ok(perm.iter().map(|&p| x[p]).collect())
        }
        Op::Concat { axis } => {
            let a = norm_axis(*axis, x.len())?;
            let mut out = x.to_vec();
            for s in &ins[1..] {
                if s.len() != x.len() || s.iter().enumerate().any(|(i, &d)| i != a && d != x[i]) {
                    return Err(format!("cannot concatenate {x:?} and {s:?} on axis {a}"));
                }
                out[a] += s[a];
            }
            Ok(out)
        }
        Op::Pad { pads, .. } => {
            if pads.len() != 2 * x.len() {
                return Err(format!("pads {pads:?} do not match rank {}", x.len()));
            }
            x.iter()
                .enumerate()
                .map(|(i, &d)| {
                    let n = d as i64 + pads[i] + pads[i + x.len()];
                    if n < 0 {
                        Err(format!("pads {pads:?} crop more than input {x:?}"))
                    } else {
                        Ok(n as usize)
                    }
                })
                .collect()
        }
    }
}

/// Numpy matmul shape rule, including rank-1 operands and broadcast batch dims.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> ShapeResult {
    if a.is_empty() || b.is_empty() {
        return Err("matmul of a scalar".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("matmul inner dims differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}
