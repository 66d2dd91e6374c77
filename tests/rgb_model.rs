//! The trained 3-channel model (models/resnet20_rgb) on its CIFAR-format data: the test writes
//! the data from the installed Fashion-MNIST IDX files exactly as
//! converters/make_cifar_fashion.py does (checked by the hash in the card), `eval` reproduces
//! the card's accuracy with the preprocessing in the model's metadata, `run` prunes it on CIFAR
//! data and on an image folder, `--resume` refuses a checkpoint of other preprocessing, and bad
//! data files are one-line errors.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};

use common::{compress, rgb_folder};
use serde_json::Value;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";
/// (R, G, B) tints of make_cifar_fashion.py, chosen by the image's index in its split.
const TINTS: [[u32; 3]; 8] = [
    [255, 255, 255],
    [255, 160, 96],
    [96, 160, 255],
    [160, 255, 96],
    [255, 96, 160],
    [96, 255, 208],
    [208, 96, 255],
    [255, 224, 128],
];
const SIDE: usize = 32;
const PAD: usize = 2;
const RECORD: usize = 1 + 3 * SIDE * SIDE;

fn model_dir() -> PathBuf {
    common::repo().join("models/resnet20_rgb")
}

fn model() -> String {
    model_dir().join("model.onnx").display().to_string()
}

/// The payload of a gzipped IDX file after its magic number and `ndim` dims.
fn read_idx(name: &str, ndim: usize) -> Vec<u8> {
    let file = std::fs::File::open(Path::new(FASHION).join(name)).unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    bytes.split_off(4 + 4 * ndim)
}

/// Fashion-MNIST's test split: 28x28 images and labels.
fn fashion_test() -> (Vec<u8>, Vec<u8>) {
    (
        read_idx("t10k-images-idx3-ubyte.gz", 3),
        read_idx("t10k-labels-idx1-ubyte.gz", 1),
    )
}

/// CIFAR-10 records of the test images `range`, as make_cifar_fashion.py writes them: padded
/// by 2 zero pixels, channel c = (p * tint[c] + 127) / 255 with the tint of the split index.
fn records(images: &[u8], labels: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len() * RECORD);
    for i in range {
        let image = &images[i * 28 * 28..(i + 1) * 28 * 28];
        out.push(labels[i]);
        for tint in TINTS[i % TINTS.len()] {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let inside = (PAD..PAD + 28).contains(&y) && (PAD..PAD + 28).contains(&x);
                    let p = if inside {
                        image[(y - PAD) * 28 + (x - PAD)] as u32
                    } else {
                        0
                    };
                    out.push(((p * tint + 127) / 255) as u8);
                }
            }
        }
    }
    out
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A small CIFAR-10-layout directory: 16 test images per training file, the first 32 as the
/// test split.
fn small_cifar(dir: &Path) -> PathBuf {
    let (images, labels) = fashion_test();
    let root = dir.join("cifar-small");
    std::fs::create_dir_all(&root).unwrap();
    for k in 0..5 {
        let bytes = records(&images, &labels, k * 16..(k + 1) * 16);
        std::fs::write(root.join(format!("data_batch_{}.bin", k + 1)), bytes).unwrap();
    }
    std::fs::write(
        root.join("test_batch.bin"),
        records(&images, &labels, 0..32),
    )
    .unwrap();
    root
}

fn card() -> Value {
    common::card(&model_dir())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn eval_reproduces_the_cards_accuracy_with_the_models_preprocessing() {
    let card = card();
    let (images, labels) = fashion_test();
    let bytes = records(&images, &labels, 0..10_000);
    assert_eq!(bytes.len(), 10_000 * RECORD);
    // The same bytes as the Python converter wrote for training and the card.
    assert_eq!(
        format!("{:016x}", fnv1a64(&bytes)),
        card["data"]["test_batch_fnv1a64"].as_str().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
    let o = compress()
        .args(["eval", &model(), "--data", dir.path().to_str().unwrap()])
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["samples"], 10_000);
    let accuracy = v["accuracy"].as_f64().unwrap();
    let want = card["accuracy"].as_f64().unwrap();
    assert!((accuracy - want).abs() <= 1e-3, "{accuracy} vs card {want}");
    // The model's metadata, not CIFAR-10's statistics (the format default), prepared the data.
    let p = &v["preprocessing"];
    assert_eq!(p["source"], "model");
    let close = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    };
    assert!(close(
        &floats(&p["mean"]),
        &floats(&card["preprocessing"]["mean"])
    ));
    assert!(close(
        &floats(&p["std"]),
        &floats(&card["preprocessing"]["std"])
    ));
}

