//! CIFAR-10 / CIFAR-100 binary-version reader.
//!
//! * CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//!   `test_batch.bin` (test); each record is 1 label byte (0..9) + 3072 pixel bytes.
//! * CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`; each record is 1 coarse label
//!   byte + 1 fine label byte (0..99) + 3072 pixel bytes. The fine label is used.
//!
//! The 3072 pixel bytes are the red, green and blue 32x32 planes in that order, each row-major,
//! which is already the CHW layout of [`Dataset`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::{Dataset, Split};

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Pixel bytes per record (3 planes of 32x32).
pub const PIXELS: usize = 3 * SIDE * SIDE;

/// Subdirectory names of the official archives, accepted when the user names their parent.
const SUBDIRS: [&str; 2] = ["cifar-10-batches-bin", "cifar-100-binary"];

const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const CIFAR10_TEST: [&str; 1] = ["test_batch.bin"];
const CIFAR100_TRAIN: [&str; 1] = ["train.bin"];
const CIFAR100_TEST: [&str; 1] = ["test.bin"];

/// Which of the two CIFAR binary layouts a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Cifar10,
    Cifar100,
}

impl Variant {
    /// Label bytes before the pixels of each record.
    pub fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    /// Bytes per record (labels + pixels).
    pub fn record_len(self) -> usize {
        self.label_bytes() + PIXELS
    }

    /// Number of classes (fine classes for CIFAR-100).
    pub fn classes(self) -> u32 {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }

    /// The files making up `split`, in reading order.
    pub fn files(self, split: Split) -> &'static [&'static str] {
        match (self, split) {
            (Variant::Cifar10, Split::Train) => &CIFAR10_TRAIN,
            (Variant::Cifar10, Split::Test) => &CIFAR10_TEST,
            (Variant::Cifar100, Split::Train) => &CIFAR100_TRAIN,
            (Variant::Cifar100, Split::Test) => &CIFAR100_TEST,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "CIFAR-10",
            Variant::Cifar100 => "CIFAR-100",
        }
    }
}

/// The variant whose files (any split) are present directly in `dir`.
fn variant_in(dir: &Path) -> Option<Variant> {
    let any = |names: &[&str]| names.iter().any(|n| dir.join(n).is_file());
    if any(&CIFAR10_TRAIN) || any(&CIFAR10_TEST) {
        Some(Variant::Cifar10)
    } else if any(&CIFAR100_TRAIN) || any(&CIFAR100_TEST) {
        Some(Variant::Cifar100)
    } else {
        None
    }
}

/// Finds CIFAR binary files in `dir` or in its `cifar-10-batches-bin/` or `cifar-100-binary/`
/// subdirectory: returns the directory actually holding the files and the variant.
pub fn locate(dir: &Path) -> Option<(PathBuf, Variant)> {
    if let Some(v) = variant_in(dir) {
        return Some((dir.to_path_buf(), v));
    }
    SUBDIRS.iter().find_map(|sub| {
        let d = dir.join(sub);
        variant_in(&d).map(|v| (d, v))
    })
}

/// Decodes the records of one file, appending pixel bytes and labels.
pub fn parse_records(
    bytes: &[u8],
    variant: Variant,
    path: &Path,
    images: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let bad = |reason: String| Error::Data {
        path: path.display().to_string(),
        reason,
    };
    let rec = variant.record_len();
    if bytes.is_empty() {
        return Err(bad(format!(
            "empty file (expected {} records)",
            variant.name()
        )));
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(bad(format!(
            "size {} is not a multiple of the {rec}-byte {} record ({} whole records and {} bytes \
             left over: truncated or not a {} binary file)",
            bytes.len(),
            variant.name(),
            bytes.len() / rec,
            bytes.len() % rec,
            variant.name(),
        )));
    }
    let n = bytes.len() / rec;
    images.reserve(n * PIXELS);
    labels.reserve(n);
    let lb = variant.label_bytes();
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        // CIFAR-100: byte 0 is the coarse label, byte 1 the fine one.
        let label = r[lb - 1] as u32;
        if label >= variant.classes() {
            return Err(bad(format!(
                "record {i}: label {label} out of range for {} (0..{})",
                variant.name(),
                variant.classes() - 1
            )));
        }
        labels.push(label);
        images.extend_from_slice(&r[lb..]);
    }
    Ok(())
}

