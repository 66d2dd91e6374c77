//! `compress inspect MODEL --sensitivity --data D`: each prunable group halved alone.

mod common;

use common::{compress, lenet5, repo};

fn subset() -> String {
    repo()
        .join("fixtures/data/fashion-mnist-subset")
        .display()
        .to_string()
}

#[test]
fn sensitivity_has_one_row_per_prunable_group() {
    let o = compress()
        .args(["inspect", &lenet5(), "--json"])
        .output()
        .unwrap();
    let inspection: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let prunable: Vec<u64> = inspection["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["prunable"] == true && g["width"].as_u64().unwrap() > 1)
        .map(|g| g["id"].as_u64().unwrap())
        .collect();
    assert!(!prunable.is_empty());

    let args = ["inspect", &lenet5(), "--sensitivity", "--data", &subset()];
    let o = compress()
        .args(args)
        .args(["--samples", "400", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["samples"], 400);
    let dense = s["dense_accuracy"].as_f64().unwrap();
    let rows = s["groups"].as_array().unwrap();
    let ids: Vec<u64> = rows.iter().map(|g| g["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, prunable);
    for g in rows {
        let a = g["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{g}");
        assert_eq!(
            g["kept"].as_u64().unwrap(),
            g["width"].as_u64().unwrap() / 2
        );
        assert!(g["macs_fraction"].as_f64().unwrap() < 1.0);
    }
    assert!(
        rows.iter()
            .any(|g| g["accuracy"].as_f64().unwrap() != dense)
    );

    // The table: a header, then one row per group.
    let o = compress()
        .args(args)
        .args(["--samples", "200"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let table_rows = text
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok())
        })
        .count();
    assert_eq!(table_rows, prunable.len(), "{text}");
}

#[test]
fn sensitivity_with_bad_data_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for data in [dir.path().join("missing"), dir.path().to_path_buf()] {
        let o = compress()
            .args(["inspect", &lenet5(), "--sensitivity", "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    }
    // --sensitivity needs --data.
    let o = compress()
        .args(["inspect", &lenet5(), "--sensitivity"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
