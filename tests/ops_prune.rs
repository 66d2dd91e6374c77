//! Pruning through the ops added in the op-family layout: channel rules, constant propagation
//! and slicing, each checked against the masked reference in tract.

use compress::ir::{
    Activation, BinaryOp, Dim, Graph, ModelMeta, Node, Op, Tensor, ValueInfo, Window,
};
use compress::ops::resize::Resize;
use compress::ops::slice::Slice;
use compress::ops::squeeze::{Squeeze, Unsqueeze};
use compress::prune::{GroupKeep, KeepPlan, prune};

fn conv(name: &str, input: &str, weight: &str, bias: &str, out: &str) -> Node {
    Node {
        name: name.into(),
        op: Op::Conv {
            window: Window {
                kernel: vec![1, 1],
                strides: vec![1, 1],
                pads: vec![0; 4],
                dilations: vec![1, 1],
            },
            group: 1,
        },
        inputs: vec![input.into(), weight.into(), bias.into()],
        outputs: vec![out.into()],
    }
}

fn unary(name: &str, act: Activation, input: &str, out: &str) -> Node {
    Node {
        name: name.into(),
        op: Op::Activation(act),
        inputs: vec![input.into()],
        outputs: vec![out.into()],
    }
}

/// conv(3 -> 6) -> Pow(., 2) -> Sqrt -> Exp -> Reciprocal -> Neg -> Erf -> Resize(x2)
/// -> conv(6 -> 2).
/// A removed channel is 0 at its gate; Exp turns it into 1, and that constant must be folded
/// into the last conv's bias for the pruned model to compute what the masked reference does.
fn chain_through_new_ops() -> Graph {
    let mut g = Graph {
        name: "new_ops_chain".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            dims: vec![
                Dim::Batch("N".into()),
                Dim::Fixed(3),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ],
        }],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dims: vec![
                Dim::Batch("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(8),
                Dim::Fixed(8),
            ],
        }],
        meta: ModelMeta {
            ir_version: 8,
            opset_imports: vec![(String::new(), 13)],
            ..Default::default()
        },
        ..Default::default()
    };
    let random = |shape: Vec<usize>, seed| {
        let t = compress::verify::pseudo_random(&shape, seed);
        Tensor::f32(shape, t.to_f32_vec().iter().map(|v| v * 0.5).collect())
    };
    g.initializers
        .insert("w1".into(), random(vec![6, 3, 1, 1], 1));
    g.initializers.insert("b1".into(), random(vec![6], 2));
    g.initializers
        .insert("w2".into(), random(vec![2, 6, 1, 1], 3));
    g.initializers.insert("b2".into(), random(vec![2], 4));
    g.initializers
        .insert("two".into(), Tensor::f32(vec![], vec![2.0]));
    g.nodes = vec![
        conv("c1", "x", "w1", "b1", "h1"),
        Node {
            name: "square".into(),
            op: Op::Binary(BinaryOp::Pow),
            inputs: vec!["h1".into(), "two".into()],
            outputs: vec!["h2".into()],
        },
        unary("sqrt", Activation::Sqrt, "h2", "h3"),
        unary("exp", Activation::Exp, "h3", "h4"),
        unary("recip", Activation::Reciprocal, "h4", "h5"),
        unary("neg", Activation::Neg, "h5", "h6"),
        unary("erf", Activation::Erf, "h6", "h8"),
        Node {
            name: "upsample".into(),
            op: Op::Resize(Resize {
                factors: vec![1, 1, 2, 2],
                coordinate_transformation_mode: "asymmetric".into(),
                nearest_mode: "floor".into(),
            }),
            inputs: vec!["h8".into()],
            outputs: vec!["h9".into()],
        },
        conv("c2", "h9", "w2", "b2", "y"),
    ];
    g.validate().expect("a valid graph");
    g
}

#[test]
fn pruning_through_the_new_ops_matches_the_masked_reference() {
    let graph = chain_through_new_ops();
    let groups = compress::groups::analyse(&graph).unwrap();
    assert!(groups[0].prunable, "{:?}", groups[0].reason);
    assert_eq!(groups[0].width, 6);
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 0,
            keep: vec![1, 3, 4],
        }],
    };
    let pruned = prune(&graph, &plan, None).unwrap();
    assert_eq!(pruned.graph.initializers["w2"].shape, vec![2, 3, 1, 1]);
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&graph, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
    // Round trip: the new ops import back as themselves.
    let back = compress::onnx::import(&compress::onnx::export(&graph)).unwrap();
    assert_eq!(back.nodes, graph.nodes);
}

