//! The report of a whole run (`compress MODEL --method M`): the JSON contract CI jobs read.

use serde::Serialize;

use super::prune::{Latency, LayerWidth, PruneReport};
use crate::eval::Accuracy;
use crate::pipeline::Timings;
use crate::train::EpochRecord;
use crate::verify::Verification;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Top-1 accuracy on the test split, a fraction in [0, 1].
    pub accuracy: f64,
    pub correct: usize,
    pub samples: usize,
    pub params: u64,
    pub macs: u64,
    pub latency_ms: Option<Latency>,
    pub file_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub model: String,
    pub output: String,
    pub method: String,
    /// Every option that shaped the result, seed included.
    pub settings: serde_json::Value,
    pub dense: Figures,
    pub pruned: Figures,
    pub macs_ratio: f64,
    pub params_ratio: f64,
    /// Dense minus pruned accuracy, in percentage points.
    pub accuracy_drop_points: f64,
    pub widths_before: String,
    pub widths_after: String,
    pub layers: Vec<LayerWidth>,
    pub history: Vec<EpochRecord>,
    pub verification: Verification,
    pub timings: Timings,
    pub notes: Vec<String>,
}

pub fn figures(acc: &Accuracy, f: &super::prune::ModelFigures) -> Figures {
    Figures {
        accuracy: acc.accuracy,
        correct: acc.correct,
        samples: acc.samples,
        params: f.params,
        macs: f.macs,
        latency_ms: f.latency_ms.clone(),
        file_bytes: f.file_bytes,
    }
}

pub struct RunInput {
    pub prune: PruneReport,
    pub method: String,
    pub settings: serde_json::Value,
    pub dense_accuracy: Accuracy,
    pub pruned_accuracy: Accuracy,
    pub history: Vec<EpochRecord>,
    pub timings: Timings,
}

pub fn run_report(r: RunInput) -> RunReport {
    let p = r.prune;
    RunReport {
        schema_version: SCHEMA_VERSION,
        model: p.model,
        output: p.output,
        method: r.method,
        settings: r.settings,
        accuracy_drop_points: 100.0 * (r.dense_accuracy.accuracy - r.pruned_accuracy.accuracy),
        dense: figures(&r.dense_accuracy, &p.dense),
        pruned: figures(&r.pruned_accuracy, &p.pruned),
        macs_ratio: p.macs_ratio,
        params_ratio: if p.dense.params == 0 {
            1.0
        } else {
            p.pruned.params as f64 / p.dense.params as f64
        },
        widths_before: p.widths_before,
        widths_after: p.widths_after,
        layers: p.layers,
        history: r.history,
        verification: p.verification,
        timings: r.timings,
        notes: p.notes,
    }
}

pub fn render(r: &RunReport) -> String {
    use super::human;
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# compress: {} ({})\n", r.model, r.method);
    let _ = writeln!(s, "| | dense | pruned | ratio |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| accuracy | {:.4} | {:.4} | {:+.2} pts |",
        r.dense.accuracy, r.pruned.accuracy, -r.accuracy_drop_points
    );
    let _ = writeln!(
        s,
        "| MACs | {} | {} | {:.3} |",
        human(r.dense.macs),
        human(r.pruned.macs),
        r.macs_ratio
    );
    let _ = writeln!(
        s,
        "| params | {} | {} | {:.3} |",
        human(r.dense.params),
        human(r.pruned.params),
        r.params_ratio
    );
    let _ = writeln!(
        s,
        "| file bytes | {} | {} | {:.3} |",
        human(r.dense.file_bytes as u64),
        human(r.pruned.file_bytes as u64),
        r.pruned.file_bytes as f64 / r.dense.file_bytes.max(1) as f64
    );
    if let (Some(a), Some(b)) = (&r.dense.latency_ms, &r.pruned.latency_ms) {
        let _ = writeln!(
            s,
            "| latency batch 1 (ms, tract) | {:.3} | {:.3} | {:.3} |",
            a.batch_1,
            b.batch_1,
            b.batch_1 / a.batch_1
        );
        let _ = writeln!(
            s,
            "| latency batch 64 (ms, tract) | {:.2} | {:.2} | {:.3} |",
            a.batch_64,
            b.batch_64,
            b.batch_64 / a.batch_64
        );
    }
    let _ = writeln!(s, "\nwidths: {} -> {}", r.widths_before, r.widths_after);
    let _ = writeln!(s, "verified in {}", r.verification.summary());
    let _ = writeln!(
        s,
        "wall time: {:.1} s (training {:.1} s)",
        r.timings.total_s, r.timings.train_s
    );
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}
