//! Runs an ir::Graph in burn on any device (CPU by default; wgpu/CUDA with their features).
//!
//! Names, op dispatch and value lifetimes are resolved once when the network is built; a forward
//! pass is a walk over numbered slots that drops every value after its last use.

pub mod batch_norm;
mod channel_bias;
pub mod channel_scale;
mod conv_gemm;
pub mod conv_grad;
mod conv_implicit;
mod im2col;
pub mod max_pool;
pub mod resident;
mod strided_gemm;
pub mod value;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use burn::prelude::*;

pub use value::Val;

use crate::error::{Error, Result};
use crate::ir::{Activation, Dim, Graph, Op, ValueInfo};

/// Is `op` a ReLU (which a fused BatchNorm before it may apply)?
fn is_relu(op: &Op) -> bool {
    matches!(op, Op::Activation(Activation::Relu))
}

struct Step {
    op: Op,
    inputs: Vec<usize>,
    output: usize,
    /// Slots whose last reader is this step.
    release: Vec<usize>,
    /// A BatchNorm whose output only a Relu reads (and that is no graph output): in training
    /// the fused kernels may apply the ReLU too.
    relu_next: bool,
}

/// A graph compiled for execution on one device.
pub struct Network {
    device: Device,
    graph: Graph,
    steps: Vec<Step>,
    slot_count: usize,
    slot_names: Vec<String>,
    inputs: Vec<(usize, ValueInfo)>,
    outputs: Vec<usize>,
    constants: Vec<(usize, Val)>,
    /// Batch sizes for which every shape rule has been checked.
    checked_batches: Mutex<HashSet<usize>>,
}

/// What a training-mode forward pass changes relative to plain evaluation.
#[derive(Default)]
pub struct Frame<'a> {
    /// Values that replace constant slots (trainable parameters living on an autodiff device).
    pub overrides: HashMap<usize, Val>,
    /// Multipliers applied to a slot right after it is computed (gates); must broadcast.
    pub scales: HashMap<usize, Val>,
    /// LayerNorm outputs (by slot) normalised over a gated hidden width, with the gate values
    /// (see [`crate::ops::layer_norm::LayerNorm::eval_masked`]).
    pub norm_masks: HashMap<usize, Val>,
    /// When set, BatchNormalization uses batch statistics and reports them here, per node index.
    pub bn_stats: Option<&'a mut HashMap<usize, BatchStats>>,
    /// Run on the device's inner backend (every value without its autodiff association): an
    /// evaluation then records nothing that would wait for a backward to be freed.
    pub inner: bool,
}

/// Batch mean and (unbiased) variance of one BatchNormalization node, detached.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Tensor<1>,
    pub var: Tensor<1>,
}

/// The CPU device used by default.
pub fn default_device() -> Device {
    Device::flex()
}

