//! Models with symbolic height and width (`[batch, 3, height, width]`), made from the shipped
//! patterns by rewriting their graph input with the prost types: `--input-shape` sizes them,
//! exports keep the symbolic dims only when a run at a second size proves that safe, and fall
//! back to the given size (with a note) when the import baked the size in.

mod common;

use std::path::{Path, PathBuf};

use compress::onnx::pb::{
    self, AttributeProto, NodeProto, TensorProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_shape_proto::dimension::Value as DimValue, type_proto,
};
use compress::onnx::{InputShapes, import_bytes, import_sized};
use compress::verify::sizes::ExportDims;
use compress::verify::{max_abs_diff, pseudo_random, run_tract};
use prost::Message;

use common::compress;

fn pattern(name: &str) -> pb::ModelProto {
    let path = common::repo()
        .join("fixtures/patterns")
        .join(name)
        .join("model.onnx");
    pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap()
}

/// Declared dims of a value: numbers are fixed, anything else a dim_param.
fn set_dims(v: &mut ValueInfoProto, dims: &[&str]) {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("'{}' is not a tensor", v.name);
    };
    let shape = t.shape.get_or_insert_with(Default::default);
    shape.dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(n) => DimValue::DimValue(n),
                Err(_) => DimValue::DimParam(d.to_string()),
            }),
            ..Default::default()
        })
        .collect();
}

fn dims_of(v: &ValueInfoProto) -> Vec<String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("'{}' is not a tensor", v.name);
    };
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(n)) => n.to_string(),
            Some(DimValue::DimParam(p)) => p.clone(),
            None => "?".into(),
        })
        .collect()
}

/// A pattern with its input declared `[batch, 3, height, width]`.
fn symbolic(name: &str) -> pb::ModelProto {
    let mut m = pattern(name);
    let g = m.graph.as_mut().unwrap();
    set_dims(&mut g.input[0], &["batch", "3", "height", "width"]);
    m
}

