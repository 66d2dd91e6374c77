//! The fuzz harness's CI run (a fixed seed, a few thousand cases) and the replay of every case
//! that ever failed (fixtures/fuzz), plus the validation's messages on hand-made hostile models.

mod common;

use std::time::Duration;

use compress::fuzz::{self, Kind, Outcome};
use compress::onnx::pb;
use prost::Message;

/// Cases per kind of the CI run: 3,000 in all, seconds in release on idle cores and under a
/// minute on two busy ones.
const CI_CASES: u64 = 1500;
const CI_SEED: u64 = 15;
const LIMIT: Duration = Duration::from_secs(30);

fn run_kind(kind: Kind) -> Vec<String> {
    let models = fuzz::seed_models(&common::repo()).unwrap();
    let mut failures = Vec::new();
    for index in 0..CI_CASES {
        let case = fuzz::generate(&models, kind, CI_SEED, index);
        let (outcome, message) = fuzz::case::run(case.bytes, case.plan_seed, LIMIT);
        if outcome.is_failure() {
            failures.push(format!(
                "{kind:?} case {index} ({}, {:?}): {outcome:?}: {message}",
                models[case.model].0.display(),
                case.mutations
            ));
            if outcome == Outcome::Timeout {
                break; // its thread cannot be stopped
            }
        }
    }
    failures
}

#[test]
fn fixed_seed_run_has_no_panic_internal_error_or_timeout() {
    fuzz::case::prepare();
    let bytes = std::thread::spawn(|| run_kind(Kind::Bytes));
    let mut failures = run_kind(Kind::Structured);
    failures.extend(bytes.join().unwrap());
    assert!(
        failures.is_empty(),
        "{} failing cases (save them under fixtures/fuzz):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_saved_failure_now_ends_cleanly() {
    fuzz::case::prepare();
    let dir = common::repo().join("fixtures/fuzz");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "{} regression cases", cases.len());
    for path in cases {
        let bytes = std::fs::read(&path).unwrap();
        let (outcome, message) = fuzz::case::run(bytes, 1, LIMIT);
        assert!(
            !outcome.is_failure(),
            "{}: {outcome:?}: {message}",
            path.display()
        );
    }
}

fn lenet5() -> pb::ModelProto {
    let bytes = std::fs::read(common::repo().join("models/lenet5/model.onnx")).unwrap();
    pb::ModelProto::decode(&bytes[..]).unwrap()
}

/// The import's error for `m`, which must be an input error (exit 2).
fn import_error(m: &pb::ModelProto) -> String {
    let e = compress::onnx::import(&m.encode_to_vec()).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    e.to_string()
}

fn first_node<'a>(m: &'a mut pb::ModelProto, op: &str) -> &'a mut pb::NodeProto {
    let g = m.graph.as_mut().unwrap();
    g.node.iter_mut().find(|n| n.op_type == op).unwrap()
}

#[test]
fn a_node_missing_an_input_is_named() {
    let mut m = lenet5();
    let conv = first_node(&mut m, "Conv");
    conv.input.truncate(1);
    let name = conv.name.clone();
    let e = import_error(&m);
    assert!(e.contains(&format!("node '{name}' (Conv)")), "{e}");
    assert!(e.contains("has 1 inputs, the op takes 2 to 3"), "{e}");
}

#[test]
fn a_read_before_its_value_is_computed_is_refused() {
    let mut m = lenet5();
    let g = m.graph.as_mut().unwrap();
    let last = g.node.last().unwrap().output[0].clone();
    g.node[0].input[0] = last.clone();
    let e = import_error(&m);
    assert!(
        e.contains(&format!("reads '{last}' before it is computed")),
        "{e}"
    );
    let g = m.graph.as_mut().unwrap();
    g.node[0].input[0] = "nowhere".into();
    let e = import_error(&m);
    assert!(
        e.contains("'nowhere', which no input, initializer or node defines"),
        "{e}"
    );
}

