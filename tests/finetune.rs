//! `--finetune-epochs N`: the pruned network trained on after the gates are decided, exported
//! and verified against burn; the report's `finetune` record; resuming through the phase.

mod common;

use common::{compress, lenet5};

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A short l0-hc run on the shipped subset (`--max-steps` bounds each phase).
fn run(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    compress()
        .arg(lenet5())
        .args([
            "--method",
            "l0-hc",
            "--target-macs",
            "0.5",
            "--epochs",
            "1",
            "--max-steps",
            "12",
            "--latency-runs",
            "0",
            "--quiet",
            "--force",
            "-o",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn finetune_phase_trains_the_pruned_model_and_reports_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.onnx");
    let tuned = dir.path().join("tuned.onnx");
    assert!(run(&plain, &[]).status.success());
    let o = run(&tuned, &["--finetune-epochs", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let r0 = read_json(&plain.with_extension("report.json"));
    let r = read_json(&tuned.with_extension("report.json"));
    assert!(r0.get("finetune").is_none(), "no phase, no record");
    let errors = compress::report::schema::validate(&r);
    assert!(errors.is_empty(), "{errors:?}");
    let f = &r["finetune"];
    assert_eq!(f["epochs"], 2);
    // --max-steps 12 (counted afresh in the phase) ends it within its first epoch.
    assert_eq!(f["history"].as_array().unwrap().len(), 1);
    // The structure is the one the gates decided; the phase starts from the plain run's model.
    assert_eq!(r["widths_after"], r0["widths_after"]);
    assert_eq!(r["pruned"]["macs"], r0["pruned"]["macs"]);
    assert_eq!(f["accuracy_before"], r0["pruned"]["accuracy"]);
    assert_eq!(f["accuracy_after"], r["pruned"]["accuracy"]);
    for a in [&f["accuracy_before"], &f["accuracy_after"]] {
        assert!((0.0..=1.0).contains(&a.as_f64().unwrap()));
    }
    // Trained on: other weights than the plain run's export.
    assert_ne!(
        std::fs::read(&plain).unwrap(),
        std::fs::read(&tuned).unwrap()
    );
    // Verified against burn on the fine-tuned graph.
    assert!(r["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    let md = std::fs::read_to_string(tuned.with_extension("report.md")).unwrap();
    assert!(md.contains("fine-tune phase: 2 epochs"), "{md}");
    // The written model scores what the report says.
    let e = compress()
        .arg("eval")
        .arg(&tuned)
        .arg("--json")
        .output()
        .unwrap();
    assert!(e.status.success());
    let acc: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(acc["accuracy"], r["pruned"]["accuracy"]);
}

#[test]
fn resume_continues_through_the_phase_and_refuses_another_phase_length() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let first = dir.path().join("first.onnx");
    let again = dir.path().join("again.onnx");
    let o = run(
        &first,
        &["--finetune-epochs", "1", "--checkpoint-dir", ckpt],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("ckpt/finetune/epoch-1").is_dir());

    let o = run(
        &again,
        &[
            "--finetune-epochs",
            "2",
            "--checkpoint-dir",
            ckpt,
            "--resume",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--finetune-epochs 1") && err.contains("--finetune-epochs 2"),
        "{err}"
    );
    assert!(!again.exists(), "refused before any work");

    let o = run(
        &again,
        &[
            "--finetune-epochs",
            "1",
            "--checkpoint-dir",
            ckpt,
            "--resume",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&again).unwrap()
    );
}
