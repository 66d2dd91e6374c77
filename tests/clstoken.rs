//! ViTs whose class token is expanded to the batch size (`converters/export_clstoken.py`):
//! torchvision's own `VisionTransformer` (`class_token.expand(n, -1, -1)`, then `torch.cat` on
//! the token axis; `nn.MultiheadAttention` blocks) and timm's `cat(cls_token.expand(B, -1, -1),
//! x)`, each through the TorchScript exporter (opset 17: the target is a Shape -> Gather ->
//! Concat -> Where(Equal) chain) and the dynamo exporter (opset 18: Shape(input)[0:1] -> Concat).
//! The Expand reads the batch size at run time from the value its Shape chain starts at.

mod common;

use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::ir::{Graph, Op};
use compress::verify::run_tract;

/// (name, path, transformer blocks) of every class-token export.
fn exports() -> Vec<(String, PathBuf, usize)> {
    let root = common::repo().join("fixtures/transformers");
    let mut out = Vec::new();
    for (model, blocks) in [("tv_vit", 3), ("timm_cls", 2)] {
        for file in ["model.onnx", "model.dynamo.onnx"] {
            out.push((
                format!("{model}/{file}"),
                root.join(model).join(file),
                blocks,
            ));
        }
    }
    out
}

fn import(path: &Path) -> Graph {
    compress::onnx::import_file(path).unwrap_or_else(|e| panic!("{e}"))
}

/// A deterministic input batch of the model's input shape.
fn input(graph: &Graph, batch: usize, seed: u64) -> compress::ir::Tensor {
    compress::verify::pseudo_random(&graph.inputs[0].shape(batch), seed)
}

#[test]
fn burn_matches_pytorch_and_tract_at_two_batch_sizes() {
    for (name, path, _) in exports() {
        let dir = path.parent().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let graph = import(&path);
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
            if batch > 1 {
                // The logits depend on the input (a zero classifier would make every test pass).
                let v = expected[0].to_f32_vec();
                let spread = (0..10)
                    .map(|c| (v[c] - v[10 + c]).abs())
                    .fold(0.0f32, f32::max);
                assert!(spread > 1e-2, "{name}: logits do not depend on the input");
            }
            assert!(
                d_torch <= 1e-4,
                "{name} batch {batch}: vs PyTorch {d_torch}"
            );
            assert!(d_tract <= 1e-4, "{name} batch {batch}: vs tract {d_tract}");
            assert!(
                d_export <= 1e-5,
                "{name} batch {batch}: re-export {d_export}"
            );
        }
        // A batch size neither the reference sets nor the import's probes used.
        let x = vec![input(&graph, 7, 11)];
        let burn = net.run(&x).unwrap();
        let again = run_tract(&exported, &x).unwrap();
        assert_eq!(burn[0].shape, vec![7, 10], "{name}");
        let d = common::max_diff(&burn[0], &again[0]);
        assert!(d <= 1e-4, "{name} batch 7: burn vs re-export in tract {d}");
    }
}

/// The class token stays one [1, 1, 64] weight broadcast to the batch of the value the Shape
/// chain starts at (not folded to a constant of one batch size), and the export computes the
/// target from that value's Shape again.
#[test]
fn the_class_token_is_broadcast_per_batch() {
    for (name, path, _) in exports() {
        let graph = import(&path);
        let expands: Vec<_> = graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Expand(e) => Some((n, e)),
                _ => None,
            })
            .collect();
        let [(node, expand)] = expands[..] else {
            panic!("{name}: {} Expand nodes", expands.len())
        };
        assert_eq!(expand.from_input, vec![(0, 0)], "{name}");
        assert_eq!(node.inputs.len(), 2, "{name}");
        assert_eq!(graph.initializers[&node.inputs[0]].shape, vec![1, 1, 64]);
        for batch in [1, 6] {
            let shapes = graph.infer_shapes(batch).unwrap();
            assert_eq!(shapes[&node.outputs[0]], vec![batch, 1, 64], "{name}");
        }
        let again = compress::onnx::export(&graph);
        let reimported = compress::onnx::import_bytes(&again, &name).unwrap();
        // The re-export broadcasts through a Where on the batch source (tract optimises it),
        // so the class token still follows the batch size there.
        for batch in [1, 6] {
            let shapes = reimported.infer_shapes(batch).unwrap();
            let out = &node.outputs[0];
            assert_eq!(shapes.get(out), Some(&vec![batch, 1, 64]), "{name}: {out}");
        }
    }
}

