//! `compress devices` and the `--device` check: a backend this binary lacks, or cannot start
//! here, is refused in one line with exit 2 before any model or data is read.

mod common;

use common::{compress, lenet5};

/// Whether this test binary's build has the backend (cpu always).
fn compiled(device: &str) -> bool {
    (device != "wgpu" || cfg!(feature = "wgpu")) && (device != "cuda" || cfg!(feature = "cuda"))
}

#[test]
fn devices_json_lists_cpu_and_the_backends_compiled_in() {
    let out = compress().args(["devices", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["devices"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(names, ["cpu", "wgpu", "cuda"]);
    assert_eq!(list[0]["usable"], true);
    for d in list {
        let name = d["device"].as_str().unwrap();
        let detail = d["detail"].as_str().unwrap();
        assert_eq!(d["compiled"], compiled(name), "{name}");
        assert!(!detail.is_empty(), "{name}");
        if !compiled(name) {
            assert_eq!(d["usable"], false, "{name}");
            assert!(detail.contains(&format!("--features {name}")), "{detail}");
        }
    }
}

#[test]
fn devices_table_has_one_line_per_device() {
    let out = compress().arg("devices").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("cpu") && lines[0].contains("usable"));
    for (line, name) in lines[1..].iter().zip(["wgpu", "cuda"]) {
        assert!(line.starts_with(name), "{line}");
        if !compiled(name) {
            assert!(line.contains("not compiled in"), "{line}");
        }
    }
}

/// The check comes first: neither the (missing) data directory nor the output is touched.
#[test]
fn a_device_not_compiled_in_is_refused_before_any_work() {
    for device in ["cuda", "wgpu"].into_iter().filter(|d| !compiled(d)) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never.onnx");
        for args in [
            vec![
                lenet5(),
                "--method".into(),
                "dep-l0".into(),
                "--data".into(),
                "/nonexistent-data".into(),
                "-o".into(),
                out.display().to_string(),
            ],
            vec![
                "eval".into(),
                "/nonexistent-model.onnx".into(),
                "--data".into(),
                "/nonexistent-data".into(),
            ],
        ] {
            let o = compress()
                .args(&args)
                .args(["--device", device])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(&format!("--device {device}")), "{err}");
            assert!(err.contains(&format!("--features {device}")), "{err}");
            assert!(!err.contains("nonexistent"), "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
