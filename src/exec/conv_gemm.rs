//! 2-D convolution of f32 flex tensors as per-example gemms, in parallel over examples:
//! forward `Y_b[g] = W[g] · cols_b[g]`, input gradient `dX_b = col2im(W[g]^T · dY_b[g])` and
//! weight gradient `dW[g] = sum_b dY_b[g] · cols_b[g]^T`, with `cols_b` the im2col matrix of
//! example b (rows: input channel x kernel tap, columns: output positions).
//!
//! One example's im2col block (at most a few hundred KiB for the models here) stays in cache
//! between its write and the gemm that reads it, the results land in NCHW order with no
//! transpose, and each example's work is one rayon task. flex's forward instead converts the
//! input to NHWC on one thread and scatters tiles of the output; its input gradient is a
//! transposed convolution through the 3-D path.
//!
//! The weight gradient sums fixed parts of the batch in order, so the result does not depend
//! on the number of threads.
//!
//! Stride-1 convs skip the im2col matrix where that pays (`conv_implicit`: gemms over a padded
//! channels-last copy of each example): the weight gradient of every one whose tap-row
//! channels fill gemm's vectors, the forward and input gradient at 32+ channels.

use burn::backend::flex::FlexTensor;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::conv_implicit::{Padded, weight_from_rows, weight_rows};
use super::im2col::{Geometry, col2im, im2col};
use super::strided_gemm::{View, gemm, gemm_write};

/// Parts of the batch whose weight gradients are summed in order (fixed for reproducibility).
const WEIGHT_GRAD_PARTS: usize = 16;

/// One convolution's shapes.
struct Conv {
    geometry: Geometry,
    batch: usize,
    groups: usize,
    out_channels: usize,
}

impl Conv {
    fn new(x: &[usize], w: &[usize], o: &ConvOptions<2>) -> Self {
        let out = |axis: usize| {
            let span = o.dilation[axis] * (w[2 + axis] - 1) + 1;
            let padded = x[2 + axis] + o.padding[axis].0 + o.padding[axis].1;
            (padded - span) / o.stride[axis] + 1
        };
        Conv {
            geometry: Geometry {
                channels: x[1],
                height: x[2],
                width: x[3],
                kernel: [w[2], w[3]],
                stride: o.stride,
                pad: [o.padding[0].0, o.padding[1].0],
                dilation: o.dilation,
                out: [out(0), out(1)],
            },
            batch: x[0],
            groups: o.groups,
            out_channels: w[0],
        }
    }

    /// Output channels per group.
    fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }

    /// im2col rows per group (input channels per group x taps).
    fn group_rows(&self) -> usize {
        self.geometry.rows() / self.groups
    }

    fn input_len(&self) -> usize {
        self.geometry.channels * self.geometry.plane()
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.geometry.positions()
    }

    /// For a stride-1 conv that is not its own im2col: the geometry of the convolution of dY
    /// that gives dX (C_out channels of the output's size, padding `dilation x (k - 1) - pad`,
    /// out = the input's size); none when the padding exceeds that, or when the input has
    /// over 5/4 as many positions as the output: that convolution multiplies by one product per
    /// input position and tap, `W^T · dY` by one per output position and tap, so a 'valid'
    /// 5x5 conv on 12x12 (8x8 out) would do 2.25x the work, mostly on padding zeros.
    fn transposed(&self) -> Option<Geometry> {
        let g = &self.geometry;
        if g.stride != [1, 1] || g.is_identity() || 4 * g.plane() > 5 * g.positions() {
            return None;
        }
        let pad = |a: usize| (g.dilation[a] * (g.kernel[a] - 1)).checked_sub(g.pad[a]);
        Some(Geometry {
            channels: self.out_channels,
            height: g.out[0],
            width: g.out[1],
            kernel: g.kernel,
            stride: [1, 1],
            pad: [pad(0)?, pad(1)?],
            dilation: g.dilation,
            out: [g.height, g.width],
        })
    }

    /// The padded-copy view of this conv (`conv_implicit`), where it applies: one group, stride
    /// 1, no dilation, not a 1x1 conv (whose im2col is the input itself).
    fn padded(&self) -> Option<Padded> {
        if self.groups != 1 || self.geometry.is_identity() {
            return None;
        }
        Padded::new(&self.geometry)
    }

    /// The im2col matrix of example `x`, handed to `f`: written into this thread's scratch
    /// buffer, or `x` itself for a 1x1 stride-1 conv.
    fn with_cols<R>(&self, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        if self.geometry.is_identity() {
            f(x)
        } else {
            with_scratch(self.geometry.rows() * self.geometry.positions(), |cols| {
                im2col(x, &self.geometry, cols);
                f(cols)
            })
        }
    }
}

