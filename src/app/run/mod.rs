//! `compress run MODEL.onnx --method M [options]` (also `compress MODEL.onnx ...`): the main
//! job, a sweep of it, or a dry run.

pub mod args;
pub mod config;
pub mod dry_run;
pub mod job;
pub mod sweep;

pub use args::RunArgs;

use crate::error::{Error, Result};
use crate::report::run::render;
use crate::report::sweep::{SweepReport, SweepRun};

/// Runs the job (one run, or one per swept value and the sweep report), or the dry run.
/// Outputs that cannot be written are refused before any work.
pub fn run(a: RunArgs) -> Result<()> {
    let request = a.preprocess.request()?;
    crate::verify::check_runtimes()?;
    for (flag, target) in [
        ("--target-macs", a.target_macs),
        ("--target-params", a.target_params),
    ] {
        if let Some(t) = target.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
            return Err(Error::Usage(format!(
                "{flag} {t}: expected a fraction in (0, 1]"
            )));
        }
    }
    let sweep = a.sweep.as_deref().map(sweep::parse).transpose()?;
    // SWP has no gates, so nothing in its training can hold a MACs budget: refuse rather than
    // export a model that ignores it.
    let swept_budget = matches!(&sweep, Some(s) if s.setting != sweep::Setting::Lambda);
    if a.method == crate::train::Method::Swp && a.target_params.is_some() {
        return Err(Error::Usage(
            "--method swp cannot hold a parameter budget (--target-params): it has no gates; \
             use l0-hc, l0-arm, l0-ar or dep-l0 for a budget, or tune --swp-kappa and \
             --weight-decay"
                .into(),
        ));
    }
    if a.method == crate::train::Method::Swp && (a.target_macs.is_some() || swept_budget) {
        return Err(Error::Usage(
            "--method swp cannot hold a MACs budget (--target-macs): it has no gates; use \
             l0-hc, l0-arm, l0-ar or dep-l0 for a budget, or tune --swp-kappa and \
             --weight-decay"
                .into(),
        ));
    }
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| super::sibling(&a.model, ".pruned.onnx"));
    let mut base = config::train_config(&a);
    let planned = sweep::plan(&base, sweep.as_ref(), &output);
    if !a.dry_run {
        let (json, svg) = sweep::files(&output);
        let extra = sweep.as_ref().map(|_| [json, svg]);
        let side_files: Vec<_> = planned
            .iter()
            .filter_map(|p| a.out.requested_side_file(&p.out.model))
            .collect();
        for path in planned
            .iter()
            .flat_map(|p| p.out.all())
            .chain(extra.iter().flatten())
            .chain(&side_files)
        {
            crate::fsutil::check_writable(path, a.force)?;
        }
    }
    let job = job::prepare(&a, &request)?;
    config::finish_config(&a, &job.graph, &mut base)?;
    let planned: Vec<sweep::Planned> = planned
        .into_iter()
        .map(|mut p| {
            p.cfg.schedule = base.schedule.clone();
            p.cfg.distill_weight = base.distill_weight;
            p.cfg.distill_temperature = base.distill_temperature;
            p.cfg.penalty = base.penalty.clone();
            p.cfg.augment = base.augment;
            p.cfg.preprocessing = Some(job.preprocessing.clone());
            p
        })
        .collect();
    if a.dry_run {
        return dry_run::dry_run(&a, &job, &base, planned.len());
    }
    let mut runs = Vec::new();
    for p in &planned {
        if !p.label.is_empty() && a.chatty() {
            eprintln!("sweep: {}", p.label);
        }
        let (r, bytes) = job::run_once(&a, &job, &p.cfg, &p.out.model)?;
        let text = p.out.write(&r, &bytes, &a.out, a.force)?;
        if sweep.is_none() {
            if a.json {
                println!("{text}");
            } else if !a.quiet {
                print!("{}", render(&r));
                let [m, j, d, s] = p.out.all();
                println!(
                    "wrote {}, {}, {}, {}",
                    m.display(),
                    j.display(),
                    d.display(),
                    s.display()
                );
            }
        }
        runs.push(SweepRun {
            label: p.label.clone(),
            report: r,
        });
    }
    if sweep.is_some() {
        let report = SweepReport::new(
            a.model.display().to_string(),
            a.sweep.clone(),
            job.dense.accuracy,
            runs,
        );
        sweep::write(&report, &output, a.force, a.json, a.quiet)?;
    }
    Ok(())
}
