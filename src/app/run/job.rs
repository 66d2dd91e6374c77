//! One run: what it shares with the other runs of a sweep ([`Job`]), the fine-tune -> prune
//! -> verify -> evaluate chain ([`run_once`]) and the files it writes ([`RunOutputs`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::args::RunArgs;
use crate::app::options::burn_device;
use crate::app::sibling;
use crate::app::tokens::is_token_data;
use crate::data::preprocess::{Preprocessing, Request, Source};
use crate::data::{Dataset, ExampleSet};
use crate::error::{Error, Result};
use crate::eval::Accuracy;
use crate::ir::Graph;
use crate::pipeline::{self, Timings};
use crate::report::prune::{ReportInput, prune_report};
use crate::report::run::{FinetunePhase, RunInput, RunReport, render, run_report};
use crate::report::settings::{RunOptions, Settings};
use crate::train::TrainConfig;
use crate::verify::sizes::ExportDims;
use crate::{fsutil, report, verify};

/// Everything a run needs that does not depend on its settings.
pub struct Job {
    pub graph: Graph,
    pub original: Vec<u8>,
    pub train: ExampleSet,
    pub test: ExampleSet,
    pub data_name: String,
    pub dense: Accuracy,
    pub dense_eval_s: f64,
    pub device: burn::prelude::Device,
    /// How the data was prepared; recorded in the report and the written models' metadata
    /// unless it is the format default that changes nothing.
    pub preprocessing: Preprocessing,
    /// How exports write the model's dims (`--input-shape`).
    pub dims: ExportDims,
}

/// Reads the model and the data (prepared as `request` asks) and evaluates the dense model.
pub fn prepare(a: &RunArgs, request: &Request) -> Result<Job> {
    if let Some(tokens) = a.data.as_deref().filter(|d| is_token_data(Some(d))) {
        return prepare_tokens(a, request, tokens);
    }
    let device = burn_device(a.device)?;
    let original = crate::onnx::read_model(&a.model)?;
    let source = a.model.display().to_string();
    let (mut graph, dims) = if a.dry_run {
        (
            a.shapes.import(&original, &source)?.graph,
            ExportDims::AsImported,
        )
    } else {
        a.shapes.import_for_export(&original, &source)?
    };
    let data_dir = a
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::app::DEFAULT_DATA));
    let data_name = data_dir.display().to_string();
    if a.data.is_none() && a.chatty() {
        eprintln!("no --data given: using the shipped Fashion-MNIST subset ({data_name})");
    }
    let pipeline::Prepared {
        train,
        test,
        preprocessing,
    } = pipeline::load_data_with(&data_dir, &graph, request)?;
    check_labels(&graph, &train, &data_name, "train")?;
    check_labels(&graph, &test, &data_name, "test")?;
    // The pruned models inherit the graph's metadata: they say how to prepare their inputs.
    if !preprocessing.is_plain_default() {
        preprocessing.write_metadata(&mut graph.meta.metadata_props);
    }
    let t0 = Instant::now();
    let dense = pipeline::evaluate(&graph, &test, &data_name, &device)?;
    let dense_eval_s = t0.elapsed().as_secs_f64();
    if a.chatty() {
        eprintln!(
            "dense: accuracy {:.4} on {} test samples",
            dense.accuracy, dense.samples
        );
    }
    Ok(Job {
        graph,
        original,
        train: ExampleSet::Images(train),
        test: ExampleSet::Images(test),
        data_name,
        dense,
        dense_eval_s,
        device,
        preprocessing,
        dims,
    })
}

