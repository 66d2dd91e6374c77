//! Checkpoints: everything needed to resume a run bit-for-bit after epoch k. A checkpoint is a
//! directory `epoch-K` holding `state.json` (counters, RNG state, data order, history, tensor
//! index), `tensors.bin` (little-endian f32) and the two optimisers' records. It is written to a
//! temporary directory and renamed, so an interrupted write never replaces a good checkpoint.

use std::path::{Path, PathBuf};

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use serde::{Deserialize, Serialize};

use super::EpochRecord;
use crate::data::preprocess::Preprocessing;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Method and seed the checkpoint was made with; a resume must use the same.
    pub method: String,
    pub seed: u64,
    /// Method settings that shape the parameters (Dep-L0's chain); a resume must match them.
    /// Empty in checkpoints of methods without such settings.
    #[serde(default)]
    pub variant: String,
    pub epoch: usize,
    pub steps: usize,
    pub lambda: f64,
    /// The random generator where the next epoch continues.
    pub rng: crate::rng::Rng,
    pub train_order: Vec<usize>,
    pub history: Vec<EpochRecord>,
    pub tensors: Vec<TensorEntry>,
    /// How the training data was prepared (absent in checkpoints from before it was recorded,
    /// and when the run did not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
    /// Budget runs: the multipliers and the target ramp where the next epoch continues (absent
    /// in runs without a budget and in checkpoints from before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::budget::BudgetState>,
}

/// The preprocessing as a resume error shows it: the values, not where they came from.
fn describe(p: &Preprocessing) -> String {
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let resize = match p.resize {
        Some([h, w]) => format!(", resize {h},{w}"),
        None => String::new(),
    };
    format!(
        "preprocessing mean {} std {}{resize}",
        list(&p.mean),
        list(&p.std)
    )
}

/// Whether two preprocessings prepare pixels alike (one value stands for every channel).
fn same_preprocessing(a: &Preprocessing, b: &Preprocessing) -> bool {
    let same = |x: &[f32], y: &[f32]| {
        let n = x.len().max(y.len());
        let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        (x.len() == y.len() || x.len() == 1 || y.len() == 1) && (0..n).all(|i| at(x, i) == at(y, i))
    };
    same(&a.mean, &b.mean) && same(&a.std, &b.std) && a.resize == b.resize
}

/// Refuses to resume a checkpoint whose data was prepared otherwise than this run's (the
/// weights were trained on other inputs). Checkpoints that record nothing are not checked.
pub fn check_preprocessing(
    path: &Path,
    recorded: Option<&Preprocessing>,
    requested: Option<&Preprocessing>,
) -> Result<()> {
    match (recorded, requested) {
        (Some(r), Some(q)) if !same_preprocessing(r, q) => Err(Error::ResumeMismatch {
            path: path.to_path_buf(),
            recorded: describe(r),
            requested: describe(q),
        }),
        _ => Ok(()),
    }
}

/// A named host tensor.
pub type Named = (String, Vec<usize>, Vec<f32>);

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn record_err(path: &Path) -> impl Fn(burn::store::RecordError) -> Error + '_ {
    move |e| Error::Data {
        path: path.display().to_string(),
        reason: format!("optimizer state: {e:?}"),
    }
}

/// Writes `dir/epoch-K` atomically and removes older epochs, keeping the newest two.
pub fn save(
    dir: &Path,
    mut state: State,
    tensors: &[Named],
    opt_w: &ModuleOptimizer,
    opt_g: &ModuleOptimizer,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    remove_leftovers(dir);
    let tmp = dir.join(format!(".epoch-{}.tmp", state.epoch));
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut blob = Vec::new();
    state.tensors.clear();
    for (name, shape, values) in tensors {
        state.tensors.push(TensorEntry {
            name: name.clone(),
            shape: shape.clone(),
            offset: blob.len() / 4,
        });
        blob.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    write_synced(&tmp.join("tensors.bin"), &blob)?;
    let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Internal(e.to_string()))?;
    write_synced(&tmp.join("state.json"), &json)?;
    opt_w
        .to_record()
        .save(tmp.join("optim-weights.bpk"))
        .map_err(record_err(&tmp))?;
    opt_g
        .to_record()
        .save(tmp.join("optim-gates.bpk"))
        .map_err(record_err(&tmp))?;
    let final_dir = dir.join(format!("epoch-{}", state.epoch));
    discard(dir, state.epoch);
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    for old in epochs(dir)?.into_iter().rev().skip(2) {
        discard(dir, old);
    }
    Ok(final_dir)
}

