//! A tiny LLaMA-style decoder (`converters/export_llm.py`): token embedding, RMSNorm written out
//! (Pow/ReduceMean/Add/Sqrt/Reciprocal or Div/Mul), rotary embeddings (cos/sin tables,
//! rotate-half by Slice/Neg/Concat), grouped-query attention (8 q heads of 4 sharing 4 kv heads,
//! k and v repeated by Unsqueeze/Expand/Reshape), a causal mask, a SwiGLU MLP and a classifier
//! on the last token. TorchScript (opset 17) and dynamo (opset 18) exports; `mqa_*` is the same
//! with one kv head (multi-query attention): there the q heads are the channels.

mod common;

use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::groups::ChannelGroup;
use compress::ir::{Graph, Op};
use compress::onnx::{InputShapes, import_sized};
use compress::prune::plan::{GroupKeep, KeepPlan};
use compress::verify::{probe_tensor, run_tract};

const SEQ: usize = 8;

fn dir(name: &str) -> PathBuf {
    common::repo().join("fixtures/transformers").join(name)
}

fn gqa_dirs() -> Vec<PathBuf> {
    ["llm_ts", "llm_dynamo"].iter().map(|d| dir(d)).collect()
}

fn mqa_dirs() -> Vec<PathBuf> {
    ["mqa_ts", "mqa_dynamo"].iter().map(|d| dir(d)).collect()
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().to_string()
}

fn load_at(dir: &Path, seq: usize) -> Graph {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let shapes = InputShapes::parse(&[format!("input_ids=1x{seq}")]).unwrap();
    import_sized(&bytes, &name(dir), &shapes).unwrap().graph
}

fn load(dir: &Path) -> Graph {
    load_at(dir, SEQ)
}

/// The constant weight shape of MatMul `node`.
fn weight<'g>(graph: &'g Graph, node: &str) -> &'g [usize] {
    let n = graph.nodes.iter().find(|n| n.name == node).unwrap();
    assert!(matches!(n.op, Op::MatMul), "{node}");
    &graph.initializers[&n.inputs[1]].shape
}

/// Prunable groups of 4 kv groups produced by q `[32, 32]`, k and v `[32, 16]` and read by o
/// `[32, 32]`: the grouped-query heads.
fn kv_groups(graph: &Graph) -> Vec<ChannelGroup> {
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 4 && g.producers.len() == 3)
        .filter(|g| {
            let w: Vec<&[usize]> = g.producers.iter().map(|p| weight(graph, p)).collect();
            w == [[32, 32].as_slice(), &[32, 16], &[32, 16]]
                && g.consumers.len() == 1
                && weight(graph, &g.consumers[0]) == [32, 32]
        })
        .collect()
}

/// Prunable groups of 64 neurons produced by the gate and up projections and read by down.
fn swiglu_groups(graph: &Graph) -> Vec<ChannelGroup> {
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 64 && g.producers.len() == 2)
        .filter(|g| g.producers.iter().all(|p| weight(graph, p) == [32, 64]))
        .filter(|g| g.consumers.len() == 1 && weight(graph, &g.consumers[0]) == [64, 32])
        .collect()
}

#[test]
fn burn_and_tract_match_pytorch_at_two_sequence_lengths_for_both_exporters() {
    for dir in gqa_dirs().into_iter().chain(mqa_dirs()) {
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        for set in ["test_data_set_0", "test_data_set_1"] {
            let (inputs, expected) = common::load_data_set(&dir.join(set));
            let (batch, seq) = (inputs[0].shape[0], inputs[0].shape[1]);
            let what = format!("{} {batch}x{seq}", name(&dir));
            let graph = load_at(&dir, seq);
            let burn = Network::new(&graph, &default_device())
                .unwrap()
                .run(&inputs)
                .unwrap();
            let tract = run_tract(&bytes, &inputs).unwrap();
            let again = run_tract(&compress::onnx::export(&graph), &inputs).unwrap();
            let d_torch = common::max_diff(&burn[0], &expected[0]);
            let d_tract = common::max_diff(&burn[0], &tract[0]);
            let d_export = common::max_diff(&again[0], &expected[0]);
            println!(
                "{what}: burn-pytorch {d_torch:.2e}, burn-tract {d_tract:.2e}, re-export {d_export:.2e}"
            );
            assert_eq!(burn[0].shape, expected[0].shape, "{what}");
            assert!(d_torch <= 1e-4, "{what}: burn vs PyTorch {d_torch}");
            assert!(d_tract <= 1e-4, "{what}: burn vs tract {d_tract}");
            assert!(d_export <= 1e-4, "{what}: re-export vs PyTorch {d_export}");
        }
    }
}

