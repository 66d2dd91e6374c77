//! BatchNormalization with batch statistics for training on the CPU (burn flex) as one backend
//! extension with its own autodiff backward: one pass over memory for the statistics, one for the
//! output, one each for the sums and the input gradient (`dgamma = sum dy * xhat`, `dbeta = sum dy`,
//! `dx = gamma / std * (dy - mean(dy) - xhat * mean(dy * xhat))`).
//! A gate on the output (per channel, and per example or shared) is applied inside the same
//! kernels, with its gradient from the same sums: as a separate multiply it was one more pass
//! forward (a read and a write) and two more backward.
//!
//! Built from burn's tensor ops the same layer took ~20% of a ResNet-20 step: the statistics were
//! means over five axes of the interpreter's rank-6 values, one strided reduction (and one new
//! tensor) per axis, and the backward went through every elementwise op of the formula.
//! Values are (N, C, S) tensors (S: the spatial positions); the statistics are a [2, C] tensor
//! (mean, biased variance) computed without gradient tracking: the backward accounts for their
//! dependence on x analytically.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, Shape, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{Slice, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Batch normalisation's training-mode kernels on (N, C, S) tensors.
#[backend_extension(Flex, Autodiff)]
pub trait FusedBatchNorm: Backend {
    /// [2, C]: per-channel mean and biased variance over N and S (not tracked).
    fn batch_norm_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `((x - mean) / sqrt(var + epsilon) * gamma + beta) * gate`, with `stats` from
    /// `batch_norm_stats` and a (G, C) `gate`, G = N (per example) or 1; then max(0, .) when
    /// `relu`.
    fn batch_norm_apply(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// [2 + G, C]: the gradients of beta (`sum gate dy`), of gamma (`sum gate dy xhat`) and of
    /// the (G, C) gate (`sum dy (xhat gamma + beta)`), given dL/dy (with `relu`, dy where the
    /// output is positive; not tracked).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_sums(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// dL/dx given dL/dy and `sums` from `batch_norm_sums` (not tracked).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// A contiguous f32 (N, C, S) tensor's values and dims.
fn ncs(t: &FlexTensor) -> (FlexTensor, [usize; 3]) {
    let t = t.to_contiguous();
    let d = t.layout().shape().to_vec();
    let s = d[2..].iter().product();
    (t, [d[0], d[1], s])
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Per channel, per example: `f(block start, channel)` of the example's block of S values.
fn per_block<B: Send>([n, c, s]: [usize; 3], f: impl Fn(usize, usize) -> B + Sync) -> Vec<Vec<B>> {
    (0..c)
        .into_par_iter()
        .map(|ch| (0..n).map(|b| f((b * c + ch) * s, ch)).collect())
        .collect()
}

/// Sum of `f(a_k, b_k)` over two equally long slices in 16 independent lanes (so that it
/// vectorises), widened to f64. (The vectoriser leaves a loop of two sums at once scalar, so a
/// second sum over a block is a second call, which finds the block in L1.)
///
/// Compiled for AVX-512 too, taken when the CPU has it: the crate is built for baseline x86-64,
/// whose 4-wide vectors left these sums compute-bound on blocks in cache. The lanes are the same
/// 16 in both, and neither contracts to FMA, so both give the same results.
fn lane_sum<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], f: F) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        fn avx512<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], f: F) -> f64 {
            lanes(a, b, f)
        }
        // SAFETY: the CPU has just been found to support AVX-512F.
        return unsafe { avx512(a, b, f) };
    }
    lanes(a, b, f)
}

#[inline(always)]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(xa).zip(xb) {
            *lane += f(x, y);
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

/// One block's moments `[c, sum (x - c), sum (x - c)^2]` around `c`, the mean of its first 16
/// values: squares around a value near the block's mean do not cancel (the merge is exact for
/// any `c`), and the block is read from memory once (the second pass finds it in L1). `c` from
/// a pass over the whole block cost a third pass, which made the statistics slower than two
/// passes over a tensor still in L3.
fn block_moments(x: &[f32]) -> [f64; 3] {
    let head = &x[..x.len().min(16)];
    let c = head.iter().sum::<f32>() / head.len().max(1) as f32;
    let d = lane_sum(x, x, |v, _| v - c);
    let q = lane_sum(x, x, |v, _| (v - c) * (v - c));
    [c as f64, d, q]
}

