//! Resize in nearest mode with integer upsampling factors on the spatial axes (what PyTorch's
//! `nn.Upsample(scale_factor=k, mode="nearest")` and YOLO/U-Net style upsampling export). Each
//! output element copies one input element of its own channel, so channels pass through.

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::padded;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

/// `Op::Resize`: nearest-neighbour upsampling by a whole factor per axis (1 on N and C).
/// The ONNX coordinate and rounding modes are kept for export; with whole factors every mode
/// accepted at import picks the same source element (output index / factor).
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub factors: Vec<usize>,
    pub coordinate_transformation_mode: String,
    pub nearest_mode: String,
}

/// Coordinate and rounding modes for which nearest upsampling by a whole factor k maps output
/// index i to input index i / k: half-pixel centres round to the nearest source, asymmetric
/// ones floor.
fn repeats_exactly(coordinate: &str, nearest: &str) -> bool {
    match coordinate {
        "half_pixel" | "pytorch_half_pixel" => {
            matches!(nearest, "round_prefer_floor" | "round_prefer_ceil")
        }
        "asymmetric" | "tf_half_pixel_for_nn" => nearest == "floor",
        _ => false,
    }
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let mode = a.string("mode", "nearest");
    if mode != "nearest" {
        return Err(a.err(format!(
            "mode '{mode}' is not supported (only nearest upsampling by whole factors)"
        )));
    }
    let x = cx
        .input_shape(0)
        .ok_or_else(|| a.err("input shape unknown"))?
        .clone();
    // Opset 10: X, scales and asymmetric floor coordinates; 11+: X, roi, scales, sizes.
    let (coordinate, nearest, scales, sizes) = if cx.opset < 11 {
        let scales = cx.const_input(1)?;
        ("asymmetric".to_string(), "floor".to_string(), scales, None)
    } else {
        (
            a.string("coordinate_transformation_mode", "half_pixel"),
            a.string("nearest_mode", "round_prefer_floor"),
            cx.const_input(2)?.filter(|t| !t.is_empty()),
            cx.const_input(3)?,
        )
    };
    if !repeats_exactly(&coordinate, &nearest) {
        return Err(a.err(format!(
            "coordinate_transformation_mode '{coordinate}' with nearest_mode '{nearest}' is not supported"
        )));
    }
    let factors: Vec<f32> = match (scales, sizes) {
        (Some(s), _) => s.to_f32_vec(),
        (None, Some(sizes)) => sizes
            .to_i64_vec()
            .iter()
            .zip(&x)
            .map(|(&o, &i)| o as f32 / i as f32)
            .collect(),
        (None, None) => return Err(a.err("scales or sizes is required")),
    };
    if factors.len() != x.len() {
        return Err(a.err(format!(
            "{} scales for a rank-{} input",
            factors.len(),
            x.len()
        )));
    }
    let whole: Option<Vec<usize>> = factors
        .iter()
        .map(|&f| (f >= 1.0 && f.fract() == 0.0).then_some(f as usize))
        .collect();
    let Some(factors) = whole.filter(|f| f.len() >= 3 && f[0] == 1 && f[1] == 1) else {
        return Err(a.err(format!(
            "scales {factors:?}: only whole upsampling factors on the spatial axes are supported"
        )));
    };
    Ok((
        Op::Resize(Resize {
            factors,
            coordinate_transformation_mode: coordinate,
            nearest_mode: nearest,
        }),
        vec![0],
    ))
}

impl OpRules for Resize {
    fn onnx_type(&self) -> &'static str {
        "Resize"
    }

    fn export(&self, cx: &mut ExportCx) {
        cx.string("mode", "nearest");
        let scales = IrTensor::f32(
            vec![self.factors.len()],
            self.factors.iter().map(|&f| f as f32).collect(),
        );
        if cx.opset < 11 {
            let name = cx.add_const("scales", scales);
            cx.inputs.push(name);
            return;
        }
        cx.string(
            "coordinate_transformation_mode",
            &self.coordinate_transformation_mode,
        );
        cx.string("nearest_mode", &self.nearest_mode);
        // roi is a required (if unused) input before opset 13, optional from 13.
        let roi = if cx.opset < 13 {
            cx.add_const("roi", IrTensor::f32(vec![0], vec![]))
        } else {
            String::new()
        };
        cx.inputs.push(roi);
        let name = cx.add_const("scales", scales);
        cx.inputs.push(name);
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        let x = ins.first().copied().unwrap_or(&[]);
        if x.len() != self.factors.len() {
            return Err(format!("{} factors for input {x:?}", self.factors.len()));
        }
        if x.len() > 5 {
            return Err(format!("input {x:?} has more than 5 axes"));
        }
        Ok(x.iter().zip(&self.factors).map(|(&d, &f)| d * f).collect())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        // Repeat each element `factor` times along each axis: insert a unit axis after it,
        // broadcast it to the factor, merge the two.
        let mut y = x;
        for (axis, &factor) in self.factors.iter().enumerate() {
            if factor == 1 {
                continue;
            }
            let dims = y.dims();
            let mut split = dims.clone();
            split.insert(axis + 1, 1);
            let mut expanded = split.clone();
            expanded[axis + 1] = factor;
            let mut merged = dims.clone();
            merged[axis] *= factor;
            let t = y.reshape(&split).t.expand(padded(&expanded));
            y = Val::new(t, expanded.len()).reshape(&merged);
        }
        y
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
