//! The epoch loop: optimisers, resuming from a checkpoint, per-epoch records, checkpoints.

use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;

use super::checkpoint;
use super::trainer::Trainer;
use super::{EpochRecord, TrainConfig, TrainOutcome};
use crate::data::Examples;
use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::rng::SliceRandom;

/// The weights' optimiser as configured.
fn weight_optimizer(cfg: &TrainConfig) -> ModuleOptimizer {
    let decay = (cfg.weight_decay > 0.0)
        .then(|| burn::optim::decay::WeightDecayConfig::new(cfg.weight_decay as f32));
    match cfg.optimizer {
        super::Optimizer::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        super::Optimizer::Sgd { momentum, nesterov } => burn::optim::SgdConfig::new()
            .with_weight_decay(decay)
            .with_momentum((momentum > 0.0).then(|| {
                // PyTorch's convention (no dampening), which the reference schedules assume.
                burn::optim::momentum::MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov)
            }))
            .init(),
    }
}

/// Where a run stands: the next epoch, steps taken, history so far, the training order.
struct Progress {
    first_epoch: usize,
    steps: usize,
    history: Vec<EpochRecord>,
    train_order: Vec<usize>,
}

/// Loads the newest checkpoint of `cfg.checkpoint_dir` into the trainer and optimisers, after
/// checking it was made by the same method, seed and method settings.
fn resume(
    t: &mut Trainer<'_>,
    opt_w: ModuleOptimizer,
    opt_g: ModuleOptimizer,
    progress: &mut Progress,
) -> Result<(ModuleOptimizer, ModuleOptimizer)> {
    let cfg = t.cfg;
    let dir = cfg
        .checkpoint_dir
        .as_ref()
        .ok_or(Error::ResumeWithoutCheckpointDir)?;
    let loaded = checkpoint::load_latest(dir)?.ok_or_else(|| Error::NoCheckpoint {
        dir: dir.to_path_buf(),
    })?;
    if loaded.state.method != cfg.method.name() || loaded.state.seed != cfg.seed {
        return Err(Error::ResumeMismatch {
            path: loaded.path,
            recorded: format!(
                "method {} and seed {}",
                loaded.state.method, loaded.state.seed
            ),
            requested: format!("method {} and seed {}", cfg.method.name(), cfg.seed),
        });
    }
    // Checkpoints from before `variant` existed have it empty; the shape check in
    // `restore` still guards them.
    let variant = t.method.variant();
    if !loaded.state.variant.is_empty() && loaded.state.variant != variant {
        return Err(Error::ResumeMismatch {
            path: loaded.path,
            recorded: loaded.state.variant,
            requested: variant,
        });
    }
    checkpoint::check_preprocessing(
        &loaded.path,
        loaded.state.preprocessing.as_ref(),
        cfg.preprocessing.as_ref(),
    )?;
    // `restore` knows only the tensors: name the checkpoint in its errors.
    t.restore(&loaded.tensors).map_err(|e| match e {
        Error::Data { reason, .. } => Error::Data {
            path: loaded.path.display().to_string(),
            reason,
        },
        other => other,
    })?;
    let opt_w = opt_w.load_record(loaded.opt_w);
    let opt_g = opt_g.load_record(loaded.opt_g);
    t.rng = loaded.state.rng;
    t.lambda = loaded.state.lambda;
    if cfg.target_macs.is_some() || cfg.target_params.is_some() {
        t.budget = t.budget.resumed(loaded.state.budget, loaded.state.steps);
    }
    progress.train_order = loaded.state.train_order;
    progress.history = loaded.state.history;
    progress.steps = loaded.state.steps;
    progress.first_epoch = loaded.state.epoch + 1;
    if !cfg.quiet {
        eprintln!(
            "resumed from {} (epoch {})",
            loaded.path.display(),
            loaded.state.epoch
        );
    }
    Ok((opt_w, opt_g))
}

/// Adds where the last good checkpoint is to a divergence error.
fn with_checkpoint_hint(e: Error, cfg: &TrainConfig, epoch: usize) -> Error {
    match e {
        Error::Diverged(why) => Error::Diverged(format!(
            "{why} (epoch {epoch}); {}",
            match cfg.checkpoint_dir.as_ref().map(|d| {
                checkpoint::epochs(d).map(|v| v.last().map(|k| d.join(format!("epoch-{k}"))))
            }) {
                Some(Ok(Some(p))) => format!("the last good checkpoint is {}", p.display()),
                _ => "no checkpoint was written".to_string(),
            }
        )),
        other => other,
    }
}

/// Fine-tunes `graph` on `train` (minus a validation share), returning the trained gated net.
pub fn fine_tune<'a>(
    graph: &Graph,
    train: impl Into<Examples<'a>>,
    val_fraction: f64,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    fine_tune_from(graph, graph, train, val_fraction, cfg, device)
}

