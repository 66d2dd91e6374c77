//! Unary elementwise ops: activations and math functions (Sqrt, Exp, Log, Reciprocal, Neg, Abs,
//! Erf, Gelu). Each keeps the shape and maps every
//! element on its own, so all of them pass channel layouts through.

use burn::prelude::*;
use burn::tensor::activation;

use super::{OpRules, ShapeResult, WeightInput};
use crate::error::Result;
use crate::exec::Val;
use crate::exec::value::MAX_RANK;
use crate::groups::ChannelCx;
use crate::ir::{Node, Op, Tensor as IrTensor};
use crate::onnx::{ExportCx, ImportCx};
use crate::prune::surgery::SurgeryCx;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Tanh,
    Sqrt,
    Exp,
    Log,
    Reciprocal,
    Neg,
    Abs,
    Erf,
    /// Gelu (opset 20): `x Phi(x)` with the exact normal CDF, or its tanh approximation.
    Gelu {
        tanh: bool,
    },
}

pub(crate) fn import(cx: &ImportCx) -> Result<(Op, Vec<usize>)> {
    let a = &cx.attrs;
    let act = match cx.node.op_type.as_str() {
        "Relu" => Activation::Relu,
        "LeakyRelu" => Activation::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        },
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "HardSwish" => Activation::HardSwish,
        "Sqrt" => Activation::Sqrt,
        "Exp" => Activation::Exp,
        "Log" => Activation::Log,
        "Reciprocal" => Activation::Reciprocal,
        "Neg" => Activation::Neg,
        "Abs" => Activation::Abs,
        "Erf" => Activation::Erf,
        "Gelu" => Activation::Gelu {
            tanh: match a.string("approximate", "none").as_str() {
                "none" => false,
                "tanh" => true,
                other => return Err(a.err(format!("approximate = '{other}' is not supported"))),
            },
        },
        "HardSigmoid" => Activation::HardSigmoid {
            alpha: a.float("alpha", 0.2),
            beta: a.float("beta", 0.5),
        },
        "Clip" => {
            let (min, max) = if cx.opset < 11 {
                (
                    a.float("min", f32::NEG_INFINITY),
                    a.float("max", f32::INFINITY),
                )
            } else {
                let bound = |i, default| -> Result<f32> {
                    Ok(match cx.const_input(i)? {
                        Some(t) => *t.to_f32_vec().first().ok_or_else(|| a.err("empty bound"))?,
                        None => default,
                    })
                };
                (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
            };
            Activation::Clip { min, max }
        }
        other => return Err(cx.unsupported(other)),
    };
    Ok((Op::Activation(act), vec![0]))
}