impl Network {
    pub fn new(graph: &Graph, device: &Device) -> Result<Self> {
        graph.validate()?;
        graph.infer_shapes(1)?;
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let index =
            |name: &str, names: &mut Vec<String>, slot_of: &mut HashMap<String, usize>| -> usize {
                if let Some(&s) = slot_of.get(name) {
                    return s;
                }
                names.push(name.to_string());
                slot_of.insert(name.to_string(), names.len() - 1);
                names.len() - 1
            };
        let mut constants = Vec::new();
        for (name, t) in &graph.initializers {
            let s = index(name, &mut names, &mut slot_of);
            constants.push((s, Val::from_f32(t.to_f32_vec(), &t.shape, device)));
        }
        let inputs = graph
            .inputs
            .iter()
            .map(|i| (index(&i.name, &mut names, &mut slot_of), i.clone()))
            .collect();
        let mut steps: Vec<Step> = graph
            .nodes
            .iter()
            .map(|n| Step {
                op: n.op.clone(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|i| index(i, &mut names, &mut slot_of))
                    .collect(),
                output: index(&n.outputs[0], &mut names, &mut slot_of),
                release: Vec::new(),
                relu_next: false,
            })
            .collect();
        let outputs: Vec<usize> = graph
            .outputs
            .iter()
            .map(|o| index(&o.name, &mut names, &mut slot_of))
            .collect();
        let mut readers: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for &inp in &s.inputs {
                readers.entry(inp).or_default().push(i);
            }
        }
        for s in steps.iter_mut() {
            let only_relu = match readers.get(&s.output).map(Vec::as_slice) {
                Some(&[r]) => is_relu(&graph.nodes[r].op),
                _ => false,
            };
            s.relu_next =
                matches!(s.op, Op::BatchNorm { .. }) && only_relu && !outputs.contains(&s.output);
        }
        // Release each computed or input value after its last reader; constants stay resident.
        let const_slots: HashSet<usize> = constants.iter().map(|(s, _)| *s).collect();
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for &inp in &s.inputs {
                last_use.insert(inp, i);
            }
        }
        for (slot, step) in last_use {
            if !const_slots.contains(&slot) && !outputs.contains(&slot) {
                steps[step].release.push(slot);
            }
        }
        Ok(Network {
            device: device.clone(),
            graph: graph.clone(),
            steps,
            slot_count: names.len(),
            slot_names: names,
            inputs,
            outputs,
            constants,
            checked_batches: Mutex::new(HashSet::new()),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Checks input shapes against the graph and, once per batch size, every shape rule.
    fn check_inputs(&self, inputs: &[Val]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Usage(format!(
                "the model has {} inputs, {} were given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        let mut batch = None;
        for ((_, info), v) in self.inputs.iter().zip(inputs) {
            let got = v.dims();
            let fits = got.len() == info.dims.len()
                && info.dims.iter().zip(&got).all(|(d, &g)| match d {
                    // Shape constants were folded at the sized dims' sizes: only those run.
                    Dim::Fixed(n) | Dim::Sized { size: n, .. } => *n == g,
                    Dim::Batch(_) => {
                        batch = Some(g);
                        true
                    }
                });
            if !fits {
                return Err(Error::Usage(format!(
                    "input '{}' expects shape {}, got {:?}",
                    info.name,
                    crate::ir::Dims(&info.dims),
                    got
                )));
            }
        }
        let batch = batch.unwrap_or(1);
        let mut checked = self.checked_batches.lock().expect("no panics while held");
        if !checked.contains(&batch) {
            self.graph.infer_shapes(batch)?;
            checked.insert(batch);
        }
        Ok(())
    }

    /// Runs the graph on device values; returns the graph outputs in order.
    pub fn forward(&self, inputs: Vec<Val>) -> Result<Vec<Val>> {
        self.forward_frame(inputs, Frame::default())
    }

    /// The slot a named value lives in (parameters, gate positions).
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.slot_names.iter().position(|n| n == name)
    }

    /// Device values of the graph's constants, by slot (for building trainable parameters).
    pub fn constant(&self, slot: usize) -> Option<&Val> {
        self.constants
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, v)| v)
    }

    /// A forward pass with parameter overrides, gate scales and optionally BN in train mode.
    pub fn forward_frame(&self, inputs: Vec<Val>, mut frame: Frame) -> Result<Vec<Val>> {
        self.check_inputs(&inputs)?;
        let mut slots: Vec<Option<Val>> = vec![None; self.slot_count];
        let inner = |v: Val| if frame.inner { v.inner() } else { v };
        for (s, v) in &self.constants {
            slots[*s] = Some(inner(
                frame.overrides.remove(s).unwrap_or_else(|| v.clone()),
            ));
        }
        for ((s, _), v) in self.inputs.iter().zip(inputs) {
            slots[*s] = Some(inner(v));
        }
        if frame.inner {
            let extra = frame
                .scales
                .values_mut()
                .chain(frame.norm_masks.values_mut());
            extra.for_each(|v| *v = v.clone().inner());
        }
        // Slots whose value a fused BatchNorm has already passed through its ReLU.
        let mut rectified: HashSet<usize> = HashSet::new();
        for (index, step) in self.steps.iter().enumerate() {
            let ins: Vec<Val> = step
                .inputs
                .iter()
                .map(|&s| slots[s].clone().expect("validated: defined before use"))
                .collect();
            let mut scaled = false;
            let mut out = match (&step.op, frame.bn_stats.as_deref_mut()) {
                (Op::BatchNorm { epsilon }, Some(stats)) => {
                    // A gate on the output, and a ReLU after it, are applied inside the fused
                    // kernels when they run.
                    let scale = frame.scales.get(&step.output);
                    let (y, batch, applied) = crate::ops::norm::batch_norm_train_scaled(
                        ins,
                        *epsilon,
                        scale,
                        step.relu_next,
                    );
                    stats.insert(index, batch);
                    scaled = applied.scale;
                    if applied.relu {
                        rectified.insert(step.output);
                    }
                    y
                }
                (Op::Activation(Activation::Relu), _) if rectified.contains(&step.inputs[0]) => ins
                    .into_iter()
                    .next()
                    .expect("validated: Relu has an input"),
                (Op::LayerNorm(ln), _) if frame.norm_masks.contains_key(&step.output) => {
                    let mut ins = ins.into_iter();
                    let x = ins.next().expect("validated: LayerNorm has an input");
                    ln.eval_masked(x, ins.collect(), &frame.norm_masks[&step.output])
                }
                _ => crate::ops::eval(&step.op, ins),
            };
            if let Some(scale) = frame.scales.get(&step.output)
                && !scaled
            {
                out = match channel_scale::scale(&out, scale) {
                    Some(scaled) => scaled,
                    None => Val::new(out.t * scale.t.clone(), out.rank),
                };
            }
            slots[step.output] = Some(out);
            for &s in &step.release {
                slots[s] = None;
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|&s| slots[s].clone().expect("validated output"))
            .collect())
    }

    /// Convenience: host tensors in, host tensors out.
    ///
    /// ```
    /// use compress::exec::{Network, default_device};
    /// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lenet5/model.onnx");
    /// let graph = compress::onnx::import_file(&path)?;
    /// let net = Network::new(&graph, &default_device())?;
    /// let x = compress::verify::pseudo_random(&[4, 1, 28, 28], 0);
    /// let logits = net.run(&[x])?;
    /// assert_eq!(logits[0].shape, vec![4, 10]);
    /// # Ok::<(), compress::Error>(())
    /// ```
    pub fn run(&self, inputs: &[crate::ir::Tensor]) -> Result<Vec<crate::ir::Tensor>> {
        let vals = inputs
            .iter()
            .map(|t| Val::from_f32(t.to_f32_vec(), &t.shape, &self.device))
            .collect();
        Ok(self.forward(vals)?.iter().map(Val::to_host).collect())
    }
}