/// Writes a checkpoint file and flushes it to disk before the directory is renamed into place.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Removes `dir/epoch-K` so that no reader ever sees it half deleted: it is renamed to a
/// hidden name first (atomic), then deleted.
fn discard(dir: &Path, epoch: usize) {
    let trash = dir.join(format!(".epoch-{epoch}.old.tmp"));
    if std::fs::rename(dir.join(format!("epoch-{epoch}")), &trash).is_ok() {
        let _ = std::fs::remove_dir_all(trash);
    }
}

/// Deletes what an interrupted save or discard left (hidden `.epoch-*` directories): nothing
/// reads them, and a run killed mid-write would otherwise leave them for good.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".epoch-"))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Completed checkpoint epochs in `dir`, ascending.
pub fn epochs(dir: &Path) -> Result<Vec<usize>> {
    let mut v: Vec<usize> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("epoch-")?.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    Ok(v)
}

pub struct Loaded {
    pub state: State,
    pub tensors: Vec<Named>,
    pub opt_w: OptimizerRecord,
    pub opt_g: OptimizerRecord,
    pub path: PathBuf,
}

/// Loads the newest checkpoint in `dir`, or None when there is none.
pub fn load_latest(dir: &Path) -> Result<Option<Loaded>> {
    let Some(&epoch) = epochs(dir)?.last() else {
        return Ok(None);
    };
    load(&dir.join(format!("epoch-{epoch}"))).map(Some)
}

/// Loads one checkpoint directory (`CHECKPOINT_DIR/epoch-K`).
pub fn load(path: &Path) -> Result<Loaded> {
    let path = path.to_path_buf();
    let bad = |reason: String| Error::Data {
        path: path.display().to_string(),
        reason,
    };
    let state_file = path.join("state.json");
    let text = std::fs::read_to_string(&state_file).map_err(io(&state_file))?;
    let state: State = serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    let tensors_file = path.join("tensors.bin");
    let blob = std::fs::read(&tensors_file).map_err(io(&tensors_file))?;
    let floats: Vec<f32> = blob
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let mut tensors = Vec::new();
    for t in &state.tensors {
        // Sizes come from a file: overflowing ones are as wrong as too large ones.
        let end = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| t.offset.checked_add(n));
        let values = end
            .and_then(|end| floats.get(t.offset..end))
            .ok_or_else(|| bad(format!("tensors.bin is too short for '{}'", t.name)))?;
        tensors.push((t.name.clone(), t.shape.clone(), values.to_vec()));
    }
    let (weights_file, gates_file) = (path.join("optim-weights.bpk"), path.join("optim-gates.bpk"));
    let opt_w = OptimizerRecord::load(&weights_file).map_err(record_err(&weights_file))?;
    let opt_g = OptimizerRecord::load(&gates_file).map_err(record_err(&gates_file))?;
    Ok(Loaded {
        state,
        tensors,
        opt_w,
        opt_g,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::preprocess::Source;

    fn prep(mean: &[f32], std: &[f32], resize: Option<[usize; 2]>) -> Preprocessing {
        Preprocessing {
            mean: mean.to_vec(),
            std: std.to_vec(),
            source: Source::Option,
            resize,
        }
    }

    #[test]
    fn resume_accepts_the_same_values_from_any_source_and_broadcast() {
        let path = Path::new("ck/epoch-1");
        let one = prep(&[0.5], &[0.25], None);
        let mut three = prep(&[0.5; 3], &[0.25; 3], None);
        three.source = Source::Model;
        assert!(check_preprocessing(path, Some(&one), Some(&three)).is_ok());
        // Checkpoints from before preprocessing was recorded are not checked.
        assert!(check_preprocessing(path, None, Some(&three)).is_ok());
    }

    #[test]
    fn resume_refuses_other_values_or_resize_naming_both() {
        let path = Path::new("ck/epoch-1");
        let a = prep(&[0.5, 0.4, 0.3], &[0.25], None);
        let b = prep(&[0.5, 0.4, 0.2], &[0.25], None);
        let e = check_preprocessing(path, Some(&a), Some(&b)).unwrap_err();
        assert!(matches!(e, Error::ResumeMismatch { .. }));
        assert_eq!(
            e.to_string(),
            "cannot resume from ck/epoch-1: it was made with preprocessing mean 0.5,0.4,0.3 \
             std 0.25, not preprocessing mean 0.5,0.4,0.2 std 0.25"
        );
        let c = prep(&[0.5, 0.4, 0.3], &[0.25], Some([40, 40]));
        let e = check_preprocessing(path, Some(&a), Some(&c)).unwrap_err();
        assert!(e.to_string().ends_with("std 0.25, resize 40,40"), "{e}");
        // Two and three values do not broadcast onto each other.
        let d = prep(&[0.5, 0.4], &[0.25], None);
        assert!(check_preprocessing(path, Some(&a), Some(&d)).is_err());
    }
}
