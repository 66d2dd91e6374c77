//! Models and data with three channels: the main job, `eval` and `--dry-run` on an RGB image
//! folder whose images are not the model's input size (they are resized to it).

mod common;

use common::{compress, resnet18, rgb_folder};

#[test]
fn run_trains_and_prunes_a_3_channel_model_on_an_rgb_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 6);
    let out = dir.path().join("r18.onnx");
    let o = compress()
        .args([
            &resnet18(),
            "--method",
            "l0-hc",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--epochs", "1", "--max-steps", "2", "--batch-size", "6"])
        .args([
            "--latency-runs",
            "0",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r18.report.json")).unwrap())
            .unwrap();
    assert_eq!(report["dense"]["samples"], 18);
    assert_eq!(report["pruned"]["samples"], 18);
    assert!(report["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    // The written model is what the report describes and still takes 3x64x64 inputs.
    let written = compress::onnx::import_file(&out).unwrap();
    assert_eq!(written.inputs[0].shape(1), vec![1, 3, 64, 64]);
    assert_eq!(
        compress::ir::cost::graph_cost(&written, 1).unwrap().macs,
        report["pruned"]["macs"].as_u64().unwrap()
    );
}

#[test]
fn eval_and_dry_run_read_an_rgb_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 2);
    let o = compress()
        .args([
            "eval",
            &resnet18(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let acc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(acc["samples"], 6);
    let o = compress()
        .args([&resnet18(), "--method", "dep-l0", "--dry-run"])
        .args(["--data", data.to_str().unwrap(), "--batch-size", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("gated groups"), "{text}");
}
