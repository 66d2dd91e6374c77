//! The `ort` feature: ONNX Runtime as a second verifier of every export. These tests need the
//! library: scripts/test.sh sets ORT_DYLIB_PATH to the onnxruntime wheel's copy.
#![cfg(feature = "ort")]

mod common;

use compress::verify::onnxruntime::run_ort;

/// Our re-export of every shipped model and fixture computes PyTorch's saved output in ONNX
/// Runtime, and so does a random 50% pruning of it compared with its masked reference.
#[test]
fn exports_run_in_onnxruntime_like_pytorch() {
    for dir in common::model_dirs() {
        let name = dir.display().to_string();
        let graph = compress::onnx::import_file(&dir.join("model.onnx")).unwrap();
        let (inputs, expected) = common::load_data_set(&dir.join("test_data_set_0"));
        let out = run_ort(&compress::onnx::export(&graph), &inputs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = common::max_diff(&out[0], &expected[0]);
        assert!(d <= 1e-4, "{name}: ONNX Runtime vs PyTorch {d}");

        let groups = compress::groups::analyse(&graph).unwrap();
        let plan = compress::prune::plan::random(&groups, 0.5, 3);
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        let a = run_ort(&compress::onnx::export(&pruned.graph), &inputs).unwrap();
        let b = run_ort(&compress::onnx::export(&pruned.reference), &inputs).unwrap();
        let d = common::max_diff(&a[0], &b[0]);
        assert!(d <= 1e-4, "{name}: pruned vs masked reference in ORT {d}");
    }
}

/// ONNX Runtime sees a wrong weight: the comparison fails rather than passing silently.
#[test]
fn a_changed_weight_fails_the_onnxruntime_comparison() {
    let graph = compress::onnx::import_file(std::path::Path::new(&common::lenet5())).unwrap();
    let mut broken = graph.clone();
    let weight = broken
        .initializers
        .values_mut()
        .find(|t| t.len() > 100)
        .unwrap();
    if let compress::ir::Data::F32(v) = &mut weight.data {
        v.iter_mut().for_each(|x| *x *= -1.0);
    }
    let inputs = vec![compress::verify::pseudo_random(
        &graph.inputs[0].shape(2),
        5,
    )];
    let a = run_ort(&compress::onnx::export(&graph), &inputs).unwrap();
    let b = run_ort(&compress::onnx::export(&broken), &inputs).unwrap();
    let d = compress::verify::max_abs_diff(&a[0], &b[0]);
    assert!(d > 1e-2, "ORT did not see the changed weight: {d}");
}

/// `prune` reports both runtimes; the report passes the schema's `verification` fields.
#[test]
fn prune_is_verified_in_tract_and_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let report = dir.path().join("p.json");
    common::compress()
        .args(["prune", &common::lenet5(), "--random-keep", "0.5", "-o"])
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .assert()
        .success()
        .stdout(predicates::str::contains("onnxruntime: max abs difference"));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let also = r["verification"]["also"].as_array().unwrap();
    assert_eq!(also.len(), 1, "{r}");
    assert_eq!(also[0]["runtime"], "onnxruntime");
    assert!(also[0]["max_abs_diff"].as_f64().unwrap() <= also[0]["tolerance"].as_f64().unwrap());
}

/// Without the library every command that writes a model stops before doing any work, with
/// exit code 2 and the variable to set; nothing is written.
#[test]
fn a_missing_library_is_a_clear_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    for args in [
        vec!["prune", "--random-keep", "0.5"],
        vec!["convert"],
        vec!["run", "--method", "l0-hc"],
    ] {
        common::compress()
            .env(
                "ORT_DYLIB_PATH",
                dir.path().join("no-such-libonnxruntime.so"),
            )
            .args(&args[..1])
            .arg(common::lenet5())
            .args(&args[1..])
            .arg("-o")
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicates::str::contains("ORT_DYLIB_PATH"))
            .stderr(predicates::str::contains("no-such-libonnxruntime.so"));
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
