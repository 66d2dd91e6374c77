//! Command-line front end: parse, call the library, map errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use compress::error::{Error, Result, exit_code};
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

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, json } => {
            let graph = onnx::import_file(&model)?;
            let r = report::inspect(&graph)?;
            if json {
                print_json(&r)
            } else {
                print!("{}", report::render_inspection(&r));
                Ok(())
            }
        }
        Command::Convert {
            model,
            output,
            force,
        } => {
            let original = std::fs::read(&model).map_err(|e| Error::io(&model, e))?;
            let graph = onnx::import_bytes(&original, &model.display().to_string())?;
            let bytes = onnx::export(&graph);
            let cmp = verify::compare_in_tract(&graph, &original, &bytes, 2, 1e-5)?;
            compress::fsutil::write_atomic(&output, &bytes, force)?;
            println!(
                "wrote {} ({} bytes); tract max abs difference vs original: {:e}",
                output.display(),
                bytes.len(),
                cmp.max_abs_diff
            );
            Ok(())
        }
        Command::Eval {
            model,
            data,
            split,
            batch_size,
            json,
        } => {
            let graph = onnx::import_file(&model)?;
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
                    display_name(&model),
                    acc.accuracy,
                    acc.correct,
                    acc.samples,
                    dir.display()
                );
                Ok(())
            }
        }
    }
}

fn display_name(p: &Path) -> String {
    p.display().to_string()
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
