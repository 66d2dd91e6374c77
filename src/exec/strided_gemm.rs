//! Single-threaded f32 gemms on matrices seen through strides in a slice (`View`), with their
//! bounds checked before the unsafe call into the `gemm` crate; the convolution kernels
//! (`conv_gemm`, `conv_implicit`) call these once per example and parallelise over examples.

use std::mem::MaybeUninit;

/// f32 lanes of the widest vector gemm's kernels use (AVX-512).
pub(super) const LANES: usize = 16;

/// A row-major or transposed view of a matrix in a slice: element (i, j) at
/// `start + i * row + j * col`.
#[derive(Clone, Copy)]
pub(super) struct View {
    start: usize,
    row: usize,
    col: usize,
}

impl View {
    pub fn rows(start: usize, width: usize) -> Self {
        View {
            start,
            row: width,
            col: 1,
        }
    }

    pub fn transposed(start: usize, width: usize) -> Self {
        View {
            start,
            row: 1,
            col: width,
        }
    }

    /// The same view moved on by `offset` elements.
    fn shift(self, offset: usize) -> Self {
        View {
            start: self.start + offset,
            ..self
        }
    }

    /// Panics unless an `r x c` matrix seen this way lies inside `len` elements.
    fn check(&self, r: usize, c: usize, len: usize) {
        if r > 0 && c > 0 {
            let last = self.start + (r - 1) * self.row + (c - 1) * self.col;
            assert!(last < len, "gemm operand out of bounds");
        }
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)` on one thread (the callers parallelise
/// over examples).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    shape: [usize; 3],
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
) {
    let len = dst.len();
    gemm_raw(shape, dst.as_mut_ptr(), len, d, accumulate, lhs, l, rhs, r);
}

/// `dst (m x n) = lhs (m x k) · rhs (k x n)` into memory that may be uninitialised: gemm
/// writes every element of the view without reading it.
pub(super) fn gemm_write(
    shape: [usize; 3],
    dst: &mut [MaybeUninit<f32>],
    d: View,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
) {
    let len = dst.len();
    gemm_raw(
        shape,
        dst.as_mut_ptr().cast(),
        len,
        d,
        false,
        lhs,
        l,
        rhs,
        r,
    );
}

#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_len: usize,
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
) {
    d.check(m, n, dst_len);
    l.check(m, k, lhs.len());
    r.check(k, n, rhs.len());
    if m == 0 || n == 0 {
        return;
    }
    // gemm computes a row-major dst as its transpose, so its row count is then our n and its
    // left operand our rhs. When that row count is not a multiple of 16 lanes, it first copies
    // (packs) the whole left operand, even one it could read in place (stride 1 along the rows):
    // split the remainder off into a second call (14x14 outputs: 196 = 192 + 4 positions).
    let parts = if d.col < d.row && r.col == 1 && n > LANES && n % LANES != 0 {
        let main = n - n % LANES;
        [
            ([m, main, k], d, l, r),
            ([m, n - main, k], d.shift(main * d.col), l, r.shift(main)),
        ]
    } else if d.row < d.col && l.row == 1 && m > LANES && m % LANES != 0 {
        let main = m - m % LANES;
        [
            ([main, n, k], d, l, r),
            ([m - main, n, k], d.shift(main * d.row), l.shift(main), r),
        ]
    } else {
        [([m, n, k], d, l, r), ([0, 0, 0], d, l, r)]
    };
    for ([m, n, k], d, l, r) in parts {
        if m == 0 || n == 0 {
            continue;
        }
        // SAFETY: the three checks above keep every element of the whole product inside its
        // buffer, and each part is a block of it; `dst` comes from a mutable borrow (see the
        // callers), so it aliases neither operand. Without `accumulate` gemm reads no element of
        // `dst` before writing it (it zeroes its alpha).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.add(d.start),
                d.col as isize,
                d.row as isize,
                accumulate,
                lhs.as_ptr().add(l.start),
                l.col as isize,
                l.row as isize,
                rhs.as_ptr().add(r.start),
                r.col as isize,
                r.row as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}
