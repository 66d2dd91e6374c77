//! The report of a whole run (`compress MODEL --method M`): the JSON contract CI jobs read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::prune::{Latency, LayerWidth, PruneReport};
pub use super::settings::Settings;
use crate::eval::Accuracy;
use crate::pipeline::Timings;
use crate::train::EpochRecord;
use crate::verify::Verification;

pub const SCHEMA_VERSION: u32 = 1;

/// Test accuracy, size and cost of one model (`dense` or `pruned`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Figures {
    /// Top-1 accuracy on the test split, a fraction in [0, 1].
    #[schemars(range(min = 0.0, max = 1.0))]
    pub accuracy: f64,
    pub correct: usize,
    pub samples: usize,
    pub params: u64,
    pub macs: u64,
    /// Median milliseconds per batch in tract; `null` when not measured.
    pub latency_ms: Option<Latency>,
    pub file_bytes: usize,
}

/// The report of a run (`OUT.report.json`): the versioned JSON contract CI jobs read. Its JSON
/// Schema (`docs/report.schema.json`) is generated from this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "compress run report")]
pub struct RunReport {
    pub schema_version: u32,
    pub model: String,
    pub output: String,
    pub method: String,
    /// Every option that shaped the result, seed included.
    pub settings: Settings,
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
    /// The fine-tune phase (`--finetune-epochs N` > 0); absent without one. `pruned` then
    /// describes the fine-tuned model, the one written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FinetunePhase>,
    /// `--target-macs` / `--target-params`: target against achieved, and the export completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
}

/// Training of the pruned network after the structure was fixed (`--finetune-epochs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FinetunePhase {
    pub epochs: usize,
    /// Test accuracy of the pruned model right after the gates were decided.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub accuracy_before: f64,
    /// Test accuracy after the phase (the written model's, as `pruned.accuracy`).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub accuracy_after: f64,
    /// Wall time of the phase: training, export and verification.
    pub seconds: f64,
    /// The phase's epochs (no gates: `open_gates` is empty).
    pub history: Vec<EpochRecord>,
}

/// One budget (`--target-macs` or `--target-params`): the target and where each stage landed,
/// as fractions of dense.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BudgetFigures {
    pub target: f64,
    /// Expected fraction under the gates' open probabilities where training ended.
    pub expected: f64,
    /// Fraction with the deterministic (test-time) gates, before the export completion.
    pub deterministic: f64,
    /// Fraction of the exported model.
    pub exported: f64,
}

/// The budgets of a run and the export completion that made them hold (absent without a
/// budget, and in reports written before budgets were reported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Budgets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<BudgetFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BudgetFigures>,
    /// Channels the deterministic gates kept that the completion closed (lowest P(open) first).
    pub channels_closed: usize,
    /// Channels the deterministic gates removed that the completion reopened.
    pub channels_opened: usize,
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
    pub settings: Settings,
    pub dense_accuracy: Accuracy,
    pub pruned_accuracy: Accuracy,
    pub history: Vec<EpochRecord>,
    pub timings: Timings,
    pub finetune: Option<FinetunePhase>,
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
        finetune: r.finetune,
        budgets: None,
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
    if let Some(b) = &r.budgets {
        let _ = writeln!(s, "{}", budget_line(b));
    }
    if let Some(p) = &r.settings.preprocessing {
        let source = serde_json::to_value(p.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let resize = p
            .resize
            .map_or(String::new(), |[h, w]| format!(", resized to {h}x{w}"));
        let _ = writeln!(
            s,
            "inputs: mean {:?} std {:?} ({source}){resize}",
            p.mean, p.std
        );
    }
    if let Some(f) = &r.finetune {
        let _ = writeln!(
            s,
            "fine-tune phase: {} epochs, accuracy {:.4} -> {:.4} ({:.1} s)",
            f.epochs, f.accuracy_before, f.accuracy_after, f.seconds
        );
    }
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

/// `budget: MACs 0.300 target, 0.298 exported (training 0.31, gates 0.33); 4 channels closed,
/// 0 reopened by the export`.
fn budget_line(b: &Budgets) -> String {
    let one = |name: &str, f: &BudgetFigures| {
        format!(
            "{name} {:.3} target, {:.3} exported (training {:.3}, gates {:.3})",
            f.target, f.exported, f.expected, f.deterministic
        )
    };
    let parts: Vec<String> = [("MACs", &b.macs), ("params", &b.params)]
        .into_iter()
        .filter_map(|(n, f)| f.as_ref().map(|f| one(n, f)))
        .collect();
    format!(
        "budget: {}; {} channels closed, {} reopened by the export",
        parts.join(", "),
        b.channels_closed,
        b.channels_opened
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::Value;

    /// A complete report written by a real run (`docs/report.example.json`).
    pub fn example() -> Value {
        serde_json::from_str(include_str!("../../docs/report.example.json")).unwrap()
    }

    /// The example report with `overlay` laid over it: objects merge key by key, anything else
    /// replaces what was there.
    pub fn over_example(overlay: Value) -> Value {
        fn merge(base: &mut Value, top: Value) {
            match (base, top) {
                (Value::Object(b), Value::Object(t)) => {
                    for (k, v) in t {
                        merge(b.entry(k).or_insert(Value::Null), v);
                    }
                }
                (b, t) => *b = t,
            }
        }
        let mut v = example();
        merge(&mut v, overlay);
        v
    }

    #[test]
    fn example_report_reads_and_writes_back_unchanged() {
        let v = example();
        let r: super::RunReport = serde_json::from_value(v.clone()).unwrap();
        // Through text, as reports are written (f32 tolerances print as f32).
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        assert!(crate::report::schema::validate(&v).is_empty());
    }
}
