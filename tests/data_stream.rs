//! The streaming input pipeline gives the bytes the old in-memory path gave: for IDX, CIFAR and
//! an image folder, a seeded shuffled epoch read through `Loader` (worker threads) and then
//! augmented equals the whole split decoded eagerly to f32 (here, from the raw files),
//! normalised in one pass, gathered and augmented with the same random source. Also: a bad
//! image mid-epoch is an error naming it (exit 2 from the CLI), and the read-ahead queue stays
//! bounded with a slow consumer.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use compress::data::loader::{Loader, Prefetch};
use compress::data::transform::{Augment, Normalize};
use compress::data::{self, Dataset, Split};
use compress::rng::SliceRandom;

/// The old path: pixels of every sample (already in [0, 1] f32), normalised in one pass.
fn eager(mut images: Vec<f32>, norm: Option<&Normalize>, chw: (usize, usize, usize)) -> Vec<f32> {
    if let Some(n) = norm {
        n.apply(&mut images, chw.0, chw.1 * chw.2).unwrap();
    }
    images
}

/// Checks a seeded shuffled epoch of `ds` through a `Loader` against `all` (every sample's
/// prepared pixels), augmenting both with one random source each from the same seed.
fn same_epoch(ds: &Dataset, all: &[f32], batch: usize, augment: Option<Augment>, workers: usize) {
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let n = c * h * w;
    assert_eq!(all.len(), ds.len() * n);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    order.shuffle(&mut compress::rng::seeded(11));
    let (mut rng_new, mut rng_old) = (compress::rng::seeded(5), compress::rng::seeded(5));
    let prefetch = Prefetch { workers, depth: 2 };
    let loader = Loader::new(ds, order.clone(), batch, prefetch);
    let mut batches = 0;
    for (chunk, got) in order.chunks(batch).zip(loader) {
        let mut got = got.unwrap();
        let mut want: Vec<f32> = chunk
            .iter()
            .flat_map(|&i| all[i * n..(i + 1) * n].iter().copied())
            .collect();
        if let Some(aug) = augment {
            aug.apply(&mut got, chunk.len(), c, h, w, &mut rng_new)
                .unwrap();
            aug.apply(&mut want, chunk.len(), c, h, w, &mut rng_old)
                .unwrap();
        }
        let (got, want): (Vec<u32>, Vec<u32>) = (
            got.iter().map(|v| v.to_bits()).collect(),
            want.iter().map(|v| v.to_bits()).collect(),
        );
        assert!(got == want, "batch {batches} differs");
        batches += 1;
    }
    assert_eq!(batches, ds.len().div_ceil(batch));
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn idx_batches_equal_the_in_memory_path() {
    let dir = common::repo().join("fixtures/data/fashion-mnist-subset");
    let raw = gunzip(&dir.join("t10k-images-idx3-ubyte.gz"));
    let all: Vec<f32> = raw[16..].iter().map(|&b| b as f32 / 255.0).collect();
    let ds = data::load(&dir, Split::Test, None).unwrap();
    assert_eq!(ds.len(), 2000);
    same_epoch(&ds, &eager(all.clone(), None, (1, 28, 28)), 128, None, 2);
    // With a normalisation and augmentation (as `--mean/--std --augment` give).
    let norm = Normalize::new(vec![0.2860], vec![0.3530]).unwrap();
    let mut normed = ds.clone();
    norm.apply_dataset(&mut normed).unwrap();
    let all = eager(all, Some(&norm), (1, 28, 28));
    same_epoch(&normed, &all, 100, Some(Augment::CIFAR), 3);
    same_epoch(&normed, &all, 100, Some(Augment::CIFAR), 0);
}

#[test]
fn cifar_batches_equal_the_in_memory_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 12345u32;
    let mut byte = || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 16) as u8
    };
    let mut all = Vec::new();
    for name in ["test_batch.bin"] {
        let mut bytes = Vec::new();
        for _ in 0..300 {
            bytes.push(byte() % 10);
            let pixels: Vec<u8> = (0..3072).map(|_| byte()).collect();
            all.extend(pixels.iter().map(|&b| b as f32 / 255.0));
            bytes.extend(pixels);
        }
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let mut ds = data::load(dir.path(), Split::Test, None).unwrap();
    let norm = Normalize::cifar();
    norm.apply_dataset(&mut ds).unwrap();
    let all = eager(all, Some(&norm), (3, 32, 32));
    same_epoch(&ds, &all, 64, Some(Augment::CIFAR), 2);
}

