//! `compress prune MODEL.onnx (--keep PLAN.json | --random-keep F) -o OUT.onnx [...]`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::prune::KeepPlan;
use crate::report::prune::{ReportInput, prune_report, render};
use crate::verify::sizes::{ExportDims, Reference};
use crate::{fsutil, groups, verify};

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    pub model: PathBuf,
    /// Keep plan (JSON).
    #[arg(
        long,
        conflicts_with = "random_keep",
        required_unless_present = "random_keep"
    )]
    pub keep: Option<PathBuf>,
    /// Keep this fraction (0 < F <= 1) of every prunable group, chosen at random.
    #[arg(long, value_name = "F")]
    pub random_keep: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Round each group's kept width up to a multiple of N (never above the original).
    #[arg(long, value_name = "N")]
    pub round_to: Option<usize>,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Runs per latency median (0 skips latency measurement).
    #[arg(long, default_value_t = 10)]
    pub latency_runs: usize,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub shapes: super::input_shape::InputShapeArgs,
    #[command(flatten)]
    pub out: super::model_output::ModelOutputArgs,
}

/// The keep plan from `--keep FILE`, or a random one from `--random-keep F`.
fn keep_plan(a: &PruneArgs, graph: &Graph) -> Result<KeepPlan> {
    match (&a.keep, a.random_keep) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&text).map_err(|e| Error::Data {
                path: path.display().to_string(),
                reason: format!("not a keep plan ({e}); expected {{\"groups\": [{{\"id\": 0, \"keep\": [0, 2]}}]}}"),
            })
        }
        (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(crate::prune::plan::random(
            &groups::analyse(graph)?,
            f,
            a.seed,
        )),
        (None, Some(f)) => Err(Error::Usage(format!(
            "--random-keep {f}: expected a fraction in (0, 1]"
        ))),
        (None, None) => Err(Error::Usage(
            "give --keep PLAN.json or --random-keep F".into(),
        )),
    }
}

/// Prunes by the plan, verifies, writes the model (and the report), prints the summary or
/// the JSON report.
pub fn prune(a: PruneArgs) -> Result<()> {
    verify::check_runtimes()?;
    let original = crate::onnx::read_model(&a.model)?;
    let imported = a.shapes.import(&original, &a.model.display().to_string())?;
    let graph = imported.graph;
    let plan = keep_plan(&a, &graph)?;
    if a.round_to == Some(0) {
        return Err(Error::Usage("--round-to must be at least 1".into()));
    }
    // Refuse before doing any work rather than after.
    let side = a.out.requested_side_file(&a.output);
    for path in std::iter::once(&a.output)
        .chain(a.report.iter())
        .chain(side.iter())
    {
        fsutil::check_writable(path, a.force)?;
    }
    // Only now, with the plan and outputs checked: runs the model at a second size.
    let dims = ExportDims::decide(&graph, &original, &imported.size_dependent);
    let mut pruned = crate::prune::prune(&graph, &plan, a.round_to)?;
    super::inject_fault(&mut pruned.graph);
    let checked = dims.export_checked(
        &pruned.graph,
        Reference::Graph(&pruned.reference),
        &graph,
        2,
        1e-4,
    )?;
    let (bytes, verification) = (checked.bytes, checked.verification);
    pruned.notes.extend(checked.notes.iter().cloned());
    a.out.write(&a.output, &bytes, a.force)?;
    super::input_shape::print_notes(&checked.notes);
    let latency = verify::latency::before_after(&graph, &original, &bytes, a.latency_runs)?;
    let r = prune_report(ReportInput {
        model: &a.model.display().to_string(),
        output: &a.output.display().to_string(),
        original: &graph,
        original_bytes: &original,
        pruned: &pruned,
        pruned_bytes: &bytes,
        verification,
        latency,
    })?;
    let text = super::to_json(&r)?;
    if let Some(path) = &a.report {
        fsutil::write_atomic(path, text.as_bytes(), a.force)?;
    }
    if a.json {
        println!("{text}");
    } else {
        print!("{}", render(&r));
    }
    Ok(())
}