/// Loads one split of a CIFAR-10 or CIFAR-100 binary directory (or its parent).
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: "not a directory".into(),
        });
    }
    let Some((root, variant)) = locate(dir) else {
        return Err(Error::Data {
            path: dir.display().to_string(),
            reason: format!(
                "no CIFAR binary files: expected CIFAR-10 ({}, {}) or CIFAR-100 (train.bin, \
                 test.bin), here or in a {} or {} subdirectory",
                CIFAR10_TRAIN.join(", "),
                CIFAR10_TEST[0],
                SUBDIRS[0],
                SUBDIRS[1],
            ),
        });
    };
    let files = variant.files(split);
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|n| !root.join(n).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Data {
            path: root.display().to_string(),
            reason: format!(
                "{} {} split: missing {} (expected {})",
                variant.name(),
                match split {
                    Split::Train => "train",
                    Split::Test => "test",
                },
                missing.join(", "),
                files.join(", "),
            ),
        });
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in files {
        let path = root.join(name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        parse_records(&bytes, variant, &path, &mut images, &mut labels)?;
    }
    // Kept as bytes (a quarter of f32): batches convert them to [0, 1] when read.
    Dataset::from_u8(images, labels, (3, SIDE, SIDE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose pixel bytes encode (plane, index) so order mistakes show.
    fn pixel(plane: usize, i: usize, seed: u8) -> u8 {
        (plane as u8 * 80)
            .wrapping_add((i % 61) as u8)
            .wrapping_add(seed)
    }

    fn record(labels: &[u8], seed: u8) -> Vec<u8> {
        let mut r = labels.to_vec();
        for plane in 0..3 {
            for i in 0..SIDE * SIDE {
                r.push(pixel(plane, i, seed));
            }
        }
        r
    }

    fn check_pixels(ds: &Dataset, sample: usize, seed: u8) {
        let s = &ds.read(&[sample]).unwrap();
        for plane in 0..3 {
            for i in [0, 1, 31, 32, 500, 1023] {
                let want = pixel(plane, i, seed) as f32 / 255.0;
                assert_eq!(
                    s[plane * 1024 + i],
                    want,
                    "sample {sample} plane {plane} i {i}"
                );
            }
        }
    }

    #[test]
    fn cifar10_reads_labels_and_planes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        for b in 1..=5u8 {
            let mut bytes = record(&[b], b);
            bytes.extend(record(&[9 - b], b + 10));
            std::fs::write(sub.join(format!("data_batch_{b}.bin")), bytes).unwrap();
        }
        std::fs::write(sub.join("test_batch.bin"), record(&[7], 42)).unwrap();

        // Pointing at the parent finds the subdirectory.
        assert_eq!(locate(dir.path()), Some((sub.clone(), Variant::Cifar10)));
        let train = load(dir.path(), Split::Train).unwrap();
        assert_eq!(train.len(), 10);
        assert_eq!((train.channels, train.height, train.width), (3, 32, 32));
        assert_eq!(train.labels, vec![1, 8, 2, 7, 3, 6, 4, 5, 5, 4]);
        check_pixels(&train, 0, 1);
        check_pixels(&train, 1, 11);
        check_pixels(&train, 9, 15);
        // R plane first: the first pixel of sample 0 is plane 0's byte.
        let images = train.images().unwrap();
        assert_eq!(images[0], 1.0 / 255.0);
        assert_eq!(images[1024], 81.0 / 255.0);
        assert_eq!(images[2048], 161.0 / 255.0);

        let test = load(&sub, Split::Test).unwrap();
        assert_eq!(test.labels, vec![7]);
        check_pixels(&test, 0, 42);
    }

    #[test]
    fn cifar100_uses_fine_label() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[3, 99], 5);
        bytes.extend(record(&[19, 0], 6));
        std::fs::write(dir.path().join("train.bin"), bytes).unwrap();
        std::fs::write(dir.path().join("test.bin"), record(&[1, 42], 7)).unwrap();
        assert_eq!(
            locate(dir.path()),
            Some((dir.path().to_path_buf(), Variant::Cifar100))
        );
        let train = load(dir.path(), Split::Train).unwrap();
        assert_eq!(train.labels, vec![99, 0]);
        check_pixels(&train, 0, 5);
        check_pixels(&train, 1, 6);
        let test = load(dir.path(), Split::Test).unwrap();
        assert_eq!(test.labels, vec![42]);
        check_pixels(&test, 0, 7);
    }

    #[test]
    fn missing_files_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data_batch_1.bin"), record(&[0], 0)).unwrap();
        std::fs::write(dir.path().join("data_batch_3.bin"), record(&[0], 0)).unwrap();
        let err = load(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("missing data_batch_2.bin, data_batch_4.bin, data_batch_5.bin"));
        assert!(err.contains("expected data_batch_1.bin"), "{err}");
        let err = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("missing test_batch.bin"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let err = load(empty.path(), Split::Train).unwrap_err().to_string();
        assert!(err.contains("no CIFAR binary files"), "{err}");
        assert!(err.contains("train.bin"), "{err}");
    }

    #[test]
    fn truncated_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[1, 2], 0);
        bytes.extend(&record(&[1, 2], 0)[..100]);
        let path = dir.path().join("test.bin");
        std::fs::write(&path, bytes).unwrap();
        let err = load(dir.path(), Split::Test).unwrap_err();
        assert!(matches!(err, Error::Data { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("not a multiple of the 3074-byte"), "{msg}");

        // A CIFAR-10 label out of range.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), record(&[10], 0)).unwrap();
        let msg = load(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("label 10 out of range"), "{msg}");
    }
}