/// [`prepare`] for token data (`--data FILE.jsonl` or a directory of `.jsonl` splits): the model
/// imported at the data's sequence length, its labels and ids checked against the model.
fn prepare_tokens(a: &RunArgs, request: &Request, data: &Path) -> Result<Job> {
    if *request != Request::default() {
        return Err(Error::Usage(format!(
            "{}: token data is not images; --normalize, --mean, --std and --resize do not apply",
            data.display()
        )));
    }
    if a.augment {
        return Err(Error::Usage(format!(
            "{}: token data is not images; --augment does not apply",
            data.display()
        )));
    }
    let device = burn_device(a.device)?;
    let run = crate::app::tokens::prepare_run(&a.model, &a.shapes, data, a.seq_len)?;
    let data_name = data.display().to_string();
    let test = ExampleSet::Tokens(run.test);
    let t0 = Instant::now();
    let dense = pipeline::evaluate_on(&run.graph, test.examples(), &data_name, &device)?;
    let dense_eval_s = t0.elapsed().as_secs_f64();
    if a.chatty() {
        eprintln!(
            "dense: accuracy {:.4} on {} test sequences of {} tokens",
            dense.accuracy, dense.samples, run.train.seq_len
        );
    }
    Ok(Job {
        graph: run.graph,
        original: run.original,
        train: ExampleSet::Tokens(run.train),
        test,
        data_name,
        dense,
        dense_eval_s,
        device,
        // Token data has no preprocessing: record nothing.
        preprocessing: Preprocessing {
            mean: vec![0.0],
            std: vec![1.0],
            source: Source::FormatDefault,
            resize: None,
        },
        dims: if a.dry_run {
            ExportDims::AsImported
        } else {
            run.dims
        },
    })
}

/// Refuses a label the model has no output for: the loss would index past the logits.
fn check_labels(graph: &Graph, data: &Dataset, dir: &str, split: &str) -> Result<()> {
    let Some(classes) = graph
        .outputs
        .first()
        .map(|o| o.shape(1))
        .filter(|s| s.len() == 2)
        .map(|s| s[1])
        .filter(|&c| c > 0)
    else {
        return Ok(());
    };
    match data.labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(crate::error::Error::Data {
            path: format!("{dir} ({split} split)"),
            reason: format!(
                "sample {i} has label {}, but the model has {classes} outputs (labels 0..{})",
                data.labels[i],
                classes - 1
            ),
        }),
        None => Ok(()),
    }
}

/// One fine-tune -> prune -> verify -> evaluate run; returns the report and the model bytes.
pub fn run_once(
    a: &RunArgs,
    job: &Job,
    cfg: &TrainConfig,
    output: &Path,
) -> Result<(RunReport, Vec<u8>)> {
    crate::train::finetune::check_resume(cfg)?;
    let start = Instant::now();
    let t1 = Instant::now();
    let outcome = pipeline::train(&job.graph, &job.train, a.val_fraction, cfg, &job.device)?;
    let train_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let compressed = pipeline::compress_trained_with(&outcome, cfg, a.round_to, &job.dims)?;
    if a.chatty() {
        crate::app::input_shape::print_notes(&compressed.notes);
    }
    let prune_verify_s = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let pruned_acc = pipeline::evaluate_on(
        &compressed.graph,
        job.test.examples(),
        &job.data_name,
        &job.device,
    )?;
    let pruned_eval_s = t3.elapsed().as_secs_f64();
    let (compressed, pruned_acc, finetune) = finetune_phase(a, job, cfg, compressed, pruned_acc)?;
    let t4 = Instant::now();
    let mut pruned_for_report = compressed.pruned.clone();
    pruned_for_report.graph = compressed.graph.clone();
    pruned_for_report
        .notes
        .extend(compressed.notes.iter().cloned());
    let latency = verify::latency::before_after(
        &job.graph,
        &job.original,
        &compressed.bytes,
        a.latency_runs,
    )?;
    let prune_report = prune_report(ReportInput {
        model: &a.model.display().to_string(),
        output: &output.display().to_string(),
        original: &job.graph,
        original_bytes: &job.original,
        pruned: &pruned_for_report,
        pruned_bytes: &compressed.bytes,
        verification: compressed.verification.clone(),
        latency,
    })?;
    let latency_s = t4.elapsed().as_secs_f64();
    let settings = Settings::new(
        cfg,
        &RunOptions {
            data: job.data_name.clone(),
            val_fraction: a.val_fraction,
            round_to: a.round_to,
            device: a.device,
            latency_runs: a.latency_runs,
            preprocessing: Some(job.preprocessing.clone()).filter(|p| !p.is_plain_default()),
            input_shape: a.shapes.input_shape.clone(),
        },
    );
    let timings = Timings {
        dense_eval_s: job.dense_eval_s,
        train_s,
        prune_verify_s,
        pruned_eval_s,
        latency_s,
        total_s: start.elapsed().as_secs_f64() + job.dense_eval_s,
    };
    let mut r = run_report(RunInput {
        prune: prune_report,
        method: cfg.method.name().to_string(),
        settings,
        dense_accuracy: job.dense.clone(),
        pruned_accuracy: pruned_acc,
        history: outcome.history.clone(),
        timings,
        finetune,
    });
    r.budgets = compressed.budgets.clone();
    Ok((r, compressed.bytes))
}

