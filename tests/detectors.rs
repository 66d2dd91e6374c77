//! Detector, segmentation and OCR graphs as PyTorch's exporter writes them
//! (`converters/export_detectors.py`, fixtures/detectors/): a YOLO-style detector (C2f blocks
//! whose Split cuts one conv's channels, SPPF, Resize FPN, DFL head), a U-Net (ConvTranspose,
//! skip concats) and a paddle2onnx-style OCR detector (weights as Constant nodes, HardSwish,
//! squeeze-excitation, a written-out LayerNorm, ConvTranspose, Resize). All have symbolic
//! height and width and are sized with `--input-shape`.
//!
//! With COMPRESS_EXPORT_DIR set, each pruned export is written there with an input at a size
//! other than the one it was pruned at and the masked reference's output, for
//! scripts/check_exports.py (onnx.checker full, ONNX Runtime).

mod common;

use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::ir::Tensor;
use compress::onnx::{InputShapes, import_sized};
use compress::verify::sizes::ExportDims;
use compress::verify::{max_abs_diff, pseudo_random, run_tract};
use prost::Message;

use common::compress;

const FIXTURES: [&str; 3] = ["yolo", "unet", "ocr"];
/// The size every fixture is imported (and pruned) at, and the second size of the references.
const FIRST: [usize; 4] = [1, 3, 64, 64];
const SECOND: [usize; 4] = [1, 3, 96, 128];

fn dir(name: &str) -> PathBuf {
    common::repo().join("fixtures/detectors").join(name)
}

fn model_path(name: &str) -> String {
    dir(name).join("model.onnx").display().to_string()
}

fn shape_arg(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn sized(shape: &[usize]) -> InputShapes {
    InputShapes::parse(&[shape_arg(shape)]).unwrap()
}

fn export_dir() -> Option<PathBuf> {
    std::env::var_os("COMPRESS_EXPORT_DIR").map(PathBuf::from)
}

fn write_pb(path: &Path, t: &Tensor) {
    std::fs::write(
        path,
        compress::onnx::tensor::to_proto("t", t).encode_to_vec(),
    )
    .unwrap();
}

#[test]
fn burn_matches_pytorch_and_tract_at_both_sizes() {
    for name in FIXTURES {
        let bytes = std::fs::read(model_path(name)).unwrap();
        for set in ["test_data_set_0", "test_data_set_1"] {
            let (inputs, expected) = common::load_data_set(&dir(name).join(set));
            let shape = inputs[0].shape.clone();
            let imported = import_sized(&bytes, name, &sized(&shape))
                .unwrap_or_else(|e| panic!("{name} at {shape:?}: {e}"));
            let net = Network::new(&imported.graph, &default_device()).unwrap();
            let burn = net.run(&inputs).unwrap();
            let tract = run_tract(&bytes, &inputs).unwrap();
            let d_torch = common::max_diff(&burn[0], &expected[0]);
            let d_tract = common::max_diff(&burn[0], &tract[0]);
            println!("{name} {shape:?}: burn-pytorch {d_torch:.2e}, burn-tract {d_tract:.2e}");
            assert_eq!(burn[0].shape, expected[0].shape, "{name} {shape:?}");
            assert!(
                d_torch <= 1e-4,
                "{name} {shape:?}: burn vs PyTorch {d_torch}"
            );
            assert!(d_tract <= 1e-4, "{name} {shape:?}: burn vs tract {d_tract}");
        }
    }
}

/// Largest difference between two files' outputs in tract on one input, and their output.
fn tract_pair(a: &[u8], b: &[u8], x: &Tensor) -> (f32, Vec<Tensor>) {
    let xs = vec![x.clone()];
    let (ya, yb) = (run_tract(a, &xs).unwrap(), run_tract(b, &xs).unwrap());
    assert_eq!(ya.len(), yb.len());
    let d = ya
        .iter()
        .zip(&yb)
        .map(|(p, q)| max_abs_diff(p, q))
        .fold(0.0, f32::max);
    (d, yb)
}

#[test]
fn random_keep_plans_verify_in_tract_at_two_sizes() {
    for name in FIXTURES {
        let bytes = std::fs::read(model_path(name)).unwrap();
        let imported = import_sized(&bytes, name, &sized(&FIRST)).unwrap();
        let graph = &imported.graph;
        let dims = ExportDims::decide(graph, &bytes, &imported.size_dependent);
        assert!(
            matches!(dims, ExportDims::Symbolic { .. }),
            "{name}: {dims:?}"
        );
        let analysis = compress::groups::analyse(graph).unwrap();
        assert!(analysis.iter().any(|g| g.prunable), "{name}");
        let before = compress::ir::cost::graph_cost(graph, 1).unwrap().macs;
        for (k, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
            let case = format!("detectors_{name}@{fraction}");
            let plan = compress::prune::plan::random(&analysis, fraction, 40 + k as u64);
            let pruned = compress::prune::prune(graph, &plan, None)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let after = compress::ir::cost::graph_cost(&pruned.graph, 1)
                .unwrap()
                .macs;
            assert!(after < before, "{case}: MACs {before} -> {after}");
            let ours = compress::onnx::export(&dims.apply(&pruned.graph));
            let reference = compress::onnx::export(&dims.apply(&pruned.reference));
            for (seed, shape) in [FIRST, SECOND].into_iter().enumerate() {
                let x = pseudo_random(&shape, 9 + seed as u64);
                let (d, want) = tract_pair(&ours, &reference, &x);
                assert!(d <= 1e-4, "{case} at {shape:?}: pruned vs reference {d}");
                if let (Some(root), true) = (export_dir(), shape == SECOND) {
                    let out = root.join(&case);
                    std::fs::create_dir_all(&out).unwrap();
                    std::fs::write(out.join("model.onnx"), &ours).unwrap();
                    write_pb(&out.join("input_0.pb"), &x);
                    write_pb(&out.join("output_0.pb"), &want[0]);
                }
            }
        }
    }
}

#[test]
fn c2f_splits_make_each_half_its_own_prunable_group() {
    let bytes = std::fs::read(model_path("yolo")).unwrap();
    let graph = import_sized(&bytes, "yolo", &sized(&FIRST)).unwrap().graph;
    let groups = compress::groups::analyse(&graph).unwrap();
    for block in ["/d1/d1.1", "/d4/d4.1", "/h1", "/h4"] {
        let cv1 = format!("{block}/cv1/conv/Conv");
        let halves: Vec<_> = groups
            .iter()
            .filter(|g| g.producers.contains(&cv1))
            .collect();
        assert_eq!(halves.len(), 2, "{cv1}: {halves:?}");
        assert!(halves.iter().all(|g| g.prunable), "{cv1}: {halves:?}");
        assert_eq!(halves[0].width, halves[1].width, "{cv1}");
        // The half that feeds the bottleneck is tied to the bottleneck's residual add when
        // there is one (backbone blocks), and gated where the Split hands it out.
        assert!(
            halves
                .iter()
                .all(|g| g.gates.iter().any(|v| v.contains("Split"))),
            "{cv1}: {halves:?}"
        );
    }
    let total: usize = groups.iter().filter(|g| g.prunable).count();
    assert!(total >= 50, "{total} prunable groups");
}

#[test]
fn the_ocr_layer_norm_keeps_its_channels_with_the_reason_shown() {
    let out = compress()
        .args(["inspect", &model_path("ocr"), "--input-shape", "1x3x64x64"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("reduction over the channel axis at node '/ln/ReduceMean'"),
        "{stdout}"
    );
    for op in ["HardSwish", "ConvTranspose", "Resize", "Sqrt", "Pow"] {
        assert!(stdout.contains(op), "{op} missing from {stdout}");
    }
}

#[test]
fn cli_convert_and_prune_keep_symbolic_dims_and_run_at_another_size() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let converted = tmp.path().join(format!("{name}.onnx"));
        let out = compress()
            .args([
                "convert",
                &model_path(name),
                "--input-shape",
                "1x3x64x64",
                "-o",
            ])
            .arg(&converted)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let pruned = tmp.path().join(format!("{name}.pruned.onnx"));
        let out = compress()
            .args(["prune", &model_path(name), "--input-shape", "1x3x64x64"])
            .args([
                "--random-keep",
                "0.5",
                "--seed",
                "5",
                "--latency-runs",
                "0",
                "-o",
            ])
            .arg(&pruned)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("keeps the model's symbolic dims"),
            "{name}: {stderr}"
        );

        // The converted file computes what PyTorch did at 96x128; the pruned one runs there.
        let (inputs, expected) = common::load_data_set(&dir(name).join("test_data_set_1"));
        let y = run_tract(&std::fs::read(&converted).unwrap(), &inputs).unwrap();
        let d = common::max_diff(&y[0], &expected[0]);
        assert!(d <= 1e-4, "{name}: converted vs PyTorch at 96x128: {d}");
        let y = run_tract(&std::fs::read(&pruned).unwrap(), &inputs).unwrap();
        assert_eq!(y[0].shape, expected[0].shape, "{name}");
    }
}

