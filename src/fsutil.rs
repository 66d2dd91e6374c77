//! Output files are written atomically: a temp file beside the target, then a rename.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The directory a file is written in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fails (exit code 2) unless `path` can be written: it must not exist unless `force`, and its
/// directory must exist and take a new file. Commands call this before any work, so that a
/// long run never ends by failing to write its result.
pub fn check_writable(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists (pass --force to overwrite)",
            path.display()
        )));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))
}

/// Writes `bytes` to `path` via a temp file in the same directory; refuses to replace an
/// existing file unless `force`.
pub fn write_atomic(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    check_writable(path, force)?;
    let dir = parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes two files that belong together (a model and its external-data side file): both are
/// checked first, then `first` is written, then `second`, each atomically, so a reader that
/// finds `second` finds `first` complete.
pub fn write_atomic_pair(first: (&Path, &[u8]), second: (&Path, &[u8]), force: bool) -> Result<()> {
    check_writable(first.0, force)?;
    check_writable(second.0, force)?;
    write_atomic(first.0, first.1, force)?;
    write_atomic(second.0, second.1, force)
}
