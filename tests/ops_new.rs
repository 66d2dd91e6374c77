//! The ops added in the op-family layout (issue 10's first ops): ONNX node cases imported, run in
//! burn and compared with the expected outputs, re-exported and run in tract; the registry and
//! the README's list of ops. Pruning through them: tests/ops_prune.rs.

mod common;

use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::ir::{Op, Tensor};
use compress::onnx::pb;
use prost::Message;

const NODE_CASES: &str = "/usr/share/libonnx-testdata/data/node";

/// ONNX op types added in this layout.
const NEW_OPS: &[&str] = &[
    "Sqrt",
    "Exp",
    "Log",
    "Reciprocal",
    "Neg",
    "Abs",
    "Erf",
    "Pow",
    "Resize",
    "Slice",
    "Split",
    "Squeeze",
    "Unsqueeze",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ConvTranspose",
];

/// Node cases of the new ops that must pass (burn and the tract re-export within tolerance).
const PASSING: &[&str] = &[
    "test_abs",
    "test_convtranspose",
    "test_convtranspose_1d",
    "test_convtranspose_dilations",
    "test_convtranspose_pad",
    "test_convtranspose_pads",
    "test_erf",
    "test_exp",
    "test_exp_example",
    "test_log",
    "test_log_example",
    "test_neg",
    "test_neg_example",
    "test_pow",
    "test_pow_bcast_array",
    "test_pow_bcast_scalar",
    "test_pow_example",
    "test_reciprocal",
    "test_reciprocal_example",
    "test_reduce_max_default_axes_keepdim_example",
    "test_reduce_max_default_axes_keepdims_random",
    "test_reduce_max_do_not_keepdims_example",
    "test_reduce_max_do_not_keepdims_random",
    "test_reduce_max_keepdims_example",
    "test_reduce_max_keepdims_random",
    "test_reduce_max_negative_axes_keepdims_example",
    "test_reduce_max_negative_axes_keepdims_random",
    "test_reduce_min_default_axes_keepdims_example",
    "test_reduce_min_default_axes_keepdims_random",
    "test_reduce_min_do_not_keepdims_example",
    "test_reduce_min_do_not_keepdims_random",
    "test_reduce_min_keepdims_example",
    "test_reduce_min_keepdims_random",
    "test_reduce_min_negative_axes_keepdims_example",
    "test_reduce_min_negative_axes_keepdims_random",
    "test_reduce_sum_default_axes_keepdims_example",
    "test_reduce_sum_default_axes_keepdims_random",
    "test_reduce_sum_do_not_keepdims_example",
    "test_reduce_sum_do_not_keepdims_random",
    "test_reduce_sum_empty_axes_input_noop_example",
    "test_reduce_sum_empty_axes_input_noop_random",
    "test_reduce_sum_keepdims_example",
    "test_reduce_sum_keepdims_random",
    "test_reduce_sum_negative_axes_keepdims_example",
    "test_reduce_sum_negative_axes_keepdims_random",
    "test_resize_upsample_scales_nearest",
    "test_slice",
    "test_slice_default_axes",
    "test_slice_default_steps",
    "test_slice_end_out_of_bounds",
    "test_slice_neg",
    "test_slice_neg_steps",
    "test_slice_negative_axes",
    "test_split_equal_parts_1d",
    "test_split_equal_parts_2d",
    "test_split_equal_parts_default_axis",
    "test_split_variable_parts_1d",
    "test_split_variable_parts_2d",
    "test_split_variable_parts_default_axis",
    "test_sqrt",
    "test_sqrt_example",
    "test_squeeze",
    "test_squeeze_negative_axes",
    "test_unsqueeze_axis_0",
    "test_unsqueeze_axis_1",
    "test_unsqueeze_axis_2",
    "test_unsqueeze_axis_3",
    "test_unsqueeze_negative_axes",
    "test_unsqueeze_three_axes",
    "test_unsqueeze_two_axes",
    "test_unsqueeze_unsorted_axes",
];

/// Cases whose every node is one of the new ops.
fn new_op_cases() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(NODE_CASES)
        .unwrap_or_else(|e| panic!("{NODE_CASES}: {e} (install Debian's libonnx-testdata)"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let Ok(bytes) = std::fs::read(p.join("model.onnx")) else {
                return false;
            };
            let Ok(m) = pb::ModelProto::decode(&bytes[..]) else {
                return false;
            };
            m.graph.is_some_and(|g| {
                !g.node.is_empty() && g.node.iter().all(|n| NEW_OPS.contains(&n.op_type.as_str()))
            })
        })
        .collect();
    out.sort();
    out
}

fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    for (i, (a, b)) in got.to_f32_vec().iter().zip(want.to_f32_vec()).enumerate() {
        let ok = (a - b).abs() <= 1e-4 * b.abs().max(1.0) || (a.is_nan() && b.is_nan());
        if !ok {
            return Err(format!("[{i}]: {a} vs expected {b}"));
        }
    }
    Ok(())
}

