//! A graph value on a burn device: a rank-6 tensor padded with leading 1s, plus its real rank.
//!
//! Left-padding with 1s keeps numpy/ONNX broadcasting exact (it aligns from the right), so one
//! concrete tensor type serves every rank from 0 to 6 and no op needs per-rank code.

use burn::prelude::*;
use burn::tensor::TensorData;

pub const MAX_RANK: usize = 6;
pub type T6 = Tensor<MAX_RANK>;

/// A float tensor's values read back to the host as f32, in row-major order.
pub fn host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

#[derive(Debug, Clone)]
pub struct Val {
    pub t: T6,
    pub rank: usize,
}

pub fn padded(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut out = [1; MAX_RANK];
    out[MAX_RANK - shape.len()..].copy_from_slice(shape);
    out
}

impl Val {
    pub fn new(t: T6, rank: usize) -> Self {
        Val { t, rank }
    }

    pub fn from_f32(values: Vec<f32>, shape: &[usize], device: &Device) -> Self {
        let t = T6::from_data(TensorData::new(values, padded(shape)), device);
        Val {
            t,
            rank: shape.len(),
        }
    }

    /// The same value without its autodiff association (unchanged off autodiff devices).
    pub fn inner(self) -> Val {
        Val {
            t: self.t.inner(),
            rank: self.rank,
        }
    }

    /// Logical dims (without the padding).
    pub fn dims(&self) -> Vec<usize> {
        self.t.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// Offset of logical axis 0 in the padded tensor.
    pub fn offset(&self) -> usize {
        MAX_RANK - self.rank
    }

    pub fn reshape(self, shape: &[usize]) -> Val {
        Val {
            t: self.t.reshape(padded(shape)),
            rank: shape.len(),
        }
    }

    pub fn map(self, f: impl FnOnce(T6) -> T6) -> Val {
        Val {
            t: f(self.t),
            rank: self.rank,
        }
    }

    /// As a rank-4 tensor: (N, C, H, W) as is, (N, C, L) as (N, C, 1, L).
    pub fn to4(&self) -> Tensor<4> {
        let d = self.dims();
        let shape = match d.len() {
            4 => [d[0], d[1], d[2], d[3]],
            3 => [d[0], d[1], 1, d[2]],
            2 => [d[0], d[1], 1, 1],
            _ => unreachable!(
                "to4 on rank {} (shape inference admits ranks 2 to 4)",
                d.len()
            ),
        };
        self.t.clone().reshape(shape)
    }

    /// Back from rank 4 to a logical rank (inverse of `to4`).
    pub fn from4(t: Tensor<4>, rank: usize) -> Val {
        let d = t.dims();
        let shape: Vec<usize> = match rank {
            4 => d.to_vec(),
            3 => vec![d[0], d[1], d[3]],
            _ => vec![d[0], d[1]],
        };
        Val {
            t: t.reshape(padded(&shape)),
            rank,
        }
    }

    pub fn to2(&self) -> Tensor<2> {
        let d = self.dims();
        self.t.clone().reshape([d[0], d[1]])
    }

    pub fn from2(t: Tensor<2>) -> Val {
        let d = t.dims();
        Val {
            t: t.reshape(padded(&d)),
            rank: 2,
        }
    }

    /// Values and shape, read back to the host.
    pub fn to_host(&self) -> crate::ir::Tensor {
        crate::ir::Tensor::f32(self.dims(), host_f32(self.t.clone()))
    }
}
