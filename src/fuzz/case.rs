//! One fuzz case: the library's whole path (import -> analyse -> prune with a random keep
//! plan -> export -> verify) on one model, run on its own thread under a time limit, with
//! panics caught and every result sorted into an [`Outcome`].

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, exit_code};
use crate::onnx::InputShapes;

/// How a case ended. `Panic`, `Internal` and `Timeout` are failures; the rest are what a
/// hostile input may legitimately get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    /// The whole path ran and verified.
    Ok,
    /// Refused with an input error (the exit-2 class).
    CleanError,
    /// The export did not verify against the input (exit 3): the model means something we
    /// cannot reproduce, and nothing would be written.
    VerifyFailed,
    /// An error of the exit-70 class: a bug of ours or a runtime failing on input we accepted.
    Internal,
    /// A panic (would be an abort or a crash of the command).
    Panic,
    /// Over the time limit.
    Timeout,
}

impl Outcome {
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Internal | Outcome::Panic | Outcome::Timeout)
    }

    fn of_error(e: &Error) -> Self {
        match e.exit_code() {
            exit_code::INTERNAL => Outcome::Internal,
            exit_code::VERIFY_FAILED => Outcome::VerifyFailed,
            _ => Outcome::CleanError,
        }
    }
}

/// The message of the last panic, saved by the hook [`quiet_panics`] installs.
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// Bound on any one tensor's elements in fuzz cases (`--max-tensor-elements`): 2^22 (16 MiB
/// of f32), above every fixture's tensors at the batch sizes used, so a mutated dim cannot
/// make a case allocate or compute for minutes within the much larger default bound.
pub const CASE_MAX_TENSOR_ELEMENTS: u64 = 1 << 22;

/// Sets up the process for running cases: the element bound of cases, and quiet panics.
pub fn prepare() {
    crate::onnx::validate::set_max_tensor_elements(CASE_MAX_TENSOR_ELEMENTS);
    quiet_panics();
}

/// Replaces the panic hook with one that records the message (with its location) instead of
/// printing it, so thousands of caught panics do not flood the output.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = info.to_string();
        }
    }));
}

/// The path under test. `seed` draws the keep plan.
pub fn pipeline(bytes: &[u8], seed: u64) -> Result<()> {
    let imported = crate::onnx::import_sized(bytes, "<fuzz case>", &InputShapes::default())?;
    let graph = imported.graph;
    // What `convert` checks: our re-export computes what the file computes.
    let exported = crate::onnx::export(&graph);
    crate::verify::verify_export(&graph, bytes, &exported, 2, 1e-4)?;
    // What `prune --random-keep` does.
    let groups = crate::groups::analyse(&graph)?;
    let fraction = [0.25, 0.5, 0.75, 1.0][(seed % 4) as usize];
    let plan = crate::prune::plan::random(&groups, fraction, seed);
    let pruned = crate::prune::prune(&graph, &plan, None)?;
    let candidate = crate::onnx::export(&pruned.graph);
    let reference = crate::onnx::export(&pruned.reference);
    crate::verify::verify_export(&graph, &reference, &candidate, 2, 1e-4)?;
    Ok(())
}

/// Runs [`pipeline`] on its own thread; gives up waiting after `limit` (the thread is then
/// left running: a driver should stop after a timeout). Returns the outcome and a message.
pub fn run(bytes: Vec<u8>, seed: u64, limit: Duration) -> (Outcome, String) {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(|| pipeline(&bytes, seed));
            let _ = tx.send(result.map_err(|_| ()));
        });
    if let Err(e) = spawned {
        return (Outcome::Internal, format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(Ok(()))) => (Outcome::Ok, String::new()),
        Ok(Ok(Err(e))) => (Outcome::of_error(&e), e.to_string()),
        Ok(Err(())) => {
            let message = LAST_PANIC
                .lock()
                .map(|m| m.clone())
                .unwrap_or_else(|_| "panic".into());
            (Outcome::Panic, message)
        }
        Err(_) => (Outcome::Timeout, format!("over {limit:?}")),
    }
}