/// `inspect` lists each block's MLP group and head group as prunable (timm-style attention and
/// torchvision's `nn.MultiheadAttention`); the class token's Expand does not fix a group.
#[test]
fn inspect_lists_the_mlp_groups() {
    for (name, path, blocks) in exports() {
        let out = common::compress()
            .arg("inspect")
            .arg(&path)
            .assert()
            .success();
        let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        let count = |what: &str| {
            text.lines()
                .filter(|l| l.contains(what) && l.contains("[prunable]"))
                .count()
        };
        assert_eq!(count("width 128 "), blocks, "{name}\n{text}");
        assert_eq!(count("width 4 "), blocks, "{name}\n{text}");
        assert!(!text.contains("Expand)"), "{name}: {text}");
    }
}

/// `compress prune --random-keep 0.5` verifies and writes each file; the written file computes
/// the masked reference of the same plan in tract (and ONNX Runtime) at batch 1 and 4.
#[test]
fn random_keep_half_verifies_at_two_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (k, (name, path, _)) in exports().into_iter().enumerate() {
        let seed = 20 + k as u64;
        let out = dir.path().join(format!("{k}.onnx"));
        common::compress()
            .arg("prune")
            .arg(&path)
            .args(["--random-keep", "0.5", "--seed", &seed.to_string()])
            .args(["--latency-runs", "0", "-o"])
            .arg(&out)
            .assert()
            .success();
        let graph = import(&path);
        let groups = compress::groups::analyse(&graph).unwrap();
        let plan = compress::prune::plan::random(&groups, 0.5, seed);
        let pruned = compress::prune::prune(&graph, &plan, None).unwrap();
        let written = std::fs::read(&out).unwrap();
        let reference = compress::onnx::export(&pruned.reference);
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        let after = compress::ir::cost::graph_cost(&import(&out), 1)
            .unwrap()
            .macs;
        assert!(after < before, "{name}: MACs {before} -> {after}");
        for batch in [1, 4] {
            let x = vec![input(&graph, batch, seed)];
            let a = run_tract(&written, &x).unwrap();
            let b = run_tract(&reference, &x).unwrap();
            let d = common::max_diff(&a[0], &b[0]);
            assert!(d <= 1e-4, "{name} batch {batch}: tract {d}");
            #[cfg(feature = "ort")]
            {
                use compress::verify::onnxruntime::run_ort;
                let a = run_ort(&written, &x).unwrap();
                let b = run_ort(&reference, &x).unwrap();
                let d = common::max_diff(&a[0], &b[0]);
                assert!(d <= 1e-4, "{name} batch {batch}: ONNX Runtime {d}");
            }
        }
    }
}

/// The cost model counts PyTorch's parameters (`sum(p.numel())`, printed by the converter):
/// MatMul biases written as Adds, the positional embedding and the class token are weights.
#[test]
fn parameter_counts_match_pytorch() {
    for (name, path, _) in exports() {
        let want = if name.starts_with("tv_vit") {
            111_818
        } else {
            72_074
        };
        let cost = compress::ir::cost::graph_cost(&import(&path), 1).unwrap();
        assert_eq!(cost.params, want, "{name}");
    }
}

