//! Stride-1 convolutions without an im2col matrix: gemms read a zero-padded NHWC copy of one
//! example in place.
//!
//! With output positions numbered over the padded width (`q = oy * wp + ox`, so every output
//! row carries `kw - 1` junk columns), output position q and kernel tap (i, j) read padded pixel
//! `q + i * wp + j`. In NHWC order the rows (tap column j, channel ch) of kernel row i are then
//! one strided matrix: element (j * c + ch, q) sits at `(q + i * wp) * c + j * c + ch`, rows
//! stride 1, positions stride c, which gemm reads without copying it. A conv becomes `kh` gemms
//! with an inner dimension of `kw * c` over a copy of the input (1x its size) instead of one
//! gemm over an im2col matrix (`kh * kw` x its size, written and read back for each of the
//! forward, the weight gradient and the input gradient as a convolution of dY).
//!
//! Measured on ResNet-20's convs at batch 128 (2 threads, `examples/conv_phase_probe`, ms per
//! conv, im2col path -> this one): weight gradient 2.68 -> 1.58 at 16 channels (gemm's 16-row
//! kernel over the im2col rows was its slowest shape), 1.61 -> 1.25 at 32, 1.92 -> 1.55 at 64;
//! forward 1.74 -> 1.37 at 32 and 2.35 -> 1.53 at 64 (input gradient alike); all convs of a
//! step 109 -> 85 ms. A forward with 16 output channels is slower this way (gemm's rows are
//! then those 16 channels, its least efficient kernel shape), so the callers choose by shape
//! (`forward_pays`, `weight_grad_pays`).

use std::mem::MaybeUninit;

use super::im2col::Geometry;
use super::strided_gemm::{LANES, View, gemm};

/// Fewest gemm rows for which the forward (rows: output channels) beats im2col + gemm.
const MIN_FORWARD_ROWS: usize = 32;

/// One example's conv seen through its padded NHWC copy (see the module doc).
pub(super) struct Padded {
    channels: usize,
    height: usize,
    width: usize,
    pad: [usize; 2],
    kernel: [usize; 2],
    out: [usize; 2],
    /// Padded width: output width + kw - 1.
    wp: usize,
    /// Padded height: output height + kh - 1.
    hp: usize,
}

impl Padded {
    /// For a stride-1, undilated conv whose padded input holds every input pixel; none otherwise.
    pub fn new(g: &Geometry) -> Option<Self> {
        if g.stride != [1, 1] || g.dilation != [1, 1] {
            return None;
        }
        let (hp, wp) = (
            g.out[0] + g.kernel[0].checked_sub(1)?,
            g.out[1] + g.kernel[1].checked_sub(1)?,
        );
        if g.pad[0] + g.height > hp || g.pad[1] + g.width > wp || g.out.contains(&0) {
            return None;
        }
        Some(Padded {
            channels: g.channels,
            height: g.height,
            width: g.width,
            pad: g.pad,
            kernel: g.kernel,
            out: g.out,
            wp,
            hp,
        })
    }

    /// Output positions over the padded width (junk columns included).
    pub fn positions(&self) -> usize {
        self.out[0] * self.wp
    }

    /// Output positions without the junk columns.
    pub fn out_positions(&self) -> usize {
        self.out[0] * self.out[1]
    }

    /// Kernel row i's (tap column x channel) x position matrix in the padded copy (see the
    /// module doc): rows stride 1, positions stride C.
    fn view(&self, i: usize) -> View {
        View::transposed(i * self.wp * self.channels, self.channels)
    }

    /// Rows of one kernel row's view: tap columns x channels.
    fn view_rows(&self) -> usize {
        self.kernel[1] * self.channels
    }

    /// Whether the junk columns are at most a quarter of the padded width: a 'valid' 5x5 conv
    /// on 12x12 (LeNet-5's second) would spend a third of its products on them.
    fn little_junk(&self) -> bool {
        4 * (self.kernel[1] - 1) <= self.wp
    }

    /// Whether the forward (or the input gradient as a convolution) pays this way for
    /// `out_channels` outputs: they are gemm's rows, which must fill its 16-lane vectors and
    /// its wider kernels (measured: 16 rows run 1.8x slower than im2col + gemm, 64 rows 1.5x
    /// faster; LeNet-5's 50 over 12x12 1.2x slower).
    pub fn forward_pays(&self, out_channels: usize) -> bool {
        out_channels >= MIN_FORWARD_ROWS && out_channels.is_multiple_of(LANES) && self.little_junk()
    }

    /// Whether the weight gradient pays this way: gemm reads the view in place as its left
    /// operand only when its rows fill whole vectors (otherwise it copies the whole view).
    pub fn weight_grad_pays(&self) -> bool {
        self.view_rows().is_multiple_of(LANES) && self.little_junk()
    }