/// [`fine_tune`] distilling from `teacher` (when `cfg.distill_weight` > 0) instead of `graph`.
pub fn fine_tune_from<'a>(
    graph: &Graph,
    teacher: &Graph,
    train: impl Into<Examples<'a>>,
    val_fraction: f64,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    let train = train.into();
    let (mut t, split) = Trainer::new(graph, teacher, train, val_fraction, cfg, device)?;
    let mut opt_w = weight_optimizer(cfg);
    let mut opt_g = AdamConfig::new().init();
    let mut progress = Progress {
        first_epoch: 1,
        steps: 0,
        history: Vec::new(),
        train_order: split.train,
    };
    if cfg.resume {
        (opt_w, opt_g) = resume(&mut t, opt_w, opt_g, &mut progress)?;
    }
    let Progress {
        first_epoch,
        mut steps,
        mut history,
        train_order: mut train_idx,
    } = progress;
    let val_idx = split.val;
    'epochs: for epoch in first_epoch..=cfg.epochs {
        // A run resumed from the checkpoint of the epoch its step budget ended stops there,
        // as the uninterrupted run did (which never gets here with the budget spent).
        if epoch > 1 && cfg.max_steps.is_some_and(|m| steps >= m) {
            break;
        }
        let start = std::time::Instant::now();
        t.lr_now = cfg.lr * cfg.schedule.factor(epoch, cfg.epochs);
        train_idx.shuffle(&mut t.rng);
        t.start_feed(train, &train_idx);
        let bar = progress_bar(cfg, epoch, train_idx.len().div_ceil(cfg.batch_size.max(1)));
        let (mut loss_sum, mut pen_sum, mut exp_macs, mut batches) = (0.0, 0.0, 0.0, 0usize);
        for chunk in train_idx.chunks(cfg.batch_size.max(1)) {
            if cfg.max_steps.is_some_and(|m| steps >= m) {
                break;
            }
            let s = t
                .step(train, chunk, &mut opt_w, &mut opt_g)
                .map_err(|e| with_checkpoint_hint(e, cfg, epoch))?;
            if let Some(bar) = &bar {
                bar.set_message(format!(
                    "loss {:.4} E[MACs] {:.1}%",
                    s.data,
                    100.0 * s.expected_macs / t.cost.dense_macs
                ));
                bar.inc(1);
            }
            loss_sum += s.data;
            pen_sum += s.penalty;
            exp_macs = s.expected_macs;
            batches += 1;
            steps += 1;
        }
        // A step budget can end the epoch early: stop reading ahead.
        t.feed = None;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let accuracy = t.accuracy(train, &val_idx)?;
        let kept = t.kept_counts();
        let record = EpochRecord {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            penalty: pen_sum / batches.max(1) as f64,
            accuracy,
            expected_macs: exp_macs,
            deterministic_macs: t.deterministic_macs(&kept)?,
            open_gates: kept,
            lambda: t.lambda,
            seconds: start.elapsed().as_secs_f64(),
        };
        if !cfg.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4} penalty {:.4} val acc {:.4} E[MACs] {:.0} MACs {:.0} ({:.1}% of dense) lambda {:.3} [{:.1}s]",
                cfg.epochs,
                record.loss,
                record.penalty,
                record.accuracy,
                record.expected_macs,
                record.deterministic_macs,
                100.0 * record.deterministic_macs / t.cost.dense_macs,
                record.lambda,
                record.seconds
            );
        }
        history.push(record);
        if let Some(dir) = &cfg.checkpoint_dir {
            let state = checkpoint::State {
                method: cfg.method.name().to_string(),
                seed: cfg.seed,
                variant: t.method.variant(),
                epoch,
                steps,
                lambda: t.lambda,
                rng: t.rng.clone(),
                train_order: train_idx.clone(),
                history: history.clone(),
                tensors: Vec::new(),
                preprocessing: cfg.preprocessing.clone(),
                budget: (cfg.target_macs.is_some() || cfg.target_params.is_some())
                    .then(|| t.budget.clone()),
            };
            checkpoint::save(dir, state, &t.snapshot(), &opt_w, &opt_g)?;
        }
        if cfg.max_steps.is_some_and(|m| steps >= m) {
            break 'epochs;
        }
    }
    let gate_params = t.gate_values_host();
    Ok(TrainOutcome {
        dense_macs: t.cost.dense_macs,
        net: t.net,
        gate_params,
        history,
    })
}

/// An indicatif bar for one epoch, only when asked for and stderr is a terminal.
fn progress_bar(cfg: &TrainConfig, epoch: usize, steps: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !cfg.progress || cfg.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    let style =
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
            .ok()?;
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
    Some(bar)
}
