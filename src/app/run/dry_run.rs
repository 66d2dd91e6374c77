//! `--dry-run`: what a run would gate, its starting penalty and an estimate of its duration
//! from two short timed probes; trains nothing that is kept and writes nothing.

use std::time::Instant;

use super::args::RunArgs;
use super::job::Job;
use crate::error::Result;
use crate::groups::ChannelGroup;
use crate::train::{TrainConfig, TrainOutcome};

/// Seconds per optimiser step and per epoch of set-up and validation, from two probes of 2
/// and 6 steps: their difference is the cost of 4 steps without set-up and validation.
struct Probe {
    step_s: f64,
    fixed_s: f64,
    /// The short probe's outcome (its first epoch record holds the starting penalty).
    outcome: TrainOutcome,
}

fn probe(a: &RunArgs, job: &Job, cfg: &TrainConfig) -> Result<Probe> {
    let time = |steps: usize| -> Result<(f64, TrainOutcome)> {
        let mut probe = cfg.clone();
        probe.epochs = 1;
        probe.max_steps = Some(steps);
        probe.quiet = true;
        probe.checkpoint_dir = None;
        probe.resume = false;
        let start = Instant::now();
        let outcome =
            crate::pipeline::train(&job.graph, &job.train, a.val_fraction, &probe, &job.device)?;
        Ok((start.elapsed().as_secs_f64(), outcome))
    };
    let (short_s, outcome) = time(2)?;
    let (long_s, _) = time(6)?;
    let step_s = ((long_s - short_s) / 4.0).max(1e-3);
    Ok(Probe {
        step_s,
        fixed_s: (short_s - 2.0 * step_s).max(0.0),
        outcome,
    })
}

/// Prints the gated groups, the starting penalty and the estimated run time of `runs` runs.
pub fn dry_run(a: &RunArgs, job: &Job, cfg: &TrainConfig, runs: usize) -> Result<()> {
    let layouts = crate::groups::analyse_layouts(&job.graph)?;
    let ids = crate::train::gated_groups(&job.graph, &layouts, cfg);
    let gated: Vec<&ChannelGroup> = layouts
        .groups
        .iter()
        .filter(|g| ids.contains(&g.id))
        .collect();
    let gates: usize = gated.iter().map(|g| g.width).sum();
    let Probe {
        step_s,
        fixed_s,
        outcome,
    } = probe(a, job, cfg)?;
    let steps_per_epoch =
        ((job.train.len() as f64 * (1.0 - a.val_fraction)) / cfg.batch_size as f64).ceil();
    let steps = cfg
        .max_steps
        .map_or(steps_per_epoch * cfg.epochs as f64, |m| {
            (m as f64).min(steps_per_epoch * cfg.epochs as f64)
        });
    let estimate =
        runs as f64 * (step_s * steps + fixed_s * cfg.epochs as f64 + job.dense_eval_s * 2.0);
    println!(
        "model {} ({} test samples from {})",
        a.model.display(),
        job.test.len(),
        job.data_name
    );
    println!(
        "method {}: {} gated groups, {} gates",
        cfg.method.name(),
        gated.len(),
        gates
    );
    for g in &gated {
        println!(
            "  group {:<3} width {:<5} {}",
            g.id,
            g.width,
            g.producers.join(", ")
        );
    }
    let first = outcome.history.first();
    println!(
        "penalty at start: {:.4} (lambda {})",
        first.map_or(0.0, |h| h.penalty),
        cfg.lambda
    );
    println!(
        "estimated run time: {estimate:.0} s ({runs} run(s), {steps} steps each, {step_s:.3} s per step and {fixed_s:.1} s per epoch for validation, measured)"
    );
    Ok(())
}