/// Mean and biased variance of a channel from its blocks' moments (each of `s` values):
/// `sum (x - mean)^2 = sum over blocks of q + 2 (c - mean) d + s (c - mean)^2`, exact.
fn merge_moments(blocks: &[[f64; 3]], s: usize) -> (f64, f64) {
    let s = s as f64;
    let count = (blocks.len() as f64 * s).max(1.0);
    let mean = blocks.iter().map(|[c, d, _]| s * c + d).sum::<f64>() / count;
    let m2: f64 = blocks
        .iter()
        .map(|[c, d, q]| q + 2.0 * (c - mean) * d + s * (c - mean) * (c - mean))
        .sum();
    (mean, m2 / count)
}

/// A new vector of N * C * S values whose every (example, channel) block of S values is filled by
/// `g(block, block start, channel)`, in parallel over examples. `g` must write the whole block.
/// The vector is not zeroed first: a zeroed multi-MiB output per call was a memset per BN layer
/// and step that every value then overwrote.
fn fill_blocks(
    [n, c, s]: [usize; 3],
    g: impl Fn(&mut [MaybeUninit<f32>], usize, usize) + Sync,
) -> Vec<f32> {
    let len = n * c * s;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(c * s)
        .enumerate()
        .for_each(|(b, ex)| {
            for (ch, block) in ex.chunks_mut(s).enumerate() {
                g(block, (b * c + ch) * s, ch);
            }
        });
    // SAFETY: the N * C blocks of S values tile 0..len and `g` wrote every value of each.
    unsafe { out.set_len(len) };
    out
}

/// Mean and 1 / sqrt(var + epsilon) per channel.
fn mean_inv_std(stats: &FlexTensor, epsilon: f32) -> (Vec<f32>, Vec<f32>) {
    let st = stats.to_contiguous();
    let v: &[f32] = st.storage();
    let c = v.len() / 2;
    let inv = v[c..]
        .iter()
        .map(|var| 1.0 / (var + epsilon).sqrt())
        .collect();
    (v[..c].to_vec(), inv)
}

fn values(t: &FlexTensor) -> Vec<f32> {
    t.to_contiguous().storage::<f32>().to_vec()
}

/// Per channel `(a, b)` of the output `x * a + b` (before the gate): a = gamma / std,
/// b = beta - mean * a. The backward recomputes a fused ReLU's mask from them, so every kernel
/// takes them from here.
fn affine(gamma: &FlexTensor, beta: &FlexTensor, stats: &FlexTensor, eps: f32) -> [Vec<f32>; 2] {
    let (mean, inv) = mean_inv_std(stats, eps);
    let (gamma, beta) = (values(gamma), values(beta));
    let a: Vec<f32> = gamma.iter().zip(&inv).map(|(g, i)| g * i).collect();
    let b = (0..a.len()).map(|ch| beta[ch] - mean[ch] * a[ch]).collect();
    [a, b]
}

/// A (G, C) gate over (N, C, S) blocks: G = N (a value per example) or 1.
struct Gate {
    values: Vec<f32>,
    rows: usize,
    channels: usize,
    /// Values per example (C * S).
    example: usize,
    block: usize,
}

impl Gate {
    fn new(gate: &FlexTensor, [_, c, s]: [usize; 3]) -> Self {
        let values = values(gate);
        Gate {
            rows: values.len() / c.max(1),
            values,
            channels: c,
            example: (c * s).max(1),
            block: s.max(1),
        }
    }

    /// The gate row of example `e`.
    fn row(&self, e: usize) -> usize {
        if self.rows == 1 { 0 } else { e }
    }

    /// The gate value of the block that starts at value `i`.
    fn at(&self, i: usize) -> f32 {
        let ch = i / self.block % self.channels;
        self.values[self.row(i / self.example) * self.channels + ch]
    }
}

impl FusedBatchNorm for Flex {
    fn batch_norm_stats(x: FlexTensor) -> FlexTensor {
        let (x, d) = ncs(&x);
        let xv: &[f32] = x.storage();
        let s = d[2];
        let moments: Vec<(f64, f64)> = per_block(d, |i, _| block_moments(&xv[i..][..s]))
            .iter()
            .map(|blocks| merge_moments(blocks, s))
            .collect();
        let mut out: Vec<f32> = moments.iter().map(|&(m, _)| m as f32).collect();
        out.extend(moments.iter().map(|&(_, v)| v as f32));
        tensor(out, vec![2, d[1]])
    }

