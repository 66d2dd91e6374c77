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

/// `inspect` shows the MLP groups as prunable (fc1's outputs read by fc2) and says why the
/// other groups of a transformer are fixed.
#[test]
fn inspect_shows_mlp_groups_and_why_the_others_are_fixed() {
    let out = common::compress()
        .args(["inspect", "models/vit/vit.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("LayerNormalization"), "{text}");
    assert!(text.contains("(3 prunable)"), "{text}");
    for b in 0..3 {
        let mlp = format!(
            "from /blocks/blocks.{b}/mlp/fc1/MatMul  -> read by /blocks/blocks.{b}/mlp/fc2/MatMul  [prunable]"
        );
        assert!(text.contains(&mlp), "{mlp}\n{text}");
    }
    let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    // qkv: heads are not analysed yet; proj and fc2 write the residual stream.
    assert_eq!(
        count("attn/Reshape' (Reshape), which does not follow them"),
        3
    );
    assert_eq!(count("residual stream / hidden width: not analysed yet"), 6);
    assert!(text.contains("reshape that moves the channel axis at node '/Reshape'"));
}

/// The MLP group's gate sits after the bias Add of fc1 (a MatMul's bias is a separate node).
#[test]
fn mlp_gate_sits_after_the_bias_add() {
    for (dir, file) in exports() {
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let groups = compress::groups::analyse(&graph).unwrap();
        let mlp: Vec<_> = groups.iter().filter(|g| g.prunable).collect();
        assert!(!mlp.is_empty(), "{file}");
        for g in mlp {
            assert_eq!(g.width, 128, "{file}: {g:?}");
            let [gate] = &g.gates[..] else {
                panic!("{g:?}")
            };
            let adder = graph.nodes.iter().find(|n| &n.outputs[0] == gate).unwrap();
            assert!(
                matches!(
                    adder.op,
                    compress::ir::Op::Binary(compress::ir::BinaryOp::Add)
                ),
                "{file}: gate at {gate} ({:?})",
                adder.op
            );
        }
    }
}

/// Random keep plans at 25/50/75% of every MLP group: the pruned export computes the masked
/// reference in tract at two batch sizes, and the MACs go down.
#[test]
fn random_mlp_keep_plans_verify_in_tract() {
    for (dir, file) in exports() {
        let name = format!("{}/{file}", dir.display());
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let groups = compress::groups::analyse(&graph).unwrap();
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let plan = compress::prune::plan::random(&groups, fraction, 60 + k as u64);
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{name}@{fraction}: {e}"));
            let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            assert!(
                after < before,
                "{name}@{fraction}: MACs {before} -> {after}"
            );
            let ours = compress::onnx::export(&pruned.graph);
            let reference = compress::onnx::export(&pruned.reference);
            for batch in [1, 5] {
                let x = compress::verify::pseudo_random(&[batch, 1, 28, 28], 7 + k as u64);
                let a = run_tract(&ours, std::slice::from_ref(&x)).unwrap();
                let b = run_tract(&reference, std::slice::from_ref(&x)).unwrap();
                let d = common::max_diff(&a[0], &b[0]);
                assert!(
                    d <= 1e-4,
                    "{name}@{fraction} batch {batch}: pruned vs reference {d}"
                );
            }
        }
    }
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