/// conv_bn_relu_chain cut after its last conv: a fully convolutional model whose output
/// `[batch, 8, 16, 16]` follows the input size (declared fixed, as some exporters write it).
fn fully_convolutional() -> pb::ModelProto {
    let mut m = symbolic("conv_bn_relu_chain");
    let g = m.graph.as_mut().unwrap();
    let last = g.node.iter().position(|n| n.name == "/f/f.2/Conv").unwrap();
    g.node.truncate(last + 1);
    let out = g.node[last].output[0].clone();
    g.output[0].name = out;
    set_dims(&mut g.output[0], &["batch", "8", "16", "16"]);
    m
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("/{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// The fully convolutional model followed by `Reshape(x, [N, 8, H*W])` with the target
/// computed by Shape -> Gather -> Mul -> Unsqueeze -> Concat, then a mean over H*W: the import
/// folds H*W at the given size, so the re-export is wrong at any other.
fn shape_dependent_reshape() -> pb::ModelProto {
    let mut m = fully_convolutional();
    let g = m.graph.as_mut().unwrap();
    let x = g.output[0].name.clone();
    g.initializer.extend([
        int64s("i0", &[], &[0]),
        int64s("i2", &[], &[2]),
        int64s("i3", &[], &[3]),
        int64s("axes0", &[1], &[0]),
        int64s("eight", &[1], &[8]),
    ]);
    g.node.extend([
        node("Shape", &[&x], "s", vec![]),
        node("Gather", &["s", "i0"], "n", vec![]),
        node("Gather", &["s", "i2"], "h", vec![]),
        node("Gather", &["s", "i3"], "w", vec![]),
        node("Mul", &["h", "w"], "hw", vec![]),
        node("Unsqueeze", &["n", "axes0"], "n1", vec![]),
        node("Unsqueeze", &["hw", "axes0"], "hw1", vec![]),
        node(
            "Concat",
            &["n1", "eight", "hw1"],
            "target",
            vec![AttributeProto {
                name: "axis".into(),
                r#type: AttributeType::Int as i32,
                i: 0,
                ..Default::default()
            }],
        ),
        node("Reshape", &[&x, "target"], "flat", vec![]),
        node(
            "ReduceMean",
            &["flat"],
            "pooled",
            vec![
                ints("axes", &[2]),
                AttributeProto {
                    name: "keepdims".into(),
                    r#type: AttributeType::Int as i32,
                    i: 0,
                    ..Default::default()
                },
            ],
        ),
    ]);
    g.output[0].name = "pooled".into();
    set_dims(&mut g.output[0], &["batch", "8"]);
    m
}

/// conv_bn_relu_chain whose first conv pads SAME with stride 2: its pads depend on the size.
fn same_stride_two() -> pb::ModelProto {
    let mut m = symbolic("conv_bn_relu_chain");
    let g = m.graph.as_mut().unwrap();
    let conv = g
        .node
        .iter_mut()
        .find(|n| n.name == "/f/f.0/f.0.0/Conv")
        .unwrap();
    conv.attribute
        .retain(|a| a.name != "pads" && a.name != "strides");
    conv.attribute.push(ints("strides", &[2, 2]));
    conv.attribute.push(AttributeProto {
        name: "auto_pad".into(),
        r#type: AttributeType::String as i32,
        s: b"SAME_UPPER".to_vec(),
        ..Default::default()
    });
    m
}

fn write(dir: &Path, name: &str, m: &pb::ModelProto) -> String {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p.display().to_string()
}

fn read_model(p: &Path) -> pb::ModelProto {
    pb::ModelProto::decode(&std::fs::read(p).unwrap()[..]).unwrap()
}

fn sizes(v: &[&str]) -> InputShapes {
    InputShapes::parse(v).unwrap()
}

/// Largest difference between two ONNX files' outputs in tract on one input.
fn tract_diff(a: &[u8], b: &[u8], shape: &[usize]) -> f32 {
    let x = vec![pseudo_random(shape, 5)];
    let (ya, yb) = (run_tract(a, &x).unwrap(), run_tract(b, &x).unwrap());
    assert_eq!(ya.len(), yb.len());
    ya.iter()
        .zip(&yb)
        .map(|(p, q)| max_abs_diff(p, q))
        .fold(0.0, f32::max)
}

#[test]
fn a_symbolic_spatial_dim_without_the_option_names_the_input_dim_and_option() {
    let bytes = symbolic("residual_projection").encode_to_vec();
    let e = import_bytes(&bytes, "m.onnx").unwrap_err().to_string();
    assert!(
        e.contains("graph input 'input'")
            && e.contains("symbolic dim 'height' at axis 2")
            && e.contains("--input-shape input=1x3x<height>x<width>"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.onnx", &symbolic("residual_projection"));
    let out = compress().args(["inspect", &model]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--input-shape input="), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn bad_input_shape_values_are_one_line_errors_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.onnx", &symbolic("residual_projection"));
    let out_s = dir.path().join("o.onnx").display().to_string();
    for (value, want) in [
        (
            "images=1x3x16x16",
            "the model has no input 'images' (inputs: input)",
        ),
        (
            "input=1x3x16",
            "input 'input' has rank 4 ([batch, 3, height, width]), not 3",
        ),
        ("1x1x16x16", "input 'input' has size 3 at axis 1, not 1"),
        ("1x3x0x16", "expected [NAME=]DIMS with positive sizes"),
    ] {
        for cmd in [
            vec!["inspect", &model],
            vec!["convert", &model, "-o", &out_s],
            vec!["prune", &model, "--random-keep", "0.5", "-o", &out_s],
            vec!["eval", &model],
        ] {
            let out = compress()
                .args(&cmd)
                .args(["--input-shape", value])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {value}: {stderr}");
            assert!(
                stderr.contains(&format!("--input-shape {value}: {want}")),
                "{cmd:?}: {stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        }
    }
    assert!(!Path::new(&out_s).exists());
}

#[test]
fn inspect_and_convert_work_with_the_option_and_keep_symbolic_dims() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "m.onnx", &symbolic("residual_projection"));
    let out = compress()
        .args(["inspect", &model, "--input-shape", "1x3x16x16", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["inputs"][0]["shape"], "[batch, 3, height=16, width=16]");
    assert_eq!(v["groups"].as_array().unwrap().len(), 5);

    let converted = dir.path().join("c.onnx");
    let out = compress()
        .args(["convert", &model, "--input-shape", "input=1x3x16x16", "-o"])
        .arg(&converted)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("keeps the model's symbolic dims"),
        "{stderr}"
    );
    let m = read_model(&converted);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "3", "height", "width"]);
    assert_eq!(dims_of(&g.output[0]), ["batch", "10"]);
    let original = std::fs::read(&model).unwrap();
    let ours = std::fs::read(&converted).unwrap();
    for shape in [[1, 3, 16, 16], [2, 3, 24, 40]] {
        assert!(tract_diff(&original, &ours, &shape) <= 1e-5, "{shape:?}");
    }
}

#[test]
fn pruned_fully_convolutional_model_keeps_symbolic_dims_and_runs_at_two_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let m = fully_convolutional();
    let model = write(dir.path(), "fcn.onnx", &m);
    let pruned_path = dir.path().join("fcn.pruned.onnx");
    let out = compress()
        .args([
            "prune",
            &model,
            "--input-shape",
            "1x3x16x16",
            "--random-keep",
            "0.5",
        ])
        .args(["--seed", "3", "--latency-runs", "0", "--json", "-o"])
        .arg(&pruned_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = report["notes"].to_string();
    assert!(notes.contains("keeps the model's symbolic dims"), "{notes}");
    assert!(notes.contains("matches its reference there too"), "{notes}");

    let written = read_model(&pruned_path);
    let g = written.graph.as_ref().unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "3", "height", "width"]);
    assert_eq!(dims_of(&g.output[0]), ["batch", "8", "height", "width"]);

    // The reference: the same plan's masked original, with the same dims.
    let bytes = m.encode_to_vec();
    let imported = import_sized(&bytes, "fcn", &sizes(&["1x3x16x16"])).unwrap();
    let dims = ExportDims::decide(&imported.graph, &bytes, &imported.size_dependent);
    assert!(matches!(dims, ExportDims::Symbolic { .. }), "{dims:?}");
    let analysis = compress::groups::analyse(&imported.graph).unwrap();
    let plan = compress::prune::plan::random(&analysis, 0.5, 3);
    let pruned = compress::prune::prune(&imported.graph, &plan, None).unwrap();
    let reference = compress::onnx::export(&dims.apply(&pruned.reference));
    let ours = std::fs::read(&pruned_path).unwrap();
    for shape in [[1, 3, 16, 16], [2, 3, 24, 20], [1, 3, 9, 31]] {
        let d = tract_diff(&reference, &ours, &shape);
        assert!(d <= 1e-4, "{shape:?}: {d}");
        let y = run_tract(&ours, &[pseudo_random(&shape, 1)]).unwrap();
        assert_eq!(y[0].shape, [shape[0], 8, shape[2], shape[3]]);
    }
}

