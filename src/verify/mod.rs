//! Every export is run in independent runtimes and compared with its reference before it is
//! written: tract always, ONNX Runtime too when built with the `ort` feature.

pub mod latency;
#[cfg(feature = "ort")]
pub mod onnxruntime;
pub mod sizes;
mod tract;

pub use latency::Latency;
pub(crate) use latency::round_robin_medians_ms;
pub use tract::{run_tract, tract_latencies_ms};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest absolute elementwise difference; infinite when shapes differ.
pub fn max_abs_diff(a: &crate::ir::Tensor, b: &crate::ir::Tensor) -> f32 {
    if a.shape != b.shape {
        return f32::INFINITY;
    }
    a.to_f32_vec()
        .iter()
        .zip(b.to_f32_vec())
        .map(|(x, y)| {
            if x.is_nan() && y.is_nan() {
                0.0
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// Deterministic pseudo-random values in [-1, 1), for checking that two models compute the
/// same function without needing real data.
pub fn pseudo_random(shape: &[usize], seed: u64) -> crate::ir::Tensor {
    use crate::rng::RngExt;
    let mut rng = crate::rng::seeded(seed);
    let n: usize = shape.iter().product();
    crate::ir::Tensor::f32(
        shape.to_vec(),
        (0..n).map(|_| 2.0 * rng.random::<f32>() - 1.0).collect(),
    )
}

/// Pseudo-random values for graph input `index` of `graph` at `shape`: f32 in [-1, 1) for a
/// float input; for an int64/int32/bool input (token ids, masks) int64 values valid for it:
/// ids below the smallest embedding table the input indexes, else 0 or 1 (a mask).
pub fn probe_tensor(
    graph: &crate::ir::Graph,
    index: usize,
    shape: &[usize],
    seed: u64,
) -> crate::ir::Tensor {
    let x = pseudo_random(shape, seed);
    let Some(input) = graph.inputs.get(index) else {
        return x;
    };
    if graph.input_type(&input.name) == crate::ir::ElemType::F32 {
        return x;
    }
    let rows = graph
        .nodes
        .iter()
        .filter(|n| {
            matches!(n.op, crate::ir::Op::Gather(_)) && n.inputs.get(1) == Some(&input.name)
        })
        .filter_map(|n| {
            let crate::ir::Op::Gather(g) = &n.op else {
                return None;
            };
            graph
                .initializers
                .get(&n.inputs[0])
                .map(|t| t.shape[g.axis])
        })
        .min()
        .unwrap_or(2)
        .max(1);
    let ids = x
        .to_f32_vec()
        .iter()
        .map(|&v| (((v + 1.0) / 2.0 * rows as f32) as i64).min(rows as i64 - 1))
        .collect();
    crate::ir::Tensor::i64(shape.to_vec(), ids)
}

/// Outcome of running two ONNX encodings of a model on the same inputs in one runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison {
    pub runtime: String,
    pub max_abs_diff: f32,
    pub tolerance: f32,
}

/// Every runtime's comparison: tract's fields at the top level (report schema 1), the other
/// runtimes (ONNX Runtime with the `ort` feature) under `also`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    #[serde(flatten)]
    pub tract: Comparison,
    /// Absent in reports written before ONNX Runtime verified exports.
    #[serde(default)]
    pub also: Vec<Comparison>,
}

impl Verification {
    /// Every runtime's result on one line, for human-readable reports.
    pub fn summary(&self) -> String {
        std::iter::once(&self.tract)
            .chain(&self.also)
            .map(|c| {
                format!(
                    "{}: max abs difference {:.2e} (tolerance {:.0e})",
                    c.runtime, c.max_abs_diff, c.tolerance
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Pseudo-random inputs shaped like the graph's inputs at `batch`; an input over the element
/// bound (`--max-tensor-elements`) is an error, not an allocation.
fn probe_inputs(graph: &crate::ir::Graph, batch: usize) -> Result<Vec<crate::ir::Tensor>> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let shape = v.shape(batch);
            crate::onnx::validate::bounded_elements(&shape)
                .map_err(|e| Error::InvalidModel(format!("graph input '{}': {e}", v.name)))?;
            Ok(probe_tensor(graph, i, &shape, 17 + i as u64))
        })
        .collect()
}

/// Runs `reference` and `candidate` in one runtime on the same inputs; fails with exit code 3
/// when any output differs beyond `tolerance` (or the output lists differ).
fn compare_with(
    runtime: &'static str,
    run: impl Fn(&[u8], &[crate::ir::Tensor]) -> Result<Vec<crate::ir::Tensor>>,
    inputs: &[crate::ir::Tensor],
    reference: &[u8],
    candidate: &[u8],
    tolerance: f32,
) -> Result<Comparison> {
    let a = run(reference, inputs)?;
    // The reference ran, so a runtime refusing the candidate (our export) is our bug.
    let b = run(candidate, inputs).map_err(|e| match e {
        Error::Rejected { runtime, message } => {
            Error::Internal(format!("{runtime} cannot run our export: {message}"))
        }
        other => other,
    })?;
    let diff = if a.len() == b.len() {
        a.iter()
            .zip(&b)
            .map(|(x, y)| max_abs_diff(x, y))
            .fold(0.0, f32::max)
    } else {
        f32::INFINITY
    };
    if diff.is_nan() || diff > tolerance {
        return Err(Error::Verify(format!(
            "{runtime} outputs differ by {diff:e} (tolerance {tolerance:e}); nothing was written"
        )));
    }
    Ok(Comparison {
        runtime: runtime.to_string(),
        max_abs_diff: diff,
        tolerance,
    })
}

/// Fails (exit code 2, with the fix in the message) when a runtime that `verify_export` needs
/// cannot be loaded; tract is linked in, ONNX Runtime (with the `ort` feature) is loaded here.
pub fn check_runtimes() -> Result<()> {
    #[cfg(feature = "ort")]
    onnxruntime::load()?;
    Ok(())
}

/// The gate before any export is written: on pseudo-random inputs shaped like the graph's
/// inputs (at `batch`), tract, then (with the `ort` feature) ONNX Runtime, must each compute
/// the reference's outputs from `candidate` within `tolerance`; otherwise exit code 3.
pub fn verify_export(
    graph: &crate::ir::Graph,
    reference: &[u8],
    candidate: &[u8],
    batch: usize,
    tolerance: f32,
) -> Result<Verification> {
    verify_inputs(
        &probe_inputs(graph, batch)?,
        reference,
        candidate,
        tolerance,
    )
}

/// `verify_export` on given inputs.
pub fn verify_inputs(
    inputs: &[crate::ir::Tensor],
    reference: &[u8],
    candidate: &[u8],
    tolerance: f32,
) -> Result<Verification> {
    let tract = compare_with("tract", run_tract, inputs, reference, candidate, tolerance)?;
    #[cfg(feature = "ort")]
    let also = vec![compare_with(
        "onnxruntime",
        onnxruntime::run_ort,
        inputs,
        reference,
        candidate,
        tolerance,
    )?];
    #[cfg(not(feature = "ort"))]
    let also = Vec::new();
    Ok(Verification { tract, also })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_summary_names_every_runtime() {
        let c = |runtime: &str| Comparison {
            runtime: runtime.to_string(),
            max_abs_diff: 1e-7,
            tolerance: 1e-4,
        };
        let v = Verification {
            tract: c("tract"),
            also: vec![c("onnxruntime")],
        };
        let s = v.summary();
        assert!(s.starts_with("tract: max abs difference 1.00e-7"), "{s}");
        assert!(s.contains("; onnxruntime: max abs difference"), "{s}");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["runtime"], "tract");
        assert_eq!(json["also"][0]["runtime"], "onnxruntime");
    }
}
