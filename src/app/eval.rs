//! `compress eval MODEL.onnx [--data DIR] [--split test|train] [--device D] [--json]`.

use std::path::PathBuf;

use super::options::{Device, SplitName, burn_device, named};
use super::preprocess::PreprocessArgs;
use crate::data::preprocess::Preprocessing;
use crate::data::{self, Split};
use crate::error::Result;
use crate::{exec, pipeline};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    pub model: PathBuf,
    /// Dataset directory (IDX, CIFAR binary or image folder), or a token file (`.jsonl`) for a
    /// model with token inputs; default: the shipped subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Token data: pad every sequence to this length (default: the longest in the file).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Which split to evaluate.
    #[arg(long, value_parser = named::<SplitName>(), default_value = "test")]
    pub split: SplitName,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// cpu (always available); wgpu and cuda when compiled with those features.
    #[arg(long, value_parser = named::<Device>(), default_value = "cpu")]
    pub device: Device,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
    #[command(flatten)]
    pub shapes: super::input_shape::InputShapeArgs,
}

/// What `eval --json` prints: the accuracy and the preprocessing that produced it (mean, std,
/// where they came from, the image-folder resize).
#[derive(serde::Serialize)]
struct EvalJson<'a> {
    #[serde(flatten)]
    accuracy: &'a crate::eval::Accuracy,
    preprocessing: &'a Preprocessing,
}

/// Top-1 accuracy of the model on one split, read and normalised as `run` reads it: as the
/// options say, else as the model's metadata says (a model `run` wrote needs no options).
pub fn eval(a: EvalArgs) -> Result<()> {
    if super::tokens::is_token_data(a.data.as_deref()) {
        return eval_tokens(a);
    }
    let request = a.preprocess.request()?;
    let device = burn_device(a.device)?;
    let graph = a.shapes.import_file(&a.model)?;
    let dir = a.data.unwrap_or_else(|| PathBuf::from(super::DEFAULT_DATA));
    let split = Split::from(a.split);
    if data::detect(&dir).is_err() && dir.is_dir() {
        // No known layout: say what the IDX reader, eval's documented format, misses.
        data::idx::load(&dir, split)?;
    }
    let (dataset, preprocessing) = pipeline::load_split_with(&dir, &graph, &request, split)?;
    let net = exec::Network::new(&graph, &device)?;
    let acc = crate::eval::accuracy(&net, &dataset, &dir.display().to_string(), a.batch_size)?;
    if a.json {
        let out = EvalJson {
            accuracy: &acc,
            preprocessing: &preprocessing,
        };
        println!("{}", super::to_json(&out)?);
    } else {
        println!(
            "{}: accuracy {:.4} ({} / {} correct) on {}",
            a.model.display(),
            acc.accuracy,
            acc.correct,
            acc.samples,
            dir.display()
        );
    }
    Ok(())
}

/// `eval` on token data (a JSONL file) for a model with token inputs.
fn eval_tokens(a: EvalArgs) -> Result<()> {
    let path = a.data.clone().unwrap_or_default();
    let set = super::tokens::read_split(&path, Split::from(a.split))?;
    let model = super::tokens::import(&a.model, &a.shapes, &[&set], a.seq_len)?;
    let net = exec::Network::new(&model.graph, &burn_device(a.device)?)?;
    let acc = super::tokens::accuracy(&net, &model, &set, a.batch_size)?;
    if a.json {
        println!("{}", super::to_json(&acc)?);
    } else {
        println!(
            "{}: accuracy {:.4} ({} / {} correct) on {} (sequence length {})",
            a.model.display(),
            acc.accuracy,
            acc.correct,
            acc.samples,
            path.display(),
            model.seq_len
        );
    }
    Ok(())
}
