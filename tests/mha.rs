//! Attention heads of `nn.MultiheadAttention` (inside `nn.TransformerEncoderLayer`, reference
//! path) as PyTorch's TorchScript (opset 17) and dynamo (opset 18 and 20) exporters write them:
//! in_proj as one MatMul, the q/k/v parts split by Slices, heads folded into the batch
//! (`[N, B*H, D]`), unfolded to `[B, H, N, D]` for the scaled dot product, merged back to
//! `[N*B, E]` for the out_proj Gemm. fixtures/transformers/torch (2 blocks, 4 heads of 16).

mod common;

use std::path::PathBuf;

use compress::groups::ChannelGroup;
use compress::ir::{Graph, Op};
use compress::prune::plan::KeepPlan;

/// (file, encoder layers) of the `nn.TransformerEncoder` exports: the random-weight fixtures
/// (2 layers, three exports) and models/vit_torch (3 layers, trained on Fashion-MNIST).
fn torch_exports() -> Vec<(PathBuf, usize)> {
    let root = common::repo();
    let fixtures = root.join("fixtures/transformers/torch");
    let trained = root.join("models/vit_torch");
    let mut out: Vec<(PathBuf, usize)> = ["model.onnx", "model.dynamo.onnx", "model.opset20.onnx"]
        .iter()
        .map(|f| (fixtures.join(f), 2))
        .collect();
    out.extend(
        ["model.onnx", "model.dynamo.onnx"]
            .iter()
            .map(|f| (trained.join(f), 3)),
    );
    out
}

/// Prunable groups of 4 channels produced by the in_proj MatMul (64 -> 3 x 64 columns) and
/// read by the out_proj Gemm (64 x 64): the attention heads.
fn head_groups(graph: &Graph) -> Vec<ChannelGroup> {
    let node = |name: &str| graph.nodes.iter().find(|n| n.name == name).unwrap();
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 4)
        .filter(|g| {
            g.producers.iter().all(|p| {
                let n = node(p);
                matches!(n.op, Op::MatMul) && graph.initializers[&n.inputs[1]].shape == [64, 192]
            }) && g.consumers.iter().all(|c| {
                let n = node(c);
                matches!(n.op, Op::Gemm { .. })
                    && graph.initializers[&n.inputs[1]].shape == [64, 64]
            })
        })
        .collect()
}

/// `fraction` of the heads of every head group, chosen at random.
fn head_plan(graph: &Graph, fraction: f64, seed: u64) -> KeepPlan {
    let heads = head_groups(graph);
    let mut plan = compress::prune::plan::random(&heads, fraction, seed);
    plan.groups.retain(|k| heads.iter().any(|h| h.id == k.id));
    plan
}

