//! Dataset readers. Every reader produces a [`Dataset`]: integer labels and pixels read per
//! batch as NCHW f32 in [0, 1] (before any normalisation). IDX and CIFAR pixels stay bytes in
//! memory; image folders are decoded per batch. [`loader`] reads batches ahead on worker
//! threads.

pub mod cifar;
mod dataset;
pub mod examples;
pub mod folder;
pub mod idx;
pub mod jsonl;
pub mod loader;
pub mod preprocess;
pub mod transform;

pub use dataset::Dataset;
pub use examples::{ExampleSet, Examples, TokenData};

use std::path::Path;

use crate::error::{Error, Result};

pub use idx::Split;

/// The on-disk dataset layouts `compress` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MNIST / Fashion-MNIST IDX files (`{train,t10k}-*-ubyte[.gz]`), 1 channel.
    Idx,
    /// CIFAR-10 or CIFAR-100 binary version (`*.bin`), 3x32x32.
    Cifar,
    /// An image folder (`<class>/*.png|jpg|jpeg`, optionally under `train/` and `test/`|`val/`).
    Folder,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "IDX",
            Format::Cifar => "CIFAR binary",
            Format::Folder => "image folder",
        }
    }
}

/// Whether `dir` holds IDX files (`train-*-ubyte`, `t10k-*-ubyte`, optionally `.gz`).
fn has_idx_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        (stem.starts_with("train-") || stem.starts_with("t10k-"))
            && stem.ends_with("-ubyte")
            && e.path().is_file()
    })
}

/// Recognises the layout of the dataset directory `dir` (checked in the order IDX, CIFAR,
/// image folder).
pub fn detect(dir: &Path) -> Result<Format> {
    if dir.extension().is_some_and(|e| e == "jsonl") {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: "token data (JSONL) feeds models with token inputs (input_ids, ...); \
                     this command or model reads images"
                .into(),
        });
    }
    if !dir.is_dir() {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    if has_idx_files(dir) {
        Ok(Format::Idx)
    } else if cifar::locate(dir).is_some() {
        Ok(Format::Cifar)
    } else if folder::looks_like(dir) {
        Ok(Format::Folder)
    } else {
        Err(Error::Data {
            path: dir.display().to_string(),
            reason: "unrecognised dataset: expected IDX files ({train,t10k}-*-ubyte[.gz]), \
                     CIFAR binary files (data_batch_*.bin/test_batch.bin or train.bin/test.bin), \
                     or an image folder (<class>/*.png|jpg|jpeg)"
                .into(),
        })
    }
}

/// Loads `split` of the dataset in `dir`, whatever its [`Format`].
///
/// `want` is the (channels, height, width) the model takes. Image folders need it (each image
/// is converted and resized to it); IDX and CIFAR data are returned at their native shape
/// whatever `want` says, and the caller checks the fit.
pub fn load(dir: &Path, split: Split, want: Option<(usize, usize, usize)>) -> Result<Dataset> {
    load_with(dir, split, want, None)
}

/// Like [`load`]; an image folder's images are first resized to `resize` (H, W) and then
/// centre-cropped to the size in `want` (see [`folder::load_resized`]). Other formats ignore
/// `resize`.
pub fn load_with(
    dir: &Path,
    split: Split,
    want: Option<(usize, usize, usize)>,
    resize: Option<(usize, usize)>,
) -> Result<Dataset> {
    match detect(dir)? {
        Format::Idx => idx::load(dir, split),
        Format::Cifar => cifar::load(dir, split),
        Format::Folder => {
            let Some((c, h, w)) = want else {
                return Err(Error::Data {
                    path: dir.display().to_string(),
                    reason: "an image folder needs the model's input shape (channels, height, \
                             width) to convert and resize its images to"
                        .into(),
                });
            };
            folder::load_resized(dir, split, c, (h, w), resize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_formats() {
        let fashion =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/data/fashion-mnist-subset");
        assert_eq!(detect(&fashion).unwrap(), Format::Idx);
        let ds = load(&fashion, Split::Test, None).unwrap();
        assert_eq!(
            (ds.len(), ds.channels, ds.height, ds.width),
            (2000, 1, 28, 28)
        );

        let dir = tempfile::tempdir().unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("unrecognised dataset"), "{err}");
        assert!(detect(&dir.path().join("nope")).is_err());

        let cifar = dir.path().join("cifar-100-binary");
        std::fs::create_dir(&cifar).unwrap();
        std::fs::write(cifar.join("test.bin"), vec![0u8; 3074]).unwrap();
        assert_eq!(detect(dir.path()).unwrap(), Format::Cifar);
        let ds = load(dir.path(), Split::Test, Some((1, 28, 28))).unwrap();
        assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (1, 3, 32, 32));

        let folder = tempfile::tempdir().unwrap();
        let img = folder.path().join("a/x.png");
        std::fs::create_dir(img.parent().unwrap()).unwrap();
        image::GrayImage::new(3, 3).save(&img).unwrap();
        assert_eq!(detect(folder.path()).unwrap(), Format::Folder);
        let err = load(folder.path(), Split::Train, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("input shape"), "{err}");
        let ds = load(folder.path(), Split::Train, Some((1, 2, 2))).unwrap();
        assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (1, 1, 2, 2));
    }
}
