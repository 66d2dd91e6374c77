//! The hidden width of a vision transformer (the residual stream's channels, tied across all
//! blocks) as one channel group: found in both exporters' graphs, priced by the cost model,
//! cut by the surgery, and computed by the gated network with LayerNorm over the open
//! channels only, so the pruned export equals the masked reference.

mod common;

use std::path::PathBuf;

use compress::groups::ChannelGroup;
use compress::ir::Graph;
use compress::prune::plan::{GroupKeep, KeepPlan};
use compress::verify::run_tract;

/// (directory, file, blocks) of every ViT export: fixtures (2 or 3 blocks) and models/vit (3).
fn exports() -> Vec<(PathBuf, &'static str, usize)> {
    let root = common::repo();
    let mut out = Vec::new();
    for style in ["timm", "torch"] {
        for file in ["model.onnx", "model.dynamo.onnx", "model.opset20.onnx"] {
            out.push((root.join("fixtures/transformers").join(style), file, 2));
        }
    }
    for file in ["model.onnx", "model.dynamo.onnx"] {
        out.push((root.join("models/vit"), file, 3));
        out.push((root.join("models/vit_torch"), file, 3));
        // The class token joined by a Concat: torchvision's VisionTransformer (3 blocks, RGB)
        // and timm's `cat(cls_token.expand(B, -1, -1), x) + pos_embed` (2 blocks).
        let fixtures = root.join("fixtures/transformers");
        out.push((fixtures.join("tv_vit"), file, 3));
        out.push((fixtures.join("timm_cls"), file, 2));
    }
    out
}

/// The hidden-width group: the one started by the patch embedding's conv.
fn hidden_group(graph: &Graph) -> ChannelGroup {
    let conv = graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, compress::ir::Op::Conv { .. }))
        .unwrap();
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .find(|g| g.producers.contains(&conv.name))
        .unwrap()
}

fn load(dir: &std::path::Path, file: &str) -> (String, Graph) {
    let name = format!("{}/{file}", dir.display());
    let graph = compress::onnx::import_file(&dir.join(file)).unwrap();
    (name, graph)
}

/// The group ties the patch conv, every output projection (attention proj and MLP fc2) and
/// is read by every input projection (qkv, fc1) and the classifier; every LayerNorm
/// normalises over it; it is prunable.
#[test]
fn the_residual_stream_is_one_prunable_group_in_every_export() {
    for (dir, file, blocks) in exports() {
        let (name, graph) = load(&dir, file);
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let g = hidden_group(&graph);
        assert!(g.prunable, "{name}: {g:?}");
        assert_eq!(g.width, 64, "{name}");
        // conv + (attention out + MLP out) per block
        assert_eq!(
            g.producers.len(),
            1 + 2 * blocks,
            "{name}: {:?}",
            g.producers
        );
        // (attention in + MLP in) per block + classifier
        assert_eq!(
            g.consumers.len(),
            2 * blocks + 1,
            "{name}: {:?}",
            g.consumers
        );
        let norms = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, compress::ir::Op::LayerNorm(_)))
            .count();
        assert_eq!(norms, 2 * blocks + 1, "{name}");
        let normalised = analysis.norms.values().filter(|&&id| id == g.id).count();
        assert_eq!(normalised, norms, "{name}: {:?}", analysis.norms);
    }
}

/// `inspect` lists the hidden group with its producers and readers.
#[test]
fn inspect_shows_the_hidden_width_group() {
    let out = common::compress()
        .args(["inspect", "models/vit/model.onnx"])
        .current_dir(common::repo())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("from /patch_embed/Conv"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("width 64"), "{line}");
    assert!(line.contains("[prunable]"), "{line}");
    for b in 0..3 {
        for part in ["attn/proj/MatMul", "mlp/fc2/MatMul"] {
            let from = format!("/blocks/blocks.{b}/{part}");
            assert!(line.contains(&from), "{from}: {line}");
        }
        for part in ["attn/qkv/MatMul", "mlp/fc1/MatMul"] {
            let by = format!("/blocks/blocks.{b}/{part}");
            assert!(line.contains(&by), "{by}: {line}");
        }
    }
    assert!(line.contains("/head/Gemm"), "{line}");
    assert!(!text.contains("not analysed yet"), "{text}");
}

/// A plan over the hidden group alone (`hidden_only`) or over every group.
fn plan(graph: &Graph, fraction: f64, seed: u64, hidden_only: bool) -> KeepPlan {
    let groups = compress::groups::analyse(graph).unwrap();
    let hidden = hidden_group(graph).id;
    let mut plan = compress::prune::plan::random(&groups, fraction, seed);
    if hidden_only {
        plan.groups.retain(|k| k.id == hidden);
    }
    assert!(plan.groups.iter().any(|k| k.id == hidden));
    plan
}

