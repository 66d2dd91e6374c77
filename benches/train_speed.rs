//! Benchmark: training throughput (images per second) at batch 128 for LeNet-5 and ResNet-20
//! on Fashion-MNIST (the shipped subset), for every method, with plain dense fine-tuning as the
//! reference. Step time = (time of 2 + N steps - time of 2 steps) / N, which removes set-up and
//! validation; median of 3 repeats. Writes bench-results/train_speed.json.

use compress::exec::default_device;
use compress::pipeline;
use compress::train::{Method, TrainConfig};

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dev = default_device();
    let mut rows = Vec::new();
    for (model, n) in [("lenet5", 10usize), ("resnet20", 3)] {
        let graph = compress::onnx::import_file(&root.join(format!("models/{model}/model.onnx")))
            .expect("model");
        let (train, _) =
            pipeline::load_data(&root.join("fixtures/data/fashion-mnist-subset"), &graph)
                .expect("data");
        let methods: [(&str, Method); 6] = [
            ("dense", Method::Swp),
            ("l0-hc", Method::L0Hc),
            ("l0-arm", Method::L0Arm),
            ("l0-ar", Method::L0Ar),
            ("dep-l0", Method::DepL0),
            ("swp", Method::Swp),
        ];
        let mut dense_ips = 0.0;
        for (name, method) in methods {
            let time = |steps: usize| {
                let mut cfg = TrainConfig::new(method);
                cfg.epochs = 1;
                cfg.max_steps = Some(steps);
                cfg.quiet = true;
                if name == "dense" {
                    cfg.swp_kappa = 0.0;
                }
                let start = std::time::Instant::now();
                pipeline::train(&graph, &train, 0.01, &cfg, &dev).expect("trains");
                start.elapsed().as_secs_f64()
            };
            let mut per_step: Vec<f64> =
                (0..3).map(|_| (time(2 + n) - time(2)) / n as f64).collect();
            per_step.sort_by(|a, b| a.total_cmp(b));
            let step_s = per_step[1];
            let ips = 128.0 / step_s;
            if name == "dense" {
                dense_ips = ips;
            }
            let row = serde_json::json!({
                "model": model, "method": name, "batch": 128, "step_ms": step_s * 1e3,
                "images_per_s": ips, "relative_to_dense": ips / dense_ips,
                "step_ms_runs": per_step.iter().map(|s| s * 1e3).collect::<Vec<_>>(),
            });
            println!("{row}");
            rows.push(row);
        }
    }
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    let doc =
        serde_json::json!({"benchmark": "train_speed", "backend": "burn flex (CPU)", "rows": rows});
    std::fs::write(
        dir.join("train_speed.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
}
