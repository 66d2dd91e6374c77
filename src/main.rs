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
    Run(RunArgs),
    /// Print every node (op, output shape, params, MACs), totals and prunable channel groups.
    ///
    /// Example: compress inspect models/lenet5/model.onnx --json
    Inspect {
        model: PathBuf,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Import and re-export a model; the output is checked in tract before it is written.
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
    /// Remove channels by a keep plan; the result is verified in tract before it is written.
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
    match cli.command {
        Command::Inspect { model, json } => inspect(&model, json),
        Command::Convert {
            model,
            output,
            force,
        } => convert(&model, &output, force),
        Command::Prune(args) => prune(args),
        Command::Run(args) => run_job(args),
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
    let cmp = verify::compare_in_tract(&graph, &original, &bytes, 2, 1e-5)?;
    compress::fsutil::write_atomic(output, &bytes, force)?;
    println!(
        "wrote {} ({} bytes); tract max abs difference vs original: {:e}",
        output.display(),
        bytes.len(),
        cmp.max_abs_diff
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
        if path.exists() && !args.force {
            return Err(Error::Usage(format!(
                "{} already exists (pass --force to overwrite)",
                path.display()
            )));
        }
    }
    let mut pruned = compress::prune::prune(&graph, &plan, args.round_to)?;
    inject_fault(&mut pruned.graph);
    let bytes = onnx::export(&pruned.graph);
    let reference = onnx::export(&pruned.reference);
    let verification = verify::compare_in_tract(&graph, &reference, &bytes, 2, 1e-4)?;
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

fn run_job(a: RunArgs) -> Result<()> {
    use compress::pipeline;
    use compress::train::{Method, TrainConfig};
    let start = std::time::Instant::now();
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
    let dev = device(&a.device)?;
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| sibling(&a.model, ".pruned.onnx"));
    let report_json = sibling(&output, ".report.json");
    let report_md = sibling(&output, ".report.md");
    let plot = sibling(&output, ".svg");
    for path in [&output, &report_json, &report_md, &plot] {
        if path.exists() && !a.force {
            return Err(Error::Usage(format!(
                "{} already exists (pass --force to overwrite)",
                path.display()
            )));
        }
    }
    let original = std::fs::read(&a.model).map_err(|e| Error::io(&a.model, e))?;
    let graph = onnx::import_bytes(&original, &a.model.display().to_string())?;
    let data_dir = a
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    let data_name = data_dir.display().to_string();
    let say = |msg: String| {
        if !a.quiet && !a.json {
            eprintln!("{msg}");
        }
    };
    if a.data.is_none() {
        say(format!(
            "no --data given: using the shipped Fashion-MNIST subset ({data_name})"
        ));
    }
    let (train, test) = pipeline::load_data(&data_dir, &graph)?;
    let t0 = std::time::Instant::now();
    let dense_acc = pipeline::evaluate(&graph, &test, &data_name, &dev)?;
    let dense_eval_s = t0.elapsed().as_secs_f64();
    say(format!(
        "dense: accuracy {:.4} on {} test samples",
        dense_acc.accuracy, dense_acc.samples
    ));
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
    cfg.checkpoint_dir = a.checkpoint_dir.clone();
    cfg.resume = a.resume;
    cfg.weight_decay = a
        .weight_decay
        .unwrap_or(if method == Method::Swp { 5e-4 } else { 0.0 });
    cfg.quiet = a.quiet || a.json;
    let t1 = std::time::Instant::now();
    let outcome = pipeline::train(&graph, &train, a.val_fraction, &cfg, &dev)?;
    let train_s = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    let compressed = pipeline::compress_trained(&outcome, &cfg, a.round_to)?;
    let prune_verify_s = t2.elapsed().as_secs_f64();
    let t3 = std::time::Instant::now();
    let pruned_acc = pipeline::evaluate(&compressed.graph, &test, &data_name, &dev)?;
    let pruned_eval_s = t3.elapsed().as_secs_f64();
    let t4 = std::time::Instant::now();
    let mut pruned_for_report = compressed.pruned.clone();
    pruned_for_report.graph = compressed.graph.clone();
    let prune_report = report::prune::prune_report(report::prune::ReportInput {
        model: &a.model.display().to_string(),
        output: &output.display().to_string(),
        original: &graph,
        original_bytes: &original,
        pruned: &pruned_for_report,
        pruned_bytes: &compressed.bytes,
        verification: compressed.verification.clone(),
        latency_runs: a.latency_runs,
    })?;
    let latency_s = t4.elapsed().as_secs_f64();
    let settings = serde_json::json!({
        "method": method.name(), "data": data_name, "epochs": a.epochs, "batch_size": a.batch_size,
        "lr": a.lr, "gate_lr": a.gate_lr, "lambda": cfg.lambda, "target_macs": a.target_macs,
        "seed": a.seed, "val_fraction": a.val_fraction, "max_steps": a.max_steps,
        "round_to": a.round_to, "device": a.device, "latency_runs": a.latency_runs,
        "init_logit": cfg.init_logit, "arm_k": cfg.arm_k,
        "swp_kappa": cfg.swp_kappa, "weight_decay": cfg.weight_decay,
        "checkpoint_dir": a.checkpoint_dir, "resume": a.resume,
    });
    let timings = pipeline::Timings {
        dense_eval_s,
        train_s,
        prune_verify_s,
        pruned_eval_s,
        latency_s,
        total_s: start.elapsed().as_secs_f64(),
    };
    let r = report::run::run_report(report::run::RunInput {
        prune: prune_report,
        method: method.name().to_string(),
        settings,
        dense_accuracy: dense_acc,
        pruned_accuracy: pruned_acc,
        history: outcome.history.clone(),
        timings,
    });
    let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Internal(e.to_string()))?;
    let md = report::run::render(&r);
    compress::fsutil::write_atomic(&output, &compressed.bytes, a.force)?;
    compress::fsutil::write_atomic(&report_json, text.as_bytes(), a.force)?;
    compress::fsutil::write_atomic(&report_md, md.as_bytes(), a.force)?;
    let value = serde_json::to_value(&r).map_err(|e| Error::Internal(e.to_string()))?;
    compress::fsutil::write_atomic(&plot, report::plot::svg(&value).as_bytes(), a.force)?;
    if a.json {
        println!("{text}");
    } else if !a.quiet {
        print!("{md}");
        println!(
            "wrote {}, {}, {}, {}",
            output.display(),
            report_json.display(),
            report_md.display(),
            plot.display()
        );
    }
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
        "run", "inspect", "convert", "prune", "eval", "check", "help",
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
