//! Every trained tensor of a run, named, for a checkpoint, and putting them back on resume.

use burn::prelude::*;
use burn::tensor::TensorData;

use super::checkpoint::Named;
use super::net;
use super::trainer::Trainer;
use crate::error::{Error, Result};
use crate::exec::Val;
use crate::exec::value::host_f32;

fn host_named<const D: usize>(name: String, t: Tensor<D>) -> Named {
    let shape = t.dims().to_vec();
    (name, shape, host_f32(t.detach()))
}

fn make<const D: usize>(t: &Named, device: &Device) -> Tensor<D> {
    let shape: [usize; D] = t.1.clone().try_into().expect("rank checked by name");
    Tensor::<D>::from_data(TensorData::new(t.2.clone(), shape), device)
}

impl Trainer<'_> {
    /// Every trained tensor, named, for a checkpoint.
    pub(super) fn snapshot(&self) -> Vec<Named> {
        let mut out = Vec::new();
        for (i, p) in self.net.weights.params.iter().enumerate() {
            out.push(host_named(format!("weight.{i}"), p.val()));
        }
        let mut running: Vec<_> = self.net.running.iter().collect();
        running.sort_by_key(|(s, _)| **s);
        for (slot, v) in running {
            out.push(host_named(format!("running.{slot}"), v.t.clone()));
        }
        for (i, a) in self.gates.logits.iter().enumerate() {
            out.push(host_named(format!("gate.{i}"), a.val()));
        }
        if let Some(g) = &self.generator {
            for (i, l) in g.layers.iter().enumerate() {
                out.push(host_named(format!("generator.{i}.weight"), l.weight.val()));
                if let Some(b) = &l.bias {
                    out.push(host_named(format!("generator.{i}.bias"), b.val()));
                }
            }
        }
        out
    }

    /// Puts checkpointed tensors back (same names and ids as `snapshot`).
    pub(super) fn restore(&mut self, tensors: &[Named]) -> Result<()> {
        // Every tensor this net has must be there with its shape, before anything is replaced.
        for (name, shape, _) in self.snapshot() {
            if let Some(t) = tensors.iter().find(|t| t.0 == name)
                && t.1 != shape
            {
                return Err(Error::Data {
                    path: "checkpoint".into(),
                    reason: format!(
                        "tensor '{name}' has shape {:?} there but {shape:?} here (was it made \
                         from another model or with other settings?)",
                        t.1
                    ),
                });
            }
        }
        let device = self.device();
        let find = |name: &str| -> Result<&Named> {
            tensors
                .iter()
                .find(|t| t.0 == name)
                .ok_or_else(|| Error::Data {
                    path: "checkpoint".into(),
                    reason: format!("tensor '{name}' is missing (was it made from another model?)"),
                })
        };
        for i in 0..self.net.weights.params.len() {
            let t = find(&format!("weight.{i}"))?;
            self.net.weights.params[i] =
                net::param_with_id(net::WEIGHT_IDS + i as u64, make::<6>(t, &device));
        }
        let slots: Vec<usize> = self.net.running.keys().copied().collect();
        for slot in slots {
            let t = find(&format!("running.{slot}"))?;
            let v = Val::new(make::<6>(t, &device), 1);
            self.net.running.insert(slot, v);
        }
        for i in 0..self.gates.logits.len() {
            let t = find(&format!("gate.{i}"))?;
            self.gates.logits[i] =
                net::param_with_id(net::GATE_IDS + i as u64, make::<1>(t, &device));
        }
        if let Some(g) = &mut self.generator {
            for (i, l) in g.layers.iter_mut().enumerate() {
                let base = net::GENERATOR_IDS + 2 * i as u64;
                l.weight = net::param_with_id(
                    base,
                    make::<2>(find(&format!("generator.{i}.weight"))?, &device),
                );
                if l.bias.is_some() {
                    l.bias = Some(net::param_with_id(
                        base + 1,
                        make::<1>(find(&format!("generator.{i}.bias"))?, &device),
                    ));
                }
            }
        }
        Ok(())
    }
}