#[test]
fn inspect_lists_the_kv_groups_and_the_swiglu_neurons() {
    for dir in gqa_dirs() {
        let graph = load(&dir);
        let what = name(&dir);
        let heads = kv_groups(&graph);
        assert_eq!(heads.len(), 2, "{what}: {heads:?}");
        for g in &heads {
            // One gate, on v before its repeat to the q heads (read by the Expand).
            assert_eq!(g.gates.len(), 1, "{what}: {g:?}");
            let reader = graph
                .nodes
                .iter()
                .find(|n| n.inputs.first() == Some(&g.gates[0]))
                .unwrap();
            assert!(matches!(reader.op, Op::Expand(_)), "{what}: {reader:?}");
        }
        assert_eq!(swiglu_groups(&graph).len(), 2, "{what}");
        // The residual stream is normalised by written-out RMSNorms: fixed, with the reason.
        let groups = compress::groups::analyse(&graph).unwrap();
        let hidden = groups.iter().find(|g| g.width == 32).unwrap();
        assert!(
            hidden
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("reduction over the hidden width")),
            "{what}: {hidden:?}"
        );
        assert_eq!(groups.iter().filter(|g| g.prunable).count(), 4, "{what}");
    }
    let out = common::compress()
        .args(["inspect", "fixtures/transformers/llm_ts/model.onnx"])
        .args(["--input-shape", &format!("input_ids=1x{SEQ}")])
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for b in 0..2 {
        let p = format!("/blocks.{b}");
        for line in [
            format!(
                "width 4     from {p}/attn/q/MatMul, {p}/attn/k/MatMul, {p}/attn/v/MatMul  -> read by {p}/attn/o/MatMul  [prunable]"
            ),
            format!(
                "width 64    from {p}/mlp/gate/MatMul, {p}/mlp/up/MatMul  -> read by {p}/mlp/down/MatMul  [prunable]"
            ),
        ] {
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }
}

/// With one kv head (multi-query attention) a q head is the channel: q's columns and o's rows
/// with the Expands that broadcast k and v to the q heads; k's and v's columns are head_dim
/// (the rotary tables are per head_dim) and stay fixed with the node named.
fn mqa_head_groups(graph: &Graph) -> Vec<ChannelGroup> {
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 8 && g.producers.len() == 3)
        .collect()
}

#[test]
fn multi_query_heads_are_q_heads_and_head_dim_stays_fixed() {
    for dir in mqa_dirs() {
        let graph = load(&dir);
        let what = name(&dir);
        let heads = mqa_head_groups(&graph);
        assert_eq!(heads.len(), 2, "{what}");
        for g in &heads {
            let op = |p: &str| &graph.nodes.iter().find(|n| n.name == p).unwrap().op;
            assert!(matches!(op(&g.producers[0]), Op::MatMul), "{what}: {g:?}");
            assert_eq!(weight(&graph, &g.producers[0]), [32, 32], "{what}");
            assert!(
                g.producers[1..]
                    .iter()
                    .all(|p| matches!(op(p), Op::Expand(_)))
            );
            assert_eq!(weight(&graph, &g.consumers[0]), [32, 32], "{what}");
            assert_eq!(g.gates.len(), 1, "{what}: {g:?}");
        }
        let groups = compress::groups::analyse(&graph).unwrap();
        let is_kv = |p: &str| {
            let n = graph.nodes.iter().find(|n| n.name == p).unwrap();
            matches!(n.op, Op::MatMul) && weight(&graph, p) == [32, 4]
        };
        let head_dim: Vec<&ChannelGroup> = groups
            .iter()
            .filter(|g| g.producers.len() == 1 && is_kv(&g.producers[0]))
            .collect();
        assert_eq!(head_dim.len(), 4, "{what}: {groups:?}");
        assert!(
            head_dim
                .iter()
                .all(|g| !g.prunable && g.reason.as_deref().is_some_and(|r| r.contains("at node")))
        );
        assert_eq!(swiglu_groups(&graph).len(), 2, "{what}");
        assert_eq!(groups.iter().filter(|g| g.prunable).count(), 4, "{what}");
    }
}

/// The pruned export computes the masked reference in tract and ONNX Runtime at batch 1 and 5.
fn assert_matches_reference(pruned: &compress::prune::Pruned, what: &str, seed: u64) {
    common::assert_pruned_matches_reference(pruned, what, |g, batch| {
        vec![probe_tensor(g, 0, &[batch, SEQ], seed)]
    });
}

