//! ImageFolder reader: one subdirectory per class, holding PNG or JPEG files.
//!
//! Two layouts are accepted:
//!
//! * flat: `root/<class>/*.{png,jpg,jpeg}`, which is the train split only;
//! * split: `root/train/<class>/...` plus `root/test/<class>/...` (or `root/val/...`, used when
//!   there is no `test/`). The layout is split as soon as `root/train/` exists.
//!
//! Class names are sorted (byte order) to give label indices; the class list always comes from
//! the train sub-root, so both splits share labels (a test class absent from train is an error,
//! a train class absent from test just has no test samples). Within a class, files are read in
//! name order. Hidden entries (names starting with `.`) and files with other extensions are
//! skipped. Loading lists the files (paths and labels) only; a batch decodes its images when it
//! is read: each is converted to RGB (3 channels) or luma (1 channel), resized with a triangle
//! (bilinear) filter to the requested size, centre-cropped, and given as CHW f32 in [0, 1].

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::error::{Error, Result};

use super::{Dataset, Split};

/// File extensions read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn data_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Whether `path` names a file with an image extension.
pub fn is_image_file(path: &Path) -> bool {
    !is_hidden(path)
        && path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Sorted entries of `dir` (hidden ones skipped) that satisfy `keep`.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !is_hidden(&path) && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` has at least one class subdirectory holding an image file.
fn has_class_dirs(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        p.is_dir()
            && !is_hidden(&p)
            && std::fs::read_dir(&p)
                .is_ok_and(|mut files| files.any(|f| f.is_ok_and(|f| is_image_file(&f.path()))))
    })
}

/// Whether `root` looks like an image folder (flat or split layout).
pub fn looks_like(root: &Path) -> bool {
    has_class_dirs(root) || has_class_dirs(&root.join("train"))
}

/// The sub-roots of `root`: (train root, test root if any).
fn split_roots(root: &Path) -> (PathBuf, Option<PathBuf>) {
    let train = root.join("train");
    if train.is_dir() {
        let test = ["test", "val"]
            .iter()
            .map(|s| root.join(s))
            .find(|p| p.is_dir());
        (train, test)
    } else {
        (root.to_path_buf(), None)
    }
}

/// Class names (sorted) of a class root.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    sorted_entries(dir, |p| p.is_dir())?
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
                .ok_or_else(|| data_err(p, "class directory name is not valid UTF-8"))
        })
        .collect()
}

/// The class names of the image folder at `root` in label order (index = label).
pub fn classes(root: &Path) -> Result<Vec<String>> {
    class_names(&split_roots(root).0)
}

/// Decodes one image file into CHW f32 in [0, 1] with `channels` (1 or 3) and the given size.
pub fn decode(path: &Path, channels: usize, height: usize, width: usize) -> Result<Vec<f32>> {
    let raw = decode_u8(path, channels, height, width)?;
    Ok(raw.into_iter().map(|b| b as f32 / 255.0).collect())
}

/// Decodes one image file into CHW bytes with `channels` (1 or 3) and the given size.
fn decode_u8(path: &Path, channels: usize, height: usize, width: usize) -> Result<Vec<u8>> {
    let undecodable =
        |e: &dyn std::fmt::Display| data_err(path, format!("cannot decode image: {e}"));
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| undecodable(&e))?;
    let (w, h) = (width as u32, height as u32);
    let raw: Vec<u8> = match channels {
        1 => {
            let g = img.to_luma8();
            if g.dimensions() == (w, h) {
                g.into_raw()
            } else {
                image::imageops::resize(&g, w, h, FilterType::Triangle).into_raw()
            }
        }
        3 => {
            let rgb = img.to_rgb8();
            let rgb = if rgb.dimensions() == (w, h) {
                rgb
            } else {
                image::imageops::resize(&rgb, w, h, FilterType::Triangle)
            };
            // Interleaved HWC -> planar CHW.
            let raw = rgb.into_raw();
            let plane = height * width;
            let mut chw = vec![0u8; 3 * plane];
            for (i, px) in raw.chunks_exact(3).enumerate() {
                chw[i] = px[0];
                chw[plane + i] = px[1];
                chw[2 * plane + i] = px[2];
            }
            chw
        }
        c => {
            return Err(data_err(
                path,
                format!("cannot load images with {c} channels (1 = grey or 3 = RGB)"),
            ));
        }
    };
    Ok(raw)
}

/// Reads the header of an image file (format and size, not the pixels), so that a file that is
/// not an image is named when the folder is listed, before any work; a file whose pixel data is
/// broken is named when its batch is read.
fn check_header(path: &Path) -> Result<()> {
    image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| data_err(path, format!("cannot decode image: {e}")))?;
    Ok(())
}

/// The image files of one split and how each becomes a sample: decoded as `channels`, resized
/// to `resized` (H, W), centre-cropped to `crop` (H, W).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderIndex {
    files: Vec<PathBuf>,
    channels: usize,
    resized: (usize, usize),
    crop: (usize, usize),
}

impl FolderIndex {
    /// (channels, height, width) of a sample.
    pub fn sample_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.crop.0, self.crop.1)
    }

    /// The image files, in sample order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Decodes sample `i` into `dst` (CHW f32 in [0, 1]); the error names the file.
    pub fn read_into(&self, i: usize, dst: &mut [f32]) -> Result<()> {
        let (rh, rw) = self.resized;
        let image = decode_u8(&self.files[i], self.channels, rh, rw)?;
        let image = centre_crop(image, self.channels, self.resized, self.crop);
        if image.len() != dst.len() {
            return Err(Error::Internal(format!(
                "{}: decoded {} values for a sample of {}",
                self.files[i].display(),
                image.len(),
                dst.len()
            )));
        }
        for (d, b) in dst.iter_mut().zip(image) {
            *d = b as f32 / 255.0;
        }
        Ok(())
    }
}

/// Loads one split of the image folder at `root`, every image converted to `channels`
/// (1 or 3) and resized to `height` x `width`.
pub fn load(
    root: &Path,
    split: Split,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Dataset> {
    load_resized(root, split, channels, (height, width), None)
}

/// Like [`load`], but with `resize = Some((rh, rw))` every image is first resized to `rh x rw`
/// and then centre-cropped to `height x width` (torchvision's `Resize` + `CenterCrop`; the
/// crop's top-left corner is at `((rh - height) / 2, (rw - width) / 2)`, rounded down).
pub fn load_resized(
    root: &Path,
    split: Split,
    channels: usize,
    (height, width): (usize, usize),
    resize: Option<(usize, usize)>,
) -> Result<Dataset> {
    let (rh, rw) = resize.unwrap_or((height, width));
    if rh < height || rw < width {
        return Err(data_err(
            root,
            format!("cannot crop {height}x{width} images out of {rh}x{rw} ones"),
        ));
    }
    if !root.is_dir() {
        return Err(data_err(root, "not a directory"));
    }
    if channels != 1 && channels != 3 {
        return Err(data_err(
            root,
            format!("image folders load as 1 (grey) or 3 (RGB) channels, not {channels}"),
        ));
    }
    if height == 0 || width == 0 || rh > u32::MAX as usize || rw > u32::MAX as usize {
        return Err(data_err(
            root,
            format!("invalid target image size {rh}x{rw}"),
        ));
    }
    let (train_root, test_root) = split_roots(root);
    let classes = class_names(&train_root)?;
    if classes.is_empty() {
        return Err(data_err(
            &train_root,
            "no class subdirectories (expected <class>/*.png|jpg|jpeg)",
        ));
    }
    let dir = match split {
        Split::Train => train_root,
        Split::Test => test_root.ok_or_else(|| {
            data_err(
                root,
                "no test split: expected test/ or val/ beside train/ \
                 (a folder of class directories is train data only)",
            )
        })?,
    };
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for name in class_names(&dir)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(data_err(
                &dir.join(&name),
                format!(
                    "class '{name}' is not among the {} train classes",
                    classes.len()
                ),
            ));
        };
        for file in sorted_entries(&dir.join(&name), is_image_file)? {
            check_header(&file)?;
            files.push(file);
            labels.push(label as u32);
        }
    }
    if labels.is_empty() {
        return Err(data_err(
            &dir,
            format!(
                "no images (.{}) in any class subdirectory",
                EXTENSIONS.join(", .")
            ),
        ));
    }
    let index = FolderIndex {
        files,
        channels,
        resized: (rh, rw),
        crop: (height, width),
    };
    Ok(Dataset::from_files(index, labels))
}

/// The `h x w` centre of a CHW image of `rh x rw` pixels (the image itself when the sizes match).
fn centre_crop<T: Copy>(
    image: Vec<T>,
    channels: usize,
    (rh, rw): (usize, usize),
    (h, w): (usize, usize),
) -> Vec<T> {
    if (rh, rw) == (h, w) {
        return image;
    }
    let (top, left) = ((rh - h) / 2, (rw - w) / 2);
    let mut out = Vec::with_capacity(channels * h * w);
    for plane in image.chunks_exact(rh * rw).take(channels) {
        for row in plane.chunks_exact(rw).skip(top).take(h) {
            out.extend_from_slice(&row[left..left + w]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn save(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, Rgb(rgb)).save(path).unwrap();
    }

    /// `cat`: two red-ish 20x10 PNGs; `dog`: one grey 7x9 PNG and one blue 16x16 JPEG.
    fn make_classes(dir: &Path) {
        save(&dir.join("cat/a.png"), 20, 10, [200, 10, 30]);
        save(&dir.join("cat/b.PNG"), 20, 10, [200, 10, 30]);
        save(&dir.join("dog/x.png"), 7, 9, [100, 100, 100]);
        save(&dir.join("dog/y.jpg"), 16, 16, [0, 0, 255]);
        std::fs::write(dir.join("dog/notes.txt"), "not an image").unwrap();
        std::fs::write(dir.join("dog/.hidden.png"), "skipped").unwrap();
    }

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn centre_crop_takes_the_middle() {
        // 2 channels of 3x4, values 0..24; the 1x2 centre starts at row 1, column 1.
        let image: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let out = centre_crop(image.clone(), 2, (3, 4), (1, 2));
        assert_eq!(out, vec![5.0, 6.0, 17.0, 18.0]);
        assert_eq!(centre_crop(image.clone(), 2, (3, 4), (3, 4)), image);
    }

    #[test]
    fn flat_folder_rgb_and_grey() {
        let dir = tempfile::tempdir().unwrap();
        make_classes(dir.path());
        assert!(looks_like(dir.path()));
        assert_eq!(classes(dir.path()).unwrap(), vec!["cat", "dog"]);

        let ds = load(dir.path(), Split::Train, 3, 8, 12).unwrap();
        assert_eq!(ds.len(), 4);
        assert_eq!((ds.channels, ds.height, ds.width), (3, 8, 12));
        assert_eq!(ds.images().unwrap().len(), 4 * 3 * 8 * 12);
        assert_eq!(ds.labels, vec![0, 0, 1, 1]);
        let plane = 8 * 12;
        // cat/a.png: a constant colour stays that colour through the resize (planar CHW).
        let s0 = ds.batch(0..1).unwrap();
        for (c, v) in [200.0f32, 10.0, 30.0].into_iter().enumerate() {
            for i in [0, 5, plane - 1] {
                assert!(close(s0[c * plane + i], v / 255.0, 1.0 / 255.0), "{c} {i}");
            }
        }
        // dog/y.jpg: blue, within JPEG error.
        let s3 = ds.batch(3..4).unwrap();
        assert!(close(s3[0], 0.0, 0.05) && close(s3[2 * plane + 40], 1.0, 0.05));

        let grey = load(dir.path(), Split::Train, 1, 5, 5).unwrap();
        assert_eq!((grey.channels, grey.height, grey.width), (1, 5, 5));
        assert_eq!(grey.images().unwrap().len(), 4 * 25);
        assert_eq!(grey.labels, vec![0, 0, 1, 1]);
        // dog/x.png is grey 100: luma 100 whatever the weights.
        assert!(
            grey.batch(2..3)
                .unwrap()
                .iter()
                .all(|&v| close(v, 100.0 / 255.0, 1.0 / 255.0))
        );

        let err = load(dir.path(), Split::Test, 3, 8, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no test split"), "{err}");
    }

    #[test]
    fn split_layout_shares_train_classes() {
        let dir = tempfile::tempdir().unwrap();
        make_classes(&dir.path().join("train"));
        save(&dir.path().join("val/dog/z.png"), 4, 4, [1, 2, 3]);
        assert!(looks_like(dir.path()));
        let train = load(dir.path(), Split::Train, 3, 4, 4).unwrap();
        assert_eq!(train.labels, vec![0, 0, 1, 1]);
        // Only `dog` in val: its label is still 1.
        let test = load(dir.path(), Split::Test, 3, 4, 4).unwrap();
        assert_eq!(test.labels, vec![1]);
        let images = test.images().unwrap();
        assert_eq!(images[0], 1.0 / 255.0);
        assert_eq!(images[16], 2.0 / 255.0);
        assert_eq!(images[32], 3.0 / 255.0);

        // A test class unknown to train is an error naming it.
        save(&dir.path().join("val/zebra/q.png"), 4, 4, [0, 0, 0]);
        let err = load(dir.path(), Split::Test, 3, 4, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("class 'zebra'"), "{err}");
    }

    #[test]
    fn undecodable_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        make_classes(dir.path());
        let bad = dir.path().join("dog/broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
        // A bad header is found when the folder is listed.
        let err = load(dir.path(), Split::Train, 3, 8, 8).unwrap_err();
        assert!(matches!(err, Error::Data { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&bad.display().to_string()), "{msg}");
        assert!(msg.contains("cannot decode image"), "{msg}");
    }

    #[test]
    fn empty_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), Split::Train, 3, 8, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no class subdirectories"), "{err}");
        std::fs::create_dir(dir.path().join("cat")).unwrap();
        std::fs::write(dir.path().join("cat/readme.txt"), "x").unwrap();
        assert!(!looks_like(dir.path()));
        let err = load(dir.path(), Split::Train, 3, 8, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no images"), "{err}");

        make_classes(dir.path());
        let err = load(dir.path(), Split::Train, 2, 8, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not 2"), "{err}");
        let err = load(dir.path(), Split::Train, 3, 0, 8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid target image size"), "{err}");
    }
}
