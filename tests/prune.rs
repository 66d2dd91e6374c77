//! Physical pruning: dependency patterns and every shipped model, pruned at random 25/50/75%
//! keep plans, must match the masked reference in tract; MACs re-derived from the exported file
//! must equal the figure computed on the pruned graph.
//!
//! With COMPRESS_EXPORT_DIR set, each pruned file is written there with its input and the
//! reference output, so scripts/check_exports.py can run ONNX's checker and ONNX Runtime on them.

mod common;

use std::path::{Path, PathBuf};

use compress::groups::{ChannelGroup, analyse};
use compress::ir::Graph;
use compress::prune::{self, GroupKeep, KeepPlan};
use compress::verify::{max_abs_diff, pseudo_random, run_tract};

fn pattern(name: &str) -> Graph {
    compress::onnx::import_file(
        &common::repo()
            .join("fixtures/patterns")
            .join(name)
            .join("model.onnx"),
    )
    .unwrap()
}

fn group_of<'a>(groups: &'a [ChannelGroup], producer: &str) -> &'a ChannelGroup {
    groups
        .iter()
        .find(|g| g.producers.iter().any(|p| p == producer))
        .unwrap_or_else(|| panic!("no group from {producer}"))
}

fn export_dir() -> Option<PathBuf> {
    std::env::var_os("COMPRESS_EXPORT_DIR").map(PathBuf::from)
}

/// Prunes with a plan, checks the exported file against the masked reference in tract, and
/// returns the pruned graph.
fn prune_and_verify(name: &str, graph: &Graph, plan: &KeepPlan) -> Graph {
    let pruned = prune::prune(graph, plan, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bytes = compress::onnx::export(&pruned.graph);
    let reference = compress::onnx::export(&pruned.reference);
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| pseudo_random(&v.shape(2), 7 + i as u64))
        .collect();
    let want = run_tract(&reference, &inputs).unwrap();
    let got = run_tract(&bytes, &inputs)
        .unwrap_or_else(|e| panic!("{name}: tract cannot run the pruned file: {e}"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let d = max_abs_diff(g, w);
        assert!(
            d <= 1e-4,
            "{name}: pruned vs masked reference differ by {d}"
        );
    }
    // MACs and params recomputed from the exported bytes equal those of the pruned graph.
    let reread = compress::onnx::import_bytes(&bytes, name).unwrap();
    let a = compress::ir::cost::graph_cost(&reread, 1).unwrap();
    let b = compress::ir::cost::graph_cost(&pruned.graph, 1).unwrap();
    assert_eq!((a.macs, a.params), (b.macs, b.params), "{name}");
    if let Some(dir) = export_dir() {
        let case = dir.join(name.replace('/', "_"));
        std::fs::create_dir_all(&case).unwrap();
        std::fs::write(case.join("model.onnx"), &bytes).unwrap();
        for (i, t) in inputs.iter().enumerate() {
            write_pb(&case.join(format!("input_{i}.pb")), t);
        }
        for (i, t) in want.iter().enumerate() {
            write_pb(&case.join(format!("output_{i}.pb")), t);
        }
    }
    pruned.graph
}

fn write_pb(path: &Path, t: &compress::ir::Tensor) {
    use prost::Message;
    std::fs::write(
        path,
        compress::onnx::tensor::to_proto("t", t).encode_to_vec(),
    )
    .unwrap();
}

fn random_all(name: &str, graph: &Graph) {
    let groups = analyse(graph).unwrap();
    for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
        let plan = prune::plan::random(&groups, fraction, 100 + k as u64);
        let pruned = prune_and_verify(&format!("{name}@{fraction}"), graph, &plan);
        let before = compress::ir::cost::graph_cost(graph, 1).unwrap().macs;
        let after = compress::ir::cost::graph_cost(&pruned, 1).unwrap().macs;
        assert!(
            after < before,
            "{name}@{fraction}: MACs did not go down ({before} -> {after})"
        );
    }
}

