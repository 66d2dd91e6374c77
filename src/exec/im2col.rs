//! The im2col matrix of one example and its adjoint (col2im), for the per-example gemms of
//! `conv_gemm`: rows are input channel x kernel tap, columns are output positions.
//!
//! Both walk the same runs: one output row of one kernel tap reads one stretch of one input row
//! (contiguous when the column stride is 1), so the copies are slice copies; flex's own strided
//! copy of a 6-D window view walks element by element.

/// Geometry of one convolution, in the input's and weight's terms.
pub(super) struct Geometry {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Padding before the first row / column.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub out: [usize; 2],
}

/// One stretch of an im2col row: `len` columns from `col` read the input plane of `channel`
/// from `src` on, every `stride` elements.
struct Run {
    row: usize,
    channel: usize,
    col: usize,
    src: usize,
    len: usize,
}

impl Geometry {
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    pub fn positions(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Rows of the im2col matrix.
    pub fn rows(&self) -> usize {
        self.channels * self.taps()
    }

    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Is the im2col matrix the input itself (1x1 kernel, stride 1, no padding)?
    pub fn is_identity(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.out == [self.height, self.width]
    }

    /// Whether some window reaches outside the input (into padding).
    fn reads_padding(&self) -> bool {
        let size = [self.height, self.width];
        (0..2).any(|a| {
            let last =
                (self.out[a].max(1) - 1) * self.stride[a] + (self.kernel[a] - 1) * self.dilation[a];
            self.pad[a] > 0 || last >= size[a]
        })
    }

    /// Output columns `ox` whose input column `ox * stride + j * dilation - pad` is inside.
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        self.valid_range(1, j)
    }

    /// Along `axis` (0: rows, 1: columns): the outputs whose input index
    /// `o * stride + tap * dilation - pad` is inside.
    fn valid_range(&self, axis: usize, tap: usize) -> (usize, usize) {
        let offset = tap * self.dilation[axis];
        let (s, pad) = (self.stride[axis], self.pad[axis]);
        let size = [self.height, self.width][axis];
        let lo = pad.saturating_sub(offset).div_ceil(s);
        let hi = (size + pad)
            .checked_sub(offset)
            .map_or(0, |span| span.div_ceil(s));
        (lo.min(self.out[axis]), hi.min(self.out[axis]))
    }

