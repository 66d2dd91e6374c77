//! Whole-sublayer removal in transformers: a block's attention with every head closed, or its
//! MLP with every neuron closed, is removed from the export and the residual passes through
//! (plus the output projection's bias, what the gated network computes with all gates 0).
//! timm-style and `nn.TransformerEncoder` fixtures (both exporters) and models/vit.

mod common;

use std::path::PathBuf;

use compress::groups::ChannelGroup;
use compress::ir::{Graph, Op};
use compress::prune::plan::{GroupKeep, KeepPlan};
use compress::verify::run_tract;

fn exports() -> Vec<PathBuf> {
    let root = common::repo();
    let mut out = Vec::new();
    for style in ["timm", "torch"] {
        for file in ["model.onnx", "model.dynamo.onnx", "model.opset20.onnx"] {
            out.push(root.join("fixtures/transformers").join(style).join(file));
        }
    }
    for model in ["models/vit", "models/vit_torch"] {
        for file in ["model.onnx", "model.dynamo.onnx"] {
            out.push(root.join(model).join(file));
        }
    }
    out
}

/// (attention-head groups, MLP groups) in block order: prunable groups of 4 heads and of 128
/// neurons.
fn sublayer_groups(graph: &Graph) -> (Vec<ChannelGroup>, Vec<ChannelGroup>) {
    let groups = compress::groups::analyse(graph).unwrap();
    let position = |g: &ChannelGroup| {
        graph
            .nodes
            .iter()
            .position(|n| n.name == g.producers[0])
            .unwrap()
    };
    let pick = |width: usize| {
        let mut v: Vec<ChannelGroup> = groups
            .iter()
            .filter(|g| g.prunable && g.width == width)
            .cloned()
            .collect();
        v.sort_by_key(position);
        v
    };
    (pick(4), pick(128))
}

fn count(graph: &Graph, what: fn(&Op) -> bool) -> usize {
    graph.nodes.iter().filter(|n| what(&n.op)).count()
}

fn is_layer_norm(op: &Op) -> bool {
    matches!(op, Op::LayerNorm { .. })
}

fn is_softmax(op: &Op) -> bool {
    matches!(op, Op::Softmax { .. })
}

/// Pruned vs masked reference in tract and ONNX Runtime at batch 1 and 5.
fn assert_matches_reference(pruned: &compress::prune::Pruned, name: &str) -> f32 {
    let ours = compress::onnx::export(&pruned.graph);
    let reference = compress::onnx::export(&pruned.reference);
    let mut worst = 0.0f32;
    for batch in [1, 5] {
        let x = vec![compress::verify::pseudo_random(&[batch, 1, 28, 28], 11)];
        let a = run_tract(&ours, &x).unwrap();
        let b = run_tract(&reference, &x).unwrap();
        let d = common::max_diff(&a[0], &b[0]);
        assert!(
            d <= 1e-5,
            "{name} batch {batch}: tract, pruned vs reference {d}"
        );
        worst = worst.max(d);
        #[cfg(feature = "ort")]
        {
            use compress::verify::onnxruntime::run_ort;
            let a = run_ort(&ours, &x).unwrap();
            let b = run_ort(&reference, &x).unwrap();
            let d = common::max_diff(&a[0], &b[0]);
            assert!(
                d <= 1e-5,
                "{name} batch {batch}: ORT, pruned vs reference {d}"
            );
            worst = worst.max(d);
        }
    }
    worst
}