    /// Columns of the forward's gemm: the positions rounded up to whole 4 x 4 tiles of the
    /// transpose back to channels-first (the extra ones are junk too).
    fn forward_positions(&self) -> usize {
        self.positions().next_multiple_of(4)
    }

    /// Floats of the padded copy: the padded image plus the pixels that the last output row's
    /// junk columns (and the forward's rounding) read past its end.
    pub fn padded_len(&self) -> usize {
        (self.hp * self.wp + self.kernel[1] - 1 + 3) * self.channels
    }

    /// Floats of scratch that `forward` needs for `out_channels` outputs.
    pub fn forward_scratch(&self, out_channels: usize) -> usize {
        2 * self.forward_positions() * out_channels
    }

    /// Floats of scratch that `pad_input` needs: the padded copy, then room to transpose the
    /// whole example once.
    pub fn input_scratch(&self) -> usize {
        self.padded_len() + self.channels * self.height * self.width
    }

    /// Writes the padded NHWC copy of one example `x` (C x H x W) into the first `padded_len()`
    /// floats of `scratch` (`input_scratch()` floats), every value of them.
    pub fn pad_input(&self, x: &[f32], scratch: &mut [f32]) {
        let c = self.channels;
        let plane = self.height * self.width;
        let (xp, pixels) = scratch[..self.input_scratch()].split_at_mut(self.padded_len());
        // C x (H W) to (H W) x C as one matrix, so the transpose's 4 x 4 tiles cover it (rows of
        // 14 or 7 pixels would leave a scalar edge per row), then each image row into place.
        transpose(x, plane, c, plane, as_uninit(pixels), c);
        let [top, left] = self.pad;
        let row_len = self.wp * c;
        xp[..top * row_len].fill(0.0);
        xp[(top + self.height) * row_len..].fill(0.0);
        for (y, src) in pixels.chunks_exact(self.width * c).enumerate() {
            let row = &mut xp[(top + y) * row_len..][..row_len];
            row[..left * c].fill(0.0);
            row[left * c..][..src.len()].copy_from_slice(src);
            row[(left + self.width) * c..].fill(0.0);
        }
    }

    /// Writes `dy` (C_out x OH x OW) into `dyp` (C_out x OH*wp) with zeros in the junk columns.
    pub fn pad_width(&self, dy: &[f32], dyp: &mut [f32]) {
        let ow = self.out[1];
        for (src, dst) in dy.chunks_exact(ow).zip(dyp.chunks_exact_mut(self.wp)) {
            dst[..ow].copy_from_slice(src);
            dst[ow..].fill(0.0);
        }
    }

    /// One example's output (C_out x OH x OW, every value written) from its padded copy `xp`,
    /// with `rows` from `weight_rows`; `scratch` holds `forward_scratch(out_channels)` floats.
    pub fn forward(
        &self,
        xp: &[f32],
        rows: &[f32],
        out_channels: usize,
        scratch: &mut [f32],
        y: &mut [MaybeUninit<f32>],
    ) {
        let (k, p, o) = (self.view_rows(), self.forward_positions(), out_channels);
        let (yp, yt) = scratch[..2 * p * o].split_at_mut(p * o);
        for i in 0..self.kernel[0] {
            // Rows block i is o x k column-major, yp is o x p column-major (channels last).
            gemm(
                [o, p, k],
                yp,
                View::transposed(0, o),
                i > 0,
                rows,
                View::transposed(i * k * o, o),
                xp,
                self.view(i),
            );
        }
        // Back to channels first (whole tiles: p is a multiple of 4), then without the junk
        // columns.
        transpose(yp, o, p, o, as_uninit(yt), p);
        let [oh, ow] = self.out;
        assert!(y.len() >= o * oh * ow);
        for (y_ch, yt_ch) in y.chunks_exact_mut(oh * ow).zip(yt.chunks_exact(p)) {
            for (dst, src) in y_ch.chunks_exact_mut(ow).zip(yt_ch.chunks(self.wp)) {
                for (d, v) in dst.iter_mut().zip(src) {
                    d.write(*v);
                }
            }
        }
    }

    /// Adds one example's weight gradient, kernel row i as a (kw * C) x C_out column-major
    /// block of `acc`, given its padded copy `xp` and `dyp` from `pad_width`.
    pub fn add_weight_grad(&self, xp: &[f32], dyp: &[f32], out_channels: usize, acc: &mut [f32]) {
        let (m, p, o) = (self.view_rows(), self.positions(), out_channels);
        for i in 0..self.kernel[0] {
            // dyp is o x p row-major (p x o column-major); acc block i is m x o column-major.
            gemm(
                [m, o, p],
                acc,
                View::transposed(i * m * o, m),
                true,
                xp,
                self.view(i),
                dyp,
                View::transposed(0, p),
            );
        }
    }
}

