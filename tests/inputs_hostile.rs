//! Hostile inputs other than models: corrupted and foreign checkpoints given to `--resume`,
//! CIFAR binaries of the wrong length or with labels out of range, image folders with an
//! undecodable or empty image, IDX labels beyond the model's outputs and broken lambda
//! configs. Each is a one-line error naming the file at fault and exit code 2, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

fn model(name: &str) -> PathBuf {
    common::repo().join(format!("models/{name}/model.onnx"))
}

/// A small IDX dataset; `train_label_patch` edits the training labels.
fn idx_data(dir: &Path, train_label_patch: impl Fn(&mut [u8])) -> PathBuf {
    let src = common::repo().join("fixtures/data/fashion-mnist-subset");
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", 320), ("t10k", 100)] {
        for kind in ["images-idx3", "labels-idx1"] {
            let name = format!("{split}-{kind}-ubyte");
            let to = dir.join(&name);
            let from = src.join(format!("{name}.gz"));
            if split == "train" && kind == "labels-idx1" {
                common::cut_idx(&from, &to, n, &train_label_patch);
            } else {
                common::cut_idx(&from, &to, n, |_| {});
            }
        }
    }
    dir.to_path_buf()
}

/// `compress run MODEL --method l0-hc` for two steps on `data`, plus `extra`.
fn run(model_name: &str, data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::cargo_bin("compress")
        .unwrap()
        .arg("run")
        .arg(model(model_name))
        .args(["--method", "l0-hc", "--epochs", "1", "--max-steps", "2"])
        .args([
            "--batch-size",
            "32",
            "--latency-runs",
            "0",
            "--quiet",
            "--force",
        ])
        .arg("--data")
        .arg(data)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Exit 2, one line on stderr, naming `names` (a path or part of one).
fn assert_clean_error(o: &Output, names: &str, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains(names), "{what}: '{names}' not named in: {err}");
}