fn slice(name: &str, input: &str, out: &str, s: Slice) -> Node {
    Node {
        name: name.into(),
        op: Op::Slice(s),
        inputs: vec![input.into()],
        outputs: vec![out.into()],
    }
}

/// Two convs concatenated on the channels, then sliced apart again (each piece one conv's
/// channels, one piece also cropped in width), each piece read by its own conv.
fn concat_then_slices() -> Graph {
    let dims = |c| {
        vec![
            Dim::Batch("N".into()),
            Dim::Fixed(c),
            Dim::Fixed(5),
            Dim::Fixed(5),
        ]
    };
    let mut g = Graph {
        name: "concat_slices".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            dims: dims(3),
        }],
        outputs: vec![
            ValueInfo {
                name: "y1".into(),
                dims: dims(2),
            },
            ValueInfo {
                name: "y2".into(),
                dims: vec![
                    Dim::Batch("N".into()),
                    Dim::Fixed(2),
                    Dim::Fixed(5),
                    Dim::Fixed(4),
                ],
            },
        ],
        meta: ModelMeta {
            ir_version: 8,
            opset_imports: vec![(String::new(), 13)],
            ..Default::default()
        },
        ..Default::default()
    };
    let mut seed = 10;
    let mut random = |shape: Vec<usize>| {
        seed += 1;
        compress::verify::pseudo_random(&shape, seed)
    };
    for (w, b, o, i) in [
        ("w1", "b1", 4, 3),
        ("w2", "b2", 6, 3),
        ("w3", "b3", 2, 6),
        ("w4", "b4", 2, 4),
    ] {
        g.initializers.insert(w.into(), random(vec![o, i, 1, 1]));
        g.initializers.insert(b.into(), random(vec![o]));
    }
    g.nodes = vec![
        conv("c1", "x", "w1", "b1", "h1"),
        conv("c2", "x", "w2", "b2", "h2"),
        Node {
            name: "cat".into(),
            op: Op::Concat { axis: 1 },
            inputs: vec!["h1".into(), "h2".into()],
            outputs: vec!["h".into()],
        },
        unary("act", Activation::Sigmoid, "h", "a"),
        slice(
            "second",
            "a",
            "s2",
            Slice {
                starts: vec![4],
                ends: vec![i64::MAX],
                axes: vec![1],
                steps: vec![1],
            },
        ),
        slice(
            "first",
            "a",
            "s1",
            Slice {
                starts: vec![0, 1],
                ends: vec![4, 100],
                axes: vec![1, 3],
                steps: vec![1, 1],
            },
        ),
        conv("c3", "s2", "w3", "b3", "y1"),
        conv("c4", "s1", "w4", "b4", "y2"),
    ];
    g.validate().expect("a valid graph");
    g
}

#[test]
fn slices_of_a_concat_prune_each_piece_with_its_group() {
    let graph = concat_then_slices();
    let groups = compress::groups::analyse(&graph).unwrap();
    let prunable: Vec<usize> = groups
        .iter()
        .filter(|g| g.prunable)
        .map(|g| g.width)
        .collect();
    assert_eq!(prunable, vec![4, 6]);
    let plan = KeepPlan {
        groups: vec![
            GroupKeep {
                id: 0,
                keep: vec![1, 3],
            },
            GroupKeep {
                id: 1,
                keep: vec![0, 2, 5],
            },
        ],
    };
    let pruned = prune(&graph, &plan, None).unwrap();
    assert_eq!(pruned.graph.initializers["w3"].shape, vec![2, 3, 1, 1]);
    assert_eq!(pruned.graph.initializers["w4"].shape, vec![2, 2, 1, 1]);
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&graph, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
}

