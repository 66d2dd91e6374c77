//! Whether an export may keep the model's symbolic dims (`--input-shape`).
//!
//! The import folds shape computations at the sizes the user gave; anything it baked in from
//! them (a Reshape target computed from Shape, a Slice end, SAME pads of a strided conv) makes
//! the re-export wrong at other sizes. So the claim is proven, not assumed: the original file
//! and our re-export of the unpruned graph run in tract at a second size, and only when they
//! agree are the symbolic dims written (and every export is also verified at that size).
//! Otherwise the exports carry the fixed sizes the user gave, with a note saying why.

use std::collections::HashMap;

use super::{Verification, max_abs_diff, run_tract, verify_inputs};
use crate::error::Result;
use crate::ir::{Dim, Graph, Op, Tensor};
use crate::onnx::length_free::LengthFree;

/// Tolerance of the second-size proof.
const PROOF_TOLERANCE: f32 = 1e-4;

/// How exports write the dims of graph inputs and outputs.
#[derive(Debug, Clone)]
pub enum ExportDims {
    /// No symbolic dim besides the batch: exports are written as always.
    AsImported,
    /// Proven at a second size: sized dims are written symbolic, outputs' size-dependent dims
    /// too, and every export is verified again at `second` (inputs at the second size).
    Symbolic {
        outputs: Vec<Vec<Dim>>,
        second: Vec<Tensor>,
        note: String,
        /// Folded constants written back to follow the input (`crate::onnx::length_free`).
        length_free: LengthFree,
    },
    /// Not proven: exports carry the sizes the user gave.
    Fixed { note: String },
}