/// `per_class` PNGs of varying sizes in each of 3 classes, pixel values from the position.
fn folder(root: &Path, per_class: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for class in 0..3u32 {
        let dir = root.join(format!("c{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class as u32 {
            let (w, h) = (30 + i % 7, 26 + i % 5);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([
                    (x * 8 + class * 50) as u8,
                    (y * 9 + i) as u8,
                    ((x + y) * 5) as u8,
                ])
            });
            let path = dir.join(format!("{i:03}.png"));
            img.save(&path).unwrap();
            files.push(path);
        }
    }
    files
}

/// The old folder path: decode each file to f32 at the resize, centre-crop to (h, w).
fn eager_folder(files: &[PathBuf], (rh, rw): (usize, usize), (h, w): (usize, usize)) -> Vec<f32> {
    let mut all = Vec::new();
    for f in files {
        let img = data::folder::decode(f, 3, rh, rw).unwrap();
        let (top, left) = ((rh - h) / 2, (rw - w) / 2);
        for plane in img.chunks_exact(rh * rw) {
            for row in plane.chunks_exact(rw).skip(top).take(h) {
                all.extend_from_slice(&row[left..left + w]);
            }
        }
    }
    all
}

#[test]
fn folder_batches_equal_the_in_memory_path() {
    let dir = tempfile::tempdir().unwrap();
    let files = folder(dir.path(), 20);
    let mut ds =
        data::folder::load_resized(dir.path(), Split::Train, 3, (24, 24), Some((28, 30))).unwrap();
    assert_eq!(ds.len(), 60);
    assert!(ds.decodes_files());
    let norm = Normalize::new(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]).unwrap();
    norm.apply_dataset(&mut ds).unwrap();
    let all = eager(
        eager_folder(&files, (28, 30), (24, 24)),
        Some(&norm),
        (3, 24, 24),
    );
    same_epoch(&ds, &all, 8, Some(Augment::CIFAR), 4);
    same_epoch(&ds, &all, 7, None, 1);
}

#[test]
fn a_bad_image_mid_epoch_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = folder(dir.path(), 20);
    let ds = data::load(dir.path(), Split::Train, Some((3, 16, 16))).unwrap();
    // Broken after the folder was listed: the break shows when its batch is read.
    let bad = &files[33];
    std::fs::write(bad, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let prefetch = Prefetch {
        workers: 3,
        depth: 2,
    };
    let mut loader = Loader::new(&ds, (0..60).collect(), 5, prefetch);
    for k in 0..6 {
        assert!(loader.next_batch().unwrap().is_ok(), "batch {k}");
    }
    let err = loader.next_batch().unwrap().unwrap_err();
    assert!(matches!(err, compress::Error::Data { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("cannot decode image"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn a_run_whose_train_split_breaks_mid_epoch_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    common::rgb_folder(&images, 12);
    // A PNG cut in half: its header (read when the folder is listed) is whole, its pixel data
    // breaks when the batch holding it is decoded, during training.
    let bad = images.join("train/class2/7.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("out.onnx");
    let model = common::repo().join("models/resnet20_rgb/model.onnx");
    let o = common::compress()
        .arg(&model)
        .args(["--method", "l0-hc", "--epochs", "1", "--batch-size", "6"])
        .args(["--latency-runs", "0", "--quiet", "-o"])
        .arg(&out)
        .arg("--data")
        .arg(&images)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("7.png"), "{stderr}");
    assert!(stderr.contains("cannot decode image"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn the_read_ahead_stays_bounded_over_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), 40);
    let ds = data::load(dir.path(), Split::Train, Some((3, 16, 16))).unwrap();
    let prefetch = Prefetch {
        workers: 2,
        depth: 1,
    };
    let mut loader = Loader::new(&ds, (0..120).collect(), 2, prefetch);
    let mut taken = 0;
    while let Some(batch) = loader.next_batch() {
        batch.unwrap();
        taken += 1;
        // A consumer slower than the readers: they fill their queues and wait.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    assert_eq!(taken, 60);
    let peak = loader.peak_pending();
    assert!(peak >= 2, "the workers never read ahead ({peak})");
    assert!(peak <= prefetch.bound(), "{peak} > {}", prefetch.bound());
}
