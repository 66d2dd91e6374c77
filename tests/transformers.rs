//! Vision transformers as PyTorch's two exporters write them (`converters/export_transformers.py`):
//! timm-style attention (one qkv Linear, 5-D reshape/permute of heads, scaled dot product with
//! batched MatMuls of two activations, Softmax on the last axis) and `nn.TransformerEncoder`,
//! each through the TorchScript exporter (opset 17) and the dynamo exporter (opset 18; and 20,
//! where GELU is one Gelu node);
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
        for file in ["model.onnx", "model.dynamo.onnx", "model.opset20.onnx"] {
            out.push((root.join("fixtures/transformers").join(style), file));
        }
    }
    for model in ["models/vit", "models/vit_torch"] {
        for file in ["model.onnx", "model.dynamo.onnx"] {
            out.push((root.join(model), file));
        }
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
        assert_eq!(a.macs, cost("model.opset20.onnx").macs, "{style}");
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
        .args(["inspect", "models/vit/model.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("LayerNormalization"), "{text}");
    assert!(text.contains("(7 prunable)"), "{text}"); // 3 MLP + 3 head groups + hidden width
    for b in 0..3 {
        let mlp = format!(
            "from /blocks/blocks.{b}/mlp/fc1/MatMul  -> read by /blocks/blocks.{b}/mlp/fc2/MatMul  [prunable]"
        );
        assert!(text.contains(&mlp), "{mlp}\n{text}");
    }
    let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
    // qkv: followed as attention heads; proj and fc2 write the residual stream, which is the
    // hidden-width group (tests/hidden_width.rs).
    assert_eq!(
        count("attn/Reshape' (Reshape), which does not follow them"),
        0
    );
    assert_eq!(count("residual stream / hidden width: not analysed yet"), 0);
    assert!(!text.contains("reshape that moves the channel axis at node '/Reshape'"));
}

/// The MLP group's gate sits after the bias Add of fc1 (a MatMul's bias is a separate node).
#[test]
fn mlp_gate_sits_after_the_bias_add() {
    for (dir, file) in exports() {
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let groups = compress::groups::analyse(&graph).unwrap();
        // Head groups (4 heads, gated where they are merged) and the hidden width (64) are
        // checked by their own tests.
        let mlp: Vec<_> = groups
            .iter()
            .filter(|g| g.prunable && g.width != 4 && g.width != 64)
            .collect();
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

/// The pruned export computes the masked reference in tract at batch 1 and 5 (inputs drawn
/// from `seed`).
fn assert_matches_reference_in_tract(pruned: &compress::prune::Pruned, name: &str, seed: u64) {
    let ours = compress::onnx::export(&pruned.graph);
    let reference = compress::onnx::export(&pruned.reference);
    for batch in [1, 5] {
        let x = compress::verify::pseudo_random(&[batch, 1, 28, 28], seed);
        let a = run_tract(&ours, std::slice::from_ref(&x)).unwrap();
        let b = run_tract(&reference, std::slice::from_ref(&x)).unwrap();
        let d = common::max_diff(&a[0], &b[0]);
        assert!(d <= 1e-4, "{name} batch {batch}: pruned vs reference {d}");
    }
}

/// The same in ONNX Runtime, at batch 4.
#[cfg(feature = "ort")]
fn assert_matches_reference_in_onnxruntime(
    pruned: &compress::prune::Pruned,
    name: &str,
    seed: u64,
) {
    use compress::verify::onnxruntime::run_ort;
    let x = vec![compress::verify::pseudo_random(&[4, 1, 28, 28], seed)];
    let a = run_ort(&compress::onnx::export(&pruned.graph), &x).unwrap();
    let b = run_ort(&compress::onnx::export(&pruned.reference), &x).unwrap();
    let d = common::max_diff(&a[0], &b[0]);
    assert!(d <= 1e-4, "{name}: pruned vs reference in ONNX Runtime {d}");
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
            assert_matches_reference_in_tract(&pruned, &format!("{name}@{fraction}"), 7 + k as u64);
        }
    }
}

/// ONNX Runtime runs the pruned exports like tract: pruned vs masked reference at batch 4.
#[cfg(feature = "ort")]
#[test]
fn random_mlp_keep_plans_verify_in_onnxruntime() {
    for (dir, file) in exports() {
        let name = format!("{}/{file}", dir.display());
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let groups = compress::groups::analyse(&graph).unwrap();
        let plan = compress::prune::plan::random(&groups, 0.5, 80);
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        assert_matches_reference_in_onnxruntime(&pruned, &name, 3);
    }
}

/// `compress eval` on the full Fashion-MNIST test set reproduces the card's PyTorch accuracy
/// with both exports.
#[test]
fn eval_of_the_trained_vit_matches_its_card() {
    let dir = common::repo().join("models/vit");
    let card = common::card(&dir);
    let want = card["test_accuracy_pytorch"].as_f64().unwrap();
    for file in ["model.onnx", "model.dynamo.onnx"] {
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

/// Gelu (opset 20) in both forms against the textbook values x Phi(x) and its tanh form.
#[test]
fn gelu_matches_the_normal_cdf_and_its_tanh_approximation() {
    use compress::ir::Activation;
    // x Phi(x) at x = -2, -0.5, 1, 3 and the tanh formula there, evaluated in float64.
    let exact = [-0.045_500_26, -0.154_268_77, 0.841_344_7, 2.995_950_3];
    let tanh = [-0.045_402_3, -0.154_285_9, 0.841_192, 2.996_362_6];
    for (i, x) in [-2.0f32, -0.5, 1.0, 3.0].into_iter().enumerate() {
        let e = Activation::Gelu { tanh: false }.scalar(x);
        let t = Activation::Gelu { tanh: true }.scalar(x);
        assert!((e - exact[i]).abs() < 1e-5, "gelu({x}) = {e}");
        assert!((t - tanh[i]).abs() < 1e-5, "gelu_tanh({x}) = {t}");
    }
}

/// The timm-style exports (fixtures and models/vit, both exporters): one attention-head group
/// per block, with the heads (not their columns) as channels.
fn timm_exports() -> Vec<(PathBuf, &'static str, usize)> {
    let root = common::repo();
    let mut out = Vec::new();
    for file in ["model.onnx", "model.dynamo.onnx", "model.opset20.onnx"] {
        out.push((root.join("fixtures/transformers/timm"), file, 2));
    }
    for file in ["model.onnx", "model.dynamo.onnx"] {
        out.push((root.join("models/vit"), file, 3));
    }
    out
}

/// The prunable head groups of a graph: the groups whose producer is a linear layer with three
/// times as many output columns as the group has heads x head_dim (q, k and v).
fn head_groups(graph: &compress::ir::Graph) -> Vec<compress::groups::ChannelGroup> {
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 4 && g.gates.len() == 1)
        .filter(|g| {
            g.producers.iter().all(|p| {
                graph.nodes.iter().any(|n| {
                    n.name == *p
                        && matches!(n.op, compress::ir::Op::MatMul)
                        && graph.initializers[&n.inputs[1]].shape == vec![64, 192]
                })
            })
        })
        .collect()
}

#[test]
fn inspect_lists_one_head_group_per_block() {
    for (dir, file, blocks) in timm_exports() {
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let heads = head_groups(&graph);
        assert_eq!(heads.len(), blocks, "{}/{file}: {heads:?}", dir.display());
        for g in &heads {
            // Read by the output projection, gated where the heads are merged back.
            assert_eq!(g.consumers.len(), 1, "{g:?}");
            let proj = graph
                .nodes
                .iter()
                .find(|n| n.name == g.consumers[0])
                .unwrap();
            assert_eq!(graph.initializers[&proj.inputs[1]].shape, vec![64, 64]);
        }
    }
    let out = common::compress()
        .args(["inspect", "models/vit/model.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for b in 0..3 {
        let heads = format!(
            "width 4     from /blocks/blocks.{b}/attn/qkv/MatMul  -> read by /blocks/blocks.{b}/attn/proj/MatMul  [prunable]"
        );
        assert!(text.contains(&heads), "{heads}\n{text}");
    }
}

/// A keep plan over the head groups alone, `fraction` of the heads of each.
fn head_plan(
    groups: &[compress::groups::ChannelGroup],
    fraction: f64,
    seed: u64,
) -> compress::prune::plan::KeepPlan {
    let mut plan = compress::prune::plan::random(groups, fraction, seed);
    plan.groups.retain(|k| groups[k.id].width == 4);
    plan
}

/// Random head plans at 25/50/75%: the pruned export computes the masked reference in tract at
/// two batch sizes, the MACs go down, and every Reshape that splits or merges heads carries
/// the new head count.
#[test]
fn random_head_keep_plans_verify_in_tract() {
    for (dir, file, blocks) in timm_exports() {
        let name = format!("{}/{file}", dir.display());
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let heads = head_groups(&graph);
        let groups: Vec<_> = compress::groups::analyse(&graph)
            .unwrap()
            .into_iter()
            .map(|g| compress::groups::ChannelGroup {
                prunable: g.prunable && heads.iter().any(|h| h.id == g.id),
                ..g
            })
            .collect();
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let plan = head_plan(&groups, fraction, 90 + k as u64);
            assert_eq!(plan.groups.len(), blocks, "{name}");
            let kept = (4.0 * fraction) as i64;
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{name}@{fraction}: {e}"));
            let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            assert!(
                after < before,
                "{name}@{fraction}: MACs {before} -> {after}"
            );
            // Split [b, 17, 3, H, 16], merge [b, 17, H * 16] (and dynamo's [b, H, 16, 17]).
            let targets: Vec<Vec<i64>> = pruned
                .graph
                .nodes
                .iter()
                .filter_map(|n| match &n.op {
                    compress::ir::Op::Reshape { shape } if shape.len() > 2 => Some(shape.clone()),
                    _ => None,
                })
                .collect();
            // (At one head the merge [b, 17, 16] reads like dynamo's fold of K: count at least.)
            let splits = targets.iter().filter(|t| t[2..] == [3, kept, 16]).count();
            let merges = targets.iter().filter(|t| t[1..] == [17, kept * 16]).count();
            assert_eq!(splits, blocks, "{name}: {targets:?}");
            assert!(merges >= blocks, "{name}: {targets:?}");
            let stale = |t: &Vec<i64>| t[1..] == [17, 64] || t[1..] == [4, 16, 17];
            assert!(!targets.iter().any(stale), "{name}: {targets:?}");
            assert_matches_reference_in_tract(
                &pruned,
                &format!("{name}@{fraction}"),
                17 + k as u64,
            );
        }
    }
}

/// ONNX Runtime runs the head-pruned exports like tract: pruned vs masked reference at batch 4.
#[cfg(feature = "ort")]
#[test]
fn random_head_keep_plans_verify_in_onnxruntime() {
    for (dir, file, _) in timm_exports() {
        let name = format!("{}/{file}", dir.display());
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let groups = compress::groups::analyse(&graph).unwrap();
        let plan = head_plan(&groups, 0.5, 81);
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        assert_matches_reference_in_onnxruntime(&pruned, &name, 5);
    }
}

/// The training cost model prices a head plan at the pruned model's MACs: the qkv columns,
/// the projection's rows and the QK^T and AV products (heads are a batch axis there, so they
/// scale once, not as input x output).
#[test]
fn cost_model_prices_head_plans_at_the_pruned_macs() {
    for (dir, file, blocks) in timm_exports() {
        let name = format!("{}/{file}", dir.display());
        let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let ids: Vec<usize> = head_groups(&graph).iter().map(|g| g.id).collect();
        assert_eq!(ids.len(), blocks, "{name}");
        let model = compress::methods::cost::CostModel::new(&graph, &analysis, &ids).unwrap();
        for kept in 1..=4 {
            let plan = compress::prune::plan::KeepPlan {
                groups: ids
                    .iter()
                    .map(|&id| compress::prune::plan::GroupKeep {
                        id,
                        keep: (0..kept).collect(),
                    })
                    .collect(),
            };
            let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
            let macs = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            let priced = model.deterministic(&vec![kept; blocks]);
            assert_eq!(priced, macs as f64, "{name}: {kept} heads");
        }
    }
}

/// A chain the head rule cannot follow leaves that block's heads fixed, with the node named:
/// a softmax across the heads (axis 1) mixes them.
#[test]
fn heads_mixed_by_a_softmax_stay_fixed_with_a_reason() {
    let dir = common::repo().join("fixtures/transformers/timm");
    for file in ["model.onnx", "model.dynamo.onnx"] {
        let mut graph = compress::onnx::import_file(&dir.join(file)).unwrap();
        let softmax = graph
            .nodes
            .iter_mut()
            .find(|n| matches!(n.op, compress::ir::Op::Softmax { .. }))
            .unwrap();
        let name = softmax.name.clone();
        if let compress::ir::Op::Softmax { axis, .. } = &mut softmax.op {
            *axis = 1;
        }
        assert_eq!(head_groups(&graph).len(), 1, "{file}");
        let groups = compress::groups::analyse(&graph).unwrap();
        let reason = format!("op that does not follow attention heads at node '{name}' (Softmax)");
        let fixed: Vec<_> = groups
            .iter()
            .filter(|g| g.reason.as_deref() == Some(reason.as_str()))
            .collect();
        assert_eq!(fixed.len(), 1, "{file}: {groups:?}");
        assert_eq!(fixed[0].width, 4, "{file}");
    }
}
