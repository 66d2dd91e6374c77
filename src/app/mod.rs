//! The commands of the `compress` command line as library functions. Each command is one
//! module holding its options (clap `Args`) and one function that does the work and prints
//! what the command prints; `main.rs` only parses and maps errors to exit codes.

pub mod check;
pub mod convert;
pub mod devices;
pub mod eval;
pub mod input_shape;
pub mod inspect;
pub mod model_output;
pub mod options;
pub mod preprocess;
pub mod prune;
pub mod run;
pub mod sensitivity;
pub mod tokens;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The Fashion-MNIST subset shipped in the repository, used when --data is not given.
pub const DEFAULT_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/data/fashion-mnist-subset"
);

/// `compress completions SHELL`: the completion script of `cmd` on stdout.
pub fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command) -> Result<()> {
    clap_complete::generate(shell, cmd, "compress", &mut std::io::stdout());
    Ok(())
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Data {
        path: path.display().to_string(),
        reason: format!("not JSON ({e})"),
    })
}

/// `dir/stem.onnx` with `suffix` in place of its extension: `dir/stem{suffix}`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Test hook for the verification gate: with COMPRESS_INJECT_FAULT=1 the graph about to be
/// exported gets one weight changed, so verification must fail with exit code 3.
pub(crate) fn inject_fault(graph: &mut crate::ir::Graph) {
    if std::env::var_os("COMPRESS_INJECT_FAULT").is_some_and(|v| v == "1")
        && let Some(t) = graph
            .initializers
            .values_mut()
            .find(|t| t.as_f32().is_some_and(|v| !v.is_empty()))
        && let crate::ir::Data::F32(v) = &mut t.data
    {
        v[0] += 1.0;
    }
}
