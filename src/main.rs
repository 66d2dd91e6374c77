//! Command-line front end: parse, call the library, map errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use compress::error::{Error, Result, exit_code};
use compress::prune::KeepPlan;
use compress::{data, eval, exec, onnx, report, verify};

/// The Fashion-MNIST subset shipped in the repository, used when --data is not given.
const DEFAULT_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/data/fashion-mnist-subset"
);

#[derive(Parser)]
#[command(
    name = "compress",
    version,
    about = "Make trained ONNX models physically smaller with L0 gates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune with gates, prune, export, verify and report (the main job; `compress MODEL
    /// --method M` is the same). Writes OUT.onnx, OUT.report.json and OUT.report.md.
    ///
    /// Example: compress models/lenet5/model.onnx --method dep-l0 --epochs 2 -o lenet5.pruned.onnx
    Run(Box<RunArgs>),
    /// Print every node (op, output shape, params, MACs), totals and prunable channel groups.
    ///
    /// Example: compress inspect models/lenet5/model.onnx --json
    Inspect {
        model: PathBuf,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Import and re-export a model; the output is checked in tract (and ONNX Runtime with the
    /// `ort` feature) before it is written.
    ///
    /// Example: compress convert models/lenet5/model.onnx -o /tmp/lenet5.onnx
    Convert {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Overwrite an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Remove channels by a keep plan; the result is verified in tract (and ONNX Runtime with
    /// the `ort` feature) before it is written.
    ///
    /// Examples:
    ///   compress prune fixtures/models/resnet18/model.onnx --random-keep 0.5 --seed 1 -o /tmp/r18.onnx
    ///   compress prune model.onnx --keep plan.json --round-to 8 -o small.onnx --report small.json
    ///
    /// A plan is JSON: {"groups": [{"id": 0, "keep": [0, 3, 5]}, ...]}; group ids are those of
    /// `compress inspect`, groups not listed keep all channels.
    #[command(verbatim_doc_comment)]
    Prune(PruneArgs),
    /// Check a run report against limits (and a baseline report): exit 0 when all hold, 1 when
    /// any fails (one line each), 2 when a report is unreadable.
    ///
    /// Example: compress check out.report.json --max-accuracy-drop 1 --min-macs-reduction 0.4
    Check {
        report: PathBuf,
        /// Compare with this earlier report of the same model and data.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Largest allowed accuracy loss, in percentage points.
        #[arg(long, value_name = "PTS")]
        max_accuracy_drop: Option<f64>,
        /// Smallest required MACs reduction versus dense, as a fraction (0.4 = 40% fewer).
        #[arg(long, value_name = "F")]
        min_macs_reduction: Option<f64>,
        /// Largest allowed batch-1 latency of the pruned model, in milliseconds.
        #[arg(long, value_name = "MS")]
        max_latency_ms: Option<f64>,
    },
    /// Print a shell completion script.
    ///
    /// Example: compress completions bash > /etc/bash_completion.d/compress
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Top-1 accuracy of a model on a labelled IDX dataset (MNIST / Fashion-MNIST layout).
    ///
    /// Example: compress eval models/lenet5/model.onnx --data /usr/share/datasets/fashion-mnist
    Eval {
        model: PathBuf,
        /// Directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; default: the shipped subset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Which split to evaluate.
        #[arg(long, value_parser = ["test", "train"], default_value = "test")]
        split: String,
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    model: PathBuf,
    /// l0-hc, l0-arm, l0-ar, dep-l0 or swp.
    #[arg(long, default_value = "dep-l0")]
    method: String,
    /// Dataset directory (IDX, CIFAR binary or image folder); default: the shipped subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output model; default MODEL.pruned.onnx beside the input.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rate of the weights (Adam).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning rate of the gate parameters (Adam).
    #[arg(long, default_value_t = 0.1)]
    gate_lr: f64,
    /// Weight of the expected-MACs penalty (lambda x E[MACs] / dense MACs); default 0.5 for
    /// dep-l0, 1 for the other methods.
    #[arg(long = "lambda")]
    lambda: Option<f64>,
    /// Fraction of the dense MACs to reach; lambda then adapts (dual ascent).
    #[arg(long, value_name = "F")]
    target_macs: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of the training split held out for per-epoch validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Stop after this many optimiser steps (all epochs when absent).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Round each kept width up to a multiple of N.
    #[arg(long, value_name = "N")]
    round_to: Option<usize>,
    /// SWP: tau = kappa x std(W) in the zeroing probability exp(-(|w|/tau)^2).
    #[arg(long, default_value_t = 0.05)]
    swp_kappa: f64,
    /// L2 weight decay of the weights (default: 5e-4 for swp, 0 otherwise).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Write a checkpoint after every epoch into this directory.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint in --checkpoint-dir (same method and seed).
    #[arg(long, requires = "checkpoint_dir")]
    resume: bool,
    /// cpu (always available); wgpu and cuda when compiled with those features.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Runs per latency median (0 skips latency measurement).
    #[arg(long, default_value_t = 10)]
    latency_runs: usize,
    /// Weights' optimiser: adam or sgd (gate parameters always use Adam).
    #[arg(long, default_value = "adam", value_parser = ["adam", "sgd"])]
    optimizer: String,
    /// SGD momentum (PyTorch convention: no dampening).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    nesterov: bool,
    /// Weights' learning-rate schedule: constant, cosine or step:M1,M2,...:GAMMA (epochs).
    #[arg(long, default_value = "constant")]
    schedule: String,
    /// What the gates are penalised for: macs (expected MACs) or l0 (METHODS' expected L0:
    /// lambda x P(open) x weights per gate / N).
    #[arg(long, default_value = "macs", value_parser = ["macs", "l0"])]
    penalty: String,
    /// Per-group lambdas for --penalty l0: JSON {"GROUP_ID or PRODUCER_NODE": lambda, ...}.
    #[arg(long, value_name = "FILE")]
    lambda_config: Option<PathBuf>,
    /// Weight of a distillation term from the dense model (T^2 x KL on softened logits).
    #[arg(long, default_value_t = 0.0)]
    distill_weight: f64,
    /// Temperature of the distillation term.
    #[arg(long, default_value_t = 4.0)]
    distill_temperature: f64,
    /// Random crop (pad 4) and horizontal flip of training images: default on for CIFAR data.
    #[arg(long, overrides_with = "no_augment")]
    augment: bool,
    #[arg(long)]
    no_augment: bool,
    /// Also gate channel groups tied by residual adds (off: as in the reference code).
    #[arg(long)]
    gate_residual: bool,
    /// Dep-L0 generator direction: forward (first gated layer to last) or backward (last to
    /// first, its outputs reversed).
    #[arg(long, default_value = "forward", value_parser = ["forward", "backward"])]
    dep_chain: String,
    /// Dep-L0 generator input width n0 (its input is a vector of n0 ones).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    dep_n0: u64,
    /// Print the groups, gate count, starting penalty and estimated run time; train nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run several settings and write one report with the accuracy-vs-MACs Pareto front:
    /// lambda=A,B,... or target-macs=A,B,...
    #[arg(long, value_name = "SETTING=V1,V2")]
    sweep: Option<String>,
    /// Errors only.
    #[arg(long)]
    quiet: bool,
    /// Print the report as JSON on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct PruneArgs {
    model: PathBuf,
    /// Keep plan (JSON).
    #[arg(
        long,
        conflicts_with = "random_keep",
        required_unless_present = "random_keep"
    )]
    keep: Option<PathBuf>,
    /// Keep this fraction (0 < F <= 1) of every prunable group, chosen at random.
    #[arg(long, value_name = "F")]
    random_keep: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Round each group's kept width up to a multiple of N (never above the original).
    #[arg(long, value_name = "N")]
    round_to: Option<usize>,
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Runs per latency median (0 skips latency measurement).
    #[arg(long, default_value_t = 10)]
    latency_runs: usize,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    // Commands that write verified models refuse up front, not after the work, when a
    // verifying runtime cannot be loaded.
    if matches!(
        cli.command,
        Command::Convert { .. } | Command::Prune(_) | Command::Run(_)
    ) {
        verify::check_runtimes()?;
    }
    match cli.command {
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Convert {
            model,
            output,
            force,
        } => convert(&model, &output, force),
        Command::Prune(args) => prune(args),
        Command::Run(args) => run_job(*args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "compress",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Check {
            report,
            baseline,
            max_accuracy_drop,
            min_macs_reduction,
            max_latency_ms,
        } => {
            let opts = report::check::CheckOptions {
                max_accuracy_drop,
                min_macs_reduction,
                max_latency_ms,
            };
            check(&report, baseline.as_deref(), &opts)
        }
        Command::Eval {
            model,
            data,
            split,
            batch_size,
            json,
        } => eval(&model, data, &split, batch_size, json),
    }
}

fn inspect(model: &Path, json: bool) -> Result<()> {
    let graph = onnx::import_file(model)?;
    let r = report::inspect(&graph)?;
    if json {
        print_json(&r)
    } else {
        print!("{}", report::render_inspection(&r));
        Ok(())
    }
}

fn convert(model: &Path, output: &Path, force: bool) -> Result<()> {
    let original = std::fs::read(model).map_err(|e| Error::io(model, e))?;
    let graph = onnx::import_bytes(&original, &model.display().to_string())?;
    let mut exported = graph.clone();
    inject_fault(&mut exported);
    let bytes = onnx::export(&exported);
    let cmp = verify::verify_export(&graph, &original, &bytes, 2, 1e-5)?;
    compress::fsutil::write_atomic(output, &bytes, force)?;
    println!(
        "wrote {} ({} bytes); vs original: {}",
        output.display(),
        bytes.len(),
        cmp.summary()
    );
    Ok(())
}

/// Test hook for the verification gate: with COMPRESS_INJECT_FAULT=1 the graph about to be
/// exported gets one weight changed, so verification must fail with exit code 3.
fn inject_fault(graph: &mut compress::ir::Graph) {
    if std::env::var_os("COMPRESS_INJECT_FAULT").is_some_and(|v| v == "1")
        && let Some(t) = graph
            .initializers
            .values_mut()
            .find(|t| t.as_f32().is_some_and(|v| !v.is_empty()))
        && let compress::ir::Data::F32(v) = &mut t.data
    {
        v[0] += 1.0;
    }
}

fn keep_plan(args: &PruneArgs, graph: &compress::ir::Graph) -> Result<KeepPlan> {
    match (&args.keep, args.random_keep) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            serde_json::from_str(&text).map_err(|e| Error::Data {
                path: path.display().to_string(),
                reason: format!("not a keep plan ({e}); expected {{\"groups\": [{{\"id\": 0, \"keep\": [0, 2]}}]}}"),
            })
        }
        (None, Some(f)) if f > 0.0 && f <= 1.0 => Ok(compress::prune::plan::random(
            &compress::groups::analyse(graph)?,
            f,
            args.seed,
        )),
        (None, Some(f)) => Err(Error::Usage(format!(
            "--random-keep {f}: expected a fraction in (0, 1]"
        ))),
        (None, None) => Err(Error::Usage(
            "give --keep PLAN.json or --random-keep F".into(),
        )),
    }
}

fn prune(args: PruneArgs) -> Result<()> {
    let original = std::fs::read(&args.model).map_err(|e| Error::io(&args.model, e))?;
    let graph = onnx::import_bytes(&original, &args.model.display().to_string())?;
    let plan = keep_plan(&args, &graph)?;
    if args.round_to == Some(0) {
        return Err(Error::Usage("--round-to must be at least 1".into()));
    }
    // Refuse before doing any work rather than after.
    for path in std::iter::once(&args.output).chain(args.report.iter()) {
        compress::fsutil::check_writable(path, args.force)?;
    }
    let mut pruned = compress::prune::prune(&graph, &plan, args.round_to)?;
    inject_fault(&mut pruned.graph);
    let bytes = onnx::export(&pruned.graph);
    let reference = onnx::export(&pruned.reference);
    let verification = verify::verify_export(&graph, &reference, &bytes, 2, 1e-4)?;
    compress::fsutil::write_atomic(&args.output, &bytes, args.force)?;
    let r = report::prune::prune_report(report::prune::ReportInput {
        model: &args.model.display().to_string(),
        output: &args.output.display().to_string(),
        original: &graph,
        original_bytes: &original,
        pruned: &pruned,
        pruned_bytes: &bytes,
        verification,
        latency_runs: args.latency_runs,
    })?;
    let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(path) = &args.report {
        compress::fsutil::write_atomic(path, text.as_bytes(), args.force)?;
    }
    if args.json {
        println!("{text}");
    } else {
        print!("{}", report::prune::render(&r));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Data {
        path: path.display().to_string(),
        reason: format!("not JSON ({e})"),
    })
}

fn check(
    report_path: &Path,
    baseline: Option<&Path>,
    opts: &report::check::CheckOptions,
) -> Result<()> {
    let report = read_json(report_path)?;
    let base = baseline
        .map(|b| read_json(b).map(|v| (v, b.display().to_string())))
        .transpose()?;
    let name = report_path.display().to_string();
    let failures = report::check::check(
        &report,
        &name,
        base.as_ref().map(|(v, n)| (v, n.as_str())),
        opts,
    )?;
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

fn device(name: &str) -> Result<burn::prelude::Device> {
    match name {
        "cpu" => Ok(exec::default_device()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(burn::prelude::Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(burn::prelude::Device::cuda(0)),
        other => Err(Error::Usage(format!(
            "--device {other}: not available in this build (compiled: cpu{}{})",
            if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
            if cfg!(feature = "cuda") { ", cuda" } else { "" }
        ))),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Files one run writes, derived from its model output path.
struct RunOutputs {
    model: PathBuf,
    json: PathBuf,
    md: PathBuf,
    svg: PathBuf,
}

impl RunOutputs {
    fn new(model: PathBuf) -> Self {
        RunOutputs {
            json: sibling(&model, ".report.json"),
            md: sibling(&model, ".report.md"),
            svg: sibling(&model, ".svg"),
            model,
        }
    }

    fn all(&self) -> [&PathBuf; 4] {
        [&self.model, &self.json, &self.md, &self.svg]
    }
}

fn train_config(a: &RunArgs, method: compress::train::Method) -> compress::train::TrainConfig {
    use compress::train::{Method, TrainConfig};
    let mut cfg = TrainConfig::new(method);
    cfg.epochs = a.epochs;
    cfg.batch_size = a.batch_size;
    cfg.lr = a.lr;
    cfg.gate_lr = a.gate_lr;
    cfg.lambda = a
        .lambda
        .unwrap_or(if method == Method::DepL0 { 0.5 } else { 1.0 });
    cfg.target_macs = a.target_macs;
    cfg.seed = a.seed;
    cfg.max_steps = a.max_steps;
    cfg.swp_kappa = a.swp_kappa;
    cfg.weight_decay = a
        .weight_decay
        .unwrap_or(if method == Method::Swp { 5e-4 } else { 0.0 });
    cfg.checkpoint_dir = a.checkpoint_dir.clone();
    cfg.resume = a.resume;
    cfg.quiet = a.quiet || a.json;
    cfg.progress = true;
    cfg.gate_residual = a.gate_residual;
    cfg.dep_backward = a.dep_chain == "backward";
    cfg.dep_n0 = a.dep_n0 as usize;
    cfg.optimizer = if a.optimizer == "sgd" {
        compress::train::Optimizer::Sgd {
            momentum: a.momentum,
            nesterov: a.nesterov,
        }
    } else {
        compress::train::Optimizer::Adam
    };
    cfg.distill_weight = a.distill_weight;
    cfg.distill_temperature = a.distill_temperature;
    cfg
}

/// Settings that need the model or the data: the schedule, per-group lambdas, augmentation.
fn finish_config(a: &RunArgs, job: &Job, cfg: &mut compress::train::TrainConfig) -> Result<()> {
    cfg.schedule = compress::train::Schedule::parse(&a.schedule).ok_or_else(|| {
        Error::Usage(format!(
            "--schedule {}: expected constant, cosine or step:M1,M2:GAMMA",
            a.schedule
        ))
    })?;
    if a.penalty == "l0" {
        let mut group_lambda = std::collections::BTreeMap::new();
        if let Some(path) = &a.lambda_config {
            let v = read_json(path)?;
            let groups = compress::groups::analyse(&job.graph)?;
            let obj = v.as_object().ok_or_else(|| Error::Data {
                path: path.display().to_string(),
                reason: "expected a JSON object {group: lambda}".into(),
            })?;
            for (key, value) in obj {
                let lambda = value.as_f64().ok_or_else(|| Error::Data {
                    path: path.display().to_string(),
                    reason: format!("'{key}': lambda must be a number"),
                })?;
                let id = key
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < groups.len())
                    .or_else(|| {
                        groups
                            .iter()
                            .find(|g| g.producers.iter().any(|p| p == key))
                            .map(|g| g.id)
                    });
                let id = id.ok_or_else(|| Error::Data {
                    path: path.display().to_string(),
                    reason: format!(
                        "'{key}' is neither a group id nor a producer node (see compress inspect)"
                    ),
                })?;
                group_lambda.insert(id, lambda);
            }
        }
        cfg.penalty = compress::train::Penalty::L0 { group_lambda };
    } else if a.lambda_config.is_some() {
        return Err(Error::Usage(
            "--lambda-config applies to --penalty l0".into(),
        ));
    }
    let cifar = a
        .data
        .as_ref()
        .is_some_and(|d| matches!(compress::data::detect(d), Ok(compress::data::Format::Cifar)));
    if (a.augment || cifar) && !a.no_augment {
        cfg.augment = Some(compress::data::transform::Augment::CIFAR);
    }
    Ok(())
}

/// Everything a run needs that does not depend on its settings.
struct Job {
    graph: compress::ir::Graph,
    original: Vec<u8>,
    train: compress::data::Dataset,
    test: compress::data::Dataset,
    data_name: String,
    dense: compress::eval::Accuracy,
    dense_eval_s: f64,
    device: burn::prelude::Device,
}

fn prepare(a: &RunArgs) -> Result<Job> {
    let device = device(&a.device)?;
    let original = std::fs::read(&a.model).map_err(|e| Error::io(&a.model, e))?;
    let graph = onnx::import_bytes(&original, &a.model.display().to_string())?;
    let data_dir = a
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let data_name = data_dir.display().to_string();
    if a.data.is_none() && !a.quiet && !a.json {
        eprintln!("no --data given: using the shipped Fashion-MNIST subset ({data_name})");
    }
    let (train, test) = compress::pipeline::load_data(&data_dir, &graph)?;
    let t0 = std::time::Instant::now();
    let dense = compress::pipeline::evaluate(&graph, &test, &data_name, &device)?;
    let dense_eval_s = t0.elapsed().as_secs_f64();
    if !a.quiet && !a.json {
        eprintln!(
            "dense: accuracy {:.4} on {} test samples",
            dense.accuracy, dense.samples
        );
    }
    Ok(Job {
        graph,
        original,
        train,
        test,
        data_name,
        dense,
        dense_eval_s,
        device,
    })
}

/// One fine-tune -> prune -> verify -> evaluate run; returns the report and the model bytes.
fn run_once(
    a: &RunArgs,
    job: &Job,
    cfg: &compress::train::TrainConfig,
    output: &Path,
) -> Result<(report::run::RunReport, Vec<u8>)> {
    use compress::pipeline;
    let start = std::time::Instant::now();
    let t1 = std::time::Instant::now();
    let outcome = pipeline::train(&job.graph, &job.train, a.val_fraction, cfg, &job.device)?;
    let train_s = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let compressed = pipeline::compress_trained(&outcome, cfg, a.round_to)?;
    let prune_verify_s = t2.elapsed().as_secs_f64();
    let t3 = std::time::Instant::now();
    let pruned_acc = pipeline::evaluate(&compressed.graph, &job.test, &job.data_name, &job.device)?;
    let pruned_eval_s = t3.elapsed().as_secs_f64();
    let t4 = std::time::Instant::now();
    let mut pruned_for_report = compressed.pruned.clone();
    pruned_for_report.graph = compressed.graph.clone();
    let prune_report = report::prune::prune_report(report::prune::ReportInput {
        model: &a.model.display().to_string(),
        output: &output.display().to_string(),
        original: &job.graph,
        original_bytes: &job.original,
        pruned: &pruned_for_report,
        pruned_bytes: &compressed.bytes,
        verification: compressed.verification.clone(),
        latency_runs: a.latency_runs,
    })?;
    let latency_s = t4.elapsed().as_secs_f64();
    let settings = serde_json::json!({
        "method": cfg.method.name(), "data": job.data_name, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "gate_lr": cfg.gate_lr, "lambda": cfg.lambda,
        "target_macs": cfg.target_macs, "seed": cfg.seed, "val_fraction": a.val_fraction,
        "max_steps": cfg.max_steps, "round_to": a.round_to, "device": a.device,
        "latency_runs": a.latency_runs, "init_logit": cfg.init_logit, "arm_k": cfg.arm_k,
        "swp_kappa": cfg.swp_kappa, "weight_decay": cfg.weight_decay,
        "checkpoint_dir": cfg.checkpoint_dir, "resume": cfg.resume,
        "optimizer": cfg.optimizer, "schedule": cfg.schedule, "penalty": cfg.penalty,
        "distill_weight": cfg.distill_weight, "distill_temperature": cfg.distill_temperature,
        "augment": cfg.augment.is_some(), "gate_residual": cfg.gate_residual,
        "dep_chain": a.dep_chain, "dep_n0": cfg.dep_n0,
    });
    let timings = compress::pipeline::Timings {
        dense_eval_s: job.dense_eval_s,
        train_s,
        prune_verify_s,
        pruned_eval_s,
        latency_s,
        total_s: start.elapsed().as_secs_f64() + job.dense_eval_s,
    };
    let r = report::run::run_report(report::run::RunInput {
        prune: prune_report,
        method: cfg.method.name().to_string(),
        settings,
        dense_accuracy: job.dense.clone(),
        pruned_accuracy: pruned_acc,
        history: outcome.history.clone(),
        timings,
    });
    Ok((r, compressed.bytes))
}

fn write_run(
    out: &RunOutputs,
    r: &report::run::RunReport,
    bytes: &[u8],
    force: bool,
) -> Result<String> {
    let text = serde_json::to_string_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
    compress::fsutil::write_atomic(&out.model, bytes, force)?;
    compress::fsutil::write_atomic(&out.json, text.as_bytes(), force)?;
    compress::fsutil::write_atomic(&out.md, report::run::render(r).as_bytes(), force)?;
    let value = serde_json::to_value(r).map_err(|e| Error::Internal(e.to_string()))?;
    compress::fsutil::write_atomic(&out.svg, report::plot::svg(&value).as_bytes(), force)?;
    Ok(text)
}

/// `--sweep lambda=a,b,c` or `--sweep target-macs=a,b`: the setting name and its values.
fn parse_sweep(spec: &str) -> Result<(String, Vec<f64>)> {
    let bad = || {
        Error::Usage(format!(
            "--sweep {spec}: expected lambda=A,B,... or target-macs=A,B,..."
        ))
    };
    let (name, values) = spec.split_once('=').ok_or_else(bad)?;
    if name != "lambda" && name != "target-macs" {
        return Err(bad());
    }
    let values: Vec<f64> = values
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if values.is_empty() || values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(bad());
    }
    Ok((name.to_string(), values))
}

fn run_job(a: RunArgs) -> Result<()> {
    use compress::train::Method;
    let method = Method::parse(&a.method).ok_or_else(|| {
        Error::Usage(format!(
            "--method {}: expected l0-hc, l0-arm, l0-ar, dep-l0 or swp",
            a.method
        ))
    })?;
    if let Some(t) = a.target_macs.filter(|t| !(*t > 0.0 && *t <= 1.0)) {
        return Err(Error::Usage(format!(
            "--target-macs {t}: expected a fraction in (0, 1]"
        )));
    }
    let sweep = a.sweep.as_deref().map(parse_sweep).transpose()?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| sibling(&a.model, ".pruned.onnx"));
    let mut base = train_config(&a, method);
    let runs: Vec<(String, compress::train::TrainConfig, RunOutputs)> = match &sweep {
        None => vec![(String::new(), base.clone(), RunOutputs::new(output.clone()))],
        Some((name, values)) => values
            .iter()
            .map(|&v| {
                let mut cfg = base.clone();
                if name == "lambda" {
                    cfg.lambda = v;
                } else {
                    cfg.target_macs = Some(v);
                }
                let label = format!("{name}={v}");
                (
                    label,
                    cfg,
                    RunOutputs::new(sibling(&output, &format!(".{name}-{v}.onnx"))),
                )
            })
            .collect(),
    };
    let sweep_files = sweep.as_ref().map(|_| {
        (
            sibling(&output, ".sweep.json"),
            sibling(&output, ".sweep.svg"),
        )
    });
    if !a.dry_run {
        let extra: Vec<&PathBuf> = sweep_files.iter().flat_map(|(j, s)| [j, s]).collect();
        for path in runs.iter().flat_map(|r| r.2.all()).chain(extra) {
            compress::fsutil::check_writable(path, a.force)?;
        }
    }
    let job = prepare(&a)?;
    finish_config(&a, &job, &mut base)?;
    let runs: Vec<(String, compress::train::TrainConfig, RunOutputs)> = runs
        .into_iter()
        .map(|(label, mut cfg, out)| {
            cfg.schedule = base.schedule.clone();
            cfg.penalty = base.penalty.clone();
            cfg.augment = base.augment;
            (label, cfg, out)
        })
        .collect();
    if a.dry_run {
        return dry_run(&a, &job, &base, runs.len());
    }
    let mut reports = Vec::new();
    for (label, cfg, out) in &runs {
        if !label.is_empty() && !a.quiet && !a.json {
            eprintln!("sweep: {label}");
        }
        let (r, bytes) = run_once(&a, &job, cfg, &out.model)?;
        let text = write_run(out, &r, &bytes, a.force)?;
        if sweep.is_none() {
            if a.json {
                println!("{text}");
            } else if !a.quiet {
                print!("{}", report::run::render(&r));
                let [m, j, d, s] = out.all();
                println!(
                    "wrote {}, {}, {}, {}",
                    m.display(),
                    j.display(),
                    d.display(),
                    s.display()
                );
            }
        }
        reports.push((label.clone(), r));
    }
    if let Some((json_path, svg_path)) = sweep_files {
        let points: Vec<(String, f64, f64)> = reports
            .iter()
            .map(|(l, r)| (l.clone(), r.pruned.macs as f64, r.pruned.accuracy))
            .collect();
        let front = report::plot::pareto_front(&points);
        let doc = serde_json::json!({
            "schema_version": report::run::SCHEMA_VERSION,
            "model": a.model.display().to_string(),
            "sweep": a.sweep,
            "dense": {"accuracy": job.dense.accuracy, "macs": reports[0].1.dense.macs},
            "pareto_front": front.iter().map(|&i| points[i].0.clone()).collect::<Vec<_>>(),
            "runs": reports.iter().map(|(l, r)| serde_json::json!({"label": l, "report": r})).collect::<Vec<_>>(),
        });
        let text =
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        compress::fsutil::write_atomic(&json_path, text.as_bytes(), a.force)?;
        let svg = report::plot::pareto_svg(
            &points,
            (reports[0].1.dense.macs as f64, job.dense.accuracy),
        );
        compress::fsutil::write_atomic(&svg_path, svg.as_bytes(), a.force)?;
        if a.json {
            println!("{text}");
        } else if !a.quiet {
            for (l, r) in &reports {
                let on = if front.iter().any(|&i| points[i].0 == *l) {
                    "  (Pareto front)"
                } else {
                    ""
                };
                println!(
                    "{l}: accuracy {:.4}, MACs {} ({:.1}% of dense){on}",
                    r.pruned.accuracy,
                    r.pruned.macs,
                    100.0 * r.macs_ratio
                );
            }
            println!("wrote {}, {}", json_path.display(), svg_path.display());
        }
    }
    Ok(())
}

/// Prints what a run would do and an estimate of its duration, from a few timed steps.
fn dry_run(a: &RunArgs, job: &Job, cfg: &compress::train::TrainConfig, runs: usize) -> Result<()> {
    let layouts = compress::groups::analyse_layouts(&job.graph)?;
    let ids = compress::train::gated_groups(&job.graph, &layouts, cfg);
    let gated: Vec<&compress::groups::ChannelGroup> = layouts
        .groups
        .iter()
        .filter(|g| ids.contains(&g.id))
        .collect();
    let gates: usize = gated.iter().map(|g| g.width).sum();
    // Two probes of 2 and 6 steps: their difference is the cost of 4 steps without set-up and
    // validation.
    let time = |steps: usize| -> Result<(f64, compress::train::TrainOutcome)> {
        let mut probe = cfg.clone();
        probe.epochs = 1;
        probe.max_steps = Some(steps);
        probe.quiet = true;
        probe.checkpoint_dir = None;
        probe.resume = false;
        let start = std::time::Instant::now();
        let outcome =
            compress::pipeline::train(&job.graph, &job.train, a.val_fraction, &probe, &job.device)?;
        Ok((start.elapsed().as_secs_f64(), outcome))
    };
    let (short_s, outcome) = time(2)?;
    let (long_s, _) = time(6)?;
    let step_s = ((long_s - short_s) / 4.0).max(1e-3);
    let fixed_s = (short_s - 2.0 * step_s).max(0.0);
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

fn eval(
    model: &Path,
    data: Option<PathBuf>,
    split: &str,
    batch_size: usize,
    json: bool,
) -> Result<()> {
    let graph = onnx::import_file(model)?;
    let dir = data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let split = if split == "train" {
        data::Split::Train
    } else {
        data::Split::Test
    };
    let dataset = data::idx::load(&dir, split)?;
    let net = exec::Network::new(&graph, &exec::default_device())?;
    let acc = eval::accuracy(&net, &dataset, &dir.display().to_string(), batch_size)?;
    if json {
        print_json(&acc)
    } else {
        println!(
            "{}: accuracy {:.4} ({} / {} correct) on {}",
            model.display(),
            acc.accuracy,
            acc.correct,
            acc.samples,
            dir.display()
        );
        Ok(())
    }
}

/// `compress MODEL.onnx --method M ...` is `compress run MODEL.onnx --method M ...`.
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const SUBCOMMANDS: &[&str] = &[
        "run",
        "inspect",
        "convert",
        "prune",
        "eval",
        "check",
        "completions",
        "help",
    ];
    if let Some(first) = args.get(1).map(|a| a.to_string_lossy().to_string())
        && !first.starts_with('-')
        && !SUBCOMMANDS.contains(&first.as_str())
    {
        args.insert(1, "run".into());
    }
    args
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(with_default_subcommand(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit_code::BAD_INPUT
            } else {
                exit_code::OK
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