/// The reference an export is verified against: the original file, or a graph of ours.
pub enum Reference<'a> {
    Bytes(&'a [u8]),
    Graph(&'a Graph),
}

/// A verified export.
#[derive(Debug, Clone)]
pub struct Checked {
    pub bytes: Vec<u8>,
    pub verification: Verification,
    /// What to tell the user about the dims written (empty without `--input-shape`).
    pub notes: Vec<String>,
}

fn shape_text(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn shapes_text(inputs: &[Tensor]) -> String {
    inputs
        .iter()
        .map(|t| shape_text(&t.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The largest product of spatial strides along any path from an input: a second size that
/// differs by a multiple of it keeps every strided layer's output whole.
fn total_stride(graph: &Graph) -> usize {
    let mut stride: HashMap<&str, usize> = HashMap::new();
    let mut largest = 1;
    for n in &graph.nodes {
        let own = match &n.op {
            Op::Conv { window, .. }
            | Op::MaxPool { window, .. }
            | Op::AveragePool { window, .. } => window.strides.iter().copied().max().unwrap_or(1),
            Op::BatchNorm { .. }
            | Op::Gemm { .. }
            | Op::MatMul
            | Op::Binary(_)
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::GlobalAveragePool
            | Op::ReduceMean { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Identity
            | Op::ConvTranspose(_)
            | Op::Resize(_)
            | Op::Slice(_)
            | Op::Reduce(_)
            | Op::Squeeze(_)
            | Op::Unsqueeze(_)
            | Op::Gather(_)
            | Op::Cast(_)
            | Op::Logic(_)
            | Op::Expand(_)
            | Op::LayerNorm(_) => 1,
        };
        let before = n
            .inputs
            .iter()
            .filter_map(|i| stride.get(i.as_str()).copied())
            .max()
            .unwrap_or(1);
        let s = before.saturating_mul(own).min(1 << 12);
        largest = largest.max(s);
        for o in &n.outputs {
            stride.insert(o, s);
        }
    }
    largest
}

/// Each sized dim's second size: the given size plus (k+1) total strides for the k-th distinct
/// name, so that height and width differ from each other as well as from the given size.
fn second_sizes(graph: &Graph) -> Vec<(String, usize, usize)> {
    let step = total_stride(graph);
    let mut sizes: Vec<(String, usize, usize)> = Vec::new();
    for d in graph.inputs.iter().flat_map(|i| &i.dims) {
        if let Dim::Sized { name, size } = d
            && !sizes.iter().any(|(n, _, _)| n == name)
        {
            let k = sizes.len() + 1;
            sizes.push((name.clone(), *size, size + k * step));
        }
    }
    sizes
}

/// Inputs at the second size (batch 1).
fn second_inputs(graph: &Graph, sizes: &[(String, usize, usize)]) -> Vec<Tensor> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let shape: Vec<usize> = v
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    Dim::Batch(_) => 1,
                    Dim::Sized { name, size } => sizes
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map_or(*size, |(_, _, second)| *second),
                })
                .collect();
            super::probe_tensor(graph, i, &shape, 29 + i as u64)
        })
        .collect()
}

/// Output dims with every axis whose size changed at the second size made symbolic: named as
/// the model declared it, else as the input dim that changed the same way, else
/// `<output>_dim<axis>`. `None` when an output's rank changed.
fn output_dims(
    graph: &Graph,
    outputs: &[Tensor],
    sizes: &[(String, usize, usize)],
) -> Option<Vec<Vec<Dim>>> {
    graph
        .outputs
        .iter()
        .zip(outputs)
        .map(|(o, t)| {
            if o.dims.len() != t.shape.len() {
                return None;
            }
            let dims = o
                .dims
                .iter()
                .zip(&t.shape)
                .enumerate()
                .map(|(axis, (d, &second))| match d {
                    Dim::Fixed(n) if *n != second => Dim::Sized {
                        name: sizes
                            .iter()
                            .find(|(_, a, b)| a == n && *b == second)
                            .map_or_else(|| format!("{}_dim{axis}", o.name), |(n, _, _)| n.clone()),
                        size: *n,
                    },
                    other => other.clone(),
                })
                .collect();
            Some(dims)
        })
        .collect()
}

impl ExportDims {
    /// Decides, for a graph imported with sized dims from `original`, how its exports write
    /// dims; `size_dependent` is what the import resolved for the given sizes only.
    pub fn decide(graph: &Graph, original: &[u8], size_dependent: &[String]) -> ExportDims {
        if !graph.inputs.iter().any(|i| i.has_sized_dim()) {
            return ExportDims::AsImported;
        }
        let given: Vec<String> = graph
            .inputs
            .iter()
            .map(|i| shape_text(&i.shape(1)))
            .collect();
        let fixed = |why: String| ExportDims::Fixed {
            note: format!(
                "the export has the fixed input size {} it was imported at (--input-shape, or --seq-len for token data), not the model's symbolic dims: {why}",
                given.join(", ")
            ),
        };
        if let Some(first) = size_dependent.first() {
            return fixed(format!("the import resolved {first}"));
        }
        let sizes = second_sizes(graph);
        let second = second_inputs(graph, &sizes);
        let at = shapes_text(&second);
        let want = match run_tract(original, &second) {
            Ok(w) => w,
            Err(e) => {
                return fixed(format!(
                    "the original model does not run at {at} in tract ({e})"
                ));
            }
        };
        let Some(outputs) = output_dims(graph, &want, &sizes) else {
            return fixed(format!("an output's rank changes at {at}"));
        };
        let mut symbolic = graph.clone();
        for (o, dims) in symbolic.outputs.iter_mut().zip(&outputs) {
            o.dims = dims.clone();
        }
        let length_free = LengthFree::find(graph, original);
        let got = match run_tract(
            &crate::onnx::length_free::export(&symbolic, &length_free),
            &second,
        ) {
            Ok(g) => g,
            Err(e) => return fixed(format!("the re-export does not run at {at} in tract ({e})")),
        };
        let diff = if got.len() == want.len() {
            got.iter()
                .zip(&want)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f32::max)
        } else {
            f32::INFINITY
        };
        if diff.is_nan() || diff > PROOF_TOLERANCE {
            return fixed(format!(
                "at {at} the re-export differs from the original by {diff:e} in tract (something was folded at the given size, e.g. a Reshape target computed from Shape)"
            ));
        }
        ExportDims::Symbolic {
            outputs,
            second,
            length_free,
            note: format!(
                "the export keeps the model's symbolic dims: at {at} the re-export matches the original in tract (max abs difference {diff:.2e})"
            ),
        }
    }

    /// The ONNX bytes of `g` with these dims (length-free where symbolic).
    pub fn export(&self, g: &Graph) -> Vec<u8> {
        match self {
            ExportDims::Symbolic { length_free, .. } => {
                crate::onnx::length_free::export(&self.apply(g), length_free)
            }
            _ => crate::onnx::export(&self.apply(g)),
        }
    }

    /// `g` with its input and output dims as exports write them.
    pub fn apply(&self, g: &Graph) -> Graph {
        let mut g = g.clone();
        match self {
            ExportDims::AsImported => {}
            ExportDims::Symbolic { outputs, .. } => {
                for (o, dims) in g.outputs.iter_mut().zip(outputs) {
                    if o.dims.len() == dims.len() {
                        o.dims = dims.clone();
                    }
                }
            }
            ExportDims::Fixed { .. } => freeze(&mut g),
        }
        g
    }

    /// Exports `candidate` with these dims and verifies it against `reference` (at `batch`,
    /// inputs shaped as `probe`'s; then, when symbolic, at the second size). A candidate that
    /// fails only at the second size is written with fixed dims instead, with a note.
    pub fn export_checked(
        &self,
        candidate: &Graph,
        reference: Reference,
        probe: &Graph,
        batch: usize,
        tolerance: f32,
    ) -> Result<Checked> {
        let ref_bytes = |dims: &ExportDims| match &reference {
            Reference::Bytes(b) => b.to_vec(),
            Reference::Graph(g) => dims.export(g),
        };
        let reference_bytes = ref_bytes(self);
        let bytes = self.export(candidate);
        let verification = super::verify_export(probe, &reference_bytes, &bytes, batch, tolerance)?;
        let mut checked = Checked {
            bytes,
            verification,
            notes: Vec::new(),
        };
        match self {
            ExportDims::AsImported => {}
            ExportDims::Fixed { note } => checked.notes.push(note.clone()),
            ExportDims::Symbolic { second, note, .. } => {
                let at = shapes_text(second);
                match verify_inputs(second, &reference_bytes, &checked.bytes, tolerance) {
                    Ok(v) => checked.notes.push(format!(
                        "{note}; the export matches its reference there too ({})",
                        v.summary()
                    )),
                    Err(e) => {
                        let fixed = ExportDims::Fixed {
                            note: format!(
                                "the export has the fixed input size it was imported at (--input-shape, or --seq-len for token data), not the model's symbolic dims: at {at} it does not match its reference ({e})"
                            ),
                        };
                        return fixed.export_checked(candidate, reference, probe, batch, tolerance);
                    }
                }
            }
        }
        Ok(checked)
    }
}

/// Every sized dim of the graph's inputs and outputs becomes fixed at its size.
pub fn freeze(g: &mut Graph) {
    for v in g.inputs.iter_mut().chain(g.outputs.iter_mut()) {
        *v = v.frozen();
    }
}
