//! Benchmark: does pruning buy real speed? resnet18 (fixture) with random keep plans, batch 64
//! and batch 1, in tract; dense vs pruned vs pruned with --round-to 8.
//! Target (issue): speedup >= 0.7 x the MACs ratio; round-to 8 not slower than without.
//! Writes bench-results/prune_speed.json. Medians of `RUNS` runs after a warm-up.

use compress::ir::cost::graph_cost;
use compress::prune::{plan, prune};
use compress::verify::{pseudo_random, tract_latency_ms};

const RUNS: usize = 15;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = compress::onnx::import_file(&root.join("fixtures/models/resnet18/model.onnx"))
        .expect("fixture");
    let groups = compress::groups::analyse(&graph).expect("analysis");
    let dense_bytes = compress::onnx::export(&graph);
    let dense_macs = graph_cost(&graph, 1).unwrap().macs;
    let time = |bytes: &[u8], batch: usize| {
        let x = pseudo_random(&graph.inputs[0].shape(batch), 1);
        tract_latency_ms(bytes, &[x], RUNS).expect("tract runs")
    };
    let dense = (time(&dense_bytes, 64), time(&dense_bytes, 1));
    let mut cases = Vec::new();
    for fraction in [0.5, 0.45] {
        for round_to in [None, Some(8)] {
            let p = prune(&graph, &plan::random(&groups, fraction, 1), round_to).expect("prunes");
            let bytes = compress::onnx::export(&p.graph);
            let macs = graph_cost(&p.graph, 1).unwrap().macs;
            let (b64, b1) = (time(&bytes, 64), time(&bytes, 1));
            let mac_speedup = dense_macs as f64 / macs as f64;
            let speedup = dense.0 / b64;
            let row = serde_json::json!({
                "keep_fraction": fraction,
                "round_to": round_to,
                "macs": macs,
                "macs_speedup": mac_speedup,
                "batch64_ms": b64,
                "batch1_ms": b1,
                "batch64_speedup": speedup,
                "batch1_speedup": dense.1 / b1,
                "speedup_over_macs_speedup": speedup / mac_speedup,
            });
            println!("{row}");
            cases.push(row);
        }
    }
    let result = serde_json::json!({
        "benchmark": "prune_speed",
        "model": "fixtures/models/resnet18/model.onnx",
        "runtime": "tract",
        "runs_per_median": RUNS,
        "dense": {"macs": dense_macs, "batch64_ms": dense.0, "batch1_ms": dense.1},
        "pruned": cases,
    });
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prune_speed.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
}
