//! The report of a sweep (`--sweep lambda=A,B,...`): every run's report and the runs on the
//! accuracy-vs-MACs Pareto front (`OUT.sweep.json`).

use serde::{Deserialize, Serialize};

use super::run::{RunReport, SCHEMA_VERSION};

/// The dense model every run of the sweep started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensePoint {
    /// Test accuracy, a fraction in [0, 1].
    pub accuracy: f64,
    pub macs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    /// The setting of this run, e.g. `lambda=0.5`.
    pub label: String,
    pub report: RunReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub schema_version: u32,
    pub model: String,
    /// The sweep as given, e.g. `lambda=0.5,4`.
    pub sweep: Option<String>,
    pub dense: DensePoint,
    /// Labels of the Pareto-optimal runs, in increasing MACs.
    pub pareto_front: Vec<String>,
    pub runs: Vec<SweepRun>,
}

impl SweepReport {
    /// The sweep of `runs` (label, report), all from the same dense model.
    pub fn new(
        model: String,
        sweep: Option<String>,
        dense_accuracy: f64,
        runs: Vec<SweepRun>,
    ) -> Self {
        let points = points(&runs);
        let pareto_front = pareto_front(&points)
            .into_iter()
            .map(|i| points[i].0.clone())
            .collect();
        SweepReport {
            schema_version: SCHEMA_VERSION,
            model,
            sweep,
            dense: DensePoint {
                accuracy: dense_accuracy,
                macs: runs.first().map_or(0, |r| r.report.dense.macs),
            },
            pareto_front,
            runs,
        }
    }

    /// Whether the run labelled `label` is on the Pareto front.
    pub fn on_front(&self, label: &str) -> bool {
        self.pareto_front.iter().any(|l| l == label)
    }
}

/// Each run as (label, pruned MACs, pruned test accuracy).
pub fn points(runs: &[SweepRun]) -> Vec<(String, f64, f64)> {
    runs.iter()
        .map(|r| {
            (
                r.label.clone(),
                r.report.pruned.macs as f64,
                r.report.pruned.accuracy,
            )
        })
        .collect()
}

/// Indices of the Pareto-optimal points (highest accuracy for their MACs: no other point has
/// at most their MACs and at least their accuracy, one of them strictly), in increasing MACs.
/// Points with non-finite coordinates are ignored.
pub fn pareto_front(points: &[(String, f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].1.is_finite() && points[i].2.is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        points[a]
            .1
            .total_cmp(&points[b].1)
            .then(points[b].2.total_cmp(&points[a].2))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].2 > best {
            best = points[i].2;
            front.push(i);
        }
    }
    front
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sweep() -> Vec<(String, f64, f64)> {
        vec![
            ("lambda=0.1 <a&b>".to_string(), 300_000.0, 0.85),
            ("lambda=0.05".to_string(), 500_000.0, 0.89),
            ("dominated".to_string(), 600_000.0, 0.87),
            ("lambda=0.01".to_string(), 700_000.0, 0.90),
            ("broken".to_string(), f64::NAN, 0.5),
        ]
    }

    /// A sweep report of the example report, one run per point (MACs and accuracy set).
    pub fn sweep_report(points: &[(String, f64, f64)]) -> SweepReport {
        let example: RunReport =
            serde_json::from_value(crate::report::run::tests::example()).unwrap();
        let runs = points
            .iter()
            .map(|(label, macs, acc)| {
                let mut report = example.clone();
                report.pruned.macs = *macs as u64;
                report.pruned.accuracy = *acc;
                SweepRun {
                    label: label.clone(),
                    report,
                }
            })
            .collect();
        SweepReport::new("m.onnx".into(), Some("lambda=...".into()), 0.91, runs)
    }

    #[test]
    fn pareto_front_keeps_non_dominated_points() {
        assert_eq!(pareto_front(&sweep()), vec![0, 1, 3]);
        assert!(pareto_front(&[]).is_empty());
        // Equal MACs: only the more accurate one.
        let tie = vec![("a".to_string(), 1.0, 0.5), ("b".to_string(), 1.0, 0.6)];
        assert_eq!(pareto_front(&tie), vec![1]);
    }

    #[test]
    fn sweep_report_names_the_front() {
        let pts: Vec<_> = sweep().into_iter().take(4).collect();
        let s = sweep_report(&pts);
        assert_eq!(
            s.pareto_front,
            ["lambda=0.1 <a&b>", "lambda=0.05", "lambda=0.01"]
        );
        assert!(s.on_front("lambda=0.05") && !s.on_front("dominated"));
    }
}
