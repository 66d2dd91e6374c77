//! The wgpu backend trains as the CPU backend does: a few gated training steps on
//! models/lenet5 give the same losses and gate parameters on both (within the tolerances
//! below), and the wgpu-trained network exports a model that verifies.
//!
//! Needs a wgpu adapter; CI runs it on lavapipe (Debian's mesa-vulkan-drivers, a Vulkan driver
//! on the CPU): `cargo test --release --features wgpu --test wgpu`.
#![cfg(feature = "wgpu")]

mod common;

use compress::app::devices;
use compress::app::options::{Device, burn_device};
use compress::data::Dataset;
use compress::ir::Graph;
use compress::pipeline;
use compress::train::{Method, TrainConfig, TrainOutcome};

/// Per-epoch mean losses agree to this relative difference. Both backends compute in f32 but
/// reduce in different orders (GPU kernels vs flex's tiled gemm): after 9 Adam steps the
/// weights, and so the losses, drift apart by rounding only.
const LOSS_RTOL: f64 = 2e-3;
/// Gate parameters (log alpha) agree to this absolute difference; they start at 3.0 and each
/// Adam step moves them by at most about gate_lr.
const GATE_ATOL: f32 = 2e-3;

fn lenet5() -> Graph {
    compress::onnx::import_file(&common::repo().join("models/lenet5/model.onnx")).unwrap()
}

/// 300 training images: with 10% held out and batch 90, three steps per epoch.
fn small_train(graph: &Graph) -> Dataset {
    let subset = common::repo().join("fixtures/data/fashion-mnist-subset");
    let (train, _) = pipeline::load_data(&subset, graph).unwrap();
    train.gather(&(0..300).collect::<Vec<_>>())
}

fn config(method: Method) -> TrainConfig {
    let mut cfg = TrainConfig::new(method);
    cfg.epochs = 3;
    cfg.batch_size = 90;
    cfg.quiet = true;
    cfg
}

fn train_on(device: Device, graph: &Graph, data: &Dataset, cfg: &TrainConfig) -> TrainOutcome {
    let dev = burn_device(device).unwrap();
    pipeline::train(graph, data, 0.1, cfg, &dev).unwrap()
}

fn assert_same_training(method: Method) {
    let graph = lenet5();
    let data = small_train(&graph);
    let cfg = config(method);
    let cpu = train_on(Device::Cpu, &graph, &data, &cfg);
    let gpu = train_on(Device::Wgpu, &graph, &data, &cfg);
    let name = method.name();

    assert_eq!(cpu.history.len(), 3, "{name}");
    assert_eq!(gpu.history.len(), cpu.history.len(), "{name}");
    let mut worst_loss = 0.0f64;
    for (c, g) in cpu.history.iter().zip(&gpu.history) {
        for (what, a, b) in [("loss", c.loss, g.loss), ("penalty", c.penalty, g.penalty)] {
            let rel = (a - b).abs() / a.abs().max(1e-6);
            worst_loss = worst_loss.max(rel);
            assert!(
                rel <= LOSS_RTOL,
                "{name} epoch {}: {what} cpu {a} wgpu {b} (relative {rel:.2e})",
                c.epoch
            );
        }
        assert_eq!(c.open_gates, g.open_gates, "{name} epoch {}", c.epoch);
    }
    assert_eq!(cpu.gate_params.len(), gpu.gate_params.len());
    let mut worst_gate = 0.0f32;
    for (c, g) in cpu.gate_params.iter().zip(&gpu.gate_params) {
        assert_eq!(c.len(), g.len());
        for (a, b) in c.iter().zip(g) {
            worst_gate = worst_gate.max((a - b).abs());
        }
    }
    assert!(
        worst_gate <= GATE_ATOL,
        "{name}: gate params differ by {worst_gate}"
    );
    // The training moved the gates: equal gates are not equal by standing still.
    let untrained = train_on(
        Device::Cpu,
        &graph,
        &data,
        &TrainConfig {
            epochs: 0,
            ..cfg.clone()
        },
    );
    let moved = cpu.gate_params[0]
        .iter()
        .zip(&untrained.gate_params[0])
        .any(|(a, b)| (a - b).abs() > 0.1);
    assert!(moved, "{name}: the gates did not train");

    let exported = pipeline::compress_trained(&gpu, &cfg, None).unwrap();
    assert!(
        exported.verification.tract.max_abs_diff <= 1e-4,
        "{name}: {:?}",
        exported.verification
    );
    println!(
        "{name}: {} epochs, worst relative loss difference {worst_loss:.2e}, worst gate \
         difference {worst_gate:.2e}, export max abs diff {:.2e}",
        cpu.history.len(),
        exported.verification.tract.max_abs_diff
    );
}

/// One test: wgpu instances must not be created on several threads at once (the Vulkan loader
/// is not safe for that), and the test harness runs tests on parallel threads.
#[test]
fn l0_hc_trains_on_wgpu_as_on_cpu() {
    let status = devices::probe(Device::Wgpu);
    assert!(status.usable, "no wgpu adapter: {}", status.detail);
    println!("wgpu adapters: {}", status.detail);
    assert_same_training(Method::L0Hc);
}