    fn batch_norm_apply(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        gate: FlexTensor,
        stats: FlexTensor,
        epsilon: f32,
        relu: bool,
    ) -> FlexTensor {
        let (x, d) = ncs(&x);
        let xv: &[f32] = x.storage();
        let [a, b] = affine(&gamma, &beta, &stats, epsilon);
        let gate = Gate::new(&gate, d);
        // y = x * a + b per channel, times the block's gate.
        let y = fill_blocks(d, |out, i, ch| {
            let s = out.len();
            // Coefficients read before the loop: indexed inside it (a bounds check per value),
            // the loop stayed scalar, 3-6x slower than memory.
            let g = gate.at(i);
            let (a, b) = (a[ch] * g, b[ch] * g);
            let pairs = out.iter_mut().zip(&xv[i..][..s]);
            if relu {
                pairs.for_each(|(o, v)| _ = o.write((v * a + b).max(0.0)));
            } else {
                pairs.for_each(|(o, v)| _ = o.write(v * a + b));
            }
        });
        tensor(y, x.layout().shape().to_vec())
    }

    fn batch_norm_sums(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        gate: FlexTensor,
        stats: FlexTensor,
        dy: FlexTensor,
        epsilon: f32,
        relu: bool,
    ) -> FlexTensor {
        let (x, d) = ncs(&x);
        let (dy, _) = ncs(&dy);
        let (xv, dyv): (&[f32], &[f32]) = (x.storage(), dy.storage());
        let (mean, inv) = mean_inv_std(&stats, epsilon);
        let [ka, kb] = affine(&gamma, &beta, &stats, epsilon);
        let (gamma, beta, gate) = (values(&gamma), values(&beta), Gate::new(&gate, d));
        let [n, c, s] = d;
        // One pass over dy and x: the second sum finds the block of dy in L1.
        let blocks = per_block(d, |i, ch| {
            let (g, v, m) = (&dyv[i..][..s], &xv[i..][..s], mean[ch]);
            if relu {
                // dy where the forward's output (same arithmetic) was positive.
                let (a, b) = (ka[ch] * gate.at(i), kb[ch] * gate.at(i));
                let on = move |v: f32| v * a + b > 0.0;
                let sum_dy = lane_sum(g, v, |dy, v| if on(v) { dy } else { 0.0 });
                let sum_dy_x = lane_sum(g, v, |dy, v| if on(v) { dy * (v - m) } else { 0.0 });
                [sum_dy, sum_dy_x]
            } else {
                [lane_sum(g, g, |a, _| a), lane_sum(g, v, |a, b| a * (b - m))]
            }
        });
        // Per channel, over examples in order: the gate scales dy of its block.
        let gated = |k: usize| -> Vec<f64> {
            let channel = |(ch, b): (usize, &Vec<[f64; 2]>)| {
                let at = |e: usize| gate.at((e * c + ch) * s) as f64;
                b.iter().enumerate().map(|(e, sums)| at(e) * sums[k]).sum()
            };
            blocks.iter().enumerate().map(channel).collect()
        };
        let (sum_dy, sum_dy_xhat) = (gated(0), gated(1));
        let mut out: Vec<f32> = sum_dy.iter().map(|&v| v as f32).collect();
        out.extend(sum_dy_xhat.iter().zip(&inv).map(|(&v, i)| v as f32 * i));
        // The gate's gradient: sum dy * (xhat gamma + beta) over its block(s).
        let mut dgate = vec![0.0f64; gate.rows * c];
        for (ch, b) in blocks.iter().enumerate() {
            let scale = (gamma[ch] * inv[ch]) as f64;
            for (e, [sum_dy, sum_dy_x]) in b.iter().enumerate().take(n) {
                dgate[gate.row(e) * c + ch] += scale * sum_dy_x + beta[ch] as f64 * sum_dy;
            }
        }
        out.extend(dgate.iter().map(|&v| v as f32));
        tensor(out, vec![2 + gate.rows, c])
    }