/// The detector with Ultralytics' anchor decoding: the anchors come from Shape/Range/
/// ConstantOfShape/Expand chains, which the import folds at the given size. Each size imports,
/// matches PyTorch and prunes exactly; exports carry the fixed size (the proof at a second
/// size fails, as it must: the anchors differ there).
#[test]
fn anchor_decoding_folds_at_each_size_and_exports_fixed_dims() {
    let name = "yolo_decode";
    let bytes = std::fs::read(model_path(name)).unwrap();
    for (k, set) in ["test_data_set_0", "test_data_set_1"]
        .into_iter()
        .enumerate()
    {
        let (inputs, expected) = common::load_data_set(&dir(name).join(set));
        let shape = inputs[0].shape.clone();
        let imported = import_sized(&bytes, name, &sized(&shape)).unwrap();
        let graph = &imported.graph;
        let net = Network::new(graph, &default_device()).unwrap();
        let burn = net.run(&inputs).unwrap();
        let d = common::max_diff(&burn[0], &expected[0]);
        assert!(d <= 1e-4, "{shape:?}: burn vs PyTorch {d}");
        let dims = ExportDims::decide(graph, &bytes, &imported.size_dependent);
        assert!(matches!(dims, ExportDims::Fixed { .. }), "{dims:?}");
        let analysis = compress::groups::analyse(graph).unwrap();
        let plan = compress::prune::plan::random(&analysis, 0.5, 60 + k as u64);
        let pruned = compress::prune::prune(graph, &plan, None).unwrap();
        let ours = compress::onnx::export(&dims.apply(&pruned.graph));
        let reference = compress::onnx::export(&dims.apply(&pruned.reference));
        let (d, _) = tract_pair(&ours, &reference, &inputs[0]);
        assert!(d <= 1e-4, "{shape:?}: pruned vs reference {d}");
    }
}