/// Plans that close whole sublayers: block 0's attention, block 1's MLP, and both sublayers of
/// block 0 together (with the other groups at half width). Each verifies in tract and ONNX
/// Runtime; the export has no node of a removed sublayer (its LayerNorm, projections, softmax);
/// the training cost model prices the plan at the export's MACs and parameters.
#[test]
fn closing_whole_sublayers_removes_them_and_verifies() {
    for path in exports() {
        let name = path.display().to_string();
        let graph = compress::onnx::import_file(&path).unwrap();
        let (heads, mlps) = sublayer_groups(&graph);
        assert!(heads.len() >= 2 && mlps.len() == heads.len(), "{name}");
        let (norms, softmaxes) = (count(&graph, is_layer_norm), count(&graph, is_softmax));
        let cases: [(&str, Vec<&ChannelGroup>, usize, usize); 3] = [
            ("attention 0", vec![&heads[0]], 1, 1),
            ("mlp 1", vec![&mlps[1]], 1, 0),
            ("block 0", vec![&heads[0], &mlps[0]], 2, 1),
        ];
        let ids: Vec<usize> = heads.iter().chain(&mlps).map(|g| g.id).collect();
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let model = compress::methods::cost::CostModel::new(&graph, &analysis, &ids).unwrap();
        for (case, closed, norms_gone, softmaxes_gone) in cases {
            let keep = |g: &ChannelGroup| {
                if closed.iter().any(|c| c.id == g.id) {
                    vec![]
                } else {
                    (0..g.width / 2).collect()
                }
            };
            let plan = KeepPlan {
                groups: heads
                    .iter()
                    .chain(&mlps)
                    .map(|g| GroupKeep {
                        id: g.id,
                        keep: keep(g),
                    })
                    .collect(),
            };
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{name} {case}: {e}"));
            let p = &pruned.graph;
            assert_eq!(count(p, is_layer_norm), norms - norms_gone, "{name} {case}");
            assert_eq!(
                count(p, is_softmax),
                softmaxes - softmaxes_gone,
                "{name} {case}"
            );
            for g in &closed {
                for node in g.producers.iter().chain(&g.consumers) {
                    assert!(
                        !p.nodes.iter().any(|n| &n.name == node),
                        "{name} {case}: {node} is still there"
                    );
                }
            }
            assert!(
                pruned.notes.iter().any(|n| n.contains("closed whole")),
                "{name}"
            );
            let d = assert_matches_reference(&pruned, &format!("{name} {case}"));
            eprintln!("{name} {case}: pruned vs reference {d:.2e}");
            let kept: Vec<usize> = ids
                .iter()
                .map(|&id| plan.groups.iter().find(|k| k.id == id).unwrap().keep.len())
                .collect();
            let cost = compress::ir::cost::graph_cost(p, 1).unwrap();
            assert_eq!(
                model.deterministic(&kept),
                cost.macs as f64,
                "{name} {case}"
            );
            // The removed LayerNorm's scale and bias (and a Gemm out_proj's bias) go too.
            let params = model.deterministic_params(&kept);
            assert_eq!(params, cost.params as f64, "{name} {case}");
        }
    }
}

/// Groups that are not on a residual branch still keep at least one channel: LeNet-5's
/// conv and fc groups feed the next layer, not a residual Add.
#[test]
fn groups_off_a_residual_branch_keep_one_channel() {
    let graph =
        compress::onnx::import_file(&common::repo().join("models/lenet5/model.onnx")).unwrap();
    let analysis = compress::groups::analyse_layouts(&graph).unwrap();
    assert!(compress::prune::sublayer::removable(&graph, &analysis).is_empty());
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 0,
            keep: vec![],
        }],
    };
    let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
    assert_eq!(pruned.keep[&0].len(), 1);
    assert!(
        pruned
            .notes
            .iter()
            .any(|n| n.contains("would drop to zero width"))
    );
}

/// With nothing else pruned, removing a sublayer changes nothing the network computes: the
/// export and the gated reference agree exactly (the branch is `0 x W + b = b` in the
/// reference and the constant b in the export).
#[test]
fn a_removed_sublayer_alone_matches_the_reference_exactly() {
    for path in exports() {
        let name = path.display().to_string();
        let graph = compress::onnx::import_file(&path).unwrap();
        let (heads, mlps) = sublayer_groups(&graph);
        for g in [&heads[1], &mlps[0]] {
            let plan = KeepPlan {
                groups: vec![GroupKeep {
                    id: g.id,
                    keep: vec![],
                }],
            };
            let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
            let ours = compress::onnx::export(&pruned.graph);
            let reference = compress::onnx::export(&pruned.reference);
            for batch in [1, 5] {
                let x = vec![compress::verify::pseudo_random(&[batch, 1, 28, 28], 5)];
                let a = run_tract(&ours, &x).unwrap();
                let b = run_tract(&reference, &x).unwrap();
                let d = common::max_diff(&a[0], &b[0]);
                assert_eq!(d, 0.0, "{name} group {} batch {batch}", g.id);
            }
        }
    }
}