#[test]
fn a_slice_through_a_group_blocks_it() {
    let mut graph = concat_then_slices();
    // Channels 2..6 of the concat: half of c1's group and part of c2's.
    graph.nodes[4].op = Op::Slice(Slice {
        starts: vec![2],
        ends: vec![8],
        axes: vec![1],
        steps: vec![1],
    });
    let groups = compress::groups::analyse(&graph).unwrap();
    assert!(groups.iter().all(|g| !g.prunable));
    assert!(
        groups[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("slice that cuts through a channel group"),
        "{:?}",
        groups[0].reason
    );
}

/// Squeeze-excitation written with ReduceMean (no keepdims), Unsqueeze and a Mul of two
/// computed values; and a Squeeze of the pooled value feeding a Gemm.
#[test]
fn squeeze_excitation_with_unsqueeze_prunes_as_one_group() {
    let mut g = chain_through_new_ops();
    g.name = "se".into();
    g.nodes.truncate(1); // c1: x -> h1 [N, 6, 4, 4]
    let dims4 = vec![
        Dim::Batch("N".into()),
        Dim::Fixed(2),
        Dim::Fixed(4),
        Dim::Fixed(4),
    ];
    g.outputs = vec![
        ValueInfo {
            name: "y".into(),
            dims: dims4,
        },
        ValueInfo {
            name: "z".into(),
            dims: vec![Dim::Batch("N".into()), Dim::Fixed(3)],
        },
    ];
    g.initializers
        .retain(|k, _| k == "w1" || k == "b1" || k == "w2" || k == "b2");
    g.initializers
        .insert("fc".into(), compress::verify::pseudo_random(&[3, 6], 9));
    let node = |name: &str, op: Op, inputs: &[&str], out: &str| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
    };
    g.nodes.extend([
        node(
            "mean",
            Op::ReduceMean {
                axes: vec![2, 3],
                keepdims: false,
            },
            &["h1"],
            "m",
        ),
        node(
            "expand",
            Op::Unsqueeze(Unsqueeze { axes: vec![2, 3] }),
            &["m"],
            "u",
        ),
        node("gate", Op::Activation(Activation::Sigmoid), &["u"], "s"),
        node("scale", Op::Binary(BinaryOp::Mul), &["h1", "s"], "h2"),
        conv("c2", "h2", "w2", "b2", "y"),
        node("pool", Op::GlobalAveragePool, &["h2"], "p"),
        node(
            "flat",
            Op::Squeeze(Squeeze { axes: vec![2, 3] }),
            &["p"],
            "q",
        ),
        node(
            "fc",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            &["q", "fc"],
            "z",
        ),
    ]);
    g.validate().unwrap();
    let groups = compress::groups::analyse(&g).unwrap();
    assert!(groups[0].prunable, "{:?}", groups[0].reason);
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 0,
            keep: vec![0, 2, 5],
        }],
    };
    let pruned = prune(&g, &plan, None).unwrap();
    assert_eq!(pruned.graph.initializers["fc"].shape, vec![3, 3]);
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&g, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
}

/// A removed channel is 0 at its gate, 1 after Exp, and 16 after a ReduceSum over 4 x 4: the
/// surgery folds that 16 into the next conv's bias.
#[test]
fn a_constant_summed_over_space_is_folded_exactly() {
    use compress::ops::reduce::{Reduce, ReduceKind};
    let mut g = chain_through_new_ops();
    let at = g.nodes.iter().position(|n| n.name == "exp").unwrap();
    g.nodes.truncate(at + 1); // ... -> exp -> h4 [N, 6, 4, 4]
    g.nodes.push(Node {
        name: "sum".into(),
        op: Op::Reduce(Reduce {
            kind: ReduceKind::Sum,
            axes: vec![2, 3],
            keepdims: true,
        }),
        inputs: vec!["h4".into()],
        outputs: vec!["r".into()],
    });
    g.nodes.push(conv("c2", "r", "w2", "b2", "y"));
    g.outputs[0].dims = vec![
        Dim::Batch("N".into()),
        Dim::Fixed(2),
        Dim::Fixed(1),
        Dim::Fixed(1),
    ];
    g.validate().unwrap();
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 0,
            keep: vec![0, 4],
        }],
    };
    let pruned = prune(&g, &plan, None).unwrap();
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&g, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
    assert_ne!(pruned.graph.initializers["b2"], g.initializers["b2"]);
}

