//! Gemm and MatMul: the linear layers.

use super::{OpRules, ShapeResult, WeightInput, WeightKind, numel};
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::exec::value::{MAX_RANK, padded};
use crate::groups::{ChannelCx, Segment};
use crate::ir::shape::broadcast;
use crate::ir::{Node, Op, Tensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::{SurgeryCx, slice_axis};

/// The fields of `Op::Gemm`. Inputs: A, B, optional C.
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// `Op::MatMul`: numpy matrix product.
pub struct MatMul;

pub(crate) fn import_gemm(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let mut ins = vec![0, 1];
    if cx.present(2) {
        ins.push(2);
    }
    Ok((
        Op::Gemm {
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
        },
        ins,
    ))
}

pub(crate) fn import_matmul(_cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    Ok((Op::MatMul, vec![0, 1]))
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

/// Numpy matmul: rank-1 operands are promoted, batch dims broadcast.
fn matmul(a: Val, b: Val) -> Val {
    let (da, db) = (a.dims(), b.dims());
    let out = matmul_shape(&da, &db).expect("checked at plan time");
    let a2 = if da.len() == 1 {
        a.reshape(&[1, da[0]])
    } else {
        a
    };
    let b2 = if db.len() == 1 {
        b.reshape(&[db[0], 1])
    } else {
        b
    };
    // Expand both to the common batch shape so burn's batched matmul sees equal batch dims.
    let (sa, sb) = (a2.t.dims(), b2.t.dims());
    let mut batch_a = sa;
    let mut batch_b = sb;
    for i in 0..MAX_RANK - 2 {
        let d = sa[i].max(sb[i]);
        batch_a[i] = d;
        batch_b[i] = d;
    }
    let prod = a2.t.expand(batch_a).matmul(b2.t.expand(batch_b));
    Val::new(prod.reshape(padded(&out)), out.len())
}

impl OpRules for Gemm {
    fn onnx_type(&self) -> &'static str {
        "Gemm"
    }

    fn export(&self, cx: &mut ExportCx) {
        if cx.opset < 7 && cx.inputs.len() > 2 {
            cx.int("broadcast", 1);
        }
        cx.float("alpha", self.alpha);
        cx.float("beta", self.beta);
        cx.int("transA", self.trans_a as i64);
        cx.int("transB", self.trans_b as i64);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let b = ins.get(1).ok_or("missing B")?;
        if x.len() != 2 || b.len() != 2 {
            return Err(format!("expects 2-D A and B, got {x:?} and {b:?}"));
        }
        let (m, k) = if self.trans_a {
            (x[1], x[0])
        } else {
            (x[0], x[1])
        };
        let (kb, n) = if self.trans_b {
            (b[1], b[0])
        } else {
            (b[0], b[1])
        };
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

    fn macs(&self, ins: &[&[usize]], out: &[usize]) -> u64 {
        let a = ins.first().copied().unwrap_or(&[]);
        let k = if self.trans_a { a[0] } else { a[1] };
        numel(out) * k as u64
    }

    fn weights(&self) -> Vec<WeightInput> {
        let (in_axis, out_axis) = if self.trans_b { (1, 0) } else { (0, 1) };
        vec![
            WeightInput {
                input: 1,
                kind: WeightKind::Kernel,
                out_axis: Some(out_axis),
                in_axis: Some(in_axis),
            },
            WeightInput {
                input: 2,
                kind: WeightKind::Bias,
                // A 1-D C; a [1, N] C has its outputs on its last axis.
                out_axis: Some(0),
                in_axis: None,
            },
        ]
    }

    fn eval(&self, x: Val, ins: Vec<Val>) -> Val {
        let a = x.to2();
        let b = ins[0].to2();
        let a = if self.trans_a { a.transpose() } else { a };
        let b = if self.trans_b { b.transpose() } else { b };
        let mut y = Val::from2(a.matmul(b));
        if self.alpha != 1.0 {
            y = y.map(|t| t * self.alpha);
        }
        if let Some(c) = ins.get(1) {
            let c = if self.beta != 1.0 {
                c.t.clone() * self.beta
            } else {
                c.t.clone()
            };
            y = y.map(|t| t + c);
        }
        y
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        let w = cx.shape(&n.inputs[1]).to_vec();
        let width = if self.trans_b { w[0] } else { w[1] };
        let weight_const = cx.is_const(&n.inputs[1]);
        if let Some(segs) = &cx.input(0) {
            if self.trans_a || !weight_const {
                cx.block(segs, "non-constant or transposed operand");
            } else {
                cx.consume(segs);
            }
        }
        cx.produce(width, (!weight_const).then_some("non-constant weight"));
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, _: Option<f32>) -> Option<f32> {
        None
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        slice_linear(cx, n, self.trans_b, self.alpha, self.beta)
    }
}

impl OpRules for MatMul {
    fn onnx_type(&self) -> &'static str {
        "MatMul"
    }

    fn export(&self, _cx: &mut ExportCx) {}

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        let b = ins.get(1).ok_or("missing B")?;
        matmul_shape(x, b)
    }

    fn macs(&self, ins: &[&[usize]], out: &[usize]) -> u64 {
        let a = ins.first().copied().unwrap_or(&[]);
        numel(out) * *a.last().unwrap_or(&1) as u64
    }

    fn weights(&self) -> Vec<WeightInput> {
        vec![WeightInput {
            input: 1,
            kind: WeightKind::Kernel,
            out_axis: Some(1),
            in_axis: Some(0),
        }]
    }

    fn eval(&self, x: Val, mut ins: Vec<Val>) -> Val {
        matmul(x, ins.remove(0))
    }

    fn channels(&self, cx: &mut ChannelCx) {
        let n = cx.node;
        let w = cx.shape(&n.inputs[1]).to_vec();
        if cx.rank() == 2 && w.len() == 2 && cx.is_const(&n.inputs[1]) {
            if let Some(segs) = &cx.input(0) {
                cx.consume(segs);
            }
            let g = cx.new_group(w[1]);
            cx.set_output(vec![Segment {
                group: g,
                width: w[1],
                block: 1,
            }]);
        } else if cx.rank() > 2 && w.len() == 2 && cx.is_const(&n.inputs[1]) {
            // A transformer's linear layer: it reads and writes channels on the last axis.
            let last = cx.rank() - 1;
            if let Some(segs) = cx.input(0) {
                if cx.axis(0) == last {
                    cx.consume(&segs);
                } else {
                    cx.block(&segs, "linear layer over an axis other than the channels'");
                }
            }
            let g = cx.new_group(w[1]);
            cx.add_source(g, &n.outputs[0]);
            cx.set_output_on(
                vec![Segment {
                    group: g,
                    width: w[1],
                    block: 1,
                }],
                last,
            );
        } else {
            for i in 0..2 {
                if let Some(segs) = cx.input(i) {
                    cx.block(&segs, "matrix product of computed values");
                }
            }
        }
    }

    /// Two computed operands with the channels on a batch axis (attention heads, e.g. AV): a
    /// head that is 0 in either operand is 0.
    fn removed_value(&self, cx: &SurgeryCx, n: &Node, f: usize, _: Option<f32>) -> Option<f32> {
        let zero = |v: &String| cx.state(v, f) == Some(0.0);
        let heads = n.inputs.len() == 2
            && n.inputs.iter().all(|v| cx.analysed(v))
            && cx.channel_axis(&n.outputs[0]) + 2 < cx.shape(&n.outputs[0]).len();
        (heads && n.inputs.iter().any(zero)).then_some(0.0)
    }

    fn slice(&self, cx: &mut SurgeryCx, n: &mut Node) -> Result<()> {
        slice_linear(cx, n, false, 1.0, 1.0)
    }
}

