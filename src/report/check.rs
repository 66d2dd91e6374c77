//! `compress check REPORT.json [--baseline OLD.json] ...`: gate a CI job on a run report.
//!
//! Reports are read into the typed [`RunReport`] through [`schema::parse`], so that a field
//! that is missing or of the wrong type is reported as bad input naming the file and the field
//! ([`crate::Error::Data`], exit 2) rather than as a failed check (exit 1).
//!
//! [`check_reports`] returns one human line per failed condition; an empty list means every
//! condition holds.

use serde_json::Value;

use super::run::RunReport;
use super::schema;
use crate::error::Result;

/// The only report schema this version of `check` understands.
pub const SUPPORTED_SCHEMA: u64 = super::run::SCHEMA_VERSION as u64;

/// Default limit on the accuracy lost relative to a baseline, in percentage points.
pub const BASELINE_ACCURACY_DROP_POINTS: f64 = 0.5;
/// How much more pruned MACs than the baseline's are tolerated (0.01 = 1%).
pub const BASELINE_MACS_SLACK: f64 = 0.01;
/// How much slower than the baseline's pruned batch-1 latency is tolerated (0.10 = 10%).
pub const BASELINE_LATENCY_SLACK: f64 = 0.10;

/// Comparisons forgive floating-point noise of this size (e.g. 0.5 points computed as
/// 0.50000000001).
const EPS: f64 = 1e-9;

/// The conditions asked for on the command line; `None` means "not checked" (or, with a
/// baseline, "use the baseline default").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckOptions {
    /// Largest accuracy drop allowed, in percentage points. Without a baseline: dense minus
    /// pruned accuracy of the report. With a baseline: baseline pruned minus report pruned
    /// accuracy (default [`BASELINE_ACCURACY_DROP_POINTS`]).
    pub max_accuracy_drop: Option<f64>,
    /// Smallest MACs reduction relative to the report's own dense model, as a fraction
    /// (0.4 = at least 40% fewer MACs than dense). Checked with or without a baseline.
    pub min_macs_reduction: Option<f64>,
    /// Largest pruned batch-1 latency in milliseconds. With a baseline and no explicit
    /// limit, the baseline's pruned batch-1 latency plus [`BASELINE_LATENCY_SLACK`].
    pub max_latency_ms: Option<f64>,
}

/// A report together with the name (usually the path) used in messages.
struct Doc<'a> {
    r: &'a RunReport,
    name: &'a str,
}

impl Doc<'_> {
    /// Pruned batch-1 latency, `None` when not measured.
    fn pruned_latency(&self) -> Option<f64> {
        self.r.pruned.latency_ms.as_ref().map(|l| l.batch_1)
    }
}

/// [`check_reports`] on reports given as JSON: each is read with [`schema::parse`] first, so a
/// report that cannot be read (not an object, a schema_version other than 1, a missing or
/// mistyped field) is [`crate::Error::Data`] naming the file: bad input, not a failed check.
/// ```
/// use compress::report::check::{CheckOptions, check};
/// use compress::report::run::RunReport;
/// let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.example.json");
/// let mut report: RunReport = serde_json::from_str(&std::fs::read_to_string(path)?).unwrap();
/// report.macs_ratio = 0.5; // 50% fewer MACs than dense
/// let opts = CheckOptions { min_macs_reduction: Some(0.6), ..Default::default() };
/// let failed = check(&serde_json::to_value(&report).unwrap(), "r.json", None, &opts)?;
/// assert_eq!(failed.len(), 1); // 60% required
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(
    report: &Value,
    report_name: &str,
    baseline: Option<(&Value, &str)>,
    opts: &CheckOptions,
) -> Result<Vec<String>> {
    let r = schema::parse(report, report_name)?;
    let b = baseline
        .map(|(v, name)| schema::parse(v, name).map(|b| (b, name)))
        .transpose()?;
    Ok(check_reports(
        &r,
        report_name,
        b.as_ref().map(|(b, name)| (b, *name)),
        opts,
    ))
}

/// Check `report` (named `report_name` in messages) against the limits in `opts` and, when
/// given, against a `baseline` report (with its name).
///
/// Returns one line per failed condition, each naming the condition, the measured value and
/// the limit; an empty vector means every condition holds.
///
/// With a baseline the two reports must first be comparable: the same model (same `model`
/// path, or the same dense params and MACs) evaluated on the same data (`settings.data`).
/// If they are not, the single failed line says why and no other comparison is made.
pub fn check_reports(
    report: &RunReport,
    report_name: &str,
    baseline: Option<(&RunReport, &str)>,
    opts: &CheckOptions,
) -> Vec<String> {
    let r = Doc {
        r: report,
        name: report_name,
    };
    let mut failed = Vec::new();
    match baseline {
        None => check_alone(&r, opts, &mut failed),
        Some((b, name)) => {
            let b = Doc { r: b, name };
            if let Some(why) = incomparable(&r, &b) {
                failed.push(why);
            } else {
                check_against(&r, &b, opts, &mut failed);
            }
        }
    }
    failed
}

