//! Attention heads of the BERT-style encoders (`converters/export_bert.py`: separate q, k, v
//! linear layers, each reshaped to `[B, N, H, D]` and transposed, QK^T with an additive mask,
//! AV, merged back to `[B, N, E]` for the output projection `o`), TorchScript and dynamo
//! exports and the bool-mask variant: 2 blocks of 4 heads of 8, hidden 32.

mod common;

use std::path::{Path, PathBuf};

use compress::groups::ChannelGroup;
use compress::ir::{BinaryOp, Graph, Node, Op, Tensor};
use compress::onnx::{InputShapes, import_sized};
use compress::prune::plan::{GroupKeep, KeepPlan};
use compress::verify::probe_tensor;

const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
const SEQ: usize = 8;

fn dirs() -> Vec<PathBuf> {
    common::bert_dirs()
}

fn load(dir: &Path) -> Graph {
    let given: Vec<String> = INPUTS.iter().map(|n| format!("{n}=1x{SEQ}")).collect();
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    import_sized(&bytes, "bert", &InputShapes::parse(&given).unwrap())
        .unwrap()
        .graph
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().to_string()
}

/// Prunable groups of 4 channels produced by three `[32, 32]` MatMuls (q, k, v) and read by
/// one `[32, 32]` MatMul (the output projection): the attention heads.
fn head_groups(graph: &Graph) -> Vec<ChannelGroup> {
    let node = |name: &str| graph.nodes.iter().find(|n| n.name == name).unwrap();
    let linear = |name: &str| {
        let n = node(name);
        matches!(n.op, Op::MatMul)
            && graph
                .initializers
                .get(&n.inputs[1])
                .is_some_and(|w| w.shape == [32, 32])
    };
    compress::groups::analyse(graph)
        .unwrap()
        .into_iter()
        .filter(|g| g.prunable && g.width == 4)
        .filter(|g| {
            g.producers.len() == 3
                && g.producers.iter().all(|p| linear(p))
                && g.consumers.len() == 1
                && linear(&g.consumers[0])
        })
        .collect()
}

fn head_plan(heads: &[ChannelGroup], kept: usize, seed: u64) -> KeepPlan {
    let mut plan = compress::prune::plan::random(heads, kept as f64 / 4.0, seed);
    plan.groups.retain(|k| heads.iter().any(|h| h.id == k.id));
    plan
}

/// Probe inputs for `graph` at `batch` (ids inside the embedding tables, a 0/1 mask).
fn probes(graph: &Graph, batch: usize, seed: u64) -> Vec<Tensor> {
    (0..INPUTS.len())
        .map(|i| probe_tensor(graph, i, &[batch, SEQ], seed + i as u64))
        .collect()
}