/// The pruned export computes the masked reference in tract at batch 1 and 5.
fn assert_matches_reference_in_tract(pruned: &compress::prune::Pruned, name: &str, seed: u64) {
    let ours = compress::onnx::export(&pruned.graph);
    let reference = compress::onnx::export(&pruned.reference);
    for batch in [1, 5] {
        let x = compress::verify::pseudo_random(&pruned.graph.inputs[0].shape(batch), seed);
        let a = run_tract(&ours, std::slice::from_ref(&x)).unwrap();
        let b = run_tract(&reference, std::slice::from_ref(&x)).unwrap();
        let d = common::max_diff(&a[0], &b[0]);
        assert!(d <= 1e-4, "{name} batch {batch}: pruned vs reference {d}");
    }
}

/// Random hidden-width plans at 25/50/75%, alone and together with random head and MLP plans:
/// the pruned export computes the masked reference in tract at batch 1 and 5, the MACs and
/// parameters go down, and no Reshape keeps the old width.
#[test]
fn random_hidden_keep_plans_verify_in_tract() {
    for (dir, file, _) in exports() {
        let (name, graph) = load(&dir, file);
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap();
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            for hidden_only in [true, false] {
                let what = format!("{name}@{fraction} hidden_only={hidden_only}");
                let plan = plan(&graph, fraction, 30 + k as u64, hidden_only);
                let pruned = compress::prune::prune(&graph, &plan, None)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let after = compress::ir::cost::graph_cost(&pruned.graph, 1).unwrap();
                assert!(after.macs < before.macs, "{what}: MACs");
                assert!(after.params < before.params, "{what}: params");
                // Every Reshape of the hidden width carries the kept width, none the old one.
                let hidden = hidden_group(&graph).id;
                let kept = plan
                    .groups
                    .iter()
                    .find(|k| k.id == hidden)
                    .unwrap()
                    .keep
                    .len();
                let mut rewritten = 0;
                for n in &pruned.graph.nodes {
                    let compress::ir::Op::Reshape { shape } = &n.op else {
                        continue;
                    };
                    let out = &n.outputs[0];
                    let Some(segs) = pruned.analysis.layouts.get(out) else {
                        continue;
                    };
                    if segs.iter().all(|s| s.group != hidden) {
                        continue;
                    }
                    let axis = pruned.analysis.channel_axis(out);
                    assert!(
                        shape[axis] <= 0 || shape[axis] == kept as i64,
                        "{what}: {} {shape:?}",
                        n.name
                    );
                    rewritten += 1;
                }
                assert!(rewritten >= 1, "{what}: no Reshape of the hidden width");
                assert_matches_reference_in_tract(&pruned, &what, 40 + k as u64);
            }
        }
    }
}

/// ONNX Runtime agrees: pruned vs masked reference at batch 1 and 5.
#[cfg(feature = "ort")]
#[test]
fn random_hidden_keep_plans_verify_in_onnxruntime() {
    use compress::verify::onnxruntime::run_ort;
    for (dir, file, _) in exports() {
        let (name, graph) = load(&dir, file);
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let hidden_only = k != 1;
            let what = format!("{name}@{fraction} hidden_only={hidden_only}");
            let plan = plan(&graph, fraction, 50 + k as u64, hidden_only);
            let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
            let ours = compress::onnx::export(&pruned.graph);
            let reference = compress::onnx::export(&pruned.reference);
            for batch in [1, 5] {
                let x = vec![compress::verify::pseudo_random(
                    &graph.inputs[0].shape(batch),
                    9,
                )];
                let a = run_ort(&ours, &x).unwrap();
                let b = run_ort(&reference, &x).unwrap();
                let d = common::max_diff(&a[0], &b[0]);
                assert!(d <= 1e-4, "{what} batch {batch}: ORT {d}");
            }
        }
    }
}

