//! Models saved with external data (`fixtures/external/`, made by
//! `converters/make_external_data.py`): they import like their inline originals, the commands
//! work on them, and side-file references that leave the model's directory or do not fit the
//! tensor are refused (exit 2) before anything is written.

mod common;

use std::path::{Path, PathBuf};

use common::{compress, repo};
use compress::onnx::pb;
use predicates::prelude::*;
use prost::Message;

const SIDE: &str = "model.onnx.data";

fn external_dir() -> PathBuf {
    repo().join("fixtures/external/conv_bn_relu_chain")
}

fn external_model() -> PathBuf {
    external_dir().join("model.onnx")
}

fn inline_model() -> PathBuf {
    repo().join("fixtures/patterns/conv_bn_relu_chain/model.onnx")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn fixture_really_uses_external_data() {
    let bytes = std::fs::read(external_model()).unwrap();
    let model = pb::ModelProto::decode(&bytes[..]).unwrap();
    let g = model.graph.unwrap();
    assert!(!g.initializer.is_empty());
    for t in &g.initializer {
        assert_eq!(t.data_location, Some(1), "{}", t.name);
        assert!(t.raw_data.is_empty(), "{}", t.name);
    }
}

#[test]
fn imports_to_the_same_graph_as_the_inline_original() {
    let external = compress::onnx::import_file(&external_model()).unwrap();
    let inline = compress::onnx::import_file(&inline_model()).unwrap();
    assert_eq!(external.nodes, inline.nodes);
    assert_eq!(external.initializers, inline.initializers);
    assert_eq!(external.inputs, inline.inputs);
    assert_eq!(external.outputs, inline.outputs);
}

#[test]
fn import_from_bytes_without_a_directory_is_a_clear_error() {
    let bytes = std::fs::read(external_model()).unwrap();
    let err = compress::onnx::import(&bytes).unwrap_err().to_string();
    assert!(err.contains("external file"), "{err}");
    assert!(err.contains("import the model from its file"), "{err}");
}

#[test]
fn inspect_convert_and_prune_work_on_it() {
    compress()
        .args(["inspect", s(&external_model())])
        .assert()
        .success();
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("converted.onnx");
    compress()
        .args(["convert", s(&external_model()), "-o", s(&converted)])
        .assert()
        .success()
        .stdout(predicate::str::contains("vs original"));
    // The output is self-contained and equal to the inline original's import.
    let bytes = std::fs::read(&converted).unwrap();
    let back = compress::onnx::import(&bytes).unwrap();
    let inline = compress::onnx::import_file(&inline_model()).unwrap();
    assert_eq!(back.nodes, inline.nodes);
    assert_eq!(back.initializers, inline.initializers);

    let pruned = dir.path().join("pruned.onnx");
    compress()
        .args([
            "prune",
            s(&external_model()),
            "--random-keep",
            "0.5",
            "--latency-runs",
            "0",
            "-o",
            s(&pruned),
        ])
        .assert()
        .success();
    let g = compress::onnx::import_file(&pruned).unwrap();
    let count = |g: &compress::ir::Graph| g.initializers.values().map(|t| t.len()).sum::<usize>();
    assert!(count(&g) < count(&inline));
}

/// A copy of the fixture in a fresh directory (`<tmp>/model/`), with the first initializer's
/// `external_data` entry `key` set to `value` (added when missing).
fn hostile_copy(key: &str, value: &str) -> (tempfile::TempDir, PathBuf) {
    hostile_copy_of(&external_dir(), key, value)
}

/// Index of the first initializer stored externally in the model in `dir` (the dynamo
/// exporter keeps small tensors inline, so it need not be the first one).
fn first_external_index(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let model = pb::ModelProto::decode(&bytes[..]).unwrap();
    let inits = &model.graph.unwrap().initializer;
    inits
        .iter()
        .position(|t| t.data_location == Some(1))
        .unwrap()
}

/// [`hostile_copy`] of the external-data fixture in `source`, changing its first external
/// initializer.
fn hostile_copy_of(source: &Path, key: &str, value: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(source.join(SIDE), dir.join(SIDE)).unwrap();
    let bytes = std::fs::read(source.join("model.onnx")).unwrap();
    let mut model = pb::ModelProto::decode(&bytes[..]).unwrap();
    let index = first_external_index(source);
    let t = &mut model.graph.as_mut().unwrap().initializer[index];
    match t.external_data.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value.into(),
        None => t.external_data.push(pb::StringStringEntryProto {
            key: key.into(),
            value: value.into(),
        }),
    }
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    (tmp, path)
}