/// Gemm / MatMul with a constant weight: slice outputs by the node's own group and inputs by
/// the incoming layout, folding removed constant inputs into the bias.
fn slice_linear(
    cx: &mut SurgeryCx,
    n: &mut Node,
    trans_b: bool,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let op = n.op.onnx_type();
    let out = n.outputs[0].clone();
    let Some(mut w) = cx.init(&n.inputs[1]).cloned() else {
        return Ok(());
    };
    let (in_axis, out_axis) = if trans_b { (1, 0) } else { (0, 1) };
    let folds = cx.constants_read(n)?;
    if !folds.is_empty() {
        if beta == 0.0 || matches!(n.op, Op::MatMul) {
            return Err(Error::node(
                &n.name,
                op,
                "a removed input carries a non-zero constant and the layer has no bias to fold it into",
            ));
        }
        let width = w.shape[out_axis];
        let wv = w.to_f32_vec();
        let mut bias = match n.inputs.get(2) {
            Some(c) => {
                let t = cx.constant(n, c)?;
                let v = t.to_f32_vec();
                if v.len() == 1 {
                    vec![v[0]; width]
                } else if v.len() == width {
                    v
                } else {
                    return Err(Error::node(&n.name, op, "bias is not one value per output"));
                }
            }
            None => vec![0.0; width],
        };
        for (o, b) in bias.iter_mut().enumerate() {
            for &(j, k) in &folds {
                let wij = if trans_b {
                    wv[o * w.shape[1] + j]
                } else {
                    wv[j * w.shape[1] + o]
                };
                *b += alpha * wij * k / beta;
            }
        }
        let name = n
            .inputs
            .get(2)
            .cloned()
            .unwrap_or_else(|| format!("{}__bias", n.name));
        cx.set_init(n, &name, Tensor::f32(vec![width], bias))?;
        if n.inputs.len() < 3 {
            n.inputs.push(name);
        }
    }
    if let Some(k) = cx.kept(&n.inputs[0]) {
        w = slice_axis(&w, in_axis, &k);
    }
    if let Some(k) = cx.kept(&out) {
        w = slice_axis(&w, out_axis, &k);
        if let Some(c) = n.inputs.get(2).cloned()
            && let Some(t) = cx.init(&c).cloned()
            && t.len() > 1
        {
            let axis = t.shape.len() - 1;
            cx.set_init(n, &c, slice_axis(&t, axis, &k))?;
        }
    }
    cx.set_init(n, &n.inputs[1].clone(), w)?;
    Ok(())
}