thread_local! {
    /// One im2col-sized buffer per thread, kept across calls: allocating and zeroing one per
    /// rayon job cost a memset of up to ~0.5 MB each. Whoever uses it writes what it reads.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Largest scratch buffer a thread keeps after a kernel (16 MiB): a detector's im2col at
/// 640x640 can be ~100 MiB, and every rayon thread would hold one for the life of the process.
const SCRATCH_KEPT: usize = 4 << 20;

/// Runs `f` on `len` floats of this thread's scratch buffer (holding stale values).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// After a kernel whose scratch needed `len` floats: frees every thread's buffer if it is
/// larger than `SCRATCH_KEPT`.
fn release_scratch(len: usize) {
    if len > SCRATCH_KEPT {
        rayon::broadcast(|_| {
            SCRATCH.with_borrow_mut(|buf| {
                if buf.len() > SCRATCH_KEPT {
                    *buf = Vec::new();
                }
            })
        });
    }
}

/// `batch` blocks of `block` values, block b filled by `fill(b, block)` in parallel over
/// examples, into a vector that is not zeroed first (a memset of a multi-MiB output per conv and
/// step that the gemms then overwrite). `fill` must write every value of its block.
fn per_example(
    batch: usize,
    block: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let len = batch * block;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(b, ex)| fill(b, ex));
    // SAFETY: the blocks tile 0..len and `fill` wrote every value of each.
    unsafe { out.set_len(len) };
    out
}