fn first_tensor() -> pb::TensorProto {
    let bytes = std::fs::read(external_model()).unwrap();
    let model = pb::ModelProto::decode(&bytes[..]).unwrap();
    model.graph.unwrap().initializer[0].clone()
}

/// `convert` and `inspect` refuse the model with exit 2 and a one-line message that names the
/// model file, the tensor and `what`; convert writes nothing.
fn assert_refused(model: &Path, what: &str) {
    assert_refused_naming(model, &first_tensor().name, what);
}

/// [`assert_refused`] for a model whose offending tensor is `tensor`.
fn assert_refused_naming(model: &Path, tensor: &str, what: &str) {
    let out = model.with_file_name("out.onnx");
    for args in [
        vec!["inspect", s(model)],
        vec!["convert", s(model), "-o", s(&out)],
    ] {
        let o = compress().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        let line = err.lines().find(|l| l.contains(what)).unwrap_or_else(|| {
            panic!("{args:?}: expected '{what}' in stderr: {err}");
        });
        assert!(line.contains(s(model)), "{line}");
        assert!(line.contains(&format!("tensor '{tensor}'")), "{line}");
    }
    assert!(!out.exists(), "convert wrote {}", out.display());
}

#[test]
fn absolute_location_is_refused() {
    let side = external_dir().join(SIDE);
    let (_tmp, model) = hostile_copy("location", s(&side));
    assert_refused(&model, "is an absolute path");
}

#[test]
fn dotdot_escape_is_refused() {
    let (_tmp, model) = hostile_copy("location", "../model.onnx.data");
    // Even with the file really there, outside the model's directory.
    std::fs::copy(
        external_dir().join(SIDE),
        model.parent().unwrap().parent().unwrap().join(SIDE),
    )
    .unwrap();
    assert_refused(&model, "leaves the model's directory");
}

#[cfg(unix)]
#[test]
fn symlink_escape_is_refused() {
    let (tmp, model) = hostile_copy("location", "link.data");
    let outside = tmp.path().join("outside.data");
    std::fs::copy(external_dir().join(SIDE), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, model.with_file_name("link.data")).unwrap();
    assert_refused(&model, "outside the model's directory");
}

#[cfg(unix)]
#[test]
fn symlink_inside_the_directory_is_followed() {
    let (_tmp, model) = hostile_copy("location", "link.data");
    std::os::unix::fs::symlink(SIDE, model.with_file_name("link.data")).unwrap();
    compress().args(["inspect", s(&model)]).assert().success();
}

#[test]
fn missing_side_file_is_refused() {
    let (_tmp, model) = hostile_copy("location", "nowhere.data");
    assert_refused(&model, "cannot be read");
}

#[test]
fn truncated_side_file_is_refused() {
    let (_tmp, model) = hostile_copy("location", SIDE);
    let side = model.with_file_name(SIDE);
    let len = std::fs::metadata(&side).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&side).unwrap();
    f.set_len(len / 2).unwrap();
    // Some tensor past the cut is refused; the first one is the one named only if it is past it,
    // so name the check by its message alone.
    let o = compress().args(["inspect", s(&model)]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is beyond the end of"), "{err}");
    assert!(err.contains(s(&model)), "{err}");
}

#[test]
fn offset_past_the_end_is_refused() {
    let (_tmp, model) = hostile_copy("offset", "17000");
    assert_refused(&model, "is beyond the end of");
}

