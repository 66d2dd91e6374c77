//! Benchmark: ONNX import + export time for the resnet18 fixture (target: well under 1 s).
//! Writes bench-results/io_roundtrip.json; quotes the median of several runs.

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("fixtures/models/resnet18/model.onnx");
    let bytes = std::fs::read(&path).expect("fixtures/models/resnet18/model.onnx");
    let runs = 15;
    let (mut import_ms, mut export_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let graph = compress::onnx::import_bytes(&bytes, "resnet18").expect("imports");
        let t1 = Instant::now();
        let out = compress::onnx::export(&graph);
        let t2 = Instant::now();
        std::hint::black_box(out);
        import_ms.push((t1 - t0).as_secs_f64() * 1e3);
        export_ms.push((t2 - t1).as_secs_f64() * 1e3);
        total_ms.push((t2 - t0).as_secs_f64() * 1e3);
    }
    let result = serde_json::json!({
        "benchmark": "io_roundtrip",
        "model": "fixtures/models/resnet18/model.onnx",
        "file_bytes": bytes.len(),
        "runs": runs,
        "import_ms_median": median(import_ms),
        "export_ms_median": median(export_ms),
        "total_ms_median": median(total_ms.clone()),
        "total_ms_min": total_ms.iter().cloned().fold(f64::INFINITY, f64::min),
        "total_ms_max": total_ms.iter().cloned().fold(0.0, f64::max),
    });
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).expect("create bench-results/");
    let text = serde_json::to_string_pretty(&result).expect("json");
    std::fs::write(dir.join("io_roundtrip.json"), &text).expect("write results");
    println!("{text}");
}