/// `run` on the trained model for two steps with `data`; returns the report.
fn short_run(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> Value {
    let out = dir.join(format!("{name}.onnx"));
    let o = compress()
        .args([&model(), "--method", "l0-hc", "--data"])
        .arg(data)
        .args(["--epochs", "1", "--max-steps", "2", "--batch-size", "16"])
        .args(["--latency-runs", "0", "--quiet", "-o"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.join(format!("{name}.report.json"))).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert!(report["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    // The pruned model says how to prepare its inputs, as the original did.
    let props = compress::onnx::import_file(&out)
        .unwrap()
        .meta
        .metadata_props;
    let original = compress::onnx::import_file(Path::new(&model()))
        .unwrap()
        .meta
        .metadata_props;
    for key in ["compress.mean", "compress.std"] {
        let get = |p: &[(String, String)]| p.iter().find(|(k, _)| k == key).cloned();
        assert!(get(&original).is_some());
        assert_eq!(get(&props), get(&original), "{key}");
    }
    report
}

#[test]
fn run_prunes_the_trained_model_on_cifar_data_and_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = small_cifar(dir.path());
    let report = short_run(dir.path(), &cifar, "cifar", &[]);
    assert_eq!(report["dense"]["samples"], 32);
    assert_eq!(report["settings"]["preprocessing"]["source"], "model");
    // A trained model: most of these easy test images are right before fine-tuning.
    assert!(report["dense"]["accuracy"].as_f64().unwrap() >= 0.75);

    // 40x48 RGB images, resized to the model's 32x32 input.
    let images = dir.path().join("images");
    rgb_folder(&images, 6);
    let report = short_run(dir.path(), &images, "folder", &[]);
    assert_eq!(report["dense"]["samples"], 18);
    assert_eq!(report["settings"]["preprocessing"]["source"], "model");
}

#[test]
fn resume_refuses_a_checkpoint_made_with_other_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = small_cifar(dir.path());
    let ck = dir.path().join("ck");
    let ck_s = ck.to_str().unwrap();
    short_run(dir.path(), &cifar, "first", &["--checkpoint-dir", ck_s]);
    let resume = |extra: &[&str]| {
        let out = dir.path().join("resumed.onnx");
        compress()
            .args([&model(), "--method", "l0-hc", "--data"])
            .arg(&cifar)
            .args(["--epochs", "2", "--max-steps", "3", "--batch-size", "16"])
            .args(["--latency-runs", "0", "--quiet", "--force", "--resume"])
            .args(["--checkpoint-dir", ck_s, "-o"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let card = card();
    let list = |v: &Value| {
        floats(v)
            .iter()
            .map(|x| (*x as f32).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (mean, std) = (
        list(&card["preprocessing"]["mean"]),
        list(&card["preprocessing"]["std"]),
    );
    let o = resume(&["--normalize", "cifar10"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let want = format!(
        "it was made with preprocessing mean {mean} std {std}, not preprocessing mean \
         0.4914,0.4822,0.4465 std 0.247,0.2435,0.2616"
    );
    assert!(stderr.contains(&want), "{stderr}\nwant: {want}");
    assert!(stderr.contains("epoch-1"), "{stderr}");
    // The same values given as options are the same preprocessing: the resume goes on.
    let o = resume(&["--mean", &mean, "--std", &std]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `eval` and `run` of the trained model on `data` fail with exit 2 and one line containing
/// each of `want`.
fn assert_one_line_error(data: &Path, want: &[&str]) {
    let out = data.with_extension("onnx");
    for run in [false, true] {
        let mut cmd = compress();
        if run {
            cmd.args([&model(), "--method", "l0-hc", "-o"]).arg(&out);
        } else {
            cmd.args(["eval", &model()]);
        }
        let o = cmd.arg("--data").arg(data).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "run {run}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "run {run}: {stderr}");
        for w in want {
            assert!(stderr.contains(w), "run {run}: {stderr}\nwant: {w}");
        }
    }
    assert!(!out.exists());
}

#[test]
fn undecodable_images_and_cifar_files_of_the_wrong_length_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    rgb_folder(&images, 2);
    for split in ["train", "test"] {
        let bad = images.join(split).join("class1").join("broken.png");
        std::fs::write(&bad, b"not a png at all").unwrap();
    }
    assert_one_line_error(&images, &["broken.png", "cannot decode image"]);

    let cifar = small_cifar(dir.path());
    for name in ["data_batch_3.bin", "test_batch.bin"] {
        let path = cifar.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 100);
        std::fs::write(&path, bytes).unwrap();
    }
    assert_one_line_error(
        &cifar,
        &[
            "_batch",
            ".bin",
            "not a multiple of the 3073-byte CIFAR-10 record",
        ],
    );
}