/// Every head-count constant of a graph: Reshape and Expand targets.
fn targets(graph: &Graph) -> Vec<Vec<i64>> {
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Reshape { shape } => Some(shape.clone()),
            Op::Expand(e) => Some(e.shape.iter().map(|&d| d as i64).collect()),
            _ => None,
        })
        .collect()
}

/// Random plans keeping 25/50/75% of the kv groups and of the SwiGLU neurons: verified in
/// tract and ONNX Runtime at batch 1 and 5, MACs lower, and every head count in the file
/// follows the kept kv groups k (G = 2 stays): q split `[.., 2k, 4]`, k and v split
/// `[.., k, 4]`, Expand `[.., k, 2, N, 4]`, repeat `[.., 2k, N, 4]`, merge `[.., 8k]`.
#[test]
fn random_keep_plans_verify_in_tract_and_onnxruntime() {
    for dir in gqa_dirs() {
        let graph = load(&dir);
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        let groups = compress::groups::analyse(&graph).unwrap();
        for (i, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let what = format!("{} at {fraction}", name(&dir));
            let plan = compress::prune::plan::random(&groups, fraction, 40 + i as u64);
            let kv = (4.0 * fraction) as usize;
            let neurons = (64.0 * fraction) as usize;
            let widths: Vec<usize> = plan.groups.iter().map(|g| g.keep.len()).collect();
            assert_eq!(widths, [kv, neurons, kv, neurons], "{what}");
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            assert!(after < before, "{what}: MACs {before} -> {after}");
            let (k, n, g) = (kv as i64, SEQ as i64, 2);
            let t = targets(&pruned.graph);
            // Targets of rank `rank` ending in `want`.
            let count = |rank: usize, want: &[i64]| {
                t.iter()
                    .filter(|s| s.len() == rank && s.ends_with(want))
                    .count()
            };
            let found = [
                count(4, &[n, g * k, 4]),
                count(4, &[n, k, 4]),
                count(5, &[k, g, n, 4]),
                count(4, &[g * k, n, 4]),
                count(3, &[n, 4 * g * k]),
            ];
            assert_eq!(found, [2, 4, 4, 4, 2], "{what}: {t:?}");
            // Nothing else: no head count of the dense model is left.
            assert_eq!(t.len(), 16, "{what}: {t:?}");
            assert_matches_reference(&pruned, &what, 30 + i as u64);
        }
    }
    for dir in mqa_dirs() {
        let graph = load(&dir);
        let groups = compress::groups::analyse(&graph).unwrap();
        for (i, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let what = format!("{} at {fraction}", name(&dir));
            let plan = compress::prune::plan::random(&groups, fraction, 50 + i as u64);
            let widths: Vec<usize> = plan.groups.iter().map(|g| g.keep.len()).collect();
            let (h, neurons) = ((8.0 * fraction) as usize, (64.0 * fraction) as usize);
            assert_eq!(widths, [h, neurons, h, neurons], "{what}");
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // q split [.., h, 4], k and v split [.., 1, 4], Expand [.., 1, h, N, 4], repeat
            // [.., h, N, 4], merge [.., 4h]: 16 targets, none with 8 heads.
            let (h, n) = (h as i64, SEQ as i64);
            let t = targets(&pruned.graph);
            let count = |rank: usize, want: &[i64]| {
                t.iter()
                    .filter(|s| s.len() == rank && s.ends_with(want))
                    .count()
            };
            let found = [
                count(4, &[n, h, 4]),
                count(4, &[n, 1, 4]),
                count(5, &[1, h, n, 4]),
                count(4, &[h, n, 4]),
                count(3, &[n, 4 * h]),
            ];
            assert_eq!(found, [2, 4, 4, 4, 2], "{what}: {t:?}");
            assert_eq!(t.len(), 16, "{what}: {t:?}");
            assert_matches_reference(&pruned, &what, 20 + i as u64);
        }
    }
}

/// The training cost model prices plans at the pruned graph's MACs: kv groups (q, k, v
/// columns, o rows, QK^T and AV per head) and SwiGLU neurons (gate and up columns, down rows).
#[test]
fn cost_model_prices_plans_at_the_pruned_macs() {
    for dir in gqa_dirs() {
        let graph = load(&dir);
        let heads: Vec<usize> = kv_groups(&graph).iter().map(|g| g.id).collect();
        common::assert_head_plans_priced_at_pruned_macs(&name(&dir), &graph, &heads, 4);
        let mlp: Vec<usize> = swiglu_groups(&graph).iter().map(|g| g.id).collect();
        common::assert_head_plans_priced_at_pruned_macs(&name(&dir), &graph, &mlp, 64);
    }
    for dir in mqa_dirs() {
        let graph = load(&dir);
        let heads: Vec<usize> = mqa_head_groups(&graph).iter().map(|g| g.id).collect();
        common::assert_head_plans_priced_at_pruned_macs(&name(&dir), &graph, &heads, 8);
    }
}