#[test]
fn inspect_shows_one_head_group_per_block_for_every_export() {
    for dir in dirs() {
        let graph = load(&dir);
        let heads = head_groups(&graph);
        assert_eq!(heads.len(), 2, "{}: {heads:?}", name(&dir));
        for g in &heads {
            // One gate, where the heads are merged back: the input of `[B, N, H, D] -> [B, N, E]`.
            assert_eq!(g.gates.len(), 1, "{g:?}");
            let merge = graph
                .nodes
                .iter()
                .find(|n| n.inputs.first() == Some(&g.gates[0]))
                .unwrap();
            assert!(matches!(merge.op, Op::Reshape { .. }), "{merge:?}");
        }
        // q, k and v are no longer fixed on their own.
        let groups = compress::groups::analyse(&graph).unwrap();
        assert!(
            groups.iter().all(|g| g.prunable || g.width != 32),
            "{}: {groups:?}",
            name(&dir)
        );
    }
    let mut cmd = common::compress();
    cmd.args(["inspect", "fixtures/transformers/bert_ts/model.onnx"]);
    for n in INPUTS {
        cmd.args(["--input-shape", &format!("{n}=1x{SEQ}")]);
    }
    let out = cmd.current_dir(common::repo()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for b in 0..2 {
        let line = format!(
            "width 4     from /blocks.{b}/attn/q/MatMul, /blocks.{b}/attn/k/MatMul, /blocks.{b}/attn/v/MatMul  -> read by /blocks.{b}/attn/o/MatMul  [prunable]"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(!text.contains("does not follow them"), "{text}");
}

/// The pruned export computes the masked reference in tract and ONNX Runtime at batch 1 and 5.
fn assert_matches_reference(pruned: &compress::prune::Pruned, what: &str, seed: u64) {
    common::assert_pruned_matches_reference(pruned, what, |g, batch| probes(g, batch, seed));
}

/// Head-count constants of the pruned graph: (splits `[.., 8, k, 8]`, merges `[.., 8, 8k]`).
fn reshape_targets(graph: &Graph) -> Vec<Vec<i64>> {
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Reshape { shape } => Some(shape.clone()),
            _ => None,
        })
        .collect()
}

/// Random head plans at 25/50/75%: verified in tract and ONNX Runtime at batch 1 and 5, MACs
/// lower, every split (3 per block) and merge (1 per block) Reshape carries the new head count.
#[test]
fn random_head_plans_verify_in_tract_and_onnxruntime() {
    for dir in dirs() {
        let graph = load(&dir);
        let heads = head_groups(&graph);
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        for kept in 1..=3 {
            let what = format!("{} {kept}/4 heads", name(&dir));
            let plan = head_plan(&heads, kept, 60 + kept as u64);
            assert_eq!(plan.groups.len(), 2, "{what}");
            assert!(plan.groups.iter().all(|g| g.keep.len() == kept), "{what}");
            let pruned = compress::prune::prune(&graph, &plan, None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            assert!(after < before, "{what}: MACs {before} -> {after}");
            let targets = reshape_targets(&pruned.graph);
            let k = kept as i64;
            let splits = targets
                .iter()
                .filter(|t| t.len() == 4 && t[2..] == [k, 8])
                .count();
            let merges = targets
                .iter()
                .filter(|t| t.len() == 3 && t[2] == 8 * k)
                .count();
            assert_eq!((splits, merges), (6, 2), "{what}: {targets:?}");
            let stale = targets
                .iter()
                .filter(|t| t.ends_with(&[4, 8]) || (t.len() == 3 && t[2] == 32))
                .count();
            assert_eq!(stale, 0, "{what}: {targets:?}");
            assert_matches_reference(&pruned, &what, 30 + kept as u64);
        }
    }
}

/// The training cost model prices head plans at the pruned graph's MACs (q, k, v columns, o
/// rows, QK^T and AV once per head).
#[test]
fn cost_model_prices_head_plans_at_the_pruned_macs() {
    for dir in dirs() {
        let graph = load(&dir);
        let ids: Vec<usize> = head_groups(&graph).iter().map(|g| g.id).collect();
        common::assert_head_plans_priced_at_pruned_macs(&name(&dir), &graph, &ids, 4);
    }
}

/// Every head of block 0 closed: its attention sublayer is removed (q, k, v, softmax and o
/// gone, the residual passes through) and the export still computes the masked reference.
#[test]
fn closing_every_head_of_a_block_removes_its_attention() {
    for dir in dirs() {
        let graph = load(&dir);
        let heads = head_groups(&graph);
        let plan = KeepPlan {
            groups: vec![GroupKeep {
                id: heads[0].id,
                keep: vec![],
            }],
        };
        let what = format!("{} block 0 closed", name(&dir));
        let pruned =
            compress::prune::prune(&graph, &plan, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        let count = |g: &Graph| {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Softmax { .. }))
                .count()
        };
        assert_eq!((count(&graph), count(&pruned.graph)), (2, 1), "{what}");
        for p in heads[0].producers.iter().chain(&heads[0].consumers) {
            assert!(
                !pruned.graph.nodes.iter().any(|n| &n.name == p),
                "{what}: {p} left"
            );
        }
        let before = compress::ir::cost::graph_cost(&graph, 1).unwrap().macs;
        let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
            .unwrap()
            .macs;
        // q, k, v, o (4 x 8,192) and QK^T, AV (2 x 2,048) at 8 tokens.
        assert_eq!(before - after, 4 * 8192 + 2 * 2048, "{what}");
        assert_matches_reference(&pruned, &what, 7);
    }
}

/// A reader of head values the rule cannot follow fixes that block's heads, naming the node:
/// here the additive mask computed per head (`[B, 4, 1, N]`) instead of broadcast over them.
#[test]
fn a_mask_that_differs_per_head_fixes_the_heads_with_a_reason() {
    for dir in dirs() {
        let mut graph = load(&dir);
        let softmax = graph
            .nodes
            .iter()
            .find(|n| matches!(n.op, Op::Softmax { .. }))
            .unwrap()
            .inputs[0]
            .clone();
        // The node adding the mask to the first block's scores.
        let add = graph
            .nodes
            .iter()
            .position(|n| n.outputs.contains(&softmax))
            .unwrap();
        let (scale, per_head) = ("per_head_scale".to_string(), "per_head_mask".to_string());
        graph.initializers.insert(
            scale.clone(),
            Tensor::f32(vec![1, 4, 1, 1], vec![1.0, 2.0, 3.0, 4.0]),
        );
        let mask = graph.nodes[add].inputs[1].clone();
        graph.nodes[add].inputs[1] = per_head.clone();
        graph.nodes.insert(
            add,
            Node {
                name: "per_head".into(),
                op: Op::Binary(BinaryOp::Mul),
                inputs: vec![mask, scale],
                outputs: vec![per_head],
            },
        );
        let node = graph.nodes[add + 1].name.clone();
        assert_eq!(head_groups(&graph).len(), 1, "{}", name(&dir));
        let reason = format!("op that does not follow attention heads at node '{node}' (Add)");
        let groups = compress::groups::analyse(&graph).unwrap();
        let fixed: Vec<_> = groups
            .iter()
            .filter(|g| g.reason.as_deref() == Some(reason.as_str()))
            .collect();
        assert_eq!(fixed.len(), 1, "{}: {groups:?}", name(&dir));
        assert_eq!(fixed[0].width, 4);
    }
}

/// The command at half the MACs: with the heads gated (before, only the MLPs and the
/// pooler were, and the budget stopped near 0.56) the run reaches `--target-macs 0.5`, learns
/// the keyword task, and its export is verified in tract (and ONNX Runtime).
#[test]
fn a_gated_run_at_half_the_macs_reaches_the_target_through_the_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::repo().join("fixtures/transformers/keywords.jsonl");
    for dir in dirs() {
        let name = name(&dir);
        let out = tmp.path().join(format!("{name}.onnx"));
        let run = common::compress()
            .arg(dir.join("model.onnx"))
            .arg("--data")
            .arg(&data)
            .arg("-o")
            .arg(&out)
            .args(["--json", "--latency-runs", "0", "--method", "l0-hc"])
            .args([
                "--target-macs",
                "0.5",
                "--epochs",
                "12",
                "--batch-size",
                "32",
            ])
            .args(["--lr", "3e-3"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let macs = r["macs_ratio"].as_f64().unwrap();
        let pruned = r["pruned"]["accuracy"].as_f64().unwrap();
        println!("{name}: MACs {macs:.3}, accuracy {pruned:.4}");
        assert!(macs <= 0.5 + 1e-6, "{name}: MACs {macs}");
        assert!(pruned >= 0.9, "{name}: pruned {pruned}");
        // Some head was removed: the widths list the two head groups (4 before).
        let widths = |k: &str| -> Vec<u64> {
            let w = r[k].as_str().unwrap();
            w.split('-').map(|x| x.parse().unwrap()).collect()
        };
        let (before, after) = (widths("widths_before"), widths("widths_after"));
        let heads: Vec<(u64, u64)> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (*b, *a))
            .filter(|(b, _)| *b == 4)
            .collect();
        assert_eq!(heads.len(), 2, "{name}: {before:?} -> {after:?}");
        assert!(
            heads.iter().any(|(b, a)| a < b),
            "{name}: {before:?} -> {after:?}"
        );
        let v = &r["verification"];
        assert_eq!(v["runtime"], "tract", "{name}");
        assert!(v["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{name}: {v}");
        if cfg!(feature = "ort") {
            assert_eq!(v["also"][0]["runtime"], "onnxruntime", "{name}: {v}");
        }
    }
}