impl Activation {
    /// The op on one scalar (surgery's constant propagation).
    pub fn scalar(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Clip { min, max } => x.clamp(min, max),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Tanh => x.tanh(),
            Activation::Sqrt => x.sqrt(),
            Activation::Exp => x.exp(),
            Activation::Log => x.ln(),
            Activation::Reciprocal => 1.0 / x,
            Activation::Neg => -x,
            Activation::Abs => x.abs(),
            // std has no erf: evaluate the kernel itself on one element, so the value is the
            // one the network computes.
            Activation::Erf | Activation::Gelu { .. } => {
                let device = crate::exec::default_device();
                let t = Tensor::<MAX_RANK>::from_data(
                    burn::tensor::TensorData::new(vec![x], [1; MAX_RANK]),
                    &device,
                );
                crate::exec::value::host_f32(self.apply(t))[0]
            }
        }
    }

    /// The burn kernel.
    fn apply(self, t: Tensor<MAX_RANK>) -> Tensor<MAX_RANK> {
        match self {
            Activation::Relu => activation::relu(t),
            Activation::LeakyRelu { alpha } => activation::leaky_relu(t, alpha as f64),
            Activation::Clip { min, max } => {
                let t = if min.is_finite() { t.clamp_min(min) } else { t };
                if max.is_finite() { t.clamp_max(max) } else { t }
            }
            Activation::Sigmoid => activation::sigmoid(t),
            Activation::HardSigmoid { alpha, beta } => {
                activation::hard_sigmoid(t, alpha as f64, beta as f64)
            }
            Activation::HardSwish => {
                let gate = activation::hard_sigmoid(t.clone(), 1.0 / 6.0, 0.5);
                t * gate
            }
            Activation::Tanh => activation::tanh(t),
            Activation::Sqrt => t.sqrt(),
            Activation::Exp => t.exp(),
            Activation::Log => t.log(),
            Activation::Reciprocal => t.recip(),
            Activation::Neg => t.neg(),
            Activation::Abs => t.abs(),
            Activation::Erf => t.erf(),
            Activation::Gelu { tanh: false } => {
                t.clone() * ((t * std::f32::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
            }
            Activation::Gelu { tanh: true } => {
                let inner = (t.clone() + t.clone().powi_scalar(3) * 0.044715)
                    * (2.0 / std::f32::consts::PI).sqrt();
                t * (inner.tanh() + 1.0) * 0.5
            }
        }
    }
}

impl OpRules for Activation {
    fn onnx_type(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::Clip { .. } => "Clip",
            Activation::Sigmoid => "Sigmoid",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Tanh => "Tanh",
            Activation::Sqrt => "Sqrt",
            Activation::Exp => "Exp",
            Activation::Log => "Log",
            Activation::Reciprocal => "Reciprocal",
            Activation::Neg => "Neg",
            Activation::Abs => "Abs",
            Activation::Erf => "Erf",
            Activation::Gelu { .. } => "Gelu",
        }
    }

    fn export(&self, cx: &mut ExportCx) {
        match *self {
            Activation::LeakyRelu { alpha } => cx.float("alpha", alpha),
            Activation::HardSigmoid { alpha, beta } => {
                cx.float("alpha", alpha);
                cx.float("beta", beta);
            }
            Activation::Gelu { tanh } => {
                if tanh {
                    cx.string("approximate", "tanh");
                }
            }
            Activation::Clip { min, max } if cx.opset < 11 => {
                cx.float("min", min);
                cx.float("max", max);
            }
            Activation::Clip { min, max } => {
                let mut bound = |what: &str, v: f32| {
                    if v.is_finite() {
                        cx.add_const(what, IrTensor::f32(vec![], vec![v]))
                    } else {
                        String::new()
                    }
                };
                let (lo, hi) = (bound("min", min), bound("max", max));
                cx.inputs.push(lo);
                cx.inputs.push(hi);
                while cx.inputs.last().is_some_and(|s| s.is_empty()) {
                    cx.inputs.pop();
                }
            }
            Activation::Relu
            | Activation::Sigmoid
            | Activation::HardSwish
            | Activation::Tanh
            | Activation::Sqrt
            | Activation::Exp
            | Activation::Log
            | Activation::Reciprocal
            | Activation::Neg
            | Activation::Abs
            | Activation::Erf => {}
        }
    }

    fn shape(&self, ins: &[&[usize]]) -> ShapeResult {
        Ok(ins.first().copied().unwrap_or(&[]).to_vec())
    }

    fn macs(&self, _ins: &[&[usize]], _out: &[usize]) -> u64 {
        0
    }

    fn weights(&self) -> Vec<WeightInput> {
        Vec::new()
    }

    fn eval(&self, x: Val, _ins: Vec<Val>) -> Val {
        x.map(|t| self.apply(t))
    }

    fn channels(&self, cx: &mut ChannelCx) {
        cx.pass_through();
    }

    fn removed_value(&self, _: &SurgeryCx, _: &Node, _: usize, k: Option<f32>) -> Option<f32> {
        k.map(|k| self.scalar(k))
    }

    fn slice(&self, _cx: &mut SurgeryCx, _n: &mut Node) -> Result<()> {
        Ok(())
    }
}
