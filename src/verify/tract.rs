//! tract: the runtime every export is verified in, and where latency is measured.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

use crate::error::{Error, Result};

/// tract's error about a model it was given (see [`Error::Rejected`]).
fn rejected(e: TractError) -> Error {
    Error::Rejected {
        runtime: "tract",
        message: format!("{e:#}"),
    }
}

/// Runs `f`, turning a panic inside tract (it indexes some hostile models' inputs on trust,
/// e.g. a Conv whose optional bias is named '') into the error it should have been.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(Error::Rejected {
            runtime: "tract",
            message: format!("tract failed on it ({what})"),
        })
    })
}

/// An optimised tract plan for fixed input shapes, and the inputs as tract values.
fn tract_plan(
    bytes: &[u8],
    inputs: &[crate::ir::Tensor],
) -> Result<(std::sync::Arc<TypedRunnableModel>, TVec<TValue>)> {
    guarded(|| unguarded_plan(bytes, inputs))
}

/// Drops the graph's intermediate shape annotations when any has a symbolic dim (PyTorch's
/// dynamo exporter writes `[batch, 16, 32, 32]` for every value): tract cannot unify them with
/// the concrete input facts set below, and re-infers every shape without them anyway.
fn drop_symbolic_value_info(proto: &mut tract_onnx::pb::ModelProto) {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let Some(g) = proto.graph.as_mut() else {
        return;
    };
    let symbolic = g.value_info.iter().any(|v| {
        let dims = v
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .and_then(|tract_onnx::pb::type_proto::Value::TensorType(t)| t.shape.as_ref())
            .map(|s| s.dim.as_slice())
            .unwrap_or_default();
        dims.iter()
            .any(|d| matches!(d.value, Some(Value::DimParam(_))))
    });
    if symbolic {
        g.value_info.clear();
    }
}

fn unguarded_plan(
    bytes: &[u8],
    inputs: &[crate::ir::Tensor],
) -> Result<(std::sync::Arc<TypedRunnableModel>, TVec<TValue>)> {
    let fail = rejected;
    let onnx = tract_onnx::onnx();
    let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(fail)?;
    drop_symbolic_value_info(&mut proto);
    let mut model = onnx.model_for_proto_model(&proto).map_err(fail)?;
    // Token ids and masks come as int64 tensors, the rest as f32; each is cast to the type
    // the model declares for its input (int64, int32, bool).
    let mut values: TVec<TValue> = TVec::new();
    for (i, t) in inputs.iter().enumerate() {
        let given = match &t.data {
            crate::ir::Data::I64(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v),
            crate::ir::Data::F32(v) => tract_onnx::prelude::Tensor::from_shape(&t.shape, v),
        }
        .map_err(fail)?;
        let declared = model
            .input_fact(i)
            .ok()
            .and_then(|f| tract_onnx::tract_hir::infer::Factoid::concretize(&f.datum_type))
            .unwrap_or(given.datum_type());
        let value = given.cast_to_dt(declared).map_err(fail)?.into_owned();
        let fact = InferenceFact::dt_shape(declared, &t.shape);
        model = model.with_input_fact(i, fact).map_err(fail)?;
        values.push(value.into());
    }
    let plan = model
        .into_optimized()
        .map_err(fail)?
        .into_runnable()
        .map_err(fail)?;
    Ok((plan, values))
}

/// Runs ONNX bytes in tract with the given inputs (f32), returning f32 outputs.
pub fn run_tract(bytes: &[u8], inputs: &[crate::ir::Tensor]) -> Result<Vec<crate::ir::Tensor>> {
    let fail = rejected;
    let (plan, values) = tract_plan(bytes, inputs)?;
    let outs = guarded(|| plan.run(values).map_err(fail))?;
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

/// Median latencies in milliseconds of several models on the same inputs, measured
/// round-robin after a warm-up of each. Each model keeps one tract state across its runs, as a
/// serving process would.
pub fn tract_latencies_ms(
    models: &[&[u8]],
    inputs: &[crate::ir::Tensor],
    runs: usize,
) -> Result<Vec<f64>> {
    let fail = rejected;
    let mut runners: Vec<Box<dyn FnMut() -> Result<()>>> = Vec::with_capacity(models.len());
    for bytes in models {
        let (plan, values) = tract_plan(bytes, inputs)?;
        let mut state = SimpleState::new(&plan).map_err(fail)?;
        runners.push(Box::new(move || {
            state.run(values.clone()).map(drop).map_err(fail)
        }));
    }
    super::round_robin_medians_ms(&mut runners, runs)
}
