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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