    fn batch_norm_input_grad(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        gate: FlexTensor,
        stats: FlexTensor,
        dy: FlexTensor,
        sums: FlexTensor,
        epsilon: f32,
        relu: bool,
    ) -> FlexTensor {
        let (x, d) = ncs(&x);
        let (dy, _) = ncs(&dy);
        let (xv, dyv): (&[f32], &[f32]) = (x.storage(), dy.storage());
        let (mean, inv) = mean_inv_std(&stats, epsilon);
        let [a, b] = affine(&gamma, &beta, &stats, epsilon);
        let (sums, gate) = (values(&sums), Gate::new(&gate, d));
        let c = d[1];
        let count = (d[0] * d[2]).max(1) as f32;
        // dx = a * gate * dy + k * x + m per block, a = gamma / std,
        // k = -a * sum(gate dy xhat) / (count * std), m = -a * sum(gate dy) / count - k * mean
        // (with a ReLU, dy only where the output was positive).
        let k: Vec<f32> = (0..c)
            .map(|ch| -a[ch] * sums[c + ch] * inv[ch] / count)
            .collect();
        let m: Vec<f32> = (0..c)
            .map(|ch| -a[ch] * sums[ch] / count - k[ch] * mean[ch])
            .collect();
        let dx = fill_blocks(d, |out, i, ch| {
            let s = out.len();
            let (a, b, k, m) = (a[ch] * gate.at(i), b[ch] * gate.at(i), k[ch], m[ch]);
            let values = out.iter_mut().zip(&dyv[i..][..s]).zip(&xv[i..][..s]);
            if relu {
                // dy loaded before the test (a select, not a branch: the loop vectorises).
                for ((o, &g), &v) in values {
                    let g = if v * a + b > 0.0 { g } else { 0.0 };
                    o.write(a * g + k * v + m);
                }
            } else {
                values.for_each(|((o, g), v)| _ = o.write(a * g + k * v + m));
            }
        });
        tensor(dx, x.layout().shape().to_vec())
    }
}

impl<B: Backend + FusedBatchNorm, C: CheckpointStrategy> FusedBatchNorm for Autodiff<B, C> {
    fn batch_norm_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::batch_norm_stats(x.into_primitive()))
    }

    fn batch_norm_apply(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        let stats = stats.into_primitive();
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node(), gate.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let params = [gamma.primitive(), beta.primitive(), gate.primitive()];
                let [g, b, z] = params.map(|p| p.clone());
                let y = B::batch_norm_apply(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    gate.into_primitive(),
                    stats.clone(),
                    epsilon,
                    relu,
                );
                prep.finish((x_state, [g, b, z, stats], epsilon, relu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::batch_norm_apply(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                gate.into_primitive(),
                stats,
                epsilon,
                relu,
            )),
        }
    }

    fn batch_norm_sums(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::batch_norm_sums(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            gate.into_primitive(),
            stats.into_primitive(),
            dy.into_primitive(),
            epsilon,
            relu,
        ))
    }

    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        gate: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        epsilon: f32,
        relu: bool,
    ) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::batch_norm_input_grad(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            gate.into_primitive(),
            stats.into_primitive(),
            dy.into_primitive(),
            sums.into_primitive(),
            epsilon,
            relu,
        ))
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl<B: Backend + FusedBatchNorm> Backward<B, 4> for BatchNormBackward {
    /// x's checkpoint, [gamma, beta, gate, statistics], epsilon, ReLU applied.
    type State = (NodeId, [B::FloatTensorPrimitive; 4], f32, bool);

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta, node_gate] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x_state, [gamma, beta, gate, stats], epsilon, relu) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let (c, rows) = (gamma.shape()[0], gate.shape()[0]);
        let sums = B::batch_norm_sums(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            gate.clone(),
            stats.clone(),
            dy.clone(),
            epsilon,
            relu,
        );
        let rows_of = |from: usize, count: usize| {
            let all = Slice::new(0, None, 1);
            let (from, to) = (from as isize, (from + count) as isize);
            B::float_slice(sums.clone(), &[Slice::new(from, Some(to), 1), all])
        };
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, B::float_reshape(rows_of(0, 1), Shape::new([c])));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, B::float_reshape(rows_of(1, 1), Shape::new([c])));
        }
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, rows_of(2, rows));
        }
        if let Some(node) = node_x {
            let dx = B::batch_norm_input_grad(
                x,
                gamma,
                beta,
                gate,
                stats,
                dy,
                sums.clone(),
                epsilon,
                relu,
            );
            grads.register::<B>(node.id, dx);
        }
    }
}