/// The pipeline's path: a gated network (gate values multiplied in) whose gates close one
/// block's attention entirely exports without that attention and computes the gated network.
#[test]
fn a_gated_network_with_closed_heads_exports_without_its_attention() {
    for path in exports() {
        let name = path.display().to_string();
        let graph = compress::onnx::import_file(&path).unwrap();
        let (heads, mlps) = sublayer_groups(&graph);
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let ids: Vec<usize> = heads.iter().chain(&mlps).map(|g| g.id).collect();
        // Head group 0 all closed, the others open at 0.5..1.
        let values: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| {
                let w = analysis.groups[id].width;
                if id == heads[0].id {
                    vec![0.0; w]
                } else {
                    (0..w).map(|c| 0.5 + 0.5 * c as f32 / w as f32).collect()
                }
            })
            .collect();
        let plan = compress::methods::plan::keep_plan(&ids, &values);
        let gated = compress::methods::plan::gated_graph(graph.clone(), &analysis, &ids, values);
        let pruned = compress::prune::prune(&gated, &plan, None).unwrap();
        let mut out = pruned.graph.clone();
        compress::ir::fold::fold_channel_scales(&mut out);
        assert_eq!(
            count(&out, is_softmax),
            count(&graph, is_softmax) - 1,
            "{name}"
        );
        let v = compress::verify::verify_export(
            &gated,
            &compress::onnx::export(&pruned.reference),
            &compress::onnx::export(&out),
            2,
            1e-4,
        )
        .unwrap();
        assert!(
            v.tract.max_abs_diff <= 1e-5,
            "{name}: {}",
            v.tract.max_abs_diff
        );
    }
}

/// The cost model knows which gated groups can be closed whole, and its expected cost (the
/// training penalty) of a group with no open channel leaves out the whole sublayer, as the
/// deterministic cost and the export do.
#[test]
fn the_expected_cost_of_a_closed_sublayer_is_zero() {
    use burn::prelude::*;
    let dev = compress::exec::default_device();
    let path = common::repo().join("fixtures/transformers/torch/model.onnx");
    let graph = compress::onnx::import_file(&path).unwrap();
    let (heads, mlps) = sublayer_groups(&graph);
    let analysis = compress::groups::analyse_layouts(&graph).unwrap();
    let ids: Vec<usize> = heads.iter().chain(&mlps).map(|g| g.id).collect();
    let model = compress::methods::cost::CostModel::new(&graph, &analysis, &ids).unwrap();
    assert_eq!(model.closable, vec![true; ids.len()]);
    let kept: Vec<usize> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| if i == 0 { 0 } else { analysis.groups[id].width })
        .collect();
    let open: Vec<Tensor<1>> = kept
        .iter()
        .map(|&k| Tensor::<1>::full([1], k as f32, &dev))
        .collect();
    let expected = model
        .expected_params(&open)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()[0];
    let exact = model.deterministic_params(&kept);
    assert!(
        (expected as f64 - exact).abs() < 1e-2 * exact.max(1.0) / 1e3,
        "{expected} vs {exact}"
    );
    assert!(
        exact < model.dense_params - 64.0 * 192.0 - 64.0 * 64.0,
        "{exact}"
    );
    let lenet =
        compress::onnx::import_file(&common::repo().join("models/lenet5/model.onnx")).unwrap();
    let a = compress::groups::analyse_layouts(&lenet).unwrap();
    let m = compress::methods::cost::CostModel::new(&lenet, &a, &[0, 1, 2]).unwrap();
    assert_eq!(m.closable, vec![false; 3]);
}
