//! `compress inspect MODEL.onnx [--json]`.

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
}

/// Prints every node, the totals and the channel groups (a table, or JSON with `--json`).
pub fn inspect(a: InspectArgs) -> Result<()> {
    let graph = a.shapes.import_file(&a.model)?;
    let r = report::inspect(&graph)?;
    if a.json {
        println!("{}", super::to_json(&r)?);
    } else {
        print!("{}", report::render_inspection(&r));
    }
    Ok(())
}