/// U-Net style upsampling: conv(3 -> 4) -> ConvTranspose(4 -> 6, 2x2, stride 2) -> Relu ->
/// conv(6 -> 2); both groups pruned, so the transposed conv loses input and output channels.
#[test]
fn a_transposed_convolution_prunes_on_both_sides() {
    use compress::ops::conv_transpose::ConvTranspose;
    let mut g = chain_through_new_ops();
    g.nodes.truncate(1); // c1: x -> h1 [N, 6, 4, 4]
    g.initializers.insert(
        "w1".into(),
        compress::verify::pseudo_random(&[4, 3, 1, 1], 21),
    );
    g.initializers
        .insert("b1".into(), compress::verify::pseudo_random(&[4], 22));
    g.initializers.insert(
        "wt".into(),
        compress::verify::pseudo_random(&[4, 6, 2, 2], 23),
    );
    g.initializers
        .insert("bt".into(), compress::verify::pseudo_random(&[6], 24));
    g.initializers.insert(
        "w2".into(),
        compress::verify::pseudo_random(&[2, 6, 1, 1], 25),
    );
    g.nodes.extend([
        Node {
            name: "up".into(),
            op: Op::ConvTranspose(ConvTranspose {
                window: Window {
                    kernel: vec![2, 2],
                    strides: vec![2, 2],
                    pads: vec![0; 4],
                    dilations: vec![1, 1],
                },
                group: 1,
                output_padding: vec![0, 0],
            }),
            inputs: vec!["h1".into(), "wt".into(), "bt".into()],
            outputs: vec!["u".into()],
        },
        unary("relu", Activation::Relu, "u", "r"),
        conv("c2", "r", "w2", "b2", "y"),
    ]);
    g.outputs[0].dims = vec![
        Dim::Batch("N".into()),
        Dim::Fixed(2),
        Dim::Fixed(8),
        Dim::Fixed(8),
    ];
    g.validate().unwrap();
    let groups = compress::groups::analyse(&g).unwrap();
    assert!(groups[0].prunable && groups[1].prunable);
    assert_eq!(groups[1].width, 6);
    let plan = KeepPlan {
        groups: vec![
            GroupKeep {
                id: 0,
                keep: vec![0, 3],
            },
            GroupKeep {
                id: 1,
                keep: vec![1, 2, 4],
            },
        ],
    };
    let pruned = prune(&g, &plan, None).unwrap();
    assert_eq!(pruned.graph.initializers["wt"].shape, vec![2, 3, 2, 2]);
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&g, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
}

/// A softmax over the spatial axes of each channel keeps the channels; a removed channel (0 at
/// its gate) becomes 1 / L, which the next conv's bias absorbs.
#[test]
fn a_softmax_over_inner_axes_passes_channels_through() {
    let mut g = chain_through_new_ops();
    let at = g.nodes.iter().position(|n| n.name == "square").unwrap();
    g.nodes.truncate(at); // c1: x -> h1 [N, 6, 4, 4]
    g.nodes.push(Node {
        name: "attend".into(),
        op: Op::Softmax {
            axis: 3,
            log: false,
            legacy: false,
        },
        inputs: vec!["h1".into()],
        outputs: vec!["a".into()],
    });
    g.nodes.push(conv("c2", "a", "w2", "b2", "y"));
    g.outputs[0].dims = vec![
        Dim::Batch("N".into()),
        Dim::Fixed(2),
        Dim::Fixed(4),
        Dim::Fixed(4),
    ];
    g.validate().unwrap();
    let groups = compress::groups::analyse(&g).unwrap();
    assert!(groups[0].prunable, "{:?}", groups[0].reason);
    let plan = KeepPlan {
        groups: vec![GroupKeep {
            id: 0,
            keep: vec![2, 3],
        }],
    };
    let pruned = prune(&g, &plan, None).unwrap();
    let (a, b) = (
        compress::onnx::export(&pruned.graph),
        compress::onnx::export(&pruned.reference),
    );
    let v = compress::verify::verify_export(&g, &b, &a, 2, 1e-4).unwrap();
    assert!(v.tract.max_abs_diff <= 1e-4, "{}", v.summary());
}