#[test]
fn wrong_length_is_refused() {
    let t = first_tensor();
    let length: u64 = t
        .external_data
        .iter()
        .find(|e| e.key == "length")
        .map(|e| e.value.parse().unwrap())
        .unwrap();
    let (_tmp, model) = hostile_copy("length", &(length - 4).to_string());
    assert_refused(&model, "does not match its shape");
}

#[test]
fn absurd_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(external_dir().join(SIDE), tmp.path().join(SIDE)).unwrap();
    let bytes = std::fs::read(external_model()).unwrap();
    let mut model = pb::ModelProto::decode(&bytes[..]).unwrap();
    model.graph.as_mut().unwrap().initializer[0].dims = vec![1 << 20, 1 << 20];
    let path = tmp.path().join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    assert_refused(&path, "the limit for one tensor");
}

/// `--external-data`: the output's weights go to OUT.onnx.data; the pair re-imports equal to
/// the inline output.
#[test]
fn convert_and_prune_write_external_data_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let inline = dir.path().join("inline.onnx");
    let split = dir.path().join("split.onnx");
    for (out, extra) in [(&inline, None), (&split, Some("--external-data"))] {
        compress()
            .args(["convert", s(&inline_model()), "-o", s(out)])
            .args(extra)
            .assert()
            .success();
    }
    assert!(!dir.path().join("inline.onnx.data").exists());
    let side = dir.path().join("split.onnx.data");
    assert!(side.is_file());
    let model = pb::ModelProto::decode(&std::fs::read(&split).unwrap()[..]).unwrap();
    assert!(
        model
            .graph
            .unwrap()
            .initializer
            .iter()
            .all(|t| t.data_location == Some(1)),
        "every initializer is external"
    );
    let a = compress::onnx::import_file(&inline).unwrap();
    let b = compress::onnx::import_file(&split).unwrap();
    assert_eq!(a.nodes, b.nodes);
    assert_eq!(a.initializers, b.initializers);

    // The side file is checked before any work, like the model.
    compress()
        .args([
            "convert",
            s(&inline_model()),
            "-o",
            s(&split),
            "--external-data",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    let pruned = dir.path().join("pruned.onnx");
    std::fs::write(dir.path().join("pruned.onnx.data"), b"x").unwrap();
    compress()
        .args(["prune", s(&external_model()), "--random-keep", "0.5"])
        .args(["--latency-runs", "0", "--external-data", "-o", s(&pruned)])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("pruned.onnx.data already exists"));
    assert!(!pruned.exists());
    compress()
        .args(["prune", s(&external_model()), "--random-keep", "0.5"])
        .args([
            "--latency-runs",
            "0",
            "--external-data",
            "--force",
            "-o",
            s(&pruned),
        ])
        .assert()
        .success();
    assert!(compress::onnx::import_file(&pruned).is_ok());
}

/// ONNX Runtime reads the written pair from the model's path and computes what the inline
/// export computes.
#[cfg(feature = "ort")]
#[test]
fn external_data_output_runs_in_onnxruntime_from_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    compress()
        .args([
            "convert",
            s(&external_model()),
            "-o",
            s(&out),
            "--external-data",
        ])
        .assert()
        .success();
    let (inputs, expected) = common::load_data_set(&external_dir().join("test_data_set_0"));
    let env = compress::verify::onnxruntime::load().unwrap();
    let mut session = ort::session::Session::builder(env)
        .unwrap()
        .commit_from_file(&out)
        .unwrap();
    let name = session.inputs()[0].name().to_string();
    let value =
        ort::value::Tensor::from_array((inputs[0].shape.clone(), inputs[0].to_f32_vec())).unwrap();
    let outputs = session.run(vec![(name.as_str(), &value)]).unwrap();
    let (shape, data) = outputs[0].try_extract_tensor::<f32>().unwrap();
    let got = compress::ir::Tensor::f32(shape.iter().map(|&d| d as usize).collect(), data.to_vec());
    let d = common::max_diff(&got, &expected[0]);
    assert!(d <= 1e-4, "ONNX Runtime from the path vs test data: {d}");
}

