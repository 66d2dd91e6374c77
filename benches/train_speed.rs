//! Benchmark: training throughput (images per second) at batch 128 for LeNet-5 and ResNet-20
//! on Fashion-MNIST (the shipped subset).
//!
//! Part 1, per method, with plain dense fine-tuning as the reference. Step time = (time of 2 + N
//! steps - time of 2 steps) / N, which removes set-up and validation; median of 3 repeats.
//! `TRAIN_SPEED_METHODS=l0-hc,dense` limits the methods (default: all six).
//!
//! Part 2, against PyTorch, when `COMPRESS_TORCH_PYTHON` names a Python with torch
//! (scripts/setup-torch-venv.sh makes one): our l0-hc gated training against PyTorch eager
//! training of the same dense architecture (and, for LeNet-5, of an L0-HC gated LeNet-5 written
//! after the reference code), scripts/torch_train_speed.py, 2 threads each, timed round robin
//! (ours, torch, ours, torch, ...; `TRAIN_SPEED_ROUNDS`, default 5) so that machine noise hits
//! both alike; the ratio of each round, median over rounds.
//!
//! Writes bench-results/train_speed.json and bench-results/train_speed_vs_torch.md.

use std::path::Path;
use std::process::Command;

use compress::data::Dataset;
use compress::exec::default_device;
use compress::ir::Graph;
use compress::pipeline;
use compress::train::{Method, TrainConfig};

const METHODS: [(&str, Method); 6] = [
    ("dense", Method::Swp),
    ("l0-hc", Method::L0Hc),
    ("l0-arm", Method::L0Arm),
    ("l0-ar", Method::L0Ar),
    ("dep-l0", Method::DepL0),
    ("swp", Method::Swp),
];

/// Seconds per step of our training loop: (time of 2 + n steps - time of 2 steps) / n.
fn our_step_s(graph: &Graph, train: &Dataset, name: &str, method: Method, n: usize) -> f64 {
    let dev = default_device();
    let time = |steps: usize| {
        let mut cfg = TrainConfig::new(method);
        cfg.epochs = 1;
        cfg.max_steps = Some(steps);
        cfg.quiet = true;
        if name == "dense" {
            cfg.swp_kappa = 0.0;
        }
        let start = std::time::Instant::now();
        pipeline::train(graph, train, 0.01, &cfg, &dev).expect("trains");
        start.elapsed().as_secs_f64()
    };
    (time(2 + n) - time(2)) / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One timing of scripts/torch_train_speed.py: images per second.
fn torch_ips(python: &str, root: &Path, model: &str) -> f64 {
    let out = Command::new(python)
        .arg(root.join("scripts/torch_train_speed.py"))
        .args(["--model", model, "--threads", "2", "--repeats", "1"])
        .args(["--steps", if model == "resnet20" { "5" } else { "20" }])
        .env("OMP_WAIT_POLICY", "passive")
        .output()
        .expect("runs the PyTorch script");
    assert!(
        out.status.success(),
        "torch_train_speed.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON line from torch_train_speed.py");
    line["images_per_s"].as_f64().expect("images_per_s")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let only: Option<Vec<String>> = std::env::var("TRAIN_SPEED_METHODS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let rounds: usize = std::env::var("TRAIN_SPEED_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let python = std::env::var("COMPRESS_TORCH_PYTHON").ok();
    let mut rows = Vec::new();
    let mut versus = Vec::new();
    let mut table = String::from(
        "| model | ours (l0-hc) img/s | PyTorch model | PyTorch img/s | ratio (median of rounds) | ratios |\n|---|---|---|---|---|---|\n",
    );
    for (model, n) in [("lenet5", 10usize), ("resnet20", 3)] {
        let graph = compress::onnx::import_file(&root.join(format!("models/{model}/model.onnx")))
            .expect("model");
        let (train, _) =
            pipeline::load_data(&root.join("fixtures/data/fashion-mnist-subset"), &graph)
                .expect("data");
        let mut dense_ips = 0.0;
        for (name, method) in METHODS {
            if only.as_ref().is_some_and(|o| !o.iter().any(|m| m == name)) {
                continue;
            }
            let per_step: Vec<f64> = (0..3)
                .map(|_| our_step_s(&graph, &train, name, method, n))
                .collect();
            let step_s = median(per_step.clone());
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
        let Some(python) = python.as_deref() else {
            continue;
        };
        let torch_models: &[&str] = if model == "lenet5" {
            &["lenet5", "lenet5-l0hc"]
        } else {
            &["resnet20"]
        };
        // Round robin: ours, then each PyTorch model, per round.
        let mut ours = Vec::new();
        let mut theirs = vec![Vec::new(); torch_models.len()];
        for _ in 0..rounds {
            ours.push(128.0 / our_step_s(&graph, &train, "l0-hc", Method::L0Hc, n));
            for (t, m) in theirs.iter_mut().zip(torch_models) {
                t.push(torch_ips(python, root, m));
            }
        }
        for (t, m) in theirs.iter().zip(torch_models) {
            let ratios: Vec<f64> = ours.iter().zip(t).map(|(a, b)| a / b).collect();
            let row = serde_json::json!({
                "model": model, "ours": "l0-hc", "torch_model": m, "rounds": rounds,
                "ours_images_per_s": median(ours.clone()), "torch_images_per_s": median(t.clone()),
                "ratio_median": median(ratios.clone()), "ratios": ratios,
                "ours_runs": ours, "torch_runs": t,
            });
            println!("{row}");
            table.push_str(&format!(
                "| {model} | {:.0} | {m} | {:.0} | **{:.2}x** | {} |\n",
                median(ours.clone()),
                median(t.clone()),
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            versus.push(row);
        }
    }
    let dir = root.join("bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    let doc = serde_json::json!({
        "benchmark": "train_speed", "backend": "burn flex (CPU)", "rows": rows,
        "versus_pytorch": versus,
    });
    std::fs::write(
        dir.join("train_speed.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    if !versus.is_empty() {
        print!("{table}");
        std::fs::write(dir.join("train_speed_vs_torch.md"), table).unwrap();
    }
}