#[test]
fn window_attributes_out_of_range_are_refused() {
    for (attr, value) in [("strides", 0), ("dilations", -1), ("pads", 1 << 40)] {
        let mut m = lenet5();
        let conv = first_node(&mut m, "Conv");
        let a = conv.attribute.iter_mut().find(|a| a.name == attr).unwrap();
        a.ints[0] = value;
        let e = import_error(&m);
        assert!(
            e.contains(&format!("attribute {attr} = {value} is out of range")),
            "{e}"
        );
    }
}

#[test]
fn a_huge_input_dim_is_refused_before_any_allocation() {
    let mut m = lenet5();
    let g = m.graph.as_mut().unwrap();
    let Some(pb::type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("lenet5's input has a tensor type")
    };
    t.shape.as_mut().unwrap().dim[2].value =
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(1 << 40));
    let e = import_error(&m);
    assert!(e.contains("--max-tensor-elements"), "{e}");
}

#[test]
fn initializer_dims_must_match_their_data() {
    let mut m = lenet5();
    let g = m.graph.as_mut().unwrap();
    g.initializer[0].dims[0] += 1;
    let name = g.initializer[0].name.clone();
    let e = import_error(&m);
    assert!(e.contains(&format!("initializer '{name}': holds")), "{e}");
    let g = m.graph.as_mut().unwrap();
    g.initializer[0].dims = vec![1 << 31, 1 << 31, 1 << 31];
    let e = import_error(&m);
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn opsets_outside_the_supported_range_are_refused() {
    for v in [0, 1 << 40] {
        let mut m = lenet5();
        m.opset_import[0].version = v;
        let e = import_error(&m);
        assert!(e.contains(&format!("opset {v} is not supported")), "{e}");
    }
}

#[test]
fn the_element_bound_is_an_option() {
    let model = common::repo().join("models/lenet5/model.onnx");
    let out = common::compress()
        .args([
            "inspect",
            model.to_str().unwrap(),
            "--max-tensor-elements",
            "1000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("more than 1000 elements"), "{err}");
}

#[test]
fn a_model_tract_cannot_run_is_bad_input_not_an_internal_error() {
    // A Conv whose optional bias is named '' is valid ONNX; tract 0.23 panics on it.
    let mut m = pb::ModelProto::decode(
        &std::fs::read(common::repo().join("fixtures/patterns/residual_projection/model.onnx"))
            .unwrap()[..],
    )
    .unwrap();
    let conv = first_node(&mut m, "Conv");
    conv.input[2] = String::new();
    let bytes = m.encode_to_vec();
    let graph = compress::onnx::import(&bytes).unwrap();
    let ours = compress::onnx::export(&graph);
    let e = compress::verify::verify_export(&graph, &bytes, &ours, 2, 1e-4).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.to_string().starts_with("tract cannot run the model"),
        "{e}"
    );
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        h.extend(d.to_be_bytes());
    }
    h
}

/// `compress eval` on lenet5 with `images` as the test images: exit code and stderr.
fn eval_with_images(images: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), gz(images)).unwrap();
    let mut labels = idx_header(&[10]);
    labels.extend([1u8; 10]);
    std::fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gz(&labels)).unwrap();
    let out = common::compress()
        .args(["eval", common::lenet5().as_str(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err)
}

#[test]
fn idx_files_that_lie_about_their_size_are_one_line_errors() {
    // A gzip bomb: 10 images in the header, 256 MiB of zeros after it (256 kB compressed).
    let mut bomb = idx_header(&[10, 28, 28]);
    bomb.resize(bomb.len() + (256 << 20), 0);
    // A header claiming 2^32 - 1 images of 2^31 - 1 squared pixels over 10 real images.
    let mut huge = idx_header(&[u32::MAX, i32::MAX as u32, i32::MAX as u32]);
    huge.extend([0u8; 10 * 28 * 28]);
    let mut magic = idx_header(&[10, 28, 28]);
    magic[2] = 9;
    magic.extend([0u8; 10 * 28 * 28]);
    for (what, images) in [("bomb", bomb), ("huge", huge), ("magic", magic)] {
        let (code, err) = eval_with_images(&images);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains("t10k-images-idx3-ubyte.gz"), "{what}: {err}");
    }
}
