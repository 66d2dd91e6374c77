//! `--input-shape [NAME=]DIMS` or `DIM=SIZE` (inspect, convert, prune, run, eval): sizes for the model's
//! symbolic dims, and the import and export-dims decision that go with it.

use std::path::Path;

use crate::error::Result;
use crate::ir::Graph;
use crate::onnx::{self, Imported, InputShapes};
use crate::verify::sizes::ExportDims;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputShapeArgs {
    /// Size for the model's symbolic dims: one input's, e.g. images=1x3x640x640 (NAME= may be
    /// left out for a one-input model), or one dim's in every input that has it, e.g.
    /// sequence=128 (repeatable). The batch axis stays symbolic. Exports keep the symbolic
    /// dims when a run at a second size proves them safe, else this size.
    #[arg(long = "input-shape", value_name = "[NAME=]DIMS|DIM=SIZE")]
    pub input_shape: Vec<String>,
}

impl InputShapeArgs {
    pub fn shapes(&self) -> Result<InputShapes> {
        InputShapes::parse(&self.input_shape)
    }

    /// Imports ONNX bytes with the symbolic dims sized; `source` names the file in errors.
    pub fn import(&self, bytes: &[u8], source: &str) -> Result<Imported> {
        onnx::import_sized(bytes, source, &self.shapes()?)
    }

    /// Reads and imports a model file with the symbolic dims sized.
    pub fn import_file(&self, path: &Path) -> Result<Graph> {
        let bytes = onnx::read_model(path)?;
        Ok(self.import(&bytes, &path.display().to_string())?.graph)
    }

    /// Imports a model and decides how its exports write dims (proven at a second size).
    pub fn import_for_export(&self, bytes: &[u8], source: &str) -> Result<(Graph, ExportDims)> {
        let imported = self.import(bytes, source)?;
        let dims = ExportDims::decide(&imported.graph, bytes, &imported.size_dependent);
        Ok((imported.graph, dims))
    }
}

/// Tells the user on stderr what the export's dims are (and why), one `note:` line each.
pub fn print_notes(notes: &[String]) {
    for n in notes {
        eprintln!("note: {n}");
    }
}
