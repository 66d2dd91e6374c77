//! The weight gradient of a 2-D convolution on burn flex as gemms over the batch:
//! `dW[g] = sum over batch chunks of dY[g] · cols[g]^T`, with `cols` the im2col matrix (rows:
//! input channel x kernel tap, columns: example x output position).
//!
//! The im2col matrix is written here row by row with slice copies (one output row of a kernel
//! tap is one contiguous run of the input row when the stride is 1); flex's own strided copy of
//! a 6-D window view walks element by element and was slower than the whole gemm. Chunks of
//! the batch keep each im2col block near the cache size.

use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Flex, Shape};
use burn::tensor::TensorData;
use burn::tensor::ops::ConvOptions;

/// Floats per im2col block (4 MiB).
const BLOCK_FLOATS: usize = 1 << 20;

/// Geometry of one convolution, in the input's and weight's terms.
struct Geometry {
    channels: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    /// Padding before the first row / column.
    pad: [usize; 2],
    dilation: [usize; 2],
    out: [usize; 2],
}

impl Geometry {
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    fn positions(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Output columns `ox` whose input column `ox * stride + j * dilation - pad` is inside.
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        let offset = j * self.dilation[1];
        let (s, pad) = (self.stride[1], self.pad[1]);
        let lo = pad.saturating_sub(offset).div_ceil(s);
        let hi = (self.width + pad)
            .checked_sub(offset)
            .map_or(0, |span| span.div_ceil(s));
        (lo.min(self.out[1]), hi.min(self.out[1]))
    }
}

/// Writes the im2col rows of examples `x` (each `channels * height * width` floats) into `cols`
/// (`channels * taps` rows of `examples * positions` floats, zeroed by the caller: padding stays
/// zero).
fn im2col(x: &[f32], examples: usize, g: &Geometry, cols: &mut [f32]) {
    let (h, w) = (g.height, g.width);
    let plane = h * w;
    let positions = g.positions();
    let [kh, kw] = g.kernel;
    let row_len = examples * positions;
    for (row_index, row) in cols.chunks_mut(row_len).enumerate() {
        let c = row_index / (kh * kw);
        let (i, j) = ((row_index / kw) % kh, row_index % kw);
        let (lo, hi) = g.valid_columns(j);
        if lo >= hi {
            continue;
        }
        let first_col = lo * g.stride[1] + j * g.dilation[1] - g.pad[1];
        for b in 0..examples {
            let src = &x[(b * g.channels + c) * plane..][..plane];
            for oy in 0..g.out[0] {
                let Some(iy) = (oy * g.stride[0] + i * g.dilation[0]).checked_sub(g.pad[0]) else {
                    continue;
                };
                if iy >= h {
                    continue;
                }
                let src_row = &src[iy * w..][..w];
                let dst = &mut row[b * positions + oy * g.out[1]..][lo..hi];
                if g.stride[1] == 1 {
                    dst.copy_from_slice(&src_row[first_col..first_col + (hi - lo)]);
                } else {
                    for (k, d) in dst.iter_mut().enumerate() {
                        *d = src_row[first_col + k * g.stride[1]];
                    }
                }
            }
        }
    }
}

/// `dy` rows of examples `[b0, b1)` regrouped from (example, channel) to (channel, example).
fn channels_first(
    dy: &[f32],
    out_channels: usize,
    positions: usize,
    b0: usize,
    b1: usize,
) -> Vec<f32> {
    let examples = b1 - b0;
    let mut out = vec![0.0; out_channels * examples * positions];
    for (b, example) in (b0..b1).enumerate() {
        for o in 0..out_channels {
            let src = &dy[(example * out_channels + o) * positions..][..positions];
            out[(o * examples + b) * positions..][..positions].copy_from_slice(src);
        }
    }
    out
}

