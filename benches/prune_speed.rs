//! Benchmark: does pruning buy real speed? ResNet-18 with random keep plans, batch 64 and
//! batch 1, in tract: dense vs pruned vs pruned with --round-to 8.
//! Target (issue 3): at 50% kept, batch 64, speedup >= 0.7 x the MACs ratio; round-to 8 not
//! slower than without.
//!
//! Models: the committed half-width fixture (64x64 input) always; the full torchvision
//! ResNet-18 (224x224) when `converters/export_bench_models.py` has written it to
//! bench-models/resnet18.onnx (or COMPRESS_BENCH_RESNET18 names it).
//! Plans: exactly half of every group (widths stay multiples of 8, so round-to 8 changes
//! nothing), and an uneven plan keeping 30-70% per group (odd widths, as trained gates leave
//! them), with and without round-to 8.
//! Writes bench-results/prune_speed.json. Latencies are medians after a warm-up run, with all
//! models of one ResNet measured round-robin (one run each in turn) so noise hits them alike.

use std::path::{Path, PathBuf};

use compress::ir::cost::graph_cost;
use compress::prune::plan::{self, KeepPlan};
use compress::prune::prune;
use compress::verify::{pseudo_random, tract_latencies_ms};

/// Half of every group, or an uneven 30-70% per group averaging about half.
fn keep_plan(groups: &[compress::groups::ChannelGroup], uneven: bool) -> KeepPlan {
    if !uneven {
        return plan::random(groups, 0.5, 1);
    }
    use compress::rng::RngExt;
    let mut rng = compress::rng::seeded(7);
    let mut all = KeepPlan { groups: Vec::new() };
    for (i, g) in groups.iter().enumerate() {
        let fraction = 0.3 + 0.4 * rng.random::<f64>();
        all.groups
            .extend(plan::random(std::slice::from_ref(g), fraction, i as u64).groups);
    }
    all
}

fn bench_model(name: &str, path: &Path, runs: usize) -> serde_json::Value {
    let graph = compress::onnx::import_file(path).expect("benchmark model imports");
    let groups = compress::groups::analyse(&graph).expect("analysis");
    let dense_macs = graph_cost(&graph, 1).unwrap().macs;
    let mut variants = Vec::new();
    for uneven in [false, true] {
        let keep = keep_plan(&groups, uneven);
        for round_to in [None, Some(8)] {
            let p = prune(&graph, &keep, round_to).expect("prunes");
            variants.push((uneven, round_to, p));
        }
    }
    let mut bytes = vec![compress::onnx::export(&graph)];
    bytes.extend(variants.iter().map(|v| compress::onnx::export(&v.2.graph)));
    let models: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    // All models round-robin, so machine noise hits them alike.
    let time = |batch: usize| {
        let x = pseudo_random(&graph.inputs[0].shape(batch), 1);
        tract_latencies_ms(&models, &[x], runs).expect("tract runs")
    };
    let (b64, b1) = (time(64), time(1));
    // With `--features ort`: the same files in ONNX Runtime, one intra-op thread like tract.
    #[cfg(feature = "ort")]
    let ort = {
        let time = |batch: usize| {
            let x = pseudo_random(&graph.inputs[0].shape(batch), 1);
            compress::verify::onnxruntime::ort_latencies_ms(&models, &[x], runs, 1)
                .expect("onnxruntime runs")
        };
        Some((time(64), time(1)))
    };
    #[cfg(not(feature = "ort"))]
    let ort: Option<(Vec<f64>, Vec<f64>)> = None;
    println!(
        "{name}: dense {dense_macs} MACs, batch 64 {:.1} ms, batch 1 {:.2} ms",
        b64[0], b1[0]
    );
    let mut cases = Vec::new();
    for (i, (uneven, round_to, p)) in variants.iter().enumerate() {
        let macs = graph_cost(&p.graph, 1).unwrap().macs;
        let macs_speedup = dense_macs as f64 / macs as f64;
        let speedup = b64[0] / b64[i + 1];
        // Variants come in (unrounded, rounded) pairs.
        let unrounded = round_to.map(|_| b64[i]);
        let row = serde_json::json!({
            "plan": if *uneven { "uneven 30-70% per group" } else { "50% of every group" },
            "round_to": round_to,
            "widths": p.keep.values().map(Vec::len).collect::<Vec<_>>(),
            "macs": macs,
            "macs_speedup": macs_speedup,
            "batch64_ms": b64[i + 1],
            "batch1_ms": b1[i + 1],
            "batch64_speedup": speedup,
            "batch1_speedup": b1[0] / b1[i + 1],
            "speedup_over_macs_speedup": speedup / macs_speedup,
            "batch64_ms_over_unrounded": unrounded.map(|u| b64[i + 1] / u),
            "onnxruntime": ort.as_ref().map(|(o64, o1)| serde_json::json!({
                "batch64_ms": o64[i + 1],
                "batch1_ms": o1[i + 1],
                "batch64_speedup": o64[0] / o64[i + 1],
                "speedup_over_macs_speedup": o64[0] / o64[i + 1] / macs_speedup,
                "batch64_ms_over_unrounded": round_to.map(|_| o64[i + 1] / o64[i]),
            })),
        });
        println!("  {row}");
        cases.push(row);
    }
    serde_json::json!({
        "model": name,
        "file": path.display().to_string(),
        "runs_per_median": runs,
        "dense": {
            "macs": dense_macs, "batch64_ms": b64[0], "batch1_ms": b1[0],
            "onnxruntime": ort.as_ref().map(|(o64, o1)| serde_json::json!({
                "batch64_ms": o64[0], "batch1_ms": o1[0],
            })),
        },
        "pruned": cases,
    })
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut results = vec![bench_model(
        "resnet18 fixture (half width, 64x64)",
        &root.join("fixtures/models/resnet18/model.onnx"),
        15,
    )];
    let full = std::env::var_os("COMPRESS_BENCH_RESNET18")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("bench-models/resnet18.onnx"));
    if full.is_file() {
        results.push(bench_model("resnet18 (torchvision, 224x224)", &full, 7));
    } else {
        println!(
            "{} not found: run converters/export_bench_models.py to benchmark the full ResNet-18",
            full.display()
        );
    }
    let result = serde_json::json!({
        "benchmark": "prune_speed",
        "runtime": "tract, one thread; onnxruntime (one intra-op thread) with --features ort",
        "models": results,
    });
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prune_speed.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
}