fn f32_values(t: &FlexTensor) -> (FlexTensor, Vec<usize>) {
    let t = t.to_contiguous();
    let shape = t.layout().shape().to_vec();
    (t, shape)
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Whether these tensors take the per-example gemm path: f32, and not depthwise (groups of one
/// input channel: flex's direct depthwise kernels beat gemms of one row). A 1-channel stem
/// (one group) takes it: flex's general conv runs it 5-7x slower.
pub(crate) fn applies(x: &FlexTensor, w: &FlexTensor, groups: usize) -> bool {
    let ws = w.layout().shape();
    let depthwise = groups > 1 && ws.num_dims() == 4 && ws[1] == 1;
    x.dtype() == DType::F32 && w.dtype() == DType::F32 && ws.num_dims() == 4 && !depthwise
}

/// conv2d without bias.
pub(crate) fn forward(x: &FlexTensor, w: &FlexTensor, o: &ConvOptions<2>) -> FlexTensor {
    let (x, xs) = f32_values(x);
    let (w, ws) = f32_values(w);
    let cv = Conv::new(&xs, &ws, o);
    let (xv, wv): (&[f32], &[f32]) = (x.storage(), w.storage());
    let [oh, ow] = cv.geometry.out;
    let y_shape = vec![cv.batch, cv.out_channels, oh, ow];
    if let Some(pd) = cv.padded().filter(|pd| pd.forward_pays(cv.out_channels)) {
        let rows = weight_rows(wv, [ws[0], ws[1], ws[2], ws[3]], false);
        let y = forward_padded(&cv, &pd, xv, &rows, cv.out_channels);
        return tensor(y, y_shape);
    }
    let (mo, kg, p) = (cv.group_out(), cv.group_rows(), cv.geometry.positions());
    let y = per_example(cv.batch, cv.output_len(), |b, y_b| {
        cv.with_cols(&xv[b * cv.input_len()..][..cv.input_len()], |cols| {
            // The groups' output blocks tile y_b.
            for g in 0..cv.groups {
                gemm_write(
                    [mo, p, kg],
                    y_b,
                    View::rows(g * mo * p, p),
                    wv,
                    View::rows(g * mo * kg, kg),
                    cols,
                    View::rows(g * kg * p, p),
                );
            }
        })
    });
    release_scratch(cv.geometry.rows() * p);
    tensor(y, y_shape)
}

/// A stride-1 conv through padded copies (`conv_implicit`): `x` holds the batch's inputs of
/// `pd`'s geometry (C x H x W each), `rows` the weight from `weight_rows`; returns the
/// outputs, `out_channels` x OH x OW each.
fn forward_padded(
    cv: &Conv,
    pd: &Padded,
    x: &[f32],
    rows: &[f32],
    out_channels: usize,
) -> Vec<f32> {
    let x_len = x.len() / cv.batch.max(1);
    let scratch = pd.input_scratch() + pd.forward_scratch(out_channels);
    let y_len = out_channels * pd.out_positions();
    let y = per_example(cv.batch, y_len, |b, y_b| {
        with_scratch(scratch, |s| {
            let (xs, yp) = s.split_at_mut(pd.input_scratch());
            pd.pad_input(&x[b * x_len..][..x_len], xs);
            pd.forward(&xs[..pd.padded_len()], rows, out_channels, yp, y_b);
        })
    });
    release_scratch(scratch);
    y
}

/// dL/dX of conv2d given dL/dY.
pub(crate) fn input_grad(
    x_shape: &[usize],
    w: &FlexTensor,
    dy: &FlexTensor,
    o: &ConvOptions<2>,
) -> FlexTensor {
    let (w, ws) = f32_values(w);
    let (dy, _) = f32_values(dy);
    let cv = Conv::new(x_shape, &ws, o);
    if let Some(t) = cv.transposed() {
        let padded = Padded::new(&t).filter(|_| cv.groups == 1);
        if let Some(pd) = padded.filter(|pd| pd.forward_pays(cv.geometry.channels)) {
            // dX as the convolution of dY by the flipped, transposed kernel.
            let rows = weight_rows(w.storage(), [ws[0], ws[1], ws[2], ws[3]], true);
            let dx = forward_padded(&cv, &pd, dy.storage(), &rows, cv.geometry.channels);
            return tensor(dx, x_shape.to_vec());
        }
        return input_grad_as_conv(&cv, &t, w.storage(), dy.storage(), x_shape);
    }
    let (wv, dyv): (&[f32], &[f32]) = (w.storage(), dy.storage());
    let (mo, kg, p) = (cv.group_out(), cv.group_rows(), cv.geometry.positions());
    if cv.geometry.is_identity() {
        // dX_b[g] = W[g]^T · dY_b[g]: the groups' blocks tile dX_b.
        let dx = per_example(cv.batch, cv.input_len(), |b, dx_b| {
            let dy_b = &dyv[b * cv.output_len()..][..cv.output_len()];
            for g in 0..cv.groups {
                gemm_write(
                    [kg, p, mo],
                    dx_b,
                    View::rows(g * kg * p, p),
                    wv,
                    View::transposed(g * mo * kg, kg),
                    dy_b,
                    View::rows(g * mo * p, p),
                );
            }
        });
        return tensor(dx, x_shape.to_vec());
    }
    // col2im adds into dX, so this one starts zeroed.
    let mut dx = vec![0.0f32; cv.batch * cv.input_len()];
    if !dx.is_empty() {
        dx.par_chunks_mut(cv.input_len())
            .enumerate()
            .for_each(|(b, dx_b)| {
                let dy_b = &dyv[b * cv.output_len()..][..cv.output_len()];
                with_scratch(cv.geometry.rows() * p, |dcols| {
                    // dcols[g] = W[g]^T · dY_b[g], every entry written.
                    for g in 0..cv.groups {
                        gemm(
                            [kg, p, mo],
                            dcols,
                            View::rows(g * kg * p, p),
                            false,
                            wv,
                            View::transposed(g * mo * kg, kg),
                            dy_b,
                            View::rows(g * mo * p, p),
                        );
                    }
                    col2im(dcols, &cv.geometry, dx_b);
                });
            });
    }
    release_scratch(cv.geometry.rows() * p);
    tensor(dx, x_shape.to_vec())
}

/// dL/dX of a stride-1 conv2d as a convolution of dL/dY: `dX_b[g] = Wf[g] · im2col_t(dY_b)[g]`,
/// with `Wf` the weight flipped in both kernel axes and transposed to (C_in/g, C_out/g x taps)
/// and `t` the geometry from `Conv::transposed`. Its gemm's inner dimension is C_out x taps,
/// where `W^T · dY` then col2im has only C_out (and writes taps times as many values).
fn input_grad_as_conv(
    cv: &Conv,
    t: &Geometry,
    wv: &[f32],
    dyv: &[f32],
    x_shape: &[usize],
) -> FlexTensor {
    let [kh, kw] = cv.geometry.kernel;
    let taps = kh * kw;
    let (mo, groups) = (cv.group_out(), cv.groups);
    let cin = cv.geometry.channels / groups;
    let inner = mo * taps;
    let mut flipped = vec![0.0f32; wv.len()];
    for g in 0..groups {
        for o in 0..mo {
            for c in 0..cin {
                let src = &wv[((g * mo + o) * cin + c) * taps..][..taps];
                let dst = &mut flipped[(g * cin + c) * inner + o * taps..][..taps];
                for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *v;
                }
            }
        }
    }
    let p = t.positions();
    let dx = per_example(cv.batch, cv.input_len(), |b, dx_b| {
        with_scratch(t.rows() * p, |cols| {
            im2col(&dyv[b * cv.output_len()..][..cv.output_len()], t, cols);
            // The groups' blocks tile dX_b.
            for g in 0..groups {
                gemm_write(
                    [cin, p, inner],
                    dx_b,
                    View::rows(g * cin * p, p),
                    &flipped,
                    View::rows(g * cin * inner, inner),
                    cols,
                    View::rows(g * inner * p, p),
                );
            }
        })
    });
    release_scratch(t.rows() * p);
    tensor(dx, x_shape.to_vec())
}

/// dL/dW of conv2d given dL/dY; `w_shape` = [out channels, in channels / groups, kh, kw].
pub(crate) fn weight_grad(
    x: &FlexTensor,
    dy: &FlexTensor,
    w_shape: &[usize],
    o: &ConvOptions<2>,
) -> FlexTensor {
    let (x, xs) = f32_values(x);
    let (dy, _) = f32_values(dy);
    let cv = Conv::new(&xs, w_shape, o);
    let (xv, dyv): (&[f32], &[f32]) = (x.storage(), dy.storage());
    if let Some(pd) = cv.padded().filter(Padded::weight_grad_pays) {
        let dw = weight_grad_padded(&cv, &pd, xv, dyv);
        return tensor(dw, w_shape.to_vec());
    }
    let (mo, kg, p) = (cv.group_out(), cv.group_rows(), cv.geometry.positions());
    let w_len = cv.out_channels * kg;
    let dw_t = sum_over_parts(cv.batch, w_len, |examples, dw_t| {
        for b in examples {
            let dy_b = &dyv[b * cv.output_len()..][..cv.output_len()];
            cv.with_cols(&xv[b * cv.input_len()..][..cv.input_len()], |cols| {
                for g in 0..cv.groups {
                    gemm(
                        [mo, kg, p],
                        dw_t,
                        View::transposed(g * mo * kg, mo),
                        true,
                        dy_b,
                        View::rows(g * mo * p, p),
                        cols,
                        View::transposed(g * kg * p, p),
                    );
                }
            });
        }
    });
    release_scratch(cv.geometry.rows() * p);
    // Back from (group, tap row, out channel) to (group, out channel, tap row).
    let mut dw = vec![0.0f32; w_len];
    for (block, block_t) in dw.chunks_mut(mo * kg).zip(dw_t.chunks(mo * kg)) {
        for (r, row_t) in block_t.chunks(mo).enumerate() {
            for (o, v) in row_t.iter().enumerate() {
                block[o * kg + r] = *v;
            }
        }
    }
    tensor(dw, w_shape.to_vec())
}

/// A weight gradient of `len` values summed over the batch: `add(examples, acc)` adds the
/// examples' terms into a zeroed `acc`, for `WEIGHT_GRAD_PARTS` fixed parts of the batch in
/// parallel; the parts are then summed in order, so the result does not depend on the number
/// of threads.
fn sum_over_parts(
    batch: usize,
    len: usize,
    add: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunk = batch.div_ceil(WEIGHT_GRAD_PARTS).max(1);
    let parts: Vec<Vec<f32>> = (0..batch)
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|b0| {
            let mut acc = vec![0.0f32; len];
            add(b0..(b0 + chunk).min(batch), &mut acc);
            acc
        })
        .collect();
    let mut sum = vec![0.0f32; len];
    for part in &parts {
        for (a, v) in sum.iter_mut().zip(part) {
            *a += v;
        }
    }
    sum
}

/// `weight_grad` through padded copies (`conv_implicit`).
fn weight_grad_padded(cv: &Conv, pd: &Padded, xv: &[f32], dyv: &[f32]) -> Vec<f32> {
    let shape = [
        cv.out_channels,
        cv.geometry.channels,
        cv.geometry.kernel[0],
        cv.geometry.kernel[1],
    ];
    let scratch = pd.input_scratch() + cv.out_channels * pd.positions();
    let acc = sum_over_parts(cv.batch, shape.iter().product(), |examples, acc| {
        with_scratch(scratch, |s| {
            let (xs, dyp) = s.split_at_mut(pd.input_scratch());
            for b in examples {
                pd.pad_input(&xv[b * cv.input_len()..][..cv.input_len()], xs);
                pd.pad_width(&dyv[b * cv.output_len()..][..cv.output_len()], dyp);
                pd.add_weight_grad(&xs[..pd.padded_len()], dyp, cv.out_channels, acc);
            }
        })
    });
    release_scratch(scratch);
    weight_from_rows(&acc, shape)
}