/// The gated network in burn (LayerNorm over the open channels, 0/1 gates at the plan) computes
/// the masked reference, which the pruned export reproduces: burn == tract(reference).
#[test]
fn the_gated_network_normalises_over_the_open_channels_only() {
    use compress::exec::{Val, default_device};
    for (dir, file, _) in exports() {
        let (name, graph) = load(&dir, file);
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let ids: Vec<usize> = analysis
            .groups
            .iter()
            .filter(|g| g.prunable)
            .map(|g| g.id)
            .collect();
        let plan = plan(&graph, 0.5, 70, false);
        let device = default_device();
        let net =
            compress::train::net::GatedNet::new(&graph, analysis.clone(), &ids, &device).unwrap();
        let gates: Vec<_> = ids
            .iter()
            .map(|&id| {
                let width = analysis.groups[id].width;
                let keep = plan.groups.iter().find(|k| k.id == id);
                let z: Vec<f32> = (0..width)
                    .map(|c| match keep {
                        Some(k) if !k.keep.contains(&c) => 0.0,
                        _ => 1.0,
                    })
                    .collect();
                net.tensor2(z, 1, width)
            })
            .collect();
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        let reference = compress::onnx::export(&pruned.reference);
        for batch in [1, 5] {
            let x = compress::verify::pseudo_random(&graph.inputs[0].shape(batch), 11);
            let input = Val::from_f32(x.to_f32_vec(), &x.shape, &device);
            let burn = net.forward_eval(vec![input], &gates).unwrap();
            let burn =
                compress::ir::Tensor::f32(vec![batch, 10], compress::exec::value::host_f32(burn));
            let tract = run_tract(&reference, std::slice::from_ref(&x)).unwrap();
            let d = common::max_diff(&burn, &tract[0]);
            assert!(
                d <= 1e-4,
                "{name} batch {batch}: burn gated vs reference {d}"
            );
        }
    }
}

/// The cost model prices a hidden-width plan at the pruned graph's MACs and parameters.
#[test]
fn cost_model_prices_hidden_plans_at_the_pruned_macs() {
    for (dir, file, _) in exports() {
        let (name, graph) = load(&dir, file);
        let analysis = compress::groups::analyse_layouts(&graph).unwrap();
        let id = hidden_group(&graph).id;
        let model = compress::methods::cost::CostModel::new(&graph, &analysis, &[id]).unwrap();
        for kept in [16, 32, 48, 64] {
            let plan = KeepPlan {
                groups: vec![GroupKeep {
                    id,
                    keep: (0..kept).collect(),
                }],
            };
            let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
            let macs = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            let priced = model.deterministic(&[kept]);
            assert_eq!(priced, macs as f64, "{name}: {kept} channels");
            // Parameters too: the projections' rows and columns, the conv, every LayerNorm's
            // scale and bias, the classifier.
            let params = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .params;
            let priced = model.deterministic_params(&[kept]);
            assert_eq!(priced, params as f64, "{name}: params at {kept} channels");
        }
    }
}

/// The learned constants on the residual stream (src/ir/learned.rs: the class token expanded
/// to the batch, the positional embedding, the output projections' bias Adds) lose exactly the
/// removed channels of their last axis. (They are parameters in `ir::cost`, so the cost-model
/// test above, priced params == the pruned graph's, checks that they are priced too.)
#[test]
fn learned_constants_are_cut_with_the_hidden_width() {
    use compress::ir::Op;
    // The exports with a class token expanded to the batch (the pad-form fixtures fold it
    // into the positional table at export).
    let cat_form = |d: &std::path::Path| {
        ["vit", "vit_torch", "tv_vit", "timm_cls"]
            .iter()
            .any(|m| d.ends_with(m))
    };
    for (dir, file, blocks) in exports().into_iter().filter(|(d, _, _)| cat_form(d)) {
        let (name, graph) = load(&dir, file);
        let width = 64;
        // Learned constants read by an Add or an Expand with one value per hidden channel.
        let mut learned = Vec::new();
        let weights = compress::ir::learned::node_weights(&graph);
        for (n, ws) in graph.nodes.iter().zip(&weights) {
            if !matches!(n.op, Op::Binary(_) | Op::Expand(_)) {
                continue;
            }
            for w in ws {
                let v = &n.inputs[w.input];
                let t = &graph.initializers[v];
                if t.shape.last() == Some(&width) {
                    learned.push((v.clone(), matches!(n.op, Op::Expand(_))));
                }
            }
        }
        // class token + positional embedding + at least one projection bias per block
        assert!(learned.len() >= 2 + blocks, "{name}: {learned:?}");
        assert!(
            learned.iter().any(|(_, cls)| *cls),
            "{name}: no class token"
        );
        let id = hidden_group(&graph).id;
        let keep: Vec<usize> = (0..width).filter(|c| c % 3 != 1).collect();
        let plan = KeepPlan {
            groups: vec![GroupKeep {
                id,
                keep: keep.clone(),
            }],
        };
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        for (v, _) in &learned {
            let (t, p) = (&graph.initializers[v], &pruned.graph.initializers[v]);
            let want = compress::prune::surgery::slice_axis(t, t.shape.len() - 1, &keep);
            assert_eq!(p, &want, "{name}: {v} not cut along its last axis");
        }
    }
}