#[test]
fn every_pattern_prunes_exactly_at_random_keep_plans() {
    let root = common::repo().join("fixtures/patterns");
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert!(names.len() >= 13, "{names:?}");
    for name in names {
        random_all(&format!("patterns/{name}"), &pattern(&name));
    }
}

#[test]
fn every_shipped_model_prunes_exactly_at_random_keep_plans() {
    for dir in common::model_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let graph = compress::onnx::import_file(&dir.join("model.onnx")).unwrap();
        random_all(&name, &graph);
    }
}

#[test]
fn residual_adds_tie_every_operand_including_projections() {
    let groups = analyse(&pattern("residual_identity")).unwrap();
    let stream = group_of(&groups, "/stem/stem.0/Conv");
    for p in ["/b1/conv2/Conv", "/b2/conv2/Conv"] {
        assert!(
            stream.producers.iter().any(|x| x == p),
            "{p} not tied to the stem: {:?}",
            stream.producers
        );
    }
    assert!(stream.prunable);
    let groups = analyse(&pattern("residual_projection")).unwrap();
    let down = group_of(&groups, "/b2/down/down.0/Conv");
    assert!(down.producers.iter().any(|p| p == "/b2/conv2/Conv"));
    assert_ne!(
        group_of(&groups, "/stem/Conv").id,
        down.id,
        "a projection starts a new group"
    );
}

#[test]
fn concat_of_the_same_tensor_twice_slices_both_copies() {
    let graph = pattern("concat_same_twice");
    let groups = analyse(&graph).unwrap();
    let g = group_of(&groups, "/conv/Conv");
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: g.id,
            keep: vec![1, 4, 6],
        }],
    };
    let pruned = prune_and_verify("concat_same_twice/fixed", &graph, &plan);
    let post = pruned
        .nodes
        .iter()
        .find(|n| n.name == "/post/Conv")
        .unwrap();
    assert_eq!(pruned.initializers[&post.inputs[1]].shape[1], 6);
}

#[test]
fn depthwise_conv_ties_its_input_and_output_channels() {
    let graph = pattern("depthwise");
    let groups = analyse(&graph).unwrap();
    let g = group_of(&groups, "/f/f.0/f.0.0/Conv");
    assert!(g.prunable && g.width == 16);
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: g.id,
            keep: (0..16).step_by(3).collect(),
        }],
    };
    let pruned = prune_and_verify("depthwise/fixed", &graph, &plan);
    let dw = pruned
        .nodes
        .iter()
        .find(|n| matches!(n.op, compress::ir::Op::Conv { group, .. } if group > 1))
        .unwrap();
    assert!(
        matches!(dw.op, compress::ir::Op::Conv { group: 6, .. }),
        "{:?}",
        dw.op
    );
}

#[test]
fn grouped_conv_channels_are_not_prunable() {
    let groups = analyse(&pattern("grouped_conv")).unwrap();
    for p in ["/f/f.0/Conv", "/f/f.2/Conv"] {
        let g = group_of(&groups, p);
        assert!(
            !g.prunable && g.reason.as_deref().unwrap().contains("grouped convolution"),
            "{g:?}"
        );
    }
}

#[test]
fn one_output_channel_conv_is_not_depthwise_and_never_drops_to_zero() {
    let graph = pattern("single_channel_conv");
    let groups = analyse(&graph).unwrap();
    let one = group_of(&groups, "/f/f.2/Conv");
    let next = group_of(&groups, "/f/f.4/Conv");
    assert_eq!(one.width, 1);
    assert_ne!(
        one.id, next.id,
        "conv(1 -> 4) must not be taken for a depthwise conv"
    );
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: one.id,
            keep: vec![],
        }],
    };
    let pruned = prune::prune(&graph, &plan, None).unwrap();
    assert!(pruned.keep.is_empty(), "the group keeps its only channel");
    assert!(
        pruned.notes.iter().any(|n| n.contains("zero width")),
        "{:?}",
        pruned.notes
    );
}

