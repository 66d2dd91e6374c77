//! Command-line front end: parse, call the library, map errors to exit codes.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use compress::app::{self, check::CheckArgs, convert::ConvertArgs, eval::EvalArgs};
use compress::app::{inspect::InspectArgs, prune::PruneArgs, run::RunArgs};
use compress::error::{Result, exit_code};

#[derive(Parser)]
#[command(
    name = "compress",
    version,
    about = "Make trained ONNX models physically smaller with L0 gates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Largest number of elements any one tensor of a model may have (weights, inputs, computed
    /// values); a model over it is refused (exit 2) before anything is allocated for it.
    #[arg(long, global = true, value_name = "N", default_value_t = compress::onnx::validate::DEFAULT_MAX_TENSOR_ELEMENTS)]
    max_tensor_elements: u64,
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
    Inspect(InspectArgs),
    /// Import and re-export a model; the output is checked in tract (and ONNX Runtime with the
    /// `ort` feature) before it is written.
    ///
    /// Example: compress convert models/lenet5/model.onnx -o /tmp/lenet5.onnx
    Convert(ConvertArgs),
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
    Check(CheckArgs),
    /// Print a shell completion script.
    ///
    /// Example: compress completions bash > /etc/bash_completion.d/compress
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Top-1 accuracy of a model on a labelled dataset (IDX, CIFAR binary or image folder, read
    /// as `run` reads it).
    ///
    /// Example: compress eval models/lenet5/model.onnx --data /usr/share/datasets/fashion-mnist
    Eval(EvalArgs),
    /// List the devices (`--device` values) this binary can train on here: cpu always; wgpu
    /// and cuda when compiled in, with the adapters or GPUs found, or what is missing.
    ///
    /// Example: compress devices --json
    Devices(app::devices::DevicesArgs),
}

fn run(cli: Cli) -> Result<()> {
    compress::onnx::validate::set_max_tensor_elements(cli.max_tensor_elements);
    match cli.command {
        Command::Run(args) => app::run::run(*args),
        Command::Inspect(args) => app::inspect::inspect(args),
        Command::Convert(args) => app::convert::convert(args),
        Command::Prune(args) => app::prune::prune(args),
        Command::Check(args) => app::check::check(args),
        Command::Completions { shell } => app::completions(shell, &mut Cli::command()),
        Command::Eval(args) => app::eval::eval(args),
        Command::Devices(args) => app::devices::devices(args),
    }
}

/// `compress MODEL.onnx --method M ...` is `compress run MODEL.onnx --method M ...`.
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let cmd = Cli::command();
    let is_subcommand = |name: &str| name == "help" || cmd.find_subcommand(name).is_some();
    if let Some(first) = args.get(1).map(|a| a.to_string_lossy().to_string())
        && !first.starts_with('-')
        && !is_subcommand(&first)
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
