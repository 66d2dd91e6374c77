//! The main job as CI jobs and pipelines use it: `compress MODEL --method M`, its files, its
//! report contract, `compress check` and its exit codes, sweeps, dry runs, completions.

mod common;

use common::{compress, lenet5};

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn assert_schema(report: &serde_json::Value) {
    let errors = compress::report::schema::validate(report);
    assert!(errors.is_empty(), "report violates the schema: {errors:?}");
}

/// One short run shared by the assertions below (about 30 s).
fn short_run(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let out = dir.join("l5.onnx");
    compress()
        .arg(lenet5())
        .args([
            "--method",
            "dep-l0",
            "--max-steps",
            "40",
            "--epochs",
            "1",
            "--latency-runs",
            "2",
            "-o",
        ])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn run_writes_model_reports_and_plot_and_check_gates_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = short_run(dir.path(), &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // --json: the report and nothing else on stdout.
    let stdout: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is exactly one JSON document");
    let report_path = dir.path().join("l5.report.json");
    let report = read_json(&report_path);
    assert_eq!(stdout, report);
    assert_schema(&report);
    assert_eq!(report["method"], "dep-l0");
    assert_eq!(report["settings"]["seed"], 0);
    assert_eq!(report["settings"]["dep_chain"], "forward");
    assert_eq!(report["settings"]["dep_n0"], 64);
    assert_eq!(report["history"].as_array().unwrap().len(), 1);
    // The model file is the one the report describes, and it is smaller.
    let written = compress::onnx::import_file(&dir.path().join("l5.onnx")).unwrap();
    assert_eq!(
        compress::ir::cost::graph_cost(&written, 1).unwrap().macs,
        report["pruned"]["macs"].as_u64().unwrap()
    );
    assert!(report["pruned"]["macs"].as_u64() < report["dense"]["macs"].as_u64());
    let md = std::fs::read_to_string(dir.path().join("l5.report.md")).unwrap();
    assert!(md.contains("| accuracy |") && md.contains("| MACs |"));
    // The plot is well-formed XML with both series and labelled axes.
    let svg = std::fs::read_to_string(dir.path().join("l5.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let texts: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("|");
    // Both series and both points are drawn and named in the legends (content, not ids).
    for series in [
        "validation accuracy (%)",
        "deterministic MACs (% of dense)",
        "dense",
        "pruned",
    ] {
        assert!(texts.contains(series), "missing {series}");
    }
    for label in ["epoch", "MACs", "test accuracy"] {
        assert!(texts.contains(label), "axis label '{label}' missing");
    }

    // check: exit 0 when every condition holds, 1 (one line each) when one fails.
    let r = report_path.to_str().unwrap();
    compress()
        .args([
            "check",
            r,
            "--max-accuracy-drop",
            "100",
            "--min-macs-reduction",
            "0.01",
        ])
        .assert()
        .code(0);
    let o = compress()
        .args([
            "check",
            r,
            "--min-macs-reduction",
            "0.999",
            "--max-latency-ms",
            "0.000001",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("FAILED")).count(),
        2,
        "{lines}"
    );
    // Against itself as a baseline everything holds.
    compress()
        .args(["check", r, "--baseline", r])
        .assert()
        .code(0);
    // A file that is not a report is bad input.
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"schema_version\": 7}").unwrap();
    compress()
        .args(["check", bogus.to_str().unwrap()])
        .assert()
        .code(2);

    // Existing outputs are not overwritten without --force.
    let o = short_run(dir.path(), &["--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn quiet_run_prints_nothing_and_sweep_writes_a_pareto_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.onnx");
    let o = compress()
        .arg(lenet5())
        .args([
            "--method",
            "l0-hc",
            "--max-steps",
            "30",
            "--epochs",
            "1",
            "--latency-runs",
            "0",
            "--quiet",
            "--sweep",
            "lambda=0.5,4",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "--quiet printed something"
    );
    let sweep = read_json(&dir.path().join("s.sweep.json"));
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_schema(&r["report"]);
    }
    assert!(!sweep["pareto_front"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(dir.path().join("s.sweep.svg")).unwrap();
    roxmltree::Document::parse(&svg).expect("well-formed SVG");
    for v in ["0.5", "4"] {
        assert_schema(&read_json(
            &dir.path().join(format!("s.lambda-{v}.report.json")),
        ));
    }
}

#[test]
fn dry_run_trains_nothing_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.onnx");
    let o = compress()
        .arg(lenet5())
        .args(["--method", "dep-l0", "--dry-run", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("3 gated groups, 570 gates")
            && text.contains("penalty at start")
            && text.contains("estimated run time"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn run_rejects_bad_options_with_exit_2() {
    for (args, needle) in [
        (vec!["--method", "magic"], "--method magic"),
        (vec!["--target-macs", "1.5"], "--target-macs 1.5"),
        (vec!["--sweep", "depth=1"], "--sweep depth=1"),
        (vec!["--device", "tpu"], "--device tpu"),
        (vec!["--dep-chain", "sideways"], "sideways"),
        (vec!["--dep-n0", "0"], "--dep-n0"),
        (vec!["--data", "/nonexistent"], "/nonexistent"),
    ] {
        let o = compress()
            .arg(lenet5())
            .args(&args)
            .args(["-o", "/tmp/never-written.onnx"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // An output directory that does not exist is refused before training, for run and prune.
    for args in [
        vec![lenet5()],
        vec![
            "prune".into(),
            lenet5(),
            "--random-keep".into(),
            "0.5".into(),
        ],
    ] {
        let o = compress()
            .args(&args)
            .args(["-o", "/nonexistent-dir/out.onnx"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("directory /nonexistent-dir does not exist"),
            "{args:?}: {err}"
        );
        // Refused up front: the error is all it printed (no data loading, no evaluation).
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    // Data that does not fit the model is named.
    let resnet = common::repo().join("fixtures/models/resnet18/model.onnx");
    let o = compress()
        .arg(&resnet)
        .args(["-o", "/tmp/never-written.onnx"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("per sample"));
}

#[test]
fn completions_and_help_for_every_subcommand() {
    let o = compress().args(["completions", "bash"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("compress"));
    for sub in [
        "run",
        "inspect",
        "convert",
        "prune",
        "eval",
        "check",
        "completions",
    ] {
        let o = compress().args([sub, "--help"]).output().unwrap();
        assert!(o.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Example"),
            "{sub} --help has no example"
        );
    }
}

#[test]
fn swp_with_a_macs_budget_is_refused_before_any_work() {
    common::assert_swp_refuses(
        &[["--target-macs", "0.5"], ["--sweep", "target-macs=0.3,0.5"]],
        "cannot hold a MACs budget",
    );
}