#[test]
fn squeeze_excitation_scale_is_tied_to_the_channels_it_scales() {
    let groups = analyse(&pattern("squeeze_excitation")).unwrap();
    let g = group_of(&groups, "/stem/stem.0/Conv");
    assert!(
        g.producers.iter().any(|p| p == "/se/se.3/Conv"),
        "{:?}",
        g.producers
    );
}

#[test]
fn multiple_inputs_and_outputs() {
    let graph = pattern("multi_io");
    let groups = analyse(&graph).unwrap();
    let tied = group_of(&groups, "/conv_a/Conv");
    assert!(tied.producers.iter().any(|p| p == "/conv_b/Conv"));
    for g in &groups {
        if g.reason
            .as_deref()
            .is_some_and(|r| r.contains("graph output"))
        {
            assert!(!g.prunable);
        }
    }
    assert_eq!(
        groups.iter().filter(|g| !g.prunable).count(),
        2,
        "exactly the two heads reach outputs"
    );
}

#[test]
fn round_to_rounds_kept_widths_up_but_never_past_the_original() {
    let graph = pattern("conv_bn_relu_chain");
    let groups = analyse(&graph).unwrap();
    let plan = prune::plan::random(&groups, 0.3, 5);
    let pruned = prune::prune(&graph, &plan, Some(8)).unwrap();
    for (id, keep) in &pruned.keep {
        assert!(
            keep.len() % 8 == 0 || keep.len() == groups[*id].width,
            "group {id}: {}",
            keep.len()
        );
    }
}

#[test]
fn keep_plans_naming_fixed_groups_or_bad_indices_are_refused() {
    let graph = pattern("grouped_conv");
    let groups = analyse(&graph).unwrap();
    let fixed = group_of(&groups, "/f/f.0/Conv");
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: fixed.id,
            keep: vec![0],
        }],
    };
    let err = prune::prune(&graph, &plan, None).unwrap_err().to_string();
    assert!(err.contains("cannot be pruned"), "{err}");
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 99,
            keep: vec![0],
        }],
    };
    assert!(prune::prune(&graph, &plan, None).is_err());
    let ok = group_of(&groups, "/f/f.4/Conv");
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: ok.id,
            keep: vec![100],
        }],
    };
    assert!(
        prune::prune(&graph, &plan, None)
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

/// A conv whose weight or bias is a graph input (not a constant) cannot be sliced: its output
/// channels are reported as not prunable, and pruning leaves them alone instead of failing.
#[test]
fn convs_with_non_constant_weight_or_bias_are_not_prunable() {
    use compress::ir::{Dim, ValueInfo};
    let original = compress::onnx::import_file(Path::new(&common::lenet5())).unwrap();
    let convs: Vec<_> = original
        .nodes
        .iter()
        .filter(|n| n.op.onnx_type() == "Conv")
        .map(|n| (n.name.clone(), n.inputs.clone()))
        .collect();
    for input in [1, 2] {
        let mut graph = original.clone();
        let (conv, inputs) = &convs[0];
        let name = &inputs[input];
        let t = graph.initializers.remove(name).unwrap();
        graph.inputs.push(ValueInfo {
            name: name.clone(),
            dims: t.shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        });
        let groups = analyse(&graph).unwrap();
        let g = group_of(&groups, conv);
        assert!(
            !g.prunable && g.reason.as_deref().unwrap().contains("non-constant"),
            "input {input}: {g:?}"
        );
        let pruned = prune::prune(&graph, &prune::plan::random(&groups, 0.5, 1), None).unwrap();
        assert!(
            pruned.keep.keys().all(|&id| id != g.id),
            "input {input}: the blocked group was pruned"
        );
    }
}