/// Which constants of models/vit are learned though their op alone does not say so: per block
/// the biases of qkv, proj, fc1 and fc2 (Adds after MatMuls), the positional embedding and the
/// class token; no other Add constant (the attention scale is a Mul, LayerNorm has its own).
#[test]
fn learned_constants_of_the_vit_are_its_biases_and_embeddings() {
    let graph = import(&common::repo().join("models/vit/model.onnx"));
    let weights = compress::ir::learned::trainable_inputs(&graph);
    let mut learned: Vec<(String, Vec<usize>)> = Vec::new();
    for (n, ws) in graph.nodes.iter().zip(&weights) {
        if matches!(n.op, Op::Binary(_) | Op::Expand(_)) {
            for &i in ws {
                let t = &graph.initializers[&n.inputs[i]];
                learned.push((n.inputs[i].clone(), t.shape.clone()));
            }
        }
    }
    let count = |shape: &[usize]| learned.iter().filter(|(_, s)| s == shape).count();
    assert_eq!(count(&[192]), 3, "{learned:?}"); // qkv
    assert_eq!(count(&[128]), 3, "{learned:?}"); // fc1
    assert_eq!(count(&[64]), 6, "{learned:?}"); // proj, fc2
    assert_eq!(count(&[1, 17, 64]), 1, "{learned:?}"); // positional embedding
    assert_eq!(count(&[1, 1, 64]), 1, "{learned:?}"); // class token
    assert_eq!(learned.len(), 14, "{learned:?}");
    // A CNN's constants are unchanged: LeNet-5 has Conv/Gemm weights only.
    let lenet = import(&common::repo().join("models/lenet5/model.onnx"));
    let extra: usize = compress::ir::learned::trainable_inputs(&lenet)
        .iter()
        .zip(&lenet.nodes)
        .map(|(ws, n)| ws.len() - compress::ops::trainable_inputs(&n.op).len())
        .sum();
    assert_eq!(extra, 0);
}

/// A short gated run trains the learned constants: the written model's positional embedding,
/// class token and a kept MatMul bias differ from the dense model's.
#[test]
fn a_short_run_trains_the_class_token_position_table_and_matmul_biases() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vit.onnx");
    common::compress()
        .arg("models/vit/model.onnx")
        .current_dir(common::repo())
        .args([
            "--method",
            "l0-hc",
            "--data",
            "fixtures/data/fashion-mnist-subset",
        ])
        .args(["--epochs", "1", "--max-steps", "3", "--batch-size", "32"])
        .args(["--latency-runs", "0", "--quiet", "--force", "-o"])
        .arg(&out)
        .assert()
        .success();
    let before = import(&common::repo().join("models/vit/model.onnx"));
    let after = import(&out);
    for name in ["cls_token", "pos_embed", "blocks.0.attn.proj.bias"] {
        let (a, b) = (&before.initializers[name], &after.initializers[name]);
        assert_eq!(a.shape, b.shape, "{name}");
        let moved = a
            .to_f32_vec()
            .iter()
            .zip(b.to_f32_vec())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 1e-6, "{name} did not train ({moved})");
    }
}

/// The main job on torchvision's ViT (3-channel input) with a MACs budget: gates on its MLP
/// groups train, the export meets the budget, and the written file runs at batch 1 and 4.
#[test]
fn a_gated_run_on_torchvisions_vit_meets_its_budget_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    common::rgb_folder(&data, 6);
    for (k, file) in ["model.onnx", "model.dynamo.onnx"].into_iter().enumerate() {
        let path = common::repo()
            .join("fixtures/transformers/tv_vit")
            .join(file);
        let out = dir.path().join(format!("tv{k}.onnx"));
        let report = dir.path().join(format!("tv{k}.report.json"));
        common::compress()
            .arg(&path)
            .args(["--method", "l0-hc", "--target-macs", "0.8", "--data"])
            .arg(&data)
            .args(["--epochs", "1", "--max-steps", "4", "--batch-size", "6"])
            .args(["--latency-runs", "0", "--quiet", "--force", "-o"])
            .arg(&out)
            .assert()
            .success();
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let ratio = r["macs_ratio"].as_f64().unwrap();
        assert!(ratio <= 0.8 && ratio > 0.7, "{file}: MACs ratio {ratio}");
        assert!(r["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
        let written = std::fs::read(&out).unwrap();
        let graph = import(&out);
        for batch in [1, 4] {
            let y = run_tract(&written, &[input(&graph, batch, 5)]).unwrap();
            assert_eq!(y[0].shape, vec![batch, 10], "{file}");
        }
    }
}

/// An Expand target that depends on the batch size in another way (twice the batch, made by
/// hand with onnx.helper) is refused in one line naming the node, exit 2.
#[test]
fn an_expand_to_twice_the_batch_is_refused_in_one_line() {
    let out = common::compress()
        .arg("inspect")
        .arg(common::repo().join("fixtures/transformers/expand_twice_the_batch.onnx"))
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("node 'Expand_3' (Expand): target entry 0 depends on the batch size"),
        "{err}"
    );
}