/// The cases feed attribute-like inputs (Resize's scales, Slice's starts...) as graph inputs;
/// the importer needs them constant, so this data set's values become initializers. Returns
/// the model bytes and the positions of the inputs that stay data.
fn bake_attribute_inputs(model: &pb::ModelProto, inputs: &[Tensor]) -> (Vec<u8>, Vec<usize>) {
    let mut m = model.clone();
    let g = m.graph.as_mut().expect("cases have a graph");
    let attribute_like = |name: &str| {
        g.node.iter().any(|n| {
            matches!(
                n.op_type.as_str(),
                "Resize"
                    | "Slice"
                    | "Split"
                    | "Squeeze"
                    | "Unsqueeze"
                    | "ReduceSum"
                    | "ReduceMax"
                    | "ReduceMin"
            ) && n.input.iter().skip(1).any(|i| i == name)
        })
    };
    let mut keep = Vec::new();
    let mut baked = Vec::new();
    for (k, info) in g.input.iter().enumerate() {
        match inputs.get(k) {
            Some(t) if attribute_like(&info.name) => {
                baked.push(compress::onnx::tensor::to_proto(&info.name, t))
            }
            _ => keep.push(k),
        }
    }
    let names: Vec<String> = baked.iter().map(|t| t.name.clone()).collect();
    g.input.retain(|i| !names.contains(&i.name));
    g.initializer.extend(baked);
    (m.encode_to_vec(), keep)
}

/// Imports, runs in burn, re-exports and runs in tract; `Err` says which step failed.
fn run_case(dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = pb::ModelProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let (all_inputs, expected) = common::try_load_data_set(&set).map_err(|e| e.to_string())?;
        let (bytes, keep) = bake_attribute_inputs(&model, &all_inputs);
        let inputs: Vec<Tensor> = keep.iter().map(|&k| all_inputs[k].clone()).collect();
        let graph = compress::onnx::import(&bytes).map_err(|e| e.to_string())?;
        let net = Network::new(&graph, &default_device()).map_err(|e| e.to_string())?;
        let burn = net.run(&inputs).map_err(|e| e.to_string())?;
        let export = compress::onnx::export(&graph);
        let tract = compress::verify::run_tract(&export, &inputs).map_err(|e| e.to_string())?;
        for (k, want) in expected.iter().enumerate() {
            close(&burn[k], want).map_err(|e| format!("burn output {k}{e}"))?;
            close(&tract[k], want).map_err(|e| format!("tract (re-export) output {k}{e}"))?;
        }
    }
    Ok(())
}

#[test]
fn node_cases_of_the_new_ops_pass_in_burn_and_in_tract() {
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for case in new_op_cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        match run_case(&case) {
            Ok(()) => passed.push(name),
            Err(why) if PASSING.contains(&name.as_str()) => failures.push(format!("{name}: {why}")),
            Err(why) => println!("  not supported {name}: {why}"),
        }
    }
    println!("passed: {}", passed.join(" "));
    assert!(
        failures.is_empty(),
        "listed cases failed:\n{}",
        failures.join("\n")
    );
    for name in PASSING {
        assert!(
            passed.iter().any(|p| p == name),
            "{name} was not found or did not pass"
        );
    }
}

#[test]
fn new_ops_are_in_the_registry() {
    for op in NEW_OPS {
        assert!(compress::ops::SUPPORTED_OPS.contains(op), "{op}");
    }
}

#[test]
fn readme_names_every_supported_op() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let section = readme
        .split("## Supported ONNX")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Supported ONNX section");
    for op in compress::ops::SUPPORTED_OPS {
        let named = section
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == *op);
        assert!(named, "README's Supported ONNX section does not name {op}");
    }
}

/// An opset-6 Add with `broadcast = 1, axis = 1`: B [3] is aligned to A [2, 3, 4] at axis 1
/// (not numpy's trailing rule) by a Reshape the elementwise importer inserts.
#[test]
fn legacy_axis_broadcast_inserts_an_aligning_reshape() {
    use pb::attribute_proto::AttributeType;
    let attr = |name: &str, i| pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    };
    let info = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let b = Tensor::f32(vec![3], vec![10.0, 20.0, 30.0]);
    let model = pb::ModelProto {
        ir_version: 3,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 6,
        }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                input: vec!["a".into(), "b".into()],
                output: vec!["y".into()],
                name: "add".into(),
                op_type: "Add".into(),
                attribute: vec![attr("broadcast", 1), attr("axis", 1)],
                ..Default::default()
            }],
            initializer: vec![compress::onnx::tensor::to_proto("b", &b)],
            input: vec![info("a", &[2, 3, 4])],
            output: vec![info("y", &[2, 3, 4])],
            ..Default::default()
        }),
        ..Default::default()
    };
    let graph = compress::onnx::import(&model.encode_to_vec()).unwrap();
    let names: Vec<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["add__align", "add"]);
    assert_eq!(graph.nodes[0].op, Op::Reshape { shape: vec![3, 1] });
    assert_eq!(graph.nodes[1].inputs[1], "b__aligned_for_add");
    let a = Tensor::f32(vec![2, 3, 4], vec![0.0; 24]);
    let y = Network::new(&graph, &default_device())
        .unwrap()
        .run(&[a])
        .unwrap();
    let v = y[0].to_f32_vec();
    assert_eq!((v[0], v[4], v[8], v[12]), (10.0, 20.0, 30.0, 10.0));
}
