//! The fine-tune phase (`--finetune-epochs N`): once the gates are decided and the channels
//! physically removed, the smaller network is trained on for N epochs with the task loss (plus
//! distillation from the dense model when asked), then exported and verified against burn
//! running the fine-tuned graph.
//!
//! It reuses the gated trainer: a pruned graph trained with no gated group is plain training
//! (the cost term is zero), with the run's optimiser, learning rate and schedule (over the N
//! epochs), batch size, seed and `--max-steps` (counted afresh). Its checkpoints go to
//! `CHECKPOINT_DIR/finetune`, so `--resume` continues through the phase.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;

use super::{EpochRecord, Method, Penalty, TrainConfig, checkpoint, fine_tune_from};
use crate::data::Examples;
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::verify::sizes::{ExportDims, Reference};
use crate::verify::{Comparison, Verification, max_abs_diff, probe_tensor};

/// Largest difference allowed between the export in a runtime and burn on the same graph.
const TOLERANCE: f32 = 1e-4;

/// The fine-tuned pruned model, exported and verified.
pub struct Finetuned {
    /// The fine-tuned pruned graph (what gets written).
    pub graph: Graph,
    pub bytes: Vec<u8>,
    /// The export in each runtime against burn running `graph`.
    pub verification: Verification,
    /// What to tell the user about the export's dims.
    pub notes: Vec<String>,
    pub history: Vec<EpochRecord>,
    pub seconds: f64,
}

/// Where the phase keeps its checkpoints and the epoch count it was started with.
fn phase_dir(cfg: &TrainConfig) -> Option<PathBuf> {
    cfg.checkpoint_dir.as_ref().map(|d| d.join("finetune"))
}

fn marker(dir: &Path) -> PathBuf {
    dir.join("phase.json")
}

/// Refuses `--resume` when the checkpoints were made with another `--finetune-epochs` (the
/// phase's schedule and its checkpoints depend on it); call before any work.
pub fn check_resume(cfg: &TrainConfig) -> Result<()> {
    let Some(dir) = phase_dir(cfg).filter(|_| cfg.resume) else {
        return Ok(());
    };
    let path = marker(&dir);
    let recorded = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["finetune_epochs"].as_u64())
            .ok_or_else(|| Error::Data {
                path: path.display().to_string(),
                reason: "expected {\"finetune_epochs\": N}".into(),
            })? as usize,
        // No phase was started: the gated checkpoints resume with any phase length.
        Err(_) => return Ok(()),
    };
    if recorded != cfg.finetune_epochs {
        return Err(Error::ResumeMismatch {
            path: dir,
            recorded: format!("--finetune-epochs {recorded}"),
            requested: format!("--finetune-epochs {}", cfg.finetune_epochs),
        });
    }
    Ok(())
}

/// The phase's training settings: the run's, with no gates and no cost term.
fn phase_config(cfg: &TrainConfig) -> Result<TrainConfig> {
    let mut c = cfg.clone();
    // Any gate method does: with no gated group its gates are never drawn.
    c.method = Method::L0Hc;
    c.no_gates = true;
    c.epochs = cfg.finetune_epochs;
    c.lambda = 0.0;
    c.target_macs = None;
    c.penalty = Penalty::Macs;
    c.checkpoint_dir = phase_dir(cfg);
    c.resume = false;
    if let Some(dir) = &c.checkpoint_dir {
        c.resume = cfg.resume && !checkpoint::epochs(dir)?.is_empty();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let text = format!("{{\"finetune_epochs\": {}}}\n", cfg.finetune_epochs);
        crate::fsutil::write_atomic(&marker(dir), text.as_bytes(), true)?;
    }
    Ok(c)
}

/// Trains `pruned` (no gates) for `cfg.finetune_epochs` epochs on `train` minus the validation
/// share, distilling from `dense` when `cfg.distill_weight` > 0; exports it with `dims` and
/// verifies the export against burn.
pub fn finetune<'a>(
    pruned: &Graph,
    dense: &Graph,
    train: impl Into<Examples<'a>>,
    val_fraction: f64,
    cfg: &TrainConfig,
    dims: &ExportDims,
    device: &Device,
) -> Result<Finetuned> {
    let start = Instant::now();
    let phase = phase_config(cfg)?;
    if !cfg.quiet {
        eprintln!(
            "fine-tune phase: {} epochs on the pruned network",
            phase.epochs
        );
    }
    let outcome = fine_tune_from(
        pruned,
        dense,
        train,
        val_fraction,
        &phase,
        &device.clone().autodiff(),
    )?;
    let graph = outcome.net.trained_graph();
    let checked = dims.export_checked(&graph, Reference::Graph(&graph), &graph, 2, TOLERANCE)?;
    let verification = against_burn(&graph, &checked.bytes, device)?;
    Ok(Finetuned {
        graph,
        bytes: checked.bytes,
        verification,
        notes: checked.notes,
        history: outcome.history,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs the export in tract (and ONNX Runtime with the `ort` feature) and burn on `graph` on
/// the same pseudo-random inputs (token ids inside the embedding tables for integer inputs);
/// fails (exit code 3) beyond the tolerance.
fn against_burn(graph: &Graph, bytes: &[u8], device: &Device) -> Result<Verification> {
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| probe_tensor(graph, i, &v.shape(2), 17 + i as u64))
        .collect();
    let want = crate::exec::Network::new(graph, device)?.run(&inputs)?;
    let compare = |runtime: &str, got: Vec<crate::ir::Tensor>| -> Result<Comparison> {
        let diff = if got.len() == want.len() {
            got.iter()
                .zip(&want)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0.0, f32::max)
        } else {
            f32::INFINITY
        };
        if diff.is_nan() || diff > TOLERANCE {
            return Err(Error::Verify(format!(
                "the fine-tuned export differs from burn by {diff:e} in {runtime} (tolerance \
                 {TOLERANCE:e}); nothing was written"
            )));
        }
        Ok(Comparison {
            runtime: runtime.to_string(),
            max_abs_diff: diff,
            tolerance: TOLERANCE,
        })
    };
    let tract = compare("tract", crate::verify::run_tract(bytes, &inputs)?)?;
    #[cfg(feature = "ort")]
    let also = vec![compare(
        "onnxruntime",
        crate::verify::onnxruntime::run_ort(bytes, &inputs)?,
    )?];
    #[cfg(not(feature = "ort"))]
    let also = Vec::new();
    Ok(Verification { tract, also })
}
