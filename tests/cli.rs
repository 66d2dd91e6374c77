//! The command line as a user meets it: outputs, JSON, exit codes and error messages.

mod common;

use predicates::prelude::*;

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

use common::{compress, lenet5, resnet18};

fn json_of(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).expect("stdout is one JSON object")
}

#[test]
fn inspect_json_has_params_macs_nodes_groups() {
    let out = compress()
        .args(["inspect", &lenet5(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json_of(&out.stdout);
    let card = common::card(&common::repo().join("models/lenet5"));
    assert_eq!(v["params"], card["params"]);
    assert_eq!(v["macs"], card["macs"]);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 10);
    let groups = v["groups"].as_array().unwrap();
    let prunable: Vec<u64> = groups
        .iter()
        .filter(|g| g["prunable"] == true)
        .map(|g| g["width"].as_u64().unwrap())
        .collect();
    // LeNet-5: conv1 (20), conv2 (50), fc1 (500) are prunable; the logits are not.
    assert_eq!(prunable, vec![20, 50, 500]);
}

#[test]
fn inspect_table_lists_nodes_and_totals() {
    compress()
        .args(["inspect", &lenet5()])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("Conv")
                .and(predicate::str::contains("total:"))
                .and(predicate::str::contains("channel groups")),
        );
}

#[test]
fn convert_round_trip_writes_a_verified_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lenet5.onnx");
    let out_s = out.display().to_string();
    compress()
        .args(["convert", &lenet5(), "-o", &out_s])
        .assert()
        .success();
    assert!(compress::onnx::import_file(&out).is_ok());
    compress()
        .args(["convert", &lenet5(), "-o", &out_s])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    compress()
        .args(["convert", &lenet5(), "-o", &out_s, "--force"])
        .assert()
        .success();
}

