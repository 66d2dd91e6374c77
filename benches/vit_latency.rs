//! Benchmark: latency of the tiny ViT (models/vit/model.onnx) before and after pruning, at batch 1
//! and batch 64, in tract and (with `--features ort`) ONNX Runtime, both on one thread.
//!
//! The pruned files come from `compress run` (e.g. `--target-macs 0.5`) and are named on the
//! command line: `cargo bench --features ort --bench vit_latency -- A.pruned.onnx B.pruned.onnx`.
//! The dense model is timed as compress exports it (imported and written back, as the pruned
//! files are written), so the comparison is of widths, not of exporters. All models are timed
//! round-robin (one run of each in turn) so machine noise hits them alike; medians of `RUNS_1`
//! runs at batch 1 and `RUNS_64` at batch 64, after a warm-up run of each. The machine's load
//! average at the start and end is recorded. Writes bench-results/vit_latency.json.

use std::path::{Path, PathBuf};

use compress::ir::cost::graph_cost;
use compress::verify::{pseudo_random, tract_latencies_ms};

/// Runs per median at batch 1 and batch 64.
const RUNS_1: usize = 2001;
const RUNS_64: usize = 401;

/// The 1-minute load average (Linux), or None where it cannot be read.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Median milliseconds of every model at `batch` in tract and, with `--features ort`, ONNX
/// Runtime (None without it).
fn medians(
    graph: &compress::ir::Graph,
    models: &[&[u8]],
    batch: usize,
    runs: usize,
) -> (Vec<f64>, Option<Vec<f64>>) {
    let x = pseudo_random(&graph.inputs[0].shape(batch), 1);
    let tract = tract_latencies_ms(models, std::slice::from_ref(&x), runs).expect("tract runs");
    #[cfg(feature = "ort")]
    let ort = Some(
        compress::verify::onnxruntime::ort_latencies_ms(models, &[x], runs, 1)
            .expect("onnxruntime runs"),
    );
    #[cfg(not(feature = "ort"))]
    let ort = None;
    (tract, ort)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dense_path = root.join("models/vit/model.onnx");
    // cargo passes `--bench` (and possibly other flags) through: files are the other arguments.
    let pruned: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    if pruned.is_empty() {
        println!(
            "no pruned files named: timing the dense model only (name the files of \
             `compress run models/vit/model.onnx ...` after `--`)"
        );
    }
    let graph = compress::onnx::import_file(&dense_path).expect("models/vit imports");
    let mut names = vec!["dense".to_string()];
    let mut bytes = vec![compress::onnx::export(&graph)];
    let mut macs = vec![graph_cost(&graph, 1).expect("cost").macs];
    for p in &pruned {
        let g = compress::onnx::import_file(p).expect("pruned file imports");
        macs.push(graph_cost(&g, 1).expect("cost").macs);
        bytes.push(compress::onnx::export(&g));
        names.push(p.display().to_string());
    }
    let models: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let load_start = load_average();
    let (t1, o1) = medians(&graph, &models, 1, RUNS_1);
    let (t64, o64) = medians(&graph, &models, 64, RUNS_64);
    let load_end = load_average();
    let rows: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let row = serde_json::json!({
                "model": name,
                "macs": macs[i],
                "macs_ratio": macs[i] as f64 / macs[0] as f64,
                "tract_batch1_ms": t1[i],
                "tract_batch64_ms": t64[i],
                "onnxruntime_batch1_ms": o1.as_ref().map(|o| o[i]),
                "onnxruntime_batch64_ms": o64.as_ref().map(|o| o[i]),
            });
            println!("{row}");
            row
        })
        .collect();
    let result = serde_json::json!({
        "benchmark": "vit_latency",
        "runtime": "tract, one thread; onnxruntime (one intra-op thread) with --features ort",
        "runs_per_median": {"batch1": RUNS_1, "batch64": RUNS_64},
        "load_average_1min": {"start": load_start, "end": load_end},
        "models": rows,
    });
    println!("load average (1 min): start {load_start:?}, end {load_end:?}");
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).expect("bench-results is writable");
    std::fs::write(
        dir.join("vit_latency.json"),
        serde_json::to_string_pretty(&result).expect("json"),
    )
    .expect("bench-results/vit_latency.json is writable");
}
