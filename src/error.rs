//! One error type for the whole pipeline, with a stable mapping to process exit codes.

use std::path::PathBuf;

/// Exit codes are a contract with CI jobs and deployment scripts (see README).
pub mod exit_code {
    pub const OK: i32 = 0;
    /// A `check` condition failed.
    pub const CHECK_FAILED: i32 = 1;
    /// Bad input or usage: a file, node or option is named in the message.
    pub const BAD_INPUT: i32 = 2;
    /// The exported model did not compute what the reference computes; nothing was written.
    pub const VERIFY_FAILED: i32 = 3;
    /// Training diverged (NaN or infinite loss).
    pub const DIVERGED: i32 = 4;
    /// A bug in compress itself or a runtime failure that is not the user's input.
    pub const INTERNAL: i32 = 70;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a readable ONNX model (empty, truncated, not protobuf).
    #[error("{path}: not a valid ONNX model: {reason}")]
    NotOnnx { path: String, reason: String },
    /// An op outside the supported set.
    #[error("node '{node}': unsupported op {op_type} (opset {opset})")]
    UnsupportedOp {
        node: String,
        op_type: String,
        opset: i64,
    },
    /// A supported op used with an attribute value or input form we do not handle.
    #[error("node '{node}' ({op_type}): {reason}")]
    Node {
        node: String,
        op_type: String,
        reason: String,
    },
    /// The model as a whole is malformed (missing graph, dangling names, cycles...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A dataset that is missing, malformed or does not fit the model.
    #[error("{path}: {reason}")]
    Data { path: String, reason: String },
    /// A bad command-line option or combination of options.
    #[error("{0}")]
    Usage(String),
    /// Resuming was asked for without a checkpoint directory to resume from.
    #[error("resuming needs a checkpoint directory")]
    ResumeWithoutCheckpointDir,
    /// Resuming found no checkpoint in the directory.
    #[error("cannot resume: no checkpoint in {}", dir.display())]
    NoCheckpoint { dir: PathBuf },
    /// The checkpoint was made with other settings than the run that would continue it.
    #[error("cannot resume from {}: it was made with {recorded}, not {requested}", path.display())]
    ResumeMismatch {
        path: PathBuf,
        /// The settings the checkpoint records.
        recorded: String,
        /// The settings of this run.
        requested: String,
    },
    /// A value that must be a fraction in [0, 1) is not; `what` says what it is the fraction of.
    #[error("{what} {value}: expected a fraction in [0, 1)")]
    InvalidFraction { what: &'static str, value: f64 },
    /// Verification of an exported model failed.
    #[error("verification failed: {0}")]
    Verify(String),
    /// `compress check` found this many failed conditions (already printed).
    #[error("{0} check condition(s) failed")]
    CheckFailed(usize),
    /// Training produced a NaN or infinite loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A runtime (tract, ONNX Runtime) refused or failed to run a model it was given: the
    /// model's fault when it is the user's (exit 2); [`crate::verify`] turns it into
    /// [`Error::Internal`] when the model is an export of ours.
    #[error("{runtime} cannot run the model: {message}")]
    Rejected {
        runtime: &'static str,
        message: String,
    },
    /// A runtime (burn, tract, ort) failed on input we believed valid.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Verify(_) => exit_code::VERIFY_FAILED,
            Error::Diverged(_) => exit_code::DIVERGED,
            Error::CheckFailed(_) => exit_code::CHECK_FAILED,
            Error::Internal(_) => exit_code::INTERNAL,
            _ => exit_code::BAD_INPUT,
        }
    }

    pub fn node(node: &str, op_type: &str, reason: impl Into<String>) -> Self {
        Error::Node {
            node: node.to_string(),
            op_type: op_type.to_string(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