#[test]
fn a_reshape_folded_from_shape_falls_back_to_the_given_size_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let m = shape_dependent_reshape();
    let model = write(dir.path(), "r.onnx", &m);
    // The original itself runs at any size.
    let original = m.encode_to_vec();
    assert_eq!(
        run_tract(&original, &[pseudo_random(&[1, 3, 20, 12], 0)]).unwrap()[0].shape,
        [1, 8]
    );
    let pruned_path = dir.path().join("r.pruned.onnx");
    let out = compress()
        .args([
            "prune",
            &model,
            "--input-shape",
            "input=2x3x16x16",
            "--random-keep",
            "0.5",
        ])
        .args(["--latency-runs", "0", "--report"])
        .arg(dir.path().join("r.json"))
        .arg("-o")
        .arg(&pruned_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "note: the export has the fixed input size 1x3x16x16 it was imported at (--input-shape"
        ),
        "{stderr}"
    );
    let report = std::fs::read_to_string(dir.path().join("r.json")).unwrap();
    assert!(
        report.contains("the export has the fixed input size"),
        "{report}"
    );
    let written = read_model(&pruned_path);
    let g = written.graph.as_ref().unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "3", "16", "16"]);
    assert_eq!(dims_of(&g.output[0]), ["batch", "8"]);
}

#[test]
fn same_padding_with_a_stride_is_recorded_and_falls_back() {
    let m = same_stride_two();
    let bytes = m.encode_to_vec();
    let imported = import_sized(&bytes, "same", &sizes(&["1x3x16x16"])).unwrap();
    assert_eq!(
        imported.size_dependent.len(),
        1,
        "{:?}",
        imported.size_dependent
    );
    assert!(imported.size_dependent[0].contains("auto_pad SAME_UPPER"));
    let dims = ExportDims::decide(&imported.graph, &bytes, &imported.size_dependent);
    let ExportDims::Fixed { note } = &dims else {
        panic!("{dims:?}");
    };
    assert!(note.contains("/f/f.0/f.0.0/Conv"), "{note}");
    // Without --input-shape on a fixed-size model, SAME pads are no concern.
    let mut fixed = same_stride_two();
    set_dims(
        &mut fixed.graph.as_mut().unwrap().input[0],
        &["batch", "3", "16", "16"],
    );
    let imported = import_sized(&fixed.encode_to_vec(), "f", &InputShapes::default()).unwrap();
    assert!(imported.size_dependent.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "same.onnx", &m);
    let out_path = dir.path().join("same.out.onnx");
    let out = compress()
        .args(["convert", &model, "--input-shape", "1x3x16x16", "-o"])
        .arg(&out_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("auto_pad SAME_UPPER"), "{stderr}");
    let g = read_model(&out_path).graph.unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "3", "16", "16"]);
}