/// dL/dW of conv2d for f32 flex tensors; `w_shape` = [out channels, in channels / groups, kh, kw].
pub(crate) fn weight_grad(
    x: FlexTensor,
    dy: FlexTensor,
    w_shape: [usize; 4],
    o: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let dy = dy.to_contiguous();
    let xs = x.layout().shape().clone();
    let ys = dy.layout().shape().clone();
    let (n, c) = (xs[0], xs[1]);
    let [oc, cg, kh, kw] = w_shape;
    let groups = o.groups;
    let g = Geometry {
        channels: c,
        height: xs[2],
        width: xs[3],
        kernel: [kh, kw],
        stride: o.stride,
        pad: [o.padding[0].0, o.padding[1].0],
        dilation: o.dilation,
        out: [ys[2], ys[3]],
    };
    let x_vals: &[f32] = x.as_slice().expect("contiguous f32");
    let dy_vals: &[f32] = dy.as_slice().expect("contiguous f32");
    let (positions, rows) = (g.positions(), c * g.taps());
    let per_example = (rows * positions).max(1);
    let chunk = (BLOCK_FLOATS / per_example).clamp(1, n.max(1));
    let mut total: Option<FlexTensor> = None;
    for b0 in (0..n).step_by(chunk) {
        let b1 = (b0 + chunk).min(n);
        let len = (b1 - b0) * positions;
        let mut block = vec![0.0f32; rows * len];
        im2col(
            &x_vals[b0 * c * g.height * g.width..],
            b1 - b0,
            &g,
            &mut block,
        );
        let cols_t = Flex::float_from_data(
            TensorData::new(block, [groups, cg * g.taps(), len]),
            &Default::default(),
        );
        let dy_t = Flex::float_from_data(
            TensorData::new(
                channels_first(dy_vals, oc, positions, b0, b1),
                [groups, oc / groups, len],
            ),
            &Default::default(),
        );
        let part = Flex::float_matmul(dy_t, Flex::float_swap_dims(cols_t, 1, 2));
        total = Some(match total {
            Some(t) => Flex::float_add(t, part),
            None => part,
        });
    }
    let dw = total.unwrap_or_else(|| {
        Flex::float_zeros(
            Shape::new([groups, oc / groups, cg * kh * kw]),
            &Default::default(),
            burn::tensor::FloatDType::F32,
        )
    });
    Flex::float_reshape(dw, Shape::new([oc, cg, kh, kw]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(
        width: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Geometry {
        let span = (kernel - 1) * dilation + 1;
        let out = (width + 2 * pad - span) / stride + 1;
        Geometry {
            channels: 1,
            height: width,
            width,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            pad: [pad, pad],
            dilation: [dilation, dilation],
            out: [out, out],
        }
    }

    #[test]
    fn valid_columns_match_a_direct_scan() {
        for (width, kernel, stride, pad, dilation) in [
            (7, 3, 1, 1, 1),
            (8, 3, 2, 1, 1),
            (9, 3, 2, 2, 2),
            (5, 1, 2, 0, 1),
            (6, 5, 1, 4, 1),
        ] {
            let g = geometry(width, kernel, stride, pad, dilation);
            for j in 0..kernel {
                let inside: Vec<usize> = (0..g.out[1])
                    .filter(|&ox| {
                        let ix = (ox * stride + j * dilation) as isize - pad as isize;
                        ix >= 0 && (ix as usize) < width
                    })
                    .collect();
                let (lo, hi) = g.valid_columns(j);
                assert_eq!(
                    (lo..hi).collect::<Vec<_>>(),
                    inside,
                    "{width} {kernel} {stride} {pad} {dilation} j={j}"
                );
            }
        }
    }

    #[test]
    fn im2col_reads_each_window_with_zero_padding() {
        // 1 example, 1 channel, 3x3 input 1..9, 2x2 kernel, stride 1, pad 1: 4x4 outputs.
        let g = geometry(3, 2, 1, 1, 1);
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut cols = vec![0.0; 4 * 16];
        im2col(&x, 1, &g, &mut cols);
        // Tap (0, 0) reads x[oy - 1, ox - 1].
        let tap00: Vec<f32> = (0..16)
            .map(|p| {
                let (oy, ox) = (p / 4, p % 4);
                if oy == 0 || ox == 0 {
                    0.0
                } else {
                    x[(oy - 1) * 3 + ox - 1]
                }
            })
            .collect();
        assert_eq!(&cols[..16], &tap00[..]);
        // Tap (1, 1) reads x[oy, ox].
        let tap11: Vec<f32> = (0..16)
            .map(|p| {
                let (oy, ox) = (p / 4, p % 4);
                if oy == 3 || ox == 3 {
                    0.0
                } else {
                    x[oy * 3 + ox]
                }
            })
            .collect();
        assert_eq!(&cols[48..], &tap11[..]);
    }
}