#[test]
fn corrupted_and_foreign_checkpoints_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = idx_data(&dir.path().join("data"), |_| {});
    let out = dir.path().join("out.onnx");
    let good = dir.path().join("good");
    let o = run(
        "lenet5",
        &data,
        &out,
        &["--checkpoint-dir", good.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let foreign = dir.path().join("foreign");
    let o = run(
        "lenet300",
        &data,
        &out,
        &["--checkpoint-dir", foreign.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    type Damage = fn(&Path);
    let cases: [(&str, &str, Damage); 6] = [
        ("truncated state", "state.json", |d| {
            let p = d.join("state.json");
            let text = std::fs::read(&p).unwrap();
            std::fs::write(&p, &text[..text.len() / 2]).unwrap();
        }),
        ("garbage state", "state.json", |d| {
            std::fs::write(d.join("state.json"), [0xff, 0x00, 0x13, 0x37]).unwrap();
        }),
        ("missing weights", "tensors.bin", |d| {
            std::fs::remove_file(d.join("tensors.bin")).unwrap();
        }),
        ("truncated weights", "epoch-1", |d| {
            let p = d.join("tensors.bin");
            std::fs::write(&p, &std::fs::read(&p).unwrap()[..1000]).unwrap();
        }),
        ("truncated optimiser state", "optim-weights.bpk", |d| {
            let p = d.join("optim-weights.bpk");
            std::fs::write(&p, &std::fs::read(&p).unwrap()[..1000]).unwrap();
        }),
        ("missing optimiser state", "optim-gates.bpk", |d| {
            std::fs::remove_file(d.join("optim-gates.bpk")).unwrap();
        }),
    ];
    for (i, (what, names, damage)) in cases.iter().enumerate() {
        let ck = dir.path().join(format!("ck-{i}"));
        std::fs::create_dir_all(ck.join("epoch-1")).unwrap();
        for f in std::fs::read_dir(good.join("epoch-1")).unwrap().flatten() {
            std::fs::copy(f.path(), ck.join("epoch-1").join(f.file_name())).unwrap();
        }
        damage(&ck.join("epoch-1"));
        let ck_s = ck.to_str().unwrap();
        let o = run(
            "lenet5",
            &data,
            &out,
            &["--checkpoint-dir", ck_s, "--resume"],
        );
        assert_clean_error(&o, names, what);
        assert!(
            o.stderr.windows(ck_s.len()).any(|w| w == ck_s.as_bytes()),
            "{what}"
        );
    }
    // A checkpoint of another model: refused, naming the checkpoint and the tensor.
    let o = run(
        "lenet5",
        &data,
        &out,
        &["--checkpoint-dir", foreign.to_str().unwrap(), "--resume"],
    );
    assert_clean_error(&o, "foreign/epoch-1", "foreign checkpoint");
    assert!(String::from_utf8_lossy(&o.stderr).contains("another model"));
}

/// A CIFAR-100 directory (train.bin, test.bin) of `records` random-ish records per file.
fn cifar100(dir: &Path, records: usize, label: u8, extra_bytes: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut bytes = Vec::new();
    for r in 0..records {
        bytes.push(0);
        bytes.push(if r == records - 1 { label } else { 3 });
        bytes.extend((0..3072).map(|i| ((i * 7 + r * 13) % 256) as u8));
    }
    bytes.extend(std::iter::repeat_n(9u8, extra_bytes));
    for f in ["train.bin", "test.bin"] {
        std::fs::write(dir.join(f), &bytes).unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn bad_data_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    // CIFAR: a record cut short, and a fine label beyond CIFAR-100's 100 classes.
    let short = cifar100(&dir.path().join("cifar-short"), 4, 3, 100);
    let o = run("resnet20_rgb", &short, &out, &[]);
    assert_clean_error(&o, "cifar-short/train.bin", "CIFAR of the wrong length");
    let label = cifar100(&dir.path().join("cifar-label"), 4, 200, 0);
    let o = run("resnet20_rgb", &label, &out, &[]);
    assert_clean_error(&o, "cifar-label/train.bin", "CIFAR label out of range");
    assert!(String::from_utf8_lossy(&o.stderr).contains("label 200"));

    // Image folders: an undecodable image, and an empty file.
    for (what, bytes) in [
        ("undecodable", b"\x89PNG\r\n\x1a\nnot really".as_slice()),
        ("empty", b"".as_slice()),
    ] {
        let root = dir.path().join(format!("folder-{what}"));
        std::fs::create_dir_all(root.join("cat")).unwrap();
        std::fs::write(root.join("cat/a.png"), bytes).unwrap();
        let o = run("resnet20_rgb", &root, &out, &[]);
        assert_clean_error(&o, &format!("folder-{what}/cat/a.png"), what);
    }

    // IDX: a training label the 10-output model has no logit for (the loss once panicked).
    let data = idx_data(&dir.path().join("idx-label"), |labels| labels[5] = 12);
    let o = run("lenet5", &data, &out, &[]);
    assert_clean_error(&o, "idx-label (train split)", "IDX label out of range");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sample 5 has label 12"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // `eval` on a test split with such a label: an error, not a miss counted into the accuracy.
    let test_labels = data.join("t10k-labels-idx1-ubyte");
    let src = common::repo().join("fixtures/data/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");
    common::cut_idx(&src, &test_labels, 100, |labels| labels[40] = 11);
    let o = Command::cargo_bin("compress")
        .unwrap()
        .arg("eval")
        .arg(model("lenet5"))
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert_clean_error(&o, "idx-label", "IDX test label out of range in eval");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sample 40 has label 11"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn broken_lambda_configs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = idx_data(&dir.path().join("data"), |_| {});
    let out = dir.path().join("out.onnx");
    for (name, text, says) in [
        ("malformed.json", "{\"/conv1/Conv\": ", "not JSON"),
        ("array.json", "[1, 2]", "JSON object"),
        ("unknown.json", "{\"/nope/Conv\": 1.0}", "'/nope/Conv'"),
        (
            "text.json",
            "{\"/conv1/Conv\": \"big\"}",
            "must be a number",
        ),
        ("negative.json", "{\"/conv1/Conv\": -1.0}", "negative"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let o = run(
            "lenet5",
            &data,
            &out,
            &["--penalty", "l0", "--lambda-config", path.to_str().unwrap()],
        );
        assert_clean_error(&o, name, name);
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{name}");
    }
}
