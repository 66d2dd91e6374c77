//! Evaluation of the shape-computation ops PyTorch emits (Shape, Gather, Unsqueeze, Concat,
//! Slice, Cast, integer arithmetic) on constant tensors, so that import can fold them away.

use super::attrs::Attrs;
use super::pb::NodeProto;
use crate::error::Result;
use crate::ir::shape::{broadcast, norm_axis};
use crate::ir::{Data, Tensor};

/// What a folding step may read: a constant input, or the static shape of a computed value.
pub enum Known<'a> {
    Const(&'a Tensor),
    ShapeOnly(&'a [usize]),
    Missing,
}

fn shape_of(known: &Known) -> Option<Vec<usize>> {
    match known {
        Known::Const(t) => Some(t.shape.clone()),
        Known::ShapeOnly(s) => Some(s.to_vec()),
        Known::Missing => None,
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Gathers elements of `t` by flat source index.
fn pick(t: &Tensor, shape: Vec<usize>, idx: impl Iterator<Item = usize>) -> Tensor {
    let data = match &t.data {
        Data::F32(v) => Data::F32(idx.map(|i| v[i]).collect()),
        Data::I64(v) => Data::I64(idx.map(|i| v[i]).collect()),
    };
    Tensor { shape, data }
}

fn axes_from(a: &Attrs, node: &NodeProto, ins: &[Known], at: usize) -> Result<Option<Vec<i64>>> {
    if let Some(v) = a.ints("axes") {
        return Ok(Some(v));
    }
    match ins.get(at) {
        Some(Known::Const(t)) if node.input.get(at).is_some_and(|s| !s.is_empty()) => {
            Ok(Some(t.to_i64_vec()))
        }
        _ => Ok(None),
    }
}

/// Maps a flat index of a broadcast output of `shape` to the flat index in a source of `src`.
fn source_index(src: &[usize], shape: &[usize], flat: usize) -> usize {
    let st = strides(src);
    let off = shape.len() - src.len();
    let mut rem = flat;
    let mut at = 0;
    for (i, &d) in shape.iter().enumerate().rev() {
        let c = rem % d;
        rem /= d;
        if i >= off && src[i - off] != 1 {
            at += c * st[i - off];
        }
    }
    at
}

/// ONNX Reshape's target (0 copies the input dim, -1 is inferred) for an input shape.
fn reshaped(x: &[usize], dims: &[i64]) -> std::result::Result<Vec<usize>, String> {
    let n: usize = x.iter().product();
    let mut out = Vec::with_capacity(dims.len());
    let mut infer = None;
    for (i, &d) in dims.iter().enumerate() {
        match d {
            0 => out.push(*x.get(i).ok_or("a 0 dim past the input's rank")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            d => return Err(format!("bad reshape dim {d}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!("cannot reshape {x:?} to {dims:?}"));
        }
        out[i] = n / known;
    }
    if out.iter().product::<usize>() != n {
        return Err(format!("cannot reshape {x:?} to {dims:?}"));
    }
    Ok(out)
}

/// ONNX Range: `max(ceil((limit - start) / delta), 0)` elements from `start`, in start's type.
fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> std::result::Result<Tensor, String> {
    let scalar = |t: &Tensor, what| match t.to_f32_vec().as_slice() {
        [v] => Ok(*v as f64),
        _ => Err(format!("{what} is not a scalar")),
    };
    let (s, l, d) = (
        scalar(start, "start")?,
        scalar(limit, "limit")?,
        scalar(delta, "delta")?,
    );
    if d == 0.0 {
        return Err("delta is 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    Ok(match start.data {
        Data::I64(_) => {
            let (s, d) = (start.to_i64_vec()[0], delta.to_i64_vec()[0]);
            Tensor::i64(vec![n], (0..n as i64).map(|k| s + k * d).collect())
        }
        Data::F32(_) => {
            let (s, d) = (s as f32, d as f32);
            Tensor::f32(vec![n], (0..n).map(|k| s + k as f32 * d).collect())
        }
    })
}

/// Returns `Ok(None)` when the node cannot be folded because an input is not constant.
pub fn fold(node: &NodeProto, name: &str, ins: &[Known]) -> Result<Option<Tensor>> {
    let a = Attrs::new(node, name);
    let konst = |i: usize| match ins.get(i) {
        Some(Known::Const(t)) => Some(*t),
        _ => None,
    };
    let out = match node.op_type.as_str() {
        "Constant" => {
            if let Some(t) = a.tensor("value") {
                super::tensor::from_proto(t)?
            } else if a.has("value_float") {
                Tensor::f32(vec![], vec![a.float("value_float", 0.0)])
            } else if a.has("value_int") {
                Tensor::i64(vec![], vec![a.int("value_int", 0)])
            } else if let Some(v) = a.ints("value_ints") {
                Tensor::i64(vec![v.len()], v)
            } else {
                return Err(
                    a.err("only value, value_float, value_int and value_ints are supported")
                );
            }
        }
        "Shape" => {
            let Some(s) = ins.first().and_then(shape_of) else {
                return Ok(None);
            };
            let r = s.len() as i64;
            let clampi = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
            let start = clampi(a.int("start", 0));
            let end = clampi(a.int("end", r));
            let v: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
            Tensor::i64(vec![v.len()], v)
        }
        "Identity" => match konst(0) {
            Some(t) => t.clone(),
            None => return Ok(None),
        },
        "Cast" => {
            let Some(t) = konst(0) else { return Ok(None) };
            match a.int("to", 1) {
                1 | 11 | 10 | 16 => Tensor::f32(t.shape.clone(), t.to_f32_vec()),
                _ => Tensor::i64(t.shape.clone(), t.to_i64_vec()),
            }
        }
        "Gather" => {
            let (Some(t), Some(idx)) = (konst(0), konst(1)) else {
                return Ok(None);
            };
            let axis = norm_axis(a.int("axis", 0), t.shape.len()).map_err(|e| a.err(e))?;
            let dim = t.shape[axis] as i64;
            let indices: Vec<usize> = idx
                .to_i64_vec()
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + dim } else { i };
                    if j < 0 || j >= dim {
                        Err(a.err(format!("index {i} out of range for dim {dim}")))
                    } else {
                        Ok(j as usize)
                    }
                })
                .collect::<Result<_>>()?;
            let outer: usize = t.shape[..axis].iter().product();
            let inner: usize = t.shape[axis + 1..].iter().product();
            let mut shape = t.shape[..axis].to_vec();
            shape.extend(&idx.shape);
            shape.extend(&t.shape[axis + 1..]);
            let src: Vec<usize> = (0..outer)
                .flat_map(|o| {
                    let indices = &indices;
                    indices.iter().flat_map(move |&j| {
                        (0..inner).map(move |k| (o * t.shape[axis] + j) * inner + k)
                    })
                })
                .collect();
            pick(t, shape, src.into_iter())
        }
        "Unsqueeze" => {
            let Some(t) = konst(0) else { return Ok(None) };
            let Some(axes) = axes_from(&a, node, ins, 1)? else {
                return Ok(None);
            };
            let r = t.shape.len() + axes.len();
            let mut ax: Vec<usize> = axes
                .iter()
                .map(|&x| norm_axis(x, r).map_err(|e| a.err(e)))
                .collect::<Result<_>>()?;
            ax.sort();
            let mut shape = t.shape.clone();
            for &x in &ax {
                shape.insert(x, 1);
            }
            Tensor {
                shape,
                data: t.data.clone(),
            }
        }
        "Squeeze" => {
            let Some(t) = konst(0) else { return Ok(None) };
            let axes = axes_from(&a, node, ins, 1)?;
            let r = t.shape.len();
            let drop: Vec<usize> = match axes {
                Some(v) => v
                    .iter()
                    .map(|&x| norm_axis(x, r).map_err(|e| a.err(e)))
                    .collect::<Result<_>>()?,
                None => (0..r).filter(|&i| t.shape[i] == 1).collect(),
            };
            let shape = (0..r)
                .filter(|i| !drop.contains(i))
                .map(|i| t.shape[i])
                .collect();
            Tensor {
                shape,
                data: t.data.clone(),
            }
        }
        "Concat" => {
            let ts: Option<Vec<&Tensor>> = (0..ins.len()).map(konst).collect();
            let Some(ts) = ts else { return Ok(None) };
            let r = ts[0].shape.len();
            let axis = norm_axis(a.int("axis", 0), r).map_err(|e| a.err(e))?;
            let outer: usize = ts[0].shape[..axis].iter().product();
            let mut shape = ts[0].shape.clone();
            shape[axis] = ts.iter().map(|t| t.shape[axis]).sum();
            let all_int = ts.iter().all(|t| matches!(t.data, Data::I64(_)));
            let mut f = Vec::new();
            let mut i = Vec::new();
            for o in 0..outer {
                for t in &ts {
                    let block: usize = t.shape[axis..].iter().product();
                    let range = o * block..(o + 1) * block;
                    if all_int {
                        i.extend_from_slice(&t.to_i64_vec()[range]);
                    } else {
                        f.extend_from_slice(&t.to_f32_vec()[range]);
                    }
                }
            }
            Tensor {
                shape,
                data: if all_int { Data::I64(i) } else { Data::F32(f) },
            }
        }
        "Slice" => {
            let Some(t) = konst(0) else { return Ok(None) };
            let r = t.shape.len();
            let (starts, ends, axes, steps) = if a.has("starts") {
                (
                    a.ints("starts").unwrap_or_default(),
                    a.ints("ends").unwrap_or_default(),
                    a.ints("axes"),
                    None,
                )
            } else {
                let get = |i: usize| match (ins.get(i), node.input.get(i)) {
                    (Some(Known::Const(t)), Some(n)) if !n.is_empty() => Some(t.to_i64_vec()),
                    _ => None,
                };
                let (Some(s), Some(e)) = (get(1), get(2)) else {
                    return Ok(None);
                };
                (s, e, get(3), get(4))
            };
            let axes: Vec<usize> = match axes {
                Some(v) => v
                    .iter()
                    .map(|&x| norm_axis(x, r).map_err(|e| a.err(e)))
                    .collect::<Result<_>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = steps.unwrap_or_else(|| vec![1; axes.len()]);
            // Per axis: the list of source indices kept.
            let mut keep: Vec<Vec<usize>> = t.shape.iter().map(|&d| (0..d).collect()).collect();
            for (k, &ax) in axes.iter().enumerate() {
                let d = t.shape[ax] as i64;
                let step = steps[k];
                if step == 0 {
                    return Err(a.err("slice step 0"));
                }
                let fix = |x: i64, lo: i64, hi: i64| (if x < 0 { x + d } else { x }).clamp(lo, hi);
                let mut v = Vec::new();
                if step > 0 {
                    let (mut s, e) = (fix(starts[k], 0, d), fix(ends[k], 0, d));
                    while s < e {
                        v.push(s as usize);
                        s += step;
                    }
                } else {
                    let (mut s, e) = (fix(starts[k], -1, d - 1), fix(ends[k], -1, d - 1));
                    while s > e {
                        v.push(s as usize);
                        s += step;
                    }
                }
                keep[ax] = v;
            }
            let shape: Vec<usize> = keep.iter().map(|k| k.len()).collect();
            let st = strides(&t.shape);
            let mut src = vec![0usize];
            for (ax, k) in keep.iter().enumerate() {
                let stride = st[ax];
                src = src
                    .iter()
                    .flat_map(|&base| k.iter().map(move |&j| base + j * stride))
                    .collect();
            }
            pick(t, shape, src.into_iter())
        }
        "Range" => {
            let (Some(start), Some(limit), Some(delta)) = (konst(0), konst(1), konst(2)) else {
                return Ok(None);
            };
            range(start, limit, delta).map_err(|e| a.err(e))?
        }
        "ConstantOfShape" => {
            let Some(dims) = konst(0) else {
                return Ok(None);
            };
            let shape = dims
                .to_i64_vec()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| a.err(format!("negative dim {d}"))))
                .collect::<Result<Vec<_>>>()?;
            let fill = match a.tensor("value") {
                Some(t) => super::tensor::from_proto(t)?,
                None => Tensor::f32(vec![1], vec![0.0]),
            };
            let n = shape.iter().product();
            pick(&fill, shape, std::iter::repeat_n(0, n))
        }
        "Expand" => {
            let (Some(x), Some(dims)) = (konst(0), konst(1)) else {
                return Ok(None);
            };
            let target: Vec<usize> = dims
                .to_i64_vec()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let shape = broadcast(&x.shape, &target).map_err(|e| a.err(e))?;
            let n: usize = shape.iter().product();
            pick(
                x,
                shape.clone(),
                (0..n).map(|k| source_index(&x.shape, &shape, k)),
            )
        }
        "Reshape" => {
            let (Some(x), Some(dims)) = (konst(0), konst(1)) else {
                return Ok(None);
            };
            let shape = reshaped(&x.shape, &dims.to_i64_vec()).map_err(|e| a.err(e))?;
            Tensor {
                shape,
                data: x.data.clone(),
            }
        }
        "Transpose" => {
            let Some(x) = konst(0) else { return Ok(None) };
            let r = x.shape.len();
            let perm: Vec<usize> = match a.ints("perm") {
                Some(p) => p.iter().map(|&i| i as usize).collect(),
                None => (0..r).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..r).collect::<Vec<_>>() {
                return Err(a.err(format!("perm {perm:?} is not a permutation of {r} axes")));
            }
            let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
            let (st, out_st) = (strides(&x.shape), strides(&shape));
            let n: usize = shape.iter().product();
            let src = (0..n).map(|k| {
                perm.iter()
                    .enumerate()
                    .map(|(i, &p)| (k / out_st[i]) % shape[i] * st[p])
                    .sum()
            });
            pick(x, shape.clone(), src)
        }
        // TorchScript writes `expand(n, -1, -1)`'s target as Where(target == -1, 1, target).
        "Equal" => {
            let (Some(x), Some(y)) = (konst(0), konst(1)) else {
                return Ok(None);
            };
            let shape = broadcast(&x.shape, &y.shape).map_err(|e| a.err(e))?;
            let n: usize = shape.iter().product();
            let at = |t: &Tensor, k| source_index(&t.shape, &shape, k);
            let eq: Vec<i64> = match (&x.data, &y.data) {
                (Data::I64(u), Data::I64(v)) => (0..n)
                    .map(|k| i64::from(u[at(x, k)] == v[at(y, k)]))
                    .collect(),
                _ => {
                    let (u, v) = (x.to_f32_vec(), y.to_f32_vec());
                    (0..n)
                        .map(|k| i64::from(u[at(x, k)] == v[at(y, k)]))
                        .collect()
                }
            };
            Tensor::i64(shape.clone(), eq)
        }
        "Where" => {
            let (Some(c), Some(x), Some(y)) = (konst(0), konst(1), konst(2)) else {
                return Ok(None);
            };
            let shape = broadcast(&x.shape, &y.shape)
                .and_then(|s| broadcast(&c.shape, &s))
                .map_err(|e| a.err(e))?;
            let n: usize = shape.iter().product();
            let cond = c.to_f32_vec();
            let at = |t: &Tensor, k| source_index(&t.shape, &shape, k);
            let pick_from = |k: usize| cond[at(c, k)] != 0.0;
            match (&x.data, &y.data) {
                (Data::I64(u), Data::I64(v)) => Tensor::i64(
                    shape.clone(),
                    (0..n)
                        .map(|k| {
                            if pick_from(k) {
                                u[at(x, k)]
                            } else {
                                v[at(y, k)]
                            }
                        })
                        .collect(),
                ),
                _ => {
                    let (u, v) = (x.to_f32_vec(), y.to_f32_vec());
                    Tensor::f32(
                        shape.clone(),
                        (0..n)
                            .map(|k| {
                                if pick_from(k) {
                                    u[at(x, k)]
                                } else {
                                    v[at(y, k)]
                                }
                            })
                            .collect(),
                    )
                }
            }
        }
        "Sqrt" => {
            let Some(x) = konst(0) else { return Ok(None) };
            let v = x.to_f32_vec().iter().map(|f| f.sqrt()).collect();
            Tensor::f32(x.shape.clone(), v)
        }
        "Add" | "Sub" | "Mul" | "Div" | "Mod" => {
            let (Some(x), Some(y)) = (konst(0), konst(1)) else {
                return Ok(None);
            };
            let shape = broadcast(&x.shape, &y.shape).map_err(|e| a.err(e))?;
            let n: usize = shape.iter().product();
            let index = |t: &Tensor, flat: usize| source_index(&t.shape, &shape, flat);
            let op = node.op_type.as_str();
            if let (Data::I64(u), Data::I64(v)) = (&x.data, &y.data) {
                let vals = (0..n)
                    .map(|k| {
                        let (p, q) = (u[index(x, k)], v[index(y, k)]);
                        match op {
                            "Add" => Ok(p + q),
                            "Sub" => Ok(p - q),
                            "Mul" => Ok(p * q),
                            _ if q == 0 => Err(a.err("integer division by zero")),
                            "Mod" if a.int("fmod", 0) != 0 => Ok(p % q),
                            // fmod = 0: the result has the divisor's sign, as Python's %.
                            "Mod" => Ok(match p.rem_euclid(q) {
                                r if q < 0 && r != 0 => r + q,
                                r => r,
                            }),
                            _ => Ok(p.div_euclid(q)),
                        }
                    })
                    .collect::<Result<_>>()?;
                Tensor::i64(shape, vals)
            } else {
                let (u, v) = (x.to_f32_vec(), y.to_f32_vec());
                let vals = (0..n)
                    .map(|k| {
                        let (p, q) = (u[index(x, k)], v[index(y, k)]);
                        match op {
                            "Add" => p + q,
                            "Sub" => p - q,
                            "Mul" => p * q,
                            "Mod" => p % q,
                            _ => p / q,
                        }
                    })
                    .collect();
                Tensor::f32(shape, vals)
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}