/// The main job with `--external-data` writes the pruned model's weights beside it (a short run).
#[test]
fn run_writes_external_data_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l5.onnx");
    compress()
        .arg(common::lenet5())
        .args(["--method", "dep-l0", "--max-steps", "40", "--epochs", "1"])
        .args(["--latency-runs", "0", "--quiet", "--external-data", "-o"])
        .arg(&out)
        .assert()
        .success();
    assert!(dir.path().join("l5.onnx.data").is_file());
    let g = compress::onnx::import_file(&out).unwrap();
    assert!(!g.initializers.is_empty());
}

// ---- A model as PyTorch's dynamo exporter writes it (`converters/export_dynamo_external.py`):
// opset 20, IR 10, BN folded into the convs, ReduceMean with its axes as an input, a symbolic
// batch axis, and the larger weights in `model.onnx.data` while small tensors stay inline.

fn dynamo_dir() -> PathBuf {
    repo().join("fixtures/external/dynamo_classifier")
}

fn dynamo_model() -> PathBuf {
    dynamo_dir().join("model.onnx")
}

fn dynamo_proto() -> pb::ModelProto {
    pb::ModelProto::decode(&std::fs::read(dynamo_model()).unwrap()[..]).unwrap()
}

#[test]
fn dynamo_fixture_is_what_the_exporter_writes() {
    let model = dynamo_proto();
    assert_eq!(model.producer_name, "pytorch");
    assert!(model.ir_version >= 10, "IR {}", model.ir_version);
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty())
        .unwrap()
        .version;
    assert!(opset >= 18, "opset {opset}");
    let inits = &model.graph.unwrap().initializer;
    let external: Vec<_> = inits
        .iter()
        .filter(|t| t.data_location == Some(1))
        .collect();
    assert!(!external.is_empty());
    assert!(external.len() < inits.len(), "some tensors stay inline");
    for t in external {
        assert!(t.raw_data.is_empty(), "{}", t.name);
        let location = t.external_data.iter().find(|e| e.key == "location");
        assert_eq!(location.map(|e| e.value.as_str()), Some(SIDE), "{}", t.name);
    }
}

#[test]
fn dynamo_export_imports_and_matches_pytorch() {
    use compress::exec::{Network, default_device};
    let graph = compress::onnx::import_file(&dynamo_model()).unwrap();
    let (inputs, expected) = common::load_data_set(&dynamo_dir().join("test_data_set_0"));
    assert_eq!(
        inputs[0].shape,
        vec![2, 3, 32, 32],
        "the reference uses batch 2"
    );
    let net = Network::new(&graph, &default_device()).unwrap();
    let burn = net.run(&inputs).unwrap();
    assert_eq!(burn[0].shape, expected[0].shape);
    let d = common::max_diff(&burn[0], &expected[0]);
    assert!(d <= 1e-4, "burn vs PyTorch: {d}");
    let bytes = compress::onnx::read_model(&dynamo_model()).unwrap();
    let tract = compress::verify::run_tract(&bytes, &inputs).unwrap();
    let d = common::max_diff(&tract[0], &expected[0]);
    assert!(d <= 1e-4, "tract vs PyTorch: {d}");
    // `convert` runs the original in tract too (its value_info has the symbolic batch).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("converted.onnx");
    compress()
        .args(["convert", s(&dynamo_model()), "-o", s(&out)])
        .assert()
        .success()
        .stdout(predicate::str::contains("vs original"));
}