/// Every kv group of block 0 closed: its attention sublayer is removed and the export still
/// computes the masked reference.
#[test]
fn closing_every_kv_group_of_a_block_removes_its_attention() {
    for dir in gqa_dirs() {
        let graph = load(&dir);
        let heads = kv_groups(&graph);
        let plan = KeepPlan {
            groups: vec![GroupKeep {
                id: heads[0].id,
                keep: vec![],
            }],
        };
        let what = format!("{} block 0 closed", name(&dir));
        let pruned =
            compress::prune::prune(&graph, &plan, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        let softmaxes = |g: &Graph| {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Softmax { .. }))
                .count()
        };
        assert_eq!(
            (softmaxes(&graph), softmaxes(&pruned.graph)),
            (2, 1),
            "{what}"
        );
        for p in heads[0].producers.iter().chain(&heads[0].consumers) {
            assert!(
                !pruned.graph.nodes.iter().any(|n| &n.name == p),
                "{what}: {p} left"
            );
        }
        assert_matches_reference(&pruned, &what, 7);
    }
}

/// keywords.jsonl without its segment ids: the decoder has no `token_type_ids` input, and a
/// run refuses data whose non-zero segment ids the model would drop.
fn decoder_keywords(dir: &Path) -> PathBuf {
    let source = common::repo().join("fixtures/transformers/keywords.jsonl");
    let text = std::fs::read_to_string(source).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("token_type_ids");
            v.to_string()
        })
        .collect();
    let path = dir.join("keywords_no_segments.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `compress run` with l0-hc on the keyword token data at half the MACs: it learns the task,
/// removes kv groups (q heads with one kv head) and SwiGLU neurons, and its export is verified in tract (and ORT).
#[test]
fn a_short_l0_hc_run_on_keyword_tokens_exports_a_verified_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = decoder_keywords(tmp.path());
    for dir in gqa_dirs().into_iter().chain(mqa_dirs()) {
        let name = name(&dir);
        let out = tmp.path().join(format!("{name}.onnx"));
        let run = common::compress()
            .arg(dir.join("model.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("-o")
            .arg(&out)
            .args(["--json", "--latency-runs", "0", "--method", "l0-hc"])
            .args(["--target-macs", "0.5", "--epochs", "12"])
            .args(["--batch-size", "32", "--lr", "3e-3"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let macs = r["macs_ratio"].as_f64().unwrap();
        let accuracy = r["pruned"]["accuracy"].as_f64().unwrap();
        println!(
            "{name}: MACs {macs:.3}, accuracy {accuracy:.4}, widths {} -> {}",
            r["widths_before"], r["widths_after"]
        );
        assert!(macs <= 0.5 + 1e-6, "{name}: MACs {macs}");
        assert!(accuracy >= 0.9, "{name}: accuracy {accuracy}");
        let widths = |k: &str| -> Vec<u64> {
            let w = r[k].as_str().unwrap();
            w.split('-').map(|x| x.parse().unwrap()).collect()
        };
        let (before, after) = (widths("widths_before"), widths("widths_after"));
        let heads = if name.starts_with("mqa") { 8 } else { 4 };
        assert_eq!(before, [heads, 64, heads, 64], "{name}");
        assert!(
            after[0] + after[2] < 2 * heads && after[1] + after[3] < 128,
            "{name}: {before:?} -> {after:?}"
        );
        let v = &r["verification"];
        assert_eq!(v["runtime"], "tract", "{name}");
        assert!(v["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{name}: {v}");
        if cfg!(feature = "ort") {
            assert_eq!(v["also"][0]["runtime"], "onnxruntime", "{name}: {v}");
        }
        // The export keeps the int64 token input and runs at another batch size.
        let bytes = std::fs::read(&out).unwrap();
        let graph = compress::onnx::import(&bytes).unwrap();
        let x = vec![probe_tensor(&graph, 0, &[3, 16], 5)];
        let y = run_tract(&bytes, &x).unwrap();
        assert_eq!(y[0].shape, [3, 4], "{name}");
    }
}
