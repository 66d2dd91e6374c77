//! `compress check REPORT.json [--baseline OLD.json] [limits]`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::report::check::{CheckOptions, check_reports};
use crate::report::schema;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    pub report: PathBuf,
    /// Compare with this earlier report of the same model and data.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Largest allowed accuracy loss, in percentage points.
    #[arg(long, value_name = "PTS")]
    pub max_accuracy_drop: Option<f64>,
    /// Smallest required MACs reduction versus dense, as a fraction (0.4 = 40% fewer).
    #[arg(long, value_name = "F")]
    pub min_macs_reduction: Option<f64>,
    /// Largest allowed batch-1 latency of the pruned model, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_latency_ms: Option<f64>,
}

/// Prints `ok: ...` when every condition holds, else one `FAILED: ...` line per failed
/// condition and [`Error::CheckFailed`] (exit 1); an unreadable report is bad input (exit 2).
pub fn check(a: CheckArgs) -> Result<()> {
    let name = a.report.display().to_string();
    let report = schema::parse(&super::read_json(&a.report)?, &name)?;
    let baseline = match &a.baseline {
        Some(path) => {
            let base_name = path.display().to_string();
            Some((
                schema::parse(&super::read_json(path)?, &base_name)?,
                base_name,
            ))
        }
        None => None,
    };
    let opts = CheckOptions {
        max_accuracy_drop: a.max_accuracy_drop,
        min_macs_reduction: a.min_macs_reduction,
        max_latency_ms: a.max_latency_ms,
    };
    let failures = check_reports(
        &report,
        &name,
        baseline.as_ref().map(|(b, n)| (b, n.as_str())),
        &opts,
    );
    if failures.is_empty() {
        println!("ok: {name} meets every condition");
        Ok(())
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        Err(Error::CheckFailed(failures.len()))
    }
}