/// `prune --random-keep 0.5` on the dynamo export, inline and with `--external-data`: both
/// verify in tract, are smaller, equal each other, and run on the reference input.
#[test]
fn dynamo_export_prunes_and_exports_with_and_without_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let inline = dir.path().join("inline.onnx");
    let split = dir.path().join("split.onnx");
    for (out, extra) in [(&inline, None), (&split, Some("--external-data"))] {
        compress()
            .args(["prune", s(&dynamo_model()), "--random-keep", "0.5"])
            .args(["--seed", "3", "--latency-runs", "1", "-o", s(out)])
            .args(extra)
            .assert()
            .success()
            .stdout(predicate::str::contains("verified in tract"));
    }
    assert!(!dir.path().join("inline.onnx.data").exists());
    assert!(dir.path().join("split.onnx.data").is_file());
    // Float weights go to the side file; the integer ReduceMean axes stay inline, where ONNX
    // shape inference can read them.
    let split_proto = pb::ModelProto::decode(&std::fs::read(&split).unwrap()[..]).unwrap();
    let inits = split_proto.graph.unwrap().initializer;
    let float = pb::tensor_proto::DataType::Float as i32;
    for t in &inits {
        let external = t.data_location == Some(1);
        assert_eq!(external, t.data_type == float, "{}", t.name);
    }
    assert!(inits.iter().any(|t| t.data_type != float));

    let a = compress::onnx::import_file(&inline).unwrap();
    let b = compress::onnx::import_file(&split).unwrap();
    assert_eq!(a.nodes, b.nodes);
    assert_eq!(a.initializers, b.initializers);
    let original = compress::onnx::import_file(&dynamo_model()).unwrap();
    let count = |g: &compress::ir::Graph| g.initializers.values().map(|t| t.len()).sum::<usize>();
    assert!(count(&a) < count(&original));

    // The pruned file keeps the symbolic batch: it runs on the batch-2 reference input.
    let (inputs, expected) = common::load_data_set(&dynamo_dir().join("test_data_set_0"));
    let bytes = compress::onnx::read_model(&split).unwrap();
    let out = compress::verify::run_tract(&bytes, &inputs).unwrap();
    assert_eq!(out[0].shape, expected[0].shape);
}

#[test]
fn dynamo_export_with_escaping_side_file_is_refused() {
    let tensor = {
        let model = dynamo_proto();
        let inits = model.graph.unwrap().initializer;
        inits[first_external_index(&dynamo_dir())].name.clone()
    };
    let (_tmp, model) = hostile_copy_of(&dynamo_dir(), "location", "../x.data");
    std::fs::copy(
        dynamo_dir().join(SIDE),
        model.parent().unwrap().parent().unwrap().join("x.data"),
    )
    .unwrap();
    assert_refused_naming(&model, &tensor, "leaves the model's directory");

    let side = dynamo_dir().join(SIDE);
    let (_tmp, model) = hostile_copy_of(&dynamo_dir(), "location", s(&side));
    assert_refused_naming(&model, &tensor, "is an absolute path");
}

/// ONNX Runtime loads the pruned dynamo export with `--external-data` from its path (its
/// loader runs shape inference, which needs the ReduceMean axes inline) and computes what the
/// inline export computes.
#[cfg(feature = "ort")]
#[test]
fn dynamo_pruned_external_export_runs_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let inline = dir.path().join("inline.onnx");
    let split = dir.path().join("split.onnx");
    for (out, extra) in [(&inline, None), (&split, Some("--external-data"))] {
        compress()
            .args(["prune", s(&dynamo_model()), "--random-keep", "0.5"])
            .args(["--seed", "4", "--latency-runs", "0", "-o", s(out)])
            .args(extra)
            .assert()
            .success();
    }
    let (inputs, _) = common::load_data_set(&dynamo_dir().join("test_data_set_0"));
    let env = compress::verify::onnxruntime::load().unwrap();
    let mut outputs = Vec::new();
    for path in [&inline, &split] {
        let mut session = ort::session::Session::builder(env)
            .unwrap()
            .commit_from_file(path)
            .unwrap_or_else(|e| panic!("ONNX Runtime loading {}: {e}", path.display()));
        let value =
            ort::value::Tensor::from_array((inputs[0].shape.clone(), inputs[0].to_f32_vec()))
                .unwrap();
        let out = session.run(vec![("input", &value)]).unwrap();
        let (shape, data) = out[0].try_extract_tensor::<f32>().unwrap();
        assert_eq!(
            shape.iter().map(|&d| d as usize).collect::<Vec<_>>(),
            [2, 10]
        );
        outputs.push(data.to_vec());
    }
    assert_eq!(outputs[0], outputs[1]);
}
