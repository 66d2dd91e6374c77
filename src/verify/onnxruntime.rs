//! ONNX Runtime (the `ort` feature): a second, independent runtime every export must pass.
//!
//! The shared library is loaded at run time, never downloaded: from `ORT_DYLIB_PATH` when set,
//! otherwise by its platform name (`libonnxruntime.so` on Linux) through the loader's search
//! path. `pip install onnxruntime` ships it under `onnxruntime/capi/`.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType};

use crate::error::{Error, Result};
use crate::ir::{Data, Tensor};

/// Loaded once per process; a failure is remembered so that every caller gets the same message.
static ENVIRONMENT: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

/// Where the library is looked for: `ORT_DYLIB_PATH`, else the platform's file name.
pub fn library_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
            format!("{DLL_PREFIX}onnxruntime{DLL_SUFFIX}").into()
        })
}

/// Loads the library (once per process) and returns the environment sessions are made in.
pub fn load() -> Result<&'static Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            // ort panics on first use when no library is loaded, so load it explicitly here,
            // where a failure can still become an error message.
            let path = library_path();
            let builder = ort::init_from(&path).map_err(|e| {
                format!(
                    "ONNX Runtime (built in with the `ort` feature) could not be loaded from {}: \
                     {e}; set ORT_DYLIB_PATH to libonnxruntime (pip install onnxruntime ships \
                     it in onnxruntime/capi/), version 1.24 or newer",
                    path.display()
                )
            })?;
            builder
                .with_name("compress")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|message| Error::Usage(message.clone()))
}

fn fail(e: ort::Error) -> Error {
    Error::Internal(format!("onnxruntime: {e}"))
}

/// ONNX Runtime's error about a model it was given (see [`Error::Rejected`]).
fn rejected(e: ort::Error) -> Error {
    Error::Rejected {
        runtime: "onnxruntime",
        message: e.to_string(),
    }
}

/// A session on the CPU; `threads` intra-op threads, or ONNX Runtime's default (all cores).
fn session(bytes: &[u8], threads: Option<usize>) -> Result<Session> {
    let mut builder = Session::builder(load()?).map_err(fail)?;
    if let Some(n) = threads {
        builder = builder
            .with_intra_threads(n)
            .map_err(|e| fail(ort::Error::from(e)))?;
    }
    builder.commit_from_memory(bytes).map_err(rejected)
}

/// The session's inputs, named, in graph input order: f32 tensors, and int64 ones for token
/// ids and masks (as int32 or bool where the model declares that).
fn feed(session: &Session, inputs: &[Tensor]) -> Result<Vec<(String, DynValue)>> {
    session
        .inputs()
        .iter()
        .zip(inputs)
        .map(|(outlet, t)| {
            let declared = outlet.dtype().tensor_type();
            let value = match &t.data {
                Data::I64(v) if declared == Some(TensorElementType::Bool) => {
                    let v: Vec<bool> = v.iter().map(|&x| x != 0).collect();
                    OrtTensor::from_array((t.shape.clone(), v))
                        .map_err(fail)?
                        .into_dyn()
                }
                Data::I64(v) if declared == Some(TensorElementType::Int32) => {
                    let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                    OrtTensor::from_array((t.shape.clone(), v))
                        .map_err(fail)?
                        .into_dyn()
                }
                Data::I64(v) => OrtTensor::from_array((t.shape.clone(), v.clone()))
                    .map_err(fail)?
                    .into_dyn(),
                Data::F32(v) => OrtTensor::from_array((t.shape.clone(), v.clone()))
                    .map_err(fail)?
                    .into_dyn(),
            };
            Ok((outlet.name().to_string(), value))
        })
        .collect()
}

/// Median latencies in milliseconds of several models on the same inputs in ONNX Runtime with
/// `threads` intra-op threads, measured round-robin after a warm-up of each (see tract's).
pub fn ort_latencies_ms(
    models: &[&[u8]],
    inputs: &[Tensor],
    runs: usize,
    threads: usize,
) -> Result<Vec<f64>> {
    let mut runners: Vec<Box<dyn FnMut() -> Result<()>>> = Vec::with_capacity(models.len());
    for bytes in models {
        let mut session = session(bytes, Some(threads))?;
        let values = feed(&session, inputs)?;
        runners.push(Box::new(move || {
            let feed: Vec<(&str, &DynValue)> =
                values.iter().map(|(n, v)| (n.as_str(), v)).collect();
            session.run(feed).map(drop).map_err(rejected)
        }));
    }
    super::round_robin_medians_ms(&mut runners, runs)
}

/// Runs ONNX bytes in ONNX Runtime with the given f32 inputs (in graph input order), returning
/// the f32 outputs in graph output order.
pub fn run_ort(bytes: &[u8], inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut session = session(bytes, None)?;
    if session.inputs().len() != inputs.len() {
        return Err(Error::Internal(format!(
            "onnxruntime: the model has {} inputs, {} were given",
            session.inputs().len(),
            inputs.len()
        )));
    }
    let feed = feed(&session, inputs)?;
    let names: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let outputs = session.run(feed).map_err(rejected)?;
    names
        .iter()
        .map(|name| {
            let (shape, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(fail)?;
            let shape = shape.iter().map(|&d| d as usize).collect();
            Ok(Tensor::f32(shape, data.to_vec()))
        })
        .collect()
}
