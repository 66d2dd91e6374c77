//! `compress inspect MODEL.onnx [--json]`, and with `--sensitivity --data D` each prunable
//! group's accuracy when halved ([`super::sensitivity`]).

use std::path::PathBuf;

use crate::error::Result;
use crate::report;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub shapes: super::input_shape::InputShapeArgs,
    /// Per prunable group: the test accuracy when that group alone is halved by L1 norm, no
    /// training (needs --data).
    #[arg(long, requires = "data")]
    pub sensitivity: bool,
    /// Dataset directory for --sensitivity (IDX, CIFAR binary or image folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test examples each --sensitivity accuracy is measured on (the first N).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub samples: usize,
}

/// Prints every node, the totals and the channel groups (a table, or JSON with `--json`).
pub fn inspect(a: InspectArgs) -> Result<()> {
    let graph = a.shapes.import_file(&a.model)?;
    if let (true, Some(dir)) = (a.sensitivity, &a.data) {
        let device = super::options::burn_device(super::options::Device::Cpu)?;
        let model = a.model.display().to_string();
        let s = super::sensitivity::sensitivity(&graph, &model, dir, a.samples, &device)?;
        if a.json {
            println!("{}", super::to_json(&s)?);
        } else {
            print!("{}", super::sensitivity::render(&s));
        }
        return Ok(());
    }
    let r = report::inspect(&graph)?;
    if a.json {
        println!("{}", super::to_json(&r)?);
    } else {
        print!("{}", report::render_inspection(&r));
    }
    Ok(())
}