fn check_alone(r: &Doc, opts: &CheckOptions, failed: &mut Vec<String>) {
    if let Some(max) = opts.max_accuracy_drop {
        let drop = r.r.accuracy_drop_points;
        if drop > max + EPS {
            failed.push(format!(
                "accuracy dropped {drop:.2} points from dense (limit {max:.2})"
            ));
        }
    }
    check_macs_reduction(r, opts, failed);
    if let Some(max) = opts.max_latency_ms {
        check_latency_limit(r, max, failed);
    }
}

fn check_macs_reduction(r: &Doc, opts: &CheckOptions, failed: &mut Vec<String>) {
    if let Some(min) = opts.min_macs_reduction {
        let reduction = 1.0 - r.r.macs_ratio;
        if reduction + EPS < min {
            failed.push(format!(
                "MACs reduced by {:.1}% from dense (required at least {:.1}%)",
                100.0 * reduction,
                100.0 * min
            ));
        }
    }
}

fn check_latency_limit(r: &Doc, max: f64, failed: &mut Vec<String>) {
    match r.pruned_latency() {
        None => failed.push(format!(
            "pruned batch-1 latency was not measured (limit {max:.3} ms)"
        )),
        Some(ms) if ms > max + EPS => failed.push(format!(
            "pruned batch-1 latency {ms:.3} ms (limit {max:.3} ms)"
        )),
        Some(_) => {}
    }
}

/// Why two reports cannot be compared, or `None` when they can.
fn incomparable(r: &Doc, b: &Doc) -> Option<String> {
    let mut why = Vec::new();
    let same_path = r.r.model == b.r.model;
    let (rp, rm) = (r.r.dense.params, r.r.dense.macs);
    let (bp, bm) = (b.r.dense.params, b.r.dense.macs);
    if !same_path && (rp != bp || rm != bm) {
        why.push(format!(
            "different models ('{}' with {rp} params / {rm} MACs vs '{}' with {bp} params / {bm} MACs)",
            r.r.model, b.r.model
        ));
    }
    let (rd, bd) = (&r.r.settings.data, &b.r.settings.data);
    if rd != bd {
        why.push(format!("different data ({rd:?} vs {bd:?})"));
    }
    (!why.is_empty()).then(|| {
        format!(
            "{} cannot be compared with baseline {}: {}",
            r.name,
            b.name,
            why.join("; ")
        )
    })
}