/// Token models (tests/bert.rs fixtures): the word, position and token-type embedding tables'
/// columns start the hidden group; random hidden-width plans, alone and with the MLP groups,
/// verify in tract (and ONNX Runtime with `ort`) at batch 1 and 5 on ids inside the tables.
#[test]
fn token_models_prune_their_hidden_width_through_the_embedding_tables() {
    use compress::onnx::{InputShapes, import_sized};
    let root = common::repo().join("fixtures/transformers");
    let given: Vec<String> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| format!("{n}=1x8"))
        .collect();
    let sized = InputShapes::parse(&given).unwrap();
    for dir in ["bert_ts", "bert_dynamo", "bert_bool_dynamo"] {
        let bytes = std::fs::read(root.join(dir).join("model.onnx")).unwrap();
        let graph = import_sized(&bytes, dir, &sized).unwrap().graph;
        let groups = compress::groups::analyse(&graph).unwrap();
        let tables: Vec<&str> = graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, compress::ir::Op::Gather(_)))
            .map(|n| n.name.as_str())
            .collect();
        let hidden = groups
            .iter()
            .find(|g| g.producers.iter().any(|p| tables.contains(&p.as_str())))
            .unwrap_or_else(|| panic!("{dir}: {groups:#?}"));
        assert!(hidden.prunable, "{dir}: {hidden:?}");
        assert_eq!(hidden.width, 32, "{dir}");
        assert!(!hidden.normalised_by.is_empty(), "{dir}");
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            for hidden_only in [true, false] {
                let what = format!("{dir}@{fraction} hidden_only={hidden_only}");
                let mut plan = compress::prune::plan::random(&groups, fraction, 20 + k as u64);
                if hidden_only {
                    plan.groups.retain(|g| g.id == hidden.id);
                }
                let pruned = compress::prune::prune(&graph, &plan, None)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let ours = compress::onnx::export(&pruned.graph);
                let reference = compress::onnx::export(&pruned.reference);
                for batch in [1, 5] {
                    let v = compress::verify::verify_export(&graph, &reference, &ours, batch, 1e-4)
                        .unwrap_or_else(|e| panic!("{what} batch {batch}: {e}"));
                    assert!(v.tract.max_abs_diff <= 1e-4, "{what}: {}", v.summary());
                }
            }
        }
    }
}

/// A LayerNorm written out in plain ops (as exporters before opset 17 write it: reductions
/// over the channel axis) is not followed: the hidden group stays fixed and says why.
#[test]
fn a_written_out_layer_norm_fixes_the_group_with_a_reason() {
    let (name, mut graph) = load(
        &common::repo().join("fixtures/transformers/timm"),
        "model.onnx",
    );
    let norms: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, compress::ir::Op::LayerNorm(_)))
        .map(|n| n.outputs[0].clone())
        .collect();
    for v in &norms {
        // An all-open mask: the same LayerNorm, written out with ReduceSum, Sub, Sqrt, Div.
        compress::prune::reference::mask_layer_norm(&mut graph, v, &[1.0; 64]);
    }
    assert!(
        !graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, compress::ir::Op::LayerNorm(_)))
    );
    let g = hidden_group(&graph);
    assert!(!g.prunable, "{name}: {g:?}");
    let reason = g.reason.unwrap();
    assert!(reason.contains("written out"), "{reason}");
    assert!(reason.contains("masked_sum"), "{reason}");
}

/// A Concat on the token axis follows the hidden width only when its other inputs are class
/// tokens (a constant expanded to the batch) or carry the width too: joined with a bare
/// constant, the group stays fixed and the reason names the Concat.
#[test]
fn a_concat_with_an_unexpanded_constant_fixes_the_group() {
    use compress::ir::Op;
    let (name, mut graph) = load(
        &common::repo().join("fixtures/transformers/timm_cls"),
        "model.onnx",
    );
    let expand = graph
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Expand(_)))
        .unwrap();
    let (token, out) = {
        let e = &graph.nodes[expand];
        (e.inputs[0].clone(), e.outputs[0].clone())
    };
    let concat = graph
        .nodes
        .iter_mut()
        .find(|n| n.inputs.contains(&out))
        .unwrap();
    assert!(matches!(concat.op, Op::Concat { .. }), "{name}");
    let concat_name = concat.name.clone();
    for i in &mut concat.inputs {
        if *i == out {
            *i = token.clone();
        }
    }
    graph.nodes.remove(expand);
    let g = hidden_group(&graph);
    assert!(!g.prunable, "{name}: {g:?}");
    let reason = g.reason.unwrap();
    assert!(reason.contains(&concat_name), "{reason}");
}
