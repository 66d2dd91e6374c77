//! `compress convert MODEL.onnx -o OUT.onnx [--force]`.

use std::path::PathBuf;

use crate::error::Result;
use crate::verify;
use crate::verify::sizes::Reference;

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    pub model: PathBuf,
    #[arg(short, long)]
    pub output: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub shapes: super::input_shape::InputShapeArgs,
    #[command(flatten)]
    pub out: super::model_output::ModelOutputArgs,
}

/// Imports and re-exports a model; writes it only when tract (and ONNX Runtime with the `ort`
/// feature) computes the same outputs from both files.
pub fn convert(a: ConvertArgs) -> Result<()> {
    verify::check_runtimes()?;
    let original = crate::onnx::read_model(&a.model)?;
    let (graph, dims) = a
        .shapes
        .import_for_export(&original, &a.model.display().to_string())?;
    let mut exported = graph.clone();
    super::inject_fault(&mut exported);
    let checked = dims.export_checked(&exported, Reference::Bytes(&original), &graph, 2, 1e-5)?;
    super::input_shape::print_notes(&checked.notes);
    let (bytes, cmp) = (checked.bytes, checked.verification);
    a.out.write(&a.output, &bytes, a.force)?;
    println!(
        "wrote {} ({} bytes); vs original: {}",
        a.output.display(),
        bytes.len(),
        cmp.summary()
    );
    Ok(())
}
