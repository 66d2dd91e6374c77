//! `--external-data` (convert, prune, run): whether an output model keeps its weights in a side
//! file. Verification always runs on the self-contained bytes; only the files written differ.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::{fsutil, onnx};

/// Protobuf refuses messages of 2 GiB and more: larger models must use external data.
pub const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ModelOutputArgs {
    /// Write the output model's weights to OUT.onnx.data beside it (ONNX external data).
    /// Automatic for a model over protobuf's 2 GB limit (such models are not yet verified end
    /// to end: verification still reads the self-contained bytes).
    #[arg(long)]
    pub external_data: bool,
}

/// The side file of a model written with external data: its file name plus `.data`.
pub fn side_file(model: &Path) -> PathBuf {
    let mut name = model.file_name().unwrap_or_default().to_os_string();
    name.push(".data");
    model.with_file_name(name)
}

impl ModelOutputArgs {
    /// The side file, when the option asks for one (checked before work like the model).
    pub fn requested_side_file(&self, model: &Path) -> Option<PathBuf> {
        self.external_data.then(|| side_file(model))
    }

    /// Writes the model (inline, or the side file first and then the model); returns the side
    /// file when one was written.
    pub fn write(&self, path: &Path, bytes: &[u8], force: bool) -> Result<Option<PathBuf>> {
        if !self.external_data && bytes.len() < PROTOBUF_LIMIT {
            fsutil::write_atomic(path, bytes, force)?;
            return Ok(None);
        }
        let side = side_file(path);
        let location = side
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (model, data) = onnx::external::split(bytes, &location)?;
        fsutil::write_atomic_pair((&side, &data), (path, &model), force)?;
        eprintln!(
            "note: the weights of {} are in {}",
            path.display(),
            side.display()
        );
        Ok(Some(side))
    }
}