/// With `--finetune-epochs N` > 0: trains the pruned model on, and returns it (exported and
/// verified against burn) in place of `compressed`, its test accuracy and the phase's record.
fn finetune_phase(
    a: &RunArgs,
    job: &Job,
    cfg: &TrainConfig,
    mut compressed: pipeline::Compressed,
    before: Accuracy,
) -> Result<(pipeline::Compressed, Accuracy, Option<FinetunePhase>)> {
    if cfg.finetune_epochs == 0 {
        return Ok((compressed, before, None));
    }
    let done = crate::train::finetune::finetune(
        &compressed.graph,
        &job.graph,
        &job.train,
        a.val_fraction,
        cfg,
        &job.dims,
        &job.device,
    )?;
    let after = pipeline::evaluate_on(
        &done.graph,
        job.test.examples(),
        &job.data_name,
        &job.device,
    )?;
    if a.chatty() {
        eprintln!(
            "fine-tune phase: accuracy {:.4} -> {:.4}",
            before.accuracy, after.accuracy
        );
    }
    let phase = FinetunePhase {
        epochs: cfg.finetune_epochs,
        accuracy_before: before.accuracy,
        accuracy_after: after.accuracy,
        seconds: done.seconds,
        history: done.history,
    };
    compressed.graph = done.graph;
    compressed.bytes = done.bytes;
    compressed.verification = done.verification;
    // Keep the first export's notes (e.g. the budget's) and add the fine-tuned export's new ones.
    for n in done.notes {
        if !compressed.notes.contains(&n) {
            compressed.notes.push(n);
        }
    }
    Ok((compressed, after, Some(phase)))
}

/// Files one run writes, derived from its model output path.
pub struct RunOutputs {
    pub model: PathBuf,
    pub json: PathBuf,
    pub md: PathBuf,
    pub svg: PathBuf,
}

impl RunOutputs {
    pub fn new(model: PathBuf) -> Self {
        RunOutputs {
            json: sibling(&model, ".report.json"),
            md: sibling(&model, ".report.md"),
            svg: sibling(&model, ".svg"),
            model,
        }
    }

    pub fn all(&self) -> [&PathBuf; 4] {
        [&self.model, &self.json, &self.md, &self.svg]
    }

    /// Writes the model, the JSON and Markdown reports and the plot; returns the JSON text.
    pub fn write(
        &self,
        r: &RunReport,
        bytes: &[u8],
        out: &crate::app::model_output::ModelOutputArgs,
        force: bool,
    ) -> Result<String> {
        let text = crate::app::to_json(r)?;
        out.write(&self.model, bytes, force)?;
        fsutil::write_atomic(&self.json, text.as_bytes(), force)?;
        fsutil::write_atomic(&self.md, render(r).as_bytes(), force)?;
        fsutil::write_atomic(&self.svg, report::plot::svg(r)?.as_bytes(), force)?;
        Ok(text)
    }
}