#[test]
fn eval_lenet5_on_full_fashion_mnist_matches_card() {
    let card = common::card(&common::repo().join("models/lenet5"));
    let out = compress()
        .args(["eval", &lenet5(), "--data", FASHION, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out.stdout);
    assert_eq!(v["samples"], 10000);
    let acc = v["accuracy"].as_f64().unwrap();
    let want = card["accuracy"].as_f64().unwrap();
    assert!((acc - want).abs() <= 1e-3, "accuracy {acc} vs card {want}");
}

#[test]
fn eval_defaults_to_the_shipped_subset() {
    let out = compress()
        .args(["eval", &lenet5(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out.stdout);
    assert_eq!(v["samples"], 2000);
    assert!(v["accuracy"].as_f64().unwrap() > 0.8);
}

/// Runs compress expecting exit code 2 and a one-line error that mentions `needle`.
fn bad_input(args: &[&str], needle: &str) {
    let out = compress().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert!(
        err.contains(needle),
        "args {args:?}: '{needle}' not in: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    bad_input(
        &["inspect", empty.to_str().unwrap()],
        "empty.onnx: not a valid ONNX model: the file is empty",
    );

    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(lenet5()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    bad_input(
        &["inspect", truncated.to_str().unwrap()],
        "truncated.onnx: not a valid ONNX model",
    );

    let png = dir.path().join("picture.onnx");
    let mut fake = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    fake.extend_from_slice(&[0u8; 64]);
    std::fs::write(&png, &fake).unwrap();
    bad_input(
        &["inspect", png.to_str().unwrap()],
        "picture.onnx: not a valid ONNX model",
    );

    bad_input(
        &["inspect", "/nonexistent/model.onnx"],
        "/nonexistent/model.onnx",
    );
}

#[test]
fn unsupported_op_names_node_op_and_opset() {
    let model = "/usr/share/libonnx-testdata/data/node/test_det_2d/model.onnx";
    bad_input(&["inspect", model], "unsupported op Det (opset");
}

#[test]
fn eval_input_that_does_not_fit_the_model() {
    let resnet = common::repo().join("fixtures/models/resnet18/model.onnx");
    bad_input(
        &["eval", resnet.to_str().unwrap(), "--data", FASHION],
        "expects [3, 64, 64] per sample",
    );
}

#[test]
fn eval_dataset_dir_without_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    bad_input(
        &["eval", &lenet5(), "--data", dir.path().to_str().unwrap()],
        "expected IDX files t10k-images-idx3-ubyte",
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    compress().args(["inspect", "--bogus"]).assert().code(2);
}

#[test]
fn prune_random_keep_writes_model_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r18.onnx");
    let rep = dir.path().join("r18.json");
    let args = [
        "prune",
        &resnet18(),
        "--random-keep",
        "0.5",
        "--seed",
        "4",
        "--round-to",
        "8",
        "--latency-runs",
        "2",
    ];
    let o = compress()
        .args(args)
        .args([
            "-o",
            out.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = json_of(&o.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(stdout, report);
    assert_eq!(report["schema_version"], 1);
    // The report's MACs are those of the file that was written.
    let written = compress::onnx::import_file(&out).unwrap();
    let cost = compress::ir::cost::graph_cost(&written, 1).unwrap();
    assert_eq!(report["pruned"]["macs"].as_u64().unwrap(), cost.macs);
    assert_eq!(report["pruned"]["params"].as_u64().unwrap(), cost.params);
    assert_eq!(
        report["pruned"]["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    assert!(report["pruned"]["macs"].as_u64() < report["dense"]["macs"].as_u64());
    for g in report["groups"].as_array().unwrap() {
        let (b, a) = (
            g["width_before"].as_u64().unwrap(),
            g["width_after"].as_u64().unwrap(),
        );
        assert!(a % 8 == 0 || a == b, "round-to 8: {g}");
    }
    for key in ["batch_1", "batch_64"] {
        assert!(report["pruned"]["latency_ms"][key].as_f64().unwrap() > 0.0);
    }
    assert!(report["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
}

#[test]
fn prune_with_a_keep_plan_file() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    // LeNet-5: conv1 keeps 9 channels, conv2 18, fc1 25 (the paper's 9-18-..-25 shape).
    std::fs::write(&plan, r#"{"groups": [{"id": 0, "keep": [0,1,2,3,4,5,6,7,8]}, {"id": 1, "keep": [0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30,32,34]}, {"id": 2, "keep": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24]}]}"#).unwrap();
    let out = dir.path().join("l5.onnx");
    let o = compress()
        .args([
            "prune",
            &lenet5(),
            "--keep",
            plan.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--latency-runs",
            "0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o.stdout);
    assert_eq!(v["widths_before"], "20-50-500");
    assert_eq!(v["widths_after"], "9-18-25");
    // Weights only (no biases), as METHODS.md counts: 9*25 + 18*9*25 + (18*16)*25 + 25*10.
    let g = compress::onnx::import_file(&out).unwrap();
    let weights: usize = g
        .nodes
        .iter()
        .filter_map(|n| g.initializers.get(n.inputs.get(1)?))
        .map(|t| t.len())
        .sum();
    assert_eq!(weights, 9 * 25 + 18 * 9 * 25 + 18 * 16 * 25 + 25 * 10);
}

#[test]
fn verification_failure_exits_3_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.onnx");
    let o = compress()
        .env("COMPRESS_INJECT_FAULT", "1")
        .args([
            "prune",
            &lenet5(),
            "--random-keep",
            "0.5",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("differ by"));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp files left behind"
    );
    let o = compress()
        .env("COMPRESS_INJECT_FAULT", "1")
        .args(["convert", &lenet5(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(!out.exists());
}

#[test]
fn prune_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let out = out.to_str().unwrap();
    bad_input(
        &["prune", &lenet5(), "--random-keep", "1.5", "-o", out],
        "--random-keep 1.5",
    );
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, "{not json").unwrap();
    bad_input(
        &[
            "prune",
            &lenet5(),
            "--keep",
            plan.to_str().unwrap(),
            "-o",
            out,
        ],
        "plan.json: not a keep plan",
    );
    std::fs::write(&plan, r#"{"groups": [{"id": 3, "keep": [0]}]}"#).unwrap();
    bad_input(
        &[
            "prune",
            &lenet5(),
            "--keep",
            plan.to_str().unwrap(),
            "-o",
            out,
        ],
        "group 3 cannot be pruned (reaches graph output 'logits')",
    );
}
