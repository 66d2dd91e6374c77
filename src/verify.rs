//! Running exported bytes in tract, an independent runtime, and comparing outputs.

use tract_onnx::prelude::*;

use crate::error::{Error, Result};

/// An optimised tract plan for fixed input shapes, and the inputs as tract values.
fn tract_plan(
    bytes: &[u8],
    inputs: &[crate::ir::Tensor],
) -> Result<(std::sync::Arc<TypedRunnableModel>, TVec<TValue>)> {
    let fail = |e: TractError| Error::Internal(format!("tract: {e:#}"));
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(fail)?;
    for (i, t) in inputs.iter().enumerate() {
        model = model
            .with_input_fact(i, f32::fact(&t.shape).into())
            .map_err(fail)?;
    }
    let plan = model
        .into_optimized()
        .map_err(fail)?
        .into_runnable()
        .map_err(fail)?;
    let values: TVec<TValue> = inputs
        .iter()
        .map(|t| {
            Ok(
                tract_onnx::prelude::Tensor::from_shape(&t.shape, &t.to_f32_vec())
                    .map_err(fail)?
                    .into(),
            )
        })
        .collect::<Result<_>>()?;
    Ok((plan, values))
}

/// Runs ONNX bytes in tract with the given inputs (f32), returning f32 outputs.
pub fn run_tract(bytes: &[u8], inputs: &[crate::ir::Tensor]) -> Result<Vec<crate::ir::Tensor>> {
    let fail = |e: TractError| Error::Internal(format!("tract: {e:#}"));
    let (plan, values) = tract_plan(bytes, inputs)?;
    let outs = plan.run(values).map_err(fail)?;
    outs.iter()
        .map(|o| {
            let view = o.to_plain_array_view::<f32>().map_err(fail)?;
            Ok(crate::ir::Tensor::f32(
                view.shape().to_vec(),
                view.iter().copied().collect(),
            ))
        })
        .collect()
}

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
    let mut rng = crate::rng::SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    crate::ir::Tensor::f32(
        shape.to_vec(),
        (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect(),
    )
}

/// Outcome of running two ONNX encodings of a model on the same inputs in tract.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub runtime: &'static str,
    pub max_abs_diff: f32,
    pub tolerance: f32,
}

/// Runs `reference` and `candidate` bytes in tract on pseudo-random inputs shaped like the
/// graph's inputs (at `batch`) and fails with exit code 3 when they differ beyond `tolerance`.
pub fn compare_in_tract(
    graph: &crate::ir::Graph,
    reference: &[u8],
    candidate: &[u8],
    batch: usize,
    tolerance: f32,
) -> Result<Comparison> {
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| pseudo_random(&v.shape(batch), 17 + i as u64))
        .collect();
    let a = run_tract(reference, &inputs)?;
    let b = run_tract(candidate, &inputs)?;
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max);
    let diff = if a.len() == b.len() {
        diff
    } else {
        f32::INFINITY
    };
    if diff.is_nan() || diff > tolerance {
        return Err(Error::Verify(format!(
            "tract outputs differ by {diff:e} (tolerance {tolerance:e}); nothing was written"
        )));
    }
    Ok(Comparison {
        runtime: "tract",
        max_abs_diff: diff,
        tolerance,
    })
}

/// Median latency in milliseconds of running ONNX bytes in tract at a fixed input shape,
/// after one warm-up run.
pub fn tract_latency_ms(bytes: &[u8], inputs: &[crate::ir::Tensor], runs: usize) -> Result<f64> {
    let fail = |e: TractError| Error::Internal(format!("tract: {e:#}"));
    let (plan, values) = tract_plan(bytes, inputs)?;
    plan.run(values.clone()).map_err(fail)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = std::time::Instant::now();
        plan.run(values.clone()).map_err(fail)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}
