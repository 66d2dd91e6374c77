//! Times (or, under perf, profiles) gated training steps at batch 128 on the shipped
//! Fashion-MNIST subset: `train_probe [model] [steps] [method]` (default resnet20, 10, l0-hc).
//! Prints the step time as (time of 2 + steps - time of 2) / steps, as benches/train_speed.rs.
use std::path::Path;
use std::time::Instant;

use compress::exec::default_device;
use compress::pipeline;
use compress::train::{Method, TrainConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("resnet20", String::as_str);
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let method = match args.get(3).map_or("l0-hc", String::as_str) {
        "dense" | "swp" => Method::Swp,
        _ => Method::L0Hc,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = compress::onnx::import_file(&root.join(format!("models/{model}/model.onnx")))
        .expect("model");
    let (train, _) = pipeline::load_data(&root.join("fixtures/data/fashion-mnist-subset"), &graph)
        .expect("data");
    let dev = default_device();
    let time = |steps: usize| {
        let mut cfg = TrainConfig::new(method);
        cfg.epochs = 1;
        cfg.max_steps = Some(steps);
        cfg.quiet = true;
        let start = Instant::now();
        pipeline::train(&graph, &train, 0.01, &cfg, &dev).expect("trains");
        start.elapsed().as_secs_f64()
    };
    let (long, short) = (time(2 + steps), time(2));
    let step = (long - short) / steps as f64;
    println!(
        "{model}: {:.1} ms/step, {:.0} img/s",
        step * 1e3,
        128.0 / step
    );
}