/// A conv weight `[o, c, kh, kw]` as `kh` blocks, block i the (out x (tap column, in))
/// column-major matrix of kernel row i. With `transposed`, for the input gradient as a
/// convolution of dY: out and in swap and the kernel is flipped in both axes.
pub(super) fn weight_rows(w: &[f32], [o, c, kh, kw]: [usize; 4], transposed: bool) -> Vec<f32> {
    let (outs, ins) = if transposed { (c, o) } else { (o, c) };
    let block = kw * ins * outs;
    let mut rows = vec![0.0f32; kh * block];
    for oo in 0..o {
        for ch in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let v = w[((oo * c + ch) * kh + i) * kw + j];
                    let (out, inp, ri, rj) = if transposed {
                        (ch, oo, kh - 1 - i, kw - 1 - j)
                    } else {
                        (oo, ch, i, j)
                    };
                    rows[ri * block + (rj * ins + inp) * outs + out] = v;
                }
            }
        }
    }
    rows
}

/// `acc` from `add_weight_grad` back to the weight's `[o, c, kh, kw]` layout.
pub(super) fn weight_from_rows(acc: &[f32], [o, c, kh, kw]: [usize; 4]) -> Vec<f32> {
    let m = kw * c;
    let mut dw = vec![0.0f32; o * c * kh * kw];
    for oo in 0..o {
        for ch in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    dw[((oo * c + ch) * kh + i) * kw + j] = acc[i * m * o + oo * m + j * c + ch];
                }
            }
        }
    }
    dw
}

/// A slice of floats as one of possibly uninitialised floats (to write floats into).
fn as_uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; every value written through it is an initialised f32.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`: in 4 x 4
/// tiles of vector loads, shuffles and stores on x86-64 (an element-wise scatter was 6% of a
/// ResNet-20 step), element by element at the edges and elsewhere.
fn transpose(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<f32>],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_stride + cols <= src.len(),
        "transpose source"
    );
    assert!(
        (cols - 1) * dst_stride + rows <= dst.len(),
        "transpose destination"
    );
    let tiled = if cfg!(target_arch = "x86_64") {
        [rows / 4 * 4, cols / 4 * 4]
    } else {
        [0, 0]
    };
    #[cfg(target_arch = "x86_64")]
    for i in (0..tiled[0]).step_by(4) {
        for j in (0..tiled[1]).step_by(4) {
            // SAFETY: rows i..i + 4 and columns j..j + 4 are inside both (asserted above).
            unsafe {
                transpose_tile(
                    src.as_ptr().add(i * src_stride + j),
                    src_stride,
                    dst.as_mut_ptr().add(j * dst_stride + i).cast(),
                    dst_stride,
                );
            }
        }
    }
    for i in 0..rows {
        let from = if i < tiled[0] { tiled[1] } else { 0 };
        for j in from..cols {
            dst[j * dst_stride + i].write(src[i * src_stride + j]);
        }
    }
}

/// One 4 x 4 tile of `transpose` (SSE, part of every x86-64 CPU).
///
/// # Safety
/// Four floats from `src + r * src_stride` and to `dst + r * dst_stride` (r < 4) are valid.
#[cfg(target_arch = "x86_64")]
unsafe fn transpose_tile(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    unsafe {
        let r0 = _mm_loadu_ps(src);
        let r1 = _mm_loadu_ps(src.add(src_stride));
        let r2 = _mm_loadu_ps(src.add(2 * src_stride));
        let r3 = _mm_loadu_ps(src.add(3 * src_stride));
        // (a, b, c, d: rows 0-3) a0 b0 a1 b1 | c0 d0 c1 d1 | a2 b2 a3 b3 | c2 d2 c3 d3
        let t0 = _mm_unpacklo_ps(r0, r1);
        let t1 = _mm_unpacklo_ps(r2, r3);
        let t2 = _mm_unpackhi_ps(r0, r1);
        let t3 = _mm_unpackhi_ps(r2, r3);
        _mm_storeu_ps(dst, _mm_movelh_ps(t0, t1));
        _mm_storeu_ps(dst.add(dst_stride), _mm_movehl_ps(t1, t0));
        _mm_storeu_ps(dst.add(2 * dst_stride), _mm_movelh_ps(t2, t3));
        _mm_storeu_ps(dst.add(3 * dst_stride), _mm_movehl_ps(t3, t2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_the_definition_at_every_size_and_stride() {
        for (rows, cols, ss, ds) in [
            (1, 1, 1, 1),
            (4, 4, 4, 4),
            (5, 7, 9, 6),
            (16, 28, 784, 16),
            (28, 64, 64, 49),
            (3, 9, 11, 3),
        ] {
            let src: Vec<f32> = (0..(rows - 1) * ss + cols).map(|v| v as f32).collect();
            let mut dst = vec![MaybeUninit::new(-1.0f32); (cols - 1) * ds + rows];
            transpose(&src, ss, rows, cols, &mut dst, ds);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        unsafe { dst[j * ds + i].assume_init() },
                        src[i * ss + j],
                        "{rows}x{cols} ({i}, {j})"
                    );
                }
            }
        }
    }
}