/// Training-mode BatchNorm of an (N, C, S) value on burn flex with autodiff, times a (G, C) gate
/// when one is given (G = N or 1), then a ReLU when `relu`: neither the gated nor the normalised
/// value is materialised (per fused op one pass less forward, two less backward, than separate
/// ops; a ReLU's mask is recomputed from x in the backward). Returns the output and the [2, C]
/// batch statistics (mean, biased variance; not tracked).
pub fn batch_norm_train_fused(
    x: Tensor<3>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    gate: Option<Tensor<2>>,
    relu: bool,
    epsilon: f32,
) -> (Tensor<3>, Tensor<2>) {
    let c = gamma.dims()[0];
    let gate = gate.unwrap_or_else(|| Tensor::<2>::ones([1, c], &x.device()));
    let stats = Tensor::<2>::from_dispatch(<Dispatch as FusedBatchNorm>::batch_norm_stats(
        x.clone().into_dispatch(),
    ));
    let y = Tensor::<3>::from_dispatch(<Dispatch as FusedBatchNorm>::batch_norm_apply(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        gate.into_dispatch(),
        stats.clone().into_dispatch(),
        epsilon,
        relu,
    ));
    (y, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_are_the_same_bits_with_and_without_avx512() {
        // `lane_sum` takes its AVX-512 build where the CPU has it; `lanes` here is the baseline
        // build, what a CPU without AVX-512 runs. Both must give the same bits (same lanes,
        // no FMA), or results would depend on the machine.
        for (len, seed) in [(784, 1), (196, 2), (49, 3), (7, 4), (4096, 5)] {
            let (a, b) = (noise(len, seed), noise(len, seed + 100));
            let m = 0.25f32;
            let plain = lanes(&a, &b, |x, y| (x - m) * y);
            let dispatched = lane_sum(&a, &b, |x, y| (x - m) * y);
            assert_eq!(plain.to_bits(), dispatched.to_bits(), "length {len}");
            let squares = lane_sum(&a, &a, |x, _| (x - m) * (x - m));
            assert_eq!(
                lanes(&a, &a, |x, _| (x - m) * (x - m)).to_bits(),
                squares.to_bits()
            );
        }
    }

    /// Deterministic values in [-1, 1) (xorshift).
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Mean and biased variance of each channel of (N, C, S) values, two passes in f64.
    fn reference(xs: &[f32], [n, c, s]: [usize; 3]) -> (Vec<f64>, Vec<f64>) {
        let channel = |ch: usize| {
            (0..n).flat_map(move |b| xs[(b * c + ch) * s..][..s].iter().map(|&v| v as f64))
        };
        let count = (n * s) as f64;
        let mean: Vec<f64> = (0..c).map(|ch| channel(ch).sum::<f64>() / count).collect();
        let var = (0..c)
            .map(|ch| channel(ch).map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / count)
            .collect();
        (mean, var)
    }

    #[test]
    fn statistics_of_a_large_mean_with_a_small_spread_match_f64() {
        // Means of about 1000 with a spread of 1e-3: a sum of squares without a shift would
        // cancel every significant digit of the variance in f32. Block sizes: 1 (a linear
        // layer's output), a tail after the 16 lanes, a conv output; a step between examples'
        // means (the merge of block moments); and first values (each block's shift) far off
        // their block's mean, as on a border row.
        for (shape, step, head) in [
            ([16, 3, 1], 0.0, 0.0),
            ([5, 4, 37], 0.0, 0.0),
            ([8, 2, 784], 0.0, 0.0),
            ([6, 3, 49], 2e-3, 0.0),
            ([4, 2, 196], 0.0, 5e-3),
        ] {
            let [n, c, s] = shape;
            let xs: Vec<f32> = noise(n * c * s, 7)
                .into_iter()
                .enumerate()
                .map(|(k, v)| {
                    let first = if k % s < 16 { head } else { 0.0 };
                    1000.0 + 1e-3 * v + step * (k / (c * s)) as f32 + first
                })
                .collect();
            let stats = Flex::batch_norm_stats(tensor(xs.clone(), vec![n, c, s]));
            let got = values(&stats);
            let (mean, var) = reference(&xs, shape);
            for ch in 0..c {
                let (m, v) = (got[ch] as f64, got[c + ch] as f64);
                assert!(
                    (m - mean[ch]).abs() <= 1e-7 * mean[ch],
                    "{shape:?} channel {ch}: mean {m} vs {}",
                    mean[ch]
                );
                assert!(
                    (v - var[ch]).abs() <= 1e-4 * var[ch],
                    "{shape:?} channel {ch}: variance {v:e} vs {:e}",
                    var[ch]
                );
            }
        }
    }
}
