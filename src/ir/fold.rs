//! Folding per-channel scales (gate values) into the layer that produces the channels, so an
//! exported model carries no gate operations.

use super::{BinaryOp, Graph, Op, Tensor};

/// If `t` is a per-channel vector for a rank-`rank` value ([C], [C,1,..] aligned at axis 1, or
/// [1,C,1,..]), returns its C values.
fn per_channel(t: &Tensor, rank: usize) -> Option<Vec<f32>> {
    let c = t.shape.iter().copied().max().unwrap_or(1);
    let off = rank as isize - t.shape.len() as isize;
    let aligned = t
        .shape
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || i as isize + off == 1);
    (aligned && t.len() == c).then(|| t.to_f32_vec())
}

fn scale_rows(t: &mut Tensor, s: &[f32]) {
    let per = t.len() / s.len();
    let mut v = t.to_f32_vec();
    for (i, x) in v.iter_mut().enumerate() {
        *x *= s[i / per];
    }
    *t = Tensor::f32(t.shape.clone(), v);
}

fn scale_cols(t: &mut Tensor, s: &[f32]) {
    let cols = s.len();
    let mut v = t.to_f32_vec();
    for (i, x) in v.iter_mut().enumerate() {
        *x *= s[i % cols];
    }
    *t = Tensor::f32(t.shape.clone(), v);
}

/// The learnable inputs scaled when the op's output channels are scaled: (input, true) when
/// the channels are the rows (axis 0) of that input, (input, false) when they are its columns.
fn scaled_inputs(op: &Op) -> Vec<(usize, bool)> {
    op.weights()
        .into_iter()
        .filter(|w| w.trainable())
        .filter_map(|w| w.out_axis.map(|axis| (w.input, axis == 0)))
        .collect()
}

/// Removes `Mul(value, per-channel constant)` nodes whose value is produced by a Conv, Gemm,
/// MatMul or BatchNormalization read by nothing else, scaling that producer instead.
/// Returns how many were folded.
pub fn fold_channel_scales(g: &mut Graph) -> usize {
    let mut folded = 0;
    loop {
        let shapes = match g.infer_shapes(1) {
            Ok(s) => s,
            Err(_) => return folded,
        };
        let readers = |name: &str, g: &Graph| {
            g.nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == name))
                .count()
        };
        let mut candidate = None;
        for (mi, m) in g.nodes.iter().enumerate() {
            if m.op != Op::Binary(BinaryOp::Mul) {
                continue;
            }
            for (vi, ci) in [(0, 1), (1, 0)] {
                let (v, c) = (&m.inputs[vi], &m.inputs[ci]);
                let Some(scale) = g
                    .initializers
                    .get(c)
                    .and_then(|t| per_channel(t, shapes[v].len()))
                else {
                    continue;
                };
                if scale.len() != shapes[v].get(1).copied().unwrap_or(0)
                    || shapes[&m.outputs[0]] != shapes[v]
                {
                    continue;
                }
                let Some(pi) = g.nodes.iter().position(|n| n.outputs[0] == *v) else {
                    continue;
                };
                // A producer with output-channel weights (conv, linear layer, BatchNorm).
                let ok_op = !scaled_inputs(&g.nodes[pi].op).is_empty();
                if ok_op && readers(v, g) == 1 && !g.outputs.iter().any(|o| o.name == *v) {
                    candidate = Some((mi, pi, scale));
                    break;
                }
            }
            if candidate.is_some() {
                break;
            }
        }
        let Some((mi, pi, s)) = candidate else {
            return folded;
        };
        let p = g.nodes[pi].clone();
        let mut scaled_inputs = scaled_inputs(&p.op);
        scaled_inputs.retain(|&(i, _)| {
            p.inputs
                .get(i)
                .is_some_and(|n| g.initializers.contains_key(n))
        });
        // A shared weight cannot be scaled for one reader; a bias must be a constant with one
        // value per output (a Gemm's C may broadcast).
        let shared = scaled_inputs
            .iter()
            .any(|&(i, _)| readers(&p.inputs[i], g) > 1);
        let bias_ok =
            p.op.weights()
                .iter()
                .filter(|w| w.kind == crate::ops::WeightKind::Bias)
                .filter_map(|w| p.inputs.get(w.input))
                .all(|b| g.initializers.get(b).is_some_and(|t| t.len() == s.len()));
        if shared || !bias_ok {
            return folded;
        }
        for (i, rows) in scaled_inputs {
            let t = g.initializers.get_mut(&p.inputs[i]).expect("checked above");
            if rows {
                scale_rows(t, &s)
            } else {
                scale_cols(t, &s)
            }
        }
        let m = g.nodes.remove(mi);
        let pi = if pi > mi { pi - 1 } else { pi };
        g.nodes[pi].outputs[0] = m.outputs[0].clone();
        let consts: Vec<&String> = m
            .inputs
            .iter()
            .filter(|c| g.initializers.contains_key(*c))
            .collect();
        for c in consts {
            if readers(c, g) == 0 {
                g.initializers.remove(c);
            }
        }
        folded += 1;
    }
}
