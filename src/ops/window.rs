//! Spatial windows shared by Conv and the pools: the typed attributes, their import (auto_pad
//! resolved), their export, the output-size rule and the 2-D form the burn kernels take.

use crate::error::Result;
use crate::onnx::{ExportCx, ImportCx};

use super::ShapeResult;

/// Spatial window parameters shared by Conv and the pools. Vectors have one entry per spatial
/// axis (1 or 2); `pads` holds the begin pads of every axis followed by the end pads (ONNX order).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
}

impl Window {
    pub fn spatial_rank(&self) -> usize {
        self.kernel.len()
    }

    pub fn pad_begin(&self, axis: usize) -> usize {
        self.pads[axis]
    }

    pub fn pad_end(&self, axis: usize) -> usize {
        self.pads[axis + self.spatial_rank()]
    }

    /// Output length of one spatial axis.
    pub fn out_len(&self, axis: usize, input: usize, ceil_mode: bool) -> usize {
        let padded = input + self.pad_begin(axis) + self.pad_end(axis);
        let span = self.dilations[axis] * (self.kernel[axis] - 1) + 1;
        if padded < span {
            return 0;
        }
        let stride = self.strides[axis];
        let steps = if ceil_mode {
            let mut n = (padded - span).div_ceil(stride);
            // ONNX/PyTorch rule: the last window must start inside the input or left padding.
            if n * stride >= input + self.pad_begin(axis) {
                n -= 1;
            }
            n
        } else {
            (padded - span) / stride
        };
        steps + 1
    }
}

/// Window attributes, with auto_pad resolved to explicit pads for the static input shape.
pub(crate) fn import(cx: &ImportCx, kernel: Vec<usize>, x: &[usize]) -> Result<Window> {
    let a = &cx.attrs;
    let sr = kernel.len();
    if !(1..=2).contains(&sr) || x.len() != sr + 2 {
        return Err(a.err(format!(
            "only 1-D and 2-D windows are supported (kernel {kernel:?}, input {x:?})"
        )));
    }
    let strides = a.usizes("strides")?.unwrap_or_else(|| vec![1; sr]);
    let dilations = a.usizes("dilations")?.unwrap_or_else(|| vec![1; sr]);
    let mut pads = a.usizes("pads")?.unwrap_or_else(|| vec![0; 2 * sr]);
    if strides.len() != sr || dilations.len() != sr || pads.len() != 2 * sr {
        return Err(a.err("strides, dilations or pads do not match the kernel rank"));
    }
    if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
        return Err(a.err("zero stride, dilation or kernel size"));
    }
    match a.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" => {}
        "VALID" => pads = vec![0; 2 * sr],
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            // With a stride, how SAME splits the padding depends on the input size.
            if cx.has_sized_inputs() && strides.iter().any(|&s| s > 1) {
                cx.note_size_dependent(format!(
                    "auto_pad {mode} with strides {strides:?} was resolved to explicit pads for input {x:?}"
                ));
            }
            for i in 0..sr {
                let input = x[2 + i];
                let out = input.div_ceil(strides[i]);
                let span = dilations[i] * (kernel[i] - 1) + 1;
                let total = ((out - 1) * strides[i] + span).saturating_sub(input);
                let (small, big) = (total / 2, total - total / 2);
                let (begin, end) = if mode == "SAME_UPPER" {
                    (small, big)
                } else {
                    (big, small)
                };
                pads[i] = begin;
                pads[i + sr] = end;
            }
        }
        other => return Err(a.err(format!("unknown auto_pad '{other}'"))),
    }
    Ok(Window {
        kernel,
        strides,
        pads,
        dilations,
    })
}

pub(crate) fn export(w: &Window, cx: &mut ExportCx, with_dilations: bool) {
    cx.ints("kernel_shape", usizes(&w.kernel));
    cx.ints("strides", usizes(&w.strides));
    cx.ints("pads", usizes(&w.pads));
    if with_dilations {
        cx.ints("dilations", usizes(&w.dilations));
    }
}

fn usizes(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Output shape of a windowed op over an (N, C, spatial...) input.
pub(crate) fn out_shape(
    x: &[usize],
    window: &Window,
    out_channels: usize,
    ceil_mode: bool,
) -> ShapeResult {
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

/// 2-D window parameters for burn's kernels; a 1-D window becomes a 1 x L window.
pub(crate) struct Window2 {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pads: [(usize, usize); 2],
    pub dilation: [usize; 2],
}

pub(crate) fn window2(w: &Window) -> Window2 {
    if w.spatial_rank() == 1 {
        Window2 {
            kernel: [1, w.kernel[0]],
            stride: [1, w.strides[0]],
            pads: [(0, 0), (w.pads[0], w.pads[1])],
            dilation: [1, w.dilations[0]],
        }
    } else {
        Window2 {
            kernel: [w.kernel[0], w.kernel[1]],
            stride: [w.strides[0], w.strides[1]],
            pads: [(w.pads[0], w.pads[2]), (w.pads[1], w.pads[3])],
            dilation: [w.dilations[0], w.dilations[1]],
        }
    }
}