    /// Every non-empty run, row by row. The valid output ranges are worked out once per kernel
    /// row and column, not per run: with LeNet-5's second conv (4,000 runs of 8 floats per
    /// example) the divisions of doing it per run cost more than the copies.
    fn runs(&self, mut f: impl FnMut(Run)) {
        let [kh, kw] = self.kernel;
        let columns: Vec<(usize, usize)> = (0..kw).map(|j| self.valid_range(1, j)).collect();
        let row_pitch = self.stride[0] * self.width;
        let mut row = 0;
        for channel in 0..self.channels {
            for i in 0..kh {
                let (oy_lo, oy_hi) = self.valid_range(0, i);
                for (j, &(lo, hi)) in columns.iter().enumerate() {
                    if lo < hi && oy_lo < oy_hi {
                        let first_col = lo * self.stride[1] + j * self.dilation[1] - self.pad[1];
                        let first_row = oy_lo * self.stride[0] + i * self.dilation[0] - self.pad[0];
                        let mut src = first_row * self.width + first_col;
                        for oy in oy_lo..oy_hi {
                            f(Run {
                                row,
                                channel,
                                col: oy * self.out[1] + lo,
                                src,
                                len: hi - lo,
                            });
                            src += row_pitch;
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}

/// The runs of one im2col row merged into one stretch: with stride 1 and an output as wide as
/// the input, consecutive runs lie equally far apart in the input plane and in the row, so one
/// copy of `len` elements covers them all; between runs it carries `gaps` wrapped-around
/// elements (padding positions) starting at each of `gap_starts`.
struct Span {
    row: usize,
    channel: usize,
    col: usize,
    src: usize,
    len: usize,
    gap_starts: std::iter::StepBy<std::ops::Range<usize>>,
    gaps: usize,
}

impl Geometry {
    /// Whether `spans` applies: unit strides, output width = input width.
    fn merges_runs(&self) -> bool {
        self.stride == [1, 1] && self.out[1] == self.width
    }

    /// Every non-empty row as one span (only when `merges_runs`).
    fn spans(&self, mut f: impl FnMut(Span)) {
        let [kh, kw] = self.kernel;
        let ow = self.out[1];
        for row in 0..self.rows() {
            let channel = row / (kh * kw);
            let (i, j) = ((row / kw) % kh, row % kw);
            let (lo, hi) = self.valid_columns(j);
            // Output rows oy whose input row oy + i * dilation - pad is inside.
            let shift = i * self.dilation[0];
            let oy_lo = self.pad[0].saturating_sub(shift);
            let oy_hi = (self.height + self.pad[0])
                .saturating_sub(shift)
                .min(self.out[0]);
            if lo >= hi || oy_lo >= oy_hi {
                continue;
            }
            let iy_lo = oy_lo + shift - self.pad[0];
            let first_col = lo + j * self.dilation[1] - self.pad[1];
            let col = oy_lo * ow + lo;
            f(Span {
                row,
                channel,
                col,
                src: iy_lo * self.width + first_col,
                len: (oy_hi - 1 - oy_lo) * ow + hi - lo,
                gap_starts: (col + hi - lo..(oy_hi - 1) * ow + lo).step_by(ow),
                gaps: ow - (hi - lo),
            });
        }
    }
}

/// Writes the im2col matrix of one example `x` (`channels * height * width` floats) into `cols`
/// (`rows * positions` floats), every entry of it: padding entries get zeros, so `cols` may hold
/// anything before (a scratch buffer reused across convolutions of any geometry).
pub(super) fn im2col(x: &[f32], g: &Geometry, cols: &mut [f32]) {
    let (plane, positions, s) = (g.plane(), g.positions(), g.stride[1]);
    let cols = &mut cols[..g.rows() * positions];
    if g.merges_runs() {
        // Rows come in order; rows without a span read only padding.
        let mut next_row = 0;
        g.spans(|span| {
            cols[next_row * positions..span.row * positions].fill(0.0);
            next_row = span.row + 1;
            let row = &mut cols[span.row * positions..][..positions];
            let src = &x[span.channel * plane + span.src..][..span.len];
            row[..span.col].fill(0.0);
            row[span.col..][..span.len].copy_from_slice(src);
            row[span.col + span.len..].fill(0.0);
            for start in span.gap_starts {
                row[start..][..span.gaps].fill(0.0);
            }
        });
        cols[next_row * positions..].fill(0.0);
        return;
    }
    if g.reads_padding() {
        cols.fill(0.0);
    }
    g.runs(|r| {
        let src = &x[r.channel * plane + r.src..];
        let dst = &mut cols[r.row * positions + r.col..][..r.len];
        // Every s-th element of a slice cut to length: no bounds check per element, and
        // stride 2 (the strided convs of ResNets) loads in vectors.
        let src = &src[..(r.len - 1) * s + 1];
        match s {
            1 => dst.copy_from_slice(src),
            2 => {
                for (d, pair) in dst.iter_mut().zip(src.chunks(2)) {
                    *d = pair[0];
                }
            }
            _ => {
                for (d, v) in dst.iter_mut().zip(src.iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    });
}

/// The adjoint of `im2col`: adds every entry of `cols` to the input element it was read from.
/// Entries at padding positions are overwritten with zeros on the way.
pub(super) fn col2im(cols: &mut [f32], g: &Geometry, dx: &mut [f32]) {
    let (plane, positions, s) = (g.plane(), g.positions(), g.stride[1]);
    if g.merges_runs() {
        g.spans(|span| {
            let row = &mut cols[span.row * positions..][..positions];
            // Zeroed gaps add nothing to the elements they wrap around to.
            for start in span.gap_starts {
                row[start..][..span.gaps].fill(0.0);
            }
            let dst = &mut dx[span.channel * plane + span.src..][..span.len];
            for (d, v) in dst.iter_mut().zip(&row[span.col..][..span.len]) {
                *d += v;
            }
        });
        return;
    }
    g.runs(|r| {
        let src = &cols[r.row * positions + r.col..][..r.len];
        let dst = &mut dx[r.channel * plane + r.src..];
        let dst = &mut dst[..(r.len - 1) * s + 1];
        match s {
            1 => {
                for (d, v) in dst.iter_mut().zip(src) {
                    *d += v;
                }
            }
            2 => {
                for (pair, v) in dst.chunks_mut(2).zip(src) {
                    pair[0] += v;
                }
            }
            _ => {
                for (d, v) in dst.iter_mut().step_by(s).zip(src) {
                    *d += v;
                }
            }
        }
    });
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
        im2col(&x, &g, &mut cols);
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

    #[test]
    fn merged_spans_copy_what_the_runs_copy() {
        // Stride 1 with 'same' and narrower outputs, dilated, and kernels wider than the pads.
        for (width, kernel, pad, dilation) in
            [(7, 3, 1, 1), (9, 3, 2, 2), (6, 5, 2, 1), (5, 3, 0, 1)]
        {
            let mut g = geometry(width, kernel, 1, pad, dilation);
            g.channels = 2;
            let x: Vec<f32> = (0..2 * g.plane()).map(|v| v as f32 + 1.0).collect();
            let mut by_runs = vec![0.0; g.rows() * g.positions()];
            let (plane, positions) = (g.plane(), g.positions());
            g.runs(|r| {
                by_runs[r.row * positions + r.col..][..r.len]
                    .copy_from_slice(&x[r.channel * plane + r.src..][..r.len]);
            });
            let mut cols = vec![0.0; by_runs.len()];
            im2col(&x, &g, &mut cols);
            assert_eq!(g.merges_runs(), g.out[1] == width);
            assert_eq!(cols, by_runs, "{width} {kernel} {pad} {dilation}");
        }
    }

    #[test]
    fn im2col_writes_every_entry_over_stale_values() {
        // Merged spans ('same' and narrower outputs, rows of padding only), strided runs with
        // and without padding, a valid conv: a buffer of NaNs ends as a zeroed one does.
        for (width, kernel, stride, pad, dilation) in [
            (7, 3, 1, 1, 1),
            (6, 5, 1, 4, 1),
            (9, 3, 1, 2, 2),
            (8, 3, 2, 1, 1),
            (8, 1, 2, 0, 1),
            (12, 5, 1, 0, 1),
            (9, 3, 2, 2, 2),
        ] {
            let mut g = geometry(width, kernel, stride, pad, dilation);
            g.channels = 3;
            let x: Vec<f32> = (0..3 * g.plane()).map(|v| v as f32 + 1.0).collect();
            let mut zeroed = vec![0.0; g.rows() * g.positions()];
            im2col(&x, &g, &mut zeroed);
            let mut stale = vec![f32::NAN; zeroed.len() + 5];
            im2col(&x, &g, &mut stale);
            assert!(
                stale[zeroed.len()..].iter().all(|v| v.is_nan()),
                "wrote past the matrix"
            );
            assert_eq!(
                stale[..zeroed.len()]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                zeroed.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{width} {kernel} {stride} {pad} {dilation}"
            );
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for every x and c, on 2 channels.
        for (width, kernel, stride, pad, dilation) in [
            (7, 3, 1, 1, 1),
            (8, 3, 2, 1, 1),
            (9, 3, 2, 2, 2),
            (5, 1, 2, 0, 1),
        ] {
            let mut g = geometry(width, kernel, stride, pad, dilation);
            g.channels = 2;
            let x: Vec<f32> = (0..2 * g.plane()).map(|v| (v % 7) as f32 - 3.0).collect();
            let c: Vec<f32> = (0..g.rows() * g.positions())
                .map(|v| (v % 5) as f32 - 2.0)
                .collect();
            let mut cols = vec![0.0; c.len()];
            im2col(&x, &g, &mut cols);
            let mut dx = vec![0.0; x.len()];
            col2im(&mut c.clone(), &g, &mut dx);
            let left: f32 = cols.iter().zip(&c).map(|(a, b)| a * b).sum();
            let right: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(left, right, "{width} {kernel} {stride} {pad} {dilation}");
        }
    }
}
