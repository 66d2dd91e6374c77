//! Vision transformers as PyTorch's two exporters write them (`converters/export_transformers.py`):
//! timm-style attention (one qkv Linear, 5-D reshape/permute of heads, scaled dot product with
//! batched MatMuls of two activations, Softmax on the last axis) and `nn.TransformerEncoder`,
//! each through the TorchScript exporter (opset 17) and the dynamo exporter (opset 18);
//! LayerNormalization, GELU in its Erf form, a class token padded in front and taken out with
//! Gather. fixtures/transformers/ (random weights) and models/vit (trained on Fashion-MNIST).

mod common;

use std::path::PathBuf;

use compress::exec::{Network, default_device};
use compress::verify::run_tract;

/// (directory, file) of every exported transformer with its reference sets.
fn exports() -> Vec<(PathBuf, &'static str)> {
    let root = common::repo();
    let mut out = Vec::new();
    for style in ["timm", "torch"] {
        for file in ["model.onnx", "model.dynamo.onnx"] {
            out.push((root.join("fixtures/transformers").join(style), file));
        }
    }
    for file in ["vit.onnx", "vit.dynamo.onnx"] {
        out.push((root.join("models/vit"), file));
    }
    out
}

#[test]
fn burn_matches_pytorch_and_tract_for_both_exporters() {
    for (dir, file) in exports() {
        let name = format!("{}/{file}", dir.display());
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let graph = compress::onnx::import_bytes(&bytes, &name).unwrap_or_else(|e| panic!("{e}"));
        let net = Network::new(&graph, &default_device()).unwrap();
        let exported = compress::onnx::export(&graph);
        for set in ["test_data_set_0", "test_data_set_1"] {
            let (inputs, expected) = common::load_data_set(&dir.join(set));
            let batch = inputs[0].shape[0];
            let burn = net.run(&inputs).unwrap();
            let tract = run_tract(&bytes, &inputs).unwrap();
            let again = run_tract(&exported, &inputs).unwrap();
            let d_torch = common::max_diff(&burn[0], &expected[0]);
            let d_tract = common::max_diff(&burn[0], &tract[0]);
            let d_export = common::max_diff(&again[0], &tract[0]);
            println!(
                "{name} batch {batch}: burn-pytorch {d_torch:.2e}, burn-tract {d_tract:.2e}, \
                 re-export {d_export:.2e}"
            );
            assert_eq!(burn[0].shape, expected[0].shape, "{name} batch {batch}");
            assert!(
                d_torch <= 1e-4,
                "{name} batch {batch}: burn vs PyTorch {d_torch}"
            );
            assert!(
                d_tract <= 1e-4,
                "{name} batch {batch}: burn vs tract {d_tract}"
            );
            assert!(
                d_export <= 1e-5,
                "{name} batch {batch}: re-export vs original in tract {d_export}"
            );
        }
    }
}

/// The two exporters write different graphs of the same function: the same ops on data once
/// imported (the shape chains fold away), and the same attention cost.
#[test]
fn both_exports_import_to_the_same_cost_with_attention_matmuls_counted() {
    for style in ["timm", "torch"] {
        let dir = common::repo().join("fixtures/transformers").join(style);
        let cost = |file: &str| {
            let g = compress::onnx::import_file(&dir.join(file)).unwrap();
            compress::ir::cost::graph_cost(&g, 1).unwrap()
        };
        let (a, b) = (cost("model.onnx"), cost("model.dynamo.onnx"));
        assert_eq!(a.macs, b.macs, "{style}");
        // 2 blocks x (QK^T + AV), each heads x tokens^2 x head_dim = 4 x 17 x 17 x 16.
        let attention = 2 * 2 * 4 * 17 * 17 * 16;
        // Patch embedding 16 x 64 x 49, per block qkv + proj + MLP (17 tokens), classifier.
        let linear = 16 * 64 * 49 + 2 * 17 * (64 * 192 + 64 * 64 + 2 * 64 * 128) + 64 * 10;
        assert_eq!(a.macs, (attention + linear) as u64, "{style}");
    }
}

/// Until the transformer channel groups exist, nothing in a transformer is pruned by mistake:
/// `inspect` says why the patch embedding's channels are fixed.
#[test]
fn inspect_says_why_the_vit_has_no_prunable_group_yet() {
    let out = common::compress()
        .args(["inspect", "models/vit/vit.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("LayerNormalization"), "{text}");
    assert!(text.contains("(0 prunable)"), "{text}");
    assert!(
        text.contains("reshape that moves the channel axis at node '/Reshape'"),
        "{text}"
    );
}

/// `compress eval` on the full Fashion-MNIST test set reproduces the card's PyTorch accuracy
/// with both exports.
#[test]
fn eval_of_the_trained_vit_matches_its_card() {
    let dir = common::repo().join("models/vit");
    let card = common::card(&dir);
    let want = card["test_accuracy_pytorch"].as_f64().unwrap();
    for file in ["vit.onnx", "vit.dynamo.onnx"] {
        let out = common::compress()
            .arg("eval")
            .arg(dir.join(file))
            .args(["--data", "/usr/share/datasets/fashion-mnist", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["samples"], 10000, "{file}");
        let acc = v["accuracy"].as_f64().unwrap();
        assert!(
            (acc - want).abs() <= 1e-3,
            "{file}: accuracy {acc} vs card {want}"
        );
    }
}