#[test]
fn inspect_lists_one_head_group_per_encoder_layer() {
    for (path, blocks) in torch_exports() {
        let graph = compress::onnx::import_file(&path).unwrap();
        let heads = head_groups(&graph);
        assert_eq!(heads.len(), blocks, "{}: {heads:?}", path.display());
        // One gate per group, where the heads are merged back: [N, B, H, D].
        for g in &heads {
            assert_eq!(g.gates.len(), 1, "{g:?}");
            let gate = graph
                .nodes
                .iter()
                .find(|n| n.inputs.first() == Some(&g.gates[0]))
                .unwrap();
            assert!(matches!(gate.op, Op::Reshape { .. }), "{gate:?}");
        }
    }
    let out = common::compress()
        .args(["inspect", "fixtures/transformers/torch/model.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for b in 0..2 {
        let line = format!(
            "width 4     from /blocks/layers.{b}/self_attn/MatMul  -> read by /blocks/layers.{b}/self_attn/Gemm  [prunable]"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
}

/// The pruned export computes the masked reference in tract and ONNX Runtime at batch 1 and 5.
fn assert_matches_reference(pruned: &compress::prune::Pruned, name: &str, seed: u64) {
    common::assert_pruned_matches_reference(pruned, name, |_, batch| {
        vec![compress::verify::pseudo_random(&[batch, 1, 28, 28], seed)]
    });
}

/// Random head plans at 25/50/75%: verified in tract and ONNX Runtime at batch 1 and 5, MACs
/// lower, and every Reshape that splits the parts, unfolds or merges the heads carries the new
/// head count (the fold `[17, -1, 16]` needs none).
#[test]
fn random_head_keep_plans_verify_in_tract_and_onnxruntime() {
    for (path, blocks) in torch_exports() {
        let name = path.display().to_string();
        let graph = compress::onnx::import_file(&path).unwrap();
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let plan = head_plan(&graph, fraction, 40 + k as u64);
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
            let targets: Vec<Vec<i64>> = pruned
                .graph
                .nodes
                .iter()
                .filter_map(|n| match &n.op {
                    Op::Reshape { shape } => Some(shape.clone()),
                    _ => None,
                })
                .collect();
            let count = |want: &dyn Fn(&[i64]) -> bool| targets.iter().filter(|t| want(t)).count();
            let parts = count(&|t| t.len() == 4 && t[2..] == [3, kept * 16]);
            let unfolds = count(&|t| t == [-1, kept, 17, 16]);
            let merges = count(&|t| t == [-1, kept * 16]);
            // Per encoder layer: one split of the parts, three unfolds (q, k, v), one merge.
            let per_layer = (blocks, 3 * blocks, blocks);
            assert_eq!((parts, unfolds, merges), per_layer, "{name}: {targets:?}");
            let stale = count(&|t| t == [-1, 4, 17, 16] || t.ends_with(&[3, 64]) || t == [-1, 64]);
            assert_eq!(stale, 0, "{name}: {targets:?}");
            assert_matches_reference(&pruned, &format!("{name}@{fraction}"), 21 + k as u64);
        }
    }
}

/// The training cost model prices head plans at the pruned graph's MACs (in_proj columns,
/// out_proj rows, QK^T and AV once per head).
#[test]
fn cost_model_prices_multihead_plans_at_the_pruned_macs() {
    for (path, _) in torch_exports() {
        let name = path.display().to_string();
        let graph = compress::onnx::import_file(&path).unwrap();
        let ids: Vec<usize> = head_groups(&graph).iter().map(|g| g.id).collect();
        common::assert_head_plans_priced_at_pruned_macs(&name, &graph, &ids, 4);
    }
}

/// A reader of head values the rule cannot follow fixes that layer's heads, naming the node:
/// here a softmax across the heads (axis 1 of `[B, H, N, N]`).
#[test]
fn heads_mixed_by_a_softmax_stay_fixed_with_a_reason() {
    for (path, blocks) in torch_exports() {
        let mut graph = compress::onnx::import_file(&path).unwrap();
        let softmax = graph
            .nodes
            .iter_mut()
            .find(|n| matches!(n.op, Op::Softmax { .. }))
            .unwrap();
        let name = softmax.name.clone();
        if let Op::Softmax { axis, .. } = &mut softmax.op {
            *axis = 1;
        }
        assert_eq!(head_groups(&graph).len(), blocks - 1, "{}", path.display());
        let reason = format!("op that does not follow attention heads at node '{name}' (Softmax)");
        let groups = compress::groups::analyse(&graph).unwrap();
        let fixed: Vec<_> = groups
            .iter()
            .filter(|g| g.reason.as_deref() == Some(reason.as_str()))
            .collect();
        assert_eq!(fixed.len(), 1, "{}: {groups:?}", path.display());
        assert_eq!(fixed[0].width, 4);
    }
}

/// A head-count constant the rule cannot rewrite fixes the group, naming the node: here the
/// first fold written as `[17, 4, 16]` (the batch times the heads as a constant, right at batch
/// 1 only) instead of `[17, -1, 16]`.
#[test]
fn a_fold_with_a_constant_head_count_fixes_the_group() {
    for (path, blocks) in torch_exports() {
        let mut graph = compress::onnx::import_file(&path).unwrap();
        let fold = graph
            .nodes
            .iter_mut()
            .find(|n| matches!(&n.op, Op::Reshape { shape } if shape == &[17, -1, 16]))
            .unwrap();
        fold.op = Op::Reshape {
            shape: vec![17, 4, 16],
        };
        let name = fold.name.clone();
        assert_eq!(head_groups(&graph).len(), blocks - 1, "{}", path.display());
        let reason = format!(
            "reshape that does not split or merge attention heads at node '{name}' (Reshape)"
        );
        let groups = compress::groups::analyse(&graph).unwrap();
        let fixed: Vec<_> = groups
            .iter()
            .filter(|g| g.reason.as_deref() == Some(reason.as_str()))
            .collect();
        assert_eq!(fixed.len(), 1, "{}: {groups:?}", path.display());
        assert_eq!(fixed[0].width, 4);
    }
}