#[test]
fn run_and_eval_size_a_symbolic_lenet5_and_fall_back_when_the_original_cannot_resize() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = pb::ModelProto::decode(&std::fs::read(common::lenet5()).unwrap()[..]).unwrap();
    set_dims(
        &mut m.graph.as_mut().unwrap().input[0],
        &["batch", "1", "height", "width"],
    );
    let model = write(dir.path(), "lenet5.onnx", &m);
    let out = compress()
        .args(["eval", &model, "--input-shape", "1x1x28x28", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out_path: PathBuf = dir.path().join("l.onnx");
    let out = compress()
        .args([
            "run",
            &model,
            "--input-shape",
            "1x1x28x28",
            "--method",
            "l0-hc",
        ])
        .args([
            "--max-steps",
            "2",
            "--epochs",
            "1",
            "--latency-runs",
            "0",
            "-o",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the original model does not run at"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(dir.path().join("l.report.json")).unwrap();
    assert!(
        report.contains("the original model does not run at"),
        "{report}"
    );
    let g = read_model(&out_path).graph.unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "1", "28", "28"]);
}

#[test]
fn resnet18_with_symbolic_height_and_width_prunes_at_64_and_runs_at_other_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::repo().join("fixtures/models/resnet18/model.onnx");
    let mut m = pb::ModelProto::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    set_dims(
        &mut m.graph.as_mut().unwrap().input[0],
        &["batch", "3", "height", "width"],
    );
    let model = write(dir.path(), "r18.onnx", &m);
    let pruned_path = dir.path().join("r18.pruned.onnx");
    let out = compress()
        .args([
            "prune",
            &model,
            "--input-shape",
            "1x3x64x64",
            "--random-keep",
            "0.5",
        ])
        .args(["--latency-runs", "0", "--json", "-o"])
        .arg(&pruned_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Total stride 32: the proof ran at 96x128.
    assert!(
        stderr.contains("at 1x3x96x128 the re-export matches"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the export matches its reference there too"),
        "{stderr}"
    );
    let g = read_model(&pruned_path).graph.unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "3", "height", "width"]);
    let y = run_tract(
        &std::fs::read(&pruned_path).unwrap(),
        &[pseudo_random(&[1, 3, 160, 96], 2)],
    )
    .unwrap();
    assert_eq!(y[0].shape, [1, 10]);
}

/// conv_bn_relu_chain reading one channel (its first conv keeps input channel 0's weights), so
/// that the shipped Fashion-MNIST subset trains it at 28x28.
fn one_channel_chain() -> pb::ModelProto {
    let mut m = pattern("conv_bn_relu_chain");
    let g = m.graph.as_mut().unwrap();
    set_dims(&mut g.input[0], &["batch", "1", "height", "width"]);
    let w_name = g
        .node
        .iter()
        .find(|n| n.name == "/f/f.0/f.0.0/Conv")
        .unwrap()
        .input[1]
        .clone();
    let w = g.initializer.iter_mut().find(|t| t.name == w_name).unwrap();
    let values: Vec<f32> = if w.raw_data.is_empty() {
        w.float_data.clone()
    } else {
        w.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (out, per_out) = (
        w.dims[0] as usize,
        (w.dims[1] * w.dims[2] * w.dims[3]) as usize,
    );
    let kernel = (w.dims[2] * w.dims[3]) as usize;
    let kept: Vec<f32> = (0..out)
        .flat_map(|o| values[o * per_out..o * per_out + kernel].to_vec())
        .collect();
    w.dims[1] = 1;
    w.raw_data = kept.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.float_data.clear();
    m
}

#[test]
fn run_trains_at_the_given_size_and_keeps_symbolic_dims() {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "chain.onnx", &one_channel_chain());
    let out_path = dir.path().join("chain.pruned.onnx");
    let out = compress()
        .args([
            "run",
            &model,
            "--input-shape",
            "1x1x28x28",
            "--method",
            "l0-hc",
        ])
        .args([
            "--max-steps",
            "2",
            "--epochs",
            "1",
            "--latency-runs",
            "0",
            "-o",
        ])
        .arg(&out_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: the export keeps the model's symbolic dims"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(dir.path().join("chain.pruned.report.json")).unwrap();
    assert!(
        report.contains("matches its reference there too"),
        "{report}"
    );
    let settings: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        settings["settings"]["input_shape"],
        serde_json::json!(["1x1x28x28"])
    );
    let bytes = std::fs::read(&out_path).unwrap();
    let g = read_model(&out_path).graph.unwrap();
    assert_eq!(dims_of(&g.input[0]), ["batch", "1", "height", "width"]);
    for shape in [[1, 1, 28, 28], [3, 1, 40, 20]] {
        let y = run_tract(&bytes, &[pseudo_random(&shape, 4)]).unwrap();
        assert_eq!(y[0].shape, [shape[0], 10]);
    }
}