fn check_against(r: &Doc, b: &Doc, opts: &CheckOptions, failed: &mut Vec<String>) {
    // Accuracy: pruned vs the baseline's pruned, in points.
    let max = opts
        .max_accuracy_drop
        .unwrap_or(BASELINE_ACCURACY_DROP_POINTS);
    let (ra, ba) = (r.r.pruned.accuracy, b.r.pruned.accuracy);
    let drop = 100.0 * (ba - ra);
    if drop > max + EPS {
        failed.push(format!(
            "accuracy dropped {drop:.2} points from baseline {} ({:.2}% -> {:.2}%; limit {max:.2})",
            b.name,
            100.0 * ba,
            100.0 * ra
        ));
    }

    // MACs: no more than 1% above the baseline's pruned MACs; an explicit minimum reduction
    // is still relative to the report's own dense model.
    let (rm, bm) = (r.r.pruned.macs as f64, b.r.pruned.macs as f64);
    let limit = bm * (1.0 + BASELINE_MACS_SLACK);
    if rm > limit + EPS {
        failed.push(format!(
            "pruned MACs {rm:.0} exceed baseline {}'s {bm:.0} by {:.1}% (limit {:.0}%)",
            b.name,
            100.0 * (rm / bm.max(1.0) - 1.0),
            100.0 * BASELINE_MACS_SLACK
        ));
    }
    check_macs_reduction(r, opts, failed);

    // Latency: an explicit limit is absolute; otherwise the baseline's plus 10%.
    match opts.max_latency_ms {
        Some(max) => check_latency_limit(r, max, failed),
        None => {
            if let Some(base_ms) = b.pruned_latency() {
                let limit = base_ms * (1.0 + BASELINE_LATENCY_SLACK);
                match r.pruned_latency() {
                    None => failed.push(format!(
                        "pruned batch-1 latency was not measured (baseline {} measured {base_ms:.3} ms)",
                        b.name
                    )),
                    Some(ms) if ms > limit + EPS => failed.push(format!(
                        "pruned batch-1 latency {ms:.3} ms (limit {limit:.3} ms = baseline {} {base_ms:.3} ms + {:.0}%)",
                        b.name,
                        100.0 * BASELINE_LATENCY_SLACK
                    )),
                    Some(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A complete report (the committed example) with the fields below laid over it.
    fn report(dense_acc: f64, pruned_acc: f64, pruned_macs: u64, latency: Option<f64>) -> Value {
        let dense_macs = 1_000_000u64;
        super::super::run::tests::over_example(json!({
            "schema_version": 1,
            "model": "models/net.onnx",
            "output": "models/net.pruned.onnx",
            "method": "hc",
            "settings": { "data": "synthetic", "seed": 7 },
            "dense": {
                "accuracy": dense_acc, "correct": 0, "samples": 100,
                "params": 5000, "macs": dense_macs,
                "latency_ms": latency.map(|_| json!({"batch_1": 2.0, "batch_64": 40.0, "runs": 5, "runtime": "tract"})),
                "file_bytes": 20000
            },
            "pruned": {
                "accuracy": pruned_acc, "correct": 0, "samples": 100,
                "params": 3000, "macs": pruned_macs,
                "latency_ms": latency.map(|ms| json!({"batch_1": ms, "batch_64": 30.0, "runs": 5, "runtime": "tract"})),
                "file_bytes": 12000
            },
            "macs_ratio": pruned_macs as f64 / dense_macs as f64,
            "params_ratio": 0.6,
            "accuracy_drop_points": 100.0 * (dense_acc - pruned_acc),
            "widths_before": "", "widths_after": "", "layers": [], "history": [],
            "verification": {}, "timings": {}, "notes": []
        }))
    }

    fn opts(drop: Option<f64>, macs: Option<f64>, lat: Option<f64>) -> CheckOptions {
        CheckOptions {
            max_accuracy_drop: drop,
            min_macs_reduction: macs,
            max_latency_ms: lat,
        }
    }

    fn run(r: &Value, o: &CheckOptions) -> Vec<String> {
        check(r, "new.json", None, o).unwrap()
    }

    fn run_base(r: &Value, b: &Value, o: &CheckOptions) -> Vec<String> {
        check(r, "new.json", Some((b, "old.json")), o).unwrap()
    }

    #[test]
    fn no_conditions_pass() {
        let r = report(0.9, 0.5, 900_000, None);
        assert!(run(&r, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn accuracy_drop_pass_and_fail() {
        let r = report(0.9, 0.8877, 500_000, None);
        assert!(run(&r, &opts(Some(1.5), None, None)).is_empty());
        let f = run(&r, &opts(Some(1.0), None, None));
        assert_eq!(
            f,
            vec!["accuracy dropped 1.23 points from dense (limit 1.00)"]
        );
    }

    #[test]
    fn accuracy_drop_at_limit_passes() {
        // 100 * (0.9 - 0.895) is not exactly 0.5 in floating point.
        let r = report(0.9, 0.895, 500_000, None);
        assert!(run(&r, &opts(Some(0.5), None, None)).is_empty());
    }

    #[test]
    fn macs_reduction_pass_and_fail() {
        let r = report(0.9, 0.9, 550_000, None);
        assert!(run(&r, &opts(None, Some(0.4), None)).is_empty());
        assert!(run(&r, &opts(None, Some(0.45), None)).is_empty());
        let f = run(&r, &opts(None, Some(0.5), None));
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("MACs reduced by 45.0%"), "{}", f[0]);
        assert!(f[0].contains("at least 50.0%"), "{}", f[0]);
    }

    #[test]
    fn latency_pass_fail_and_unmeasured() {
        let r = report(0.9, 0.9, 500_000, Some(1.25));
        assert!(run(&r, &opts(None, None, Some(1.5))).is_empty());
        let f = run(&r, &opts(None, None, Some(1.0)));
        assert_eq!(f, vec!["pruned batch-1 latency 1.250 ms (limit 1.000 ms)"]);
        let unmeasured = report(0.9, 0.9, 500_000, None);
        let f = run(&unmeasured, &opts(None, None, Some(1.0)));
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("not measured"), "{}", f[0]);
        // Not measured and not asked for: fine.
        assert!(run(&unmeasured, &opts(Some(5.0), None, None)).is_empty());
    }

    #[test]
    fn several_failures_one_line_each() {
        let r = report(0.9, 0.8, 900_000, Some(3.0));
        let f = run(&r, &opts(Some(1.0), Some(0.4), Some(1.0)));
        assert_eq!(f.len(), 3, "{f:?}");
    }

    #[test]
    fn baseline_comparable_passes() {
        let base = report(0.9, 0.88, 500_000, Some(1.0));
        let new = report(0.9, 0.877, 504_000, Some(1.08));
        assert!(run_base(&new, &base, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn baseline_accuracy_default_and_explicit_limit() {
        let base = report(0.9, 0.88, 500_000, None);
        let new = report(0.9, 0.87, 500_000, None);
        let f = run_base(&new, &base, &CheckOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("accuracy dropped 1.00 points from baseline old.json"));
        assert!(f[0].contains("limit 0.50"), "{}", f[0]);
        assert!(run_base(&new, &base, &opts(Some(1.5), None, None)).is_empty());
        // An improvement never fails.
        assert!(run_base(&base, &new, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn baseline_macs_regression() {
        let base = report(0.9, 0.88, 500_000, None);
        let new = report(0.9, 0.88, 520_000, None);
        let f = run_base(&new, &base, &CheckOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("exceed baseline old.json's 500000 by 4.0%"),
            "{}",
            f[0]
        );
        // The explicit reduction is still relative to the report's own dense model.
        let f = run_base(&new, &base, &opts(None, Some(0.6), None));
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn baseline_latency_slack_and_explicit_limit() {
        let base = report(0.9, 0.88, 500_000, Some(1.0));
        let slower = report(0.9, 0.88, 500_000, Some(1.2));
        let f = run_base(&slower, &base, &CheckOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("limit 1.100 ms"), "{}", f[0]);
        // An explicit limit replaces the baseline's.
        assert!(run_base(&slower, &base, &opts(None, None, Some(1.5))).is_empty());
        // Baseline measured, report did not.
        let unmeasured = report(0.9, 0.88, 500_000, None);
        let f = run_base(&unmeasured, &base, &CheckOptions::default());
        assert!(f.len() == 1 && f[0].contains("not measured"), "{f:?}");
        // Neither measured: nothing to compare.
        assert!(run_base(&unmeasured, &unmeasured, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn baseline_same_model_by_figures_is_comparable() {
        let base = report(0.9, 0.88, 500_000, None);
        let mut new = base.clone();
        new["model"] = json!("elsewhere/net.onnx");
        assert!(run_base(&new, &base, &CheckOptions::default()).is_empty());
    }

    #[test]
    fn baseline_not_comparable() {
        let base = report(0.9, 0.88, 500_000, None);
        let mut other_model = base.clone();
        other_model["model"] = json!("models/other.onnx");
        other_model["dense"]["macs"] = json!(2_000_000);
        let f = run_base(&other_model, &base, &CheckOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("cannot be compared"), "{}", f[0]);
        assert!(f[0].contains("different models"), "{}", f[0]);

        let mut other_data = base.clone();
        other_data["settings"]["data"] = json!("cifar10");
        other_data["pruned"]["accuracy"] = json!(0.1);
        let f = run_base(&other_data, &base, &CheckOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("different data"), "{}", f[0]);
        assert!(!f[0].contains("accuracy dropped"), "{}", f[0]);
    }

    #[test]
    fn malformed_reports_are_data_errors() {
        let good = report(0.9, 0.88, 500_000, None);
        let expect_data = |v: &Value, needle: &str| {
            let e = check(v, "bad.json", None, &CheckOptions::default()).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit_code::BAD_INPUT);
            let msg = e.to_string();
            assert!(msg.starts_with("bad.json: "), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        };
        expect_data(&json!([1, 2]), "not a compress report");

        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("schema_version");
        expect_data(&v, "schema_version");

        let mut v = good.clone();
        v["schema_version"] = json!(2);
        expect_data(&v, "unsupported report schema_version 2");

        let mut v = good.clone();
        v["pruned"].as_object_mut().unwrap().remove("macs");
        expect_data(&v, "missing field 'pruned.macs'");

        let mut v = good.clone();
        v["macs_ratio"] = json!("half");
        expect_data(&v, "'macs_ratio' is not a number");

        let mut v = good.clone();
        v["pruned"]["latency_ms"] = json!({"batch_64": 3.0});
        expect_data(&v, "pruned.latency_ms.batch_1");

        // A malformed baseline names the baseline.
        let mut b = good.clone();
        b["dense"] = json!(null);
        let e = check(
            &good,
            "new.json",
            Some((&b, "old.json")),
            &CheckOptions::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("old.json: missing field 'dense."),
            "{e}"
        );
    }
}
