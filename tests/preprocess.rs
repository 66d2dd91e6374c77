//! Input preparation through the CLI: `--normalize`, `--mean/--std` and `--resize` on an RGB
//! image folder with a 3-channel model; what the report records, what the written model's
//! metadata carries, `eval` of the pruned model without options, and the bad-input errors.

mod common;

use std::path::Path;

use common::{compress, resnet18, rgb_folder};
use serde_json::{Value, json};

/// Runs l0-hc briefly on `data` with `extra` options; returns the report and the model path.
fn run(dir: &Path, data: &Path, name: &str, extra: &[&str]) -> (Value, std::path::PathBuf) {
    let out = dir.join(format!("{name}.onnx"));
    let o = compress()
        .args([
            &resnet18(),
            "--method",
            "l0-hc",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--epochs", "1", "--max-steps", "2", "--batch-size", "6"])
        .args([
            "--latency-runs",
            "0",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.join(format!("{name}.report.json"))).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    let problems = compress::report::schema::validate(&report);
    assert!(problems.is_empty(), "{problems:?}");
    (report, out)
}

/// `eval MODEL --data DATA --json` with `extra` options: the accuracy object.
fn eval(model: &Path, data: &Path, extra: &[&str]) -> Value {
    let o = compress()
        .args([
            "eval",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn metadata(model: &Path) -> Vec<(String, String)> {
    compress::onnx::import_file(model)
        .unwrap()
        .meta
        .metadata_props
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_preset_is_recorded_exported_and_honoured_by_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 4);
    let (report, model) = run(dir.path(), &data, "net", &["--normalize", "imagenet"]);
    assert_eq!(
        report["settings"]["preprocessing"],
        json!({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "source": "preset"})
    );
    let props = metadata(&model);
    assert_eq!(prop(&props, "compress.mean"), Some("0.485,0.456,0.406"));
    assert_eq!(prop(&props, "compress.std"), Some("0.229,0.224,0.225"));
    assert_eq!(prop(&props, "compress.resize"), None);
    // The summary says it too.
    let md = std::fs::read_to_string(model.with_extension("report.md")).unwrap();
    assert!(
        md.contains("inputs: mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225] (preset)"),
        "{md}"
    );

    // The pruned model says how it wants its inputs: eval needs no options.
    let acc = eval(&model, &data, &[]);
    assert_eq!(acc["accuracy"], report["pruned"]["accuracy"]);
    assert_eq!(acc["correct"], report["pruned"]["correct"]);
    // The same options give the same numbers on the original model as the run's dense eval.
    let dense = eval(Path::new(&resnet18()), &data, &["--normalize", "imagenet"]);
    assert_eq!(dense["accuracy"], report["dense"]["accuracy"]);
}

#[test]
fn explicit_mean_std_and_resize_are_recorded_exported_and_honoured_by_eval() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 4);
    let (report, model) = run(
        dir.path(),
        &data,
        "net",
        &[
            "--mean",
            "0.5",
            "--std",
            "0.25,0.5,0.125",
            "--resize",
            "72,80",
        ],
    );
    assert_eq!(
        report["settings"]["preprocessing"],
        json!({"mean": [0.5], "std": [0.25, 0.5, 0.125], "source": "option", "resize": [72, 80]})
    );
    let props = metadata(&model);
    assert_eq!(prop(&props, "compress.mean"), Some("0.5"));
    assert_eq!(prop(&props, "compress.std"), Some("0.25,0.5,0.125"));
    assert_eq!(prop(&props, "compress.resize"), Some("72,80"));
    // The written model still takes 3x64x64 inputs: images were resized, then centre-cropped.
    let written = compress::onnx::import_file(&model).unwrap();
    assert_eq!(written.inputs[0].shape(1), vec![1, 3, 64, 64]);
    let acc = eval(&model, &data, &[]);
    assert_eq!(acc["accuracy"], report["pruned"]["accuracy"]);
    assert_eq!(acc["correct"], report["pruned"]["correct"]);

    // A run without options records nothing and writes no preprocessing metadata.
    let (plain, model) = run(dir.path(), &data, "plain", &[]);
    assert!(plain["settings"].get("preprocessing").is_none(), "{plain}");
    assert_eq!(prop(&metadata(&model), "compress.mean"), None);
}

#[test]
fn bad_preprocessing_options_are_one_line_errors_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 1);
    let out = dir.path().join("never.onnx");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mean", "0.5,0.5", "--std", "0.2"],
            "error: --mean 0.5,0.5: 2 values, but the model's input has 3 channels (give 1 value or 3)",
        ),
        (
            &["--mean", "0.5", "--std", "0.2,0.2,0.2,0.2"],
            "error: --std 0.2,0.2,0.2,0.2: 4 values, but the model's input has 3 channels",
        ),
        (
            &["--mean", "0.5,x,0.5", "--std", "1"],
            "error: --mean 0.5,x,0.5: 'x' is not a finite number",
        ),
        (
            &["--mean", "0.5", "--std", "0.2,-1,0.2"],
            "error: --std 0.2,-1,0.2: a std must be > 0, not -1",
        ),
        (
            &["--mean", "0.5", "--std", "0"],
            "error: --std 0: a std must be > 0, not 0",
        ),
        (&["--mean", "0.5"], "error: --mean needs --std"),
        (&["--resize", "0,64"], "error: --resize 0,64: expected H,W"),
        (&["--resize", "64"], "error: --resize 64: expected H,W"),
        (
            &["--resize", "32,96"],
            "error: --resize 32,96: smaller than the model's 64x64 input",
        ),
    ];
    for (args, want) in cases {
        for command in ["run", "eval"] {
            let mut cmd = compress();
            cmd.args([command, &resnet18(), "--data", data.to_str().unwrap()]);
            if command == "run" {
                cmd.args(["--method", "l0-hc", "-o", out.to_str().unwrap()]);
            }
            let o = cmd.args(*args).output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{command} {args:?}: {stderr}");
            assert!(stderr.starts_with(want), "{command} {args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{command} {args:?}: {stderr}");
            assert!(o.stdout.is_empty(), "{command} {args:?}");
        }
    }
    assert!(!out.exists());
    // --resize is for image folders; a preset and explicit statistics exclude each other.
    let idx = common::repo().join("fixtures/data/fashion-mnist-subset");
    let o = compress()
        .args(["eval", &common::lenet5(), "--data", idx.to_str().unwrap()])
        .args(["--resize", "28,28"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--resize 28,28: applies to image folders")
    );
    let o = compress()
        .args([
            "eval",
            &resnet18(),
            "--normalize",
            "imagenet",
            "--mean",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = compress()
        .args(["eval", &resnet18(), "--normalize", "imagenette"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "error: --normalize imagenette: expected imagenet, cifar10 or none"
    );
}

#[test]
fn normalised_pixels_are_the_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("a");
    std::fs::create_dir(&class).unwrap();
    // 2x2 image: (0,0) = (255, 0, 51), (1,1) = (102, 204, 153); the others grey.
    let img = image::RgbImage::from_fn(2, 2, |x, y| match (x, y) {
        (0, 0) => image::Rgb([255, 0, 51]),
        (1, 1) => image::Rgb([102, 204, 153]),
        _ => image::Rgb([128, 128, 128]),
    });
    img.save(class.join("x.png")).unwrap();
    let request = compress::data::preprocess::Request {
        normalize: Some(compress::data::preprocess::Asked {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            source: compress::data::preprocess::Source::Preset,
            mean_name: "--normalize imagenet".into(),
            std_name: "--normalize imagenet".into(),
        }),
        resize: None,
    };
    let prep = request
        .resolve(
            compress::data::Format::Folder,
            &compress::data::preprocess::ModelInput {
                chw: Some((3, 2, 2)),
                props: &[],
            },
        )
        .unwrap();
    let mut ds =
        compress::data::load(dir.path(), compress::data::Split::Train, Some((3, 2, 2))).unwrap();
    prep.normalize()
        .unwrap()
        .unwrap()
        .apply_dataset(&mut ds)
        .unwrap();
    let images = ds.images().unwrap();
    // CHW: channel c, pixel (y, x) at c * 4 + y * 2 + x.
    let want = |v: f32, m: f32, s: f32| (v / 255.0 - m) / s;
    let cases = [
        (0, want(255.0, 0.485, 0.229)),  // R (0,0): 2.2489
        (4, want(0.0, 0.456, 0.224)),    // G (0,0): -2.0357
        (8, want(51.0, 0.406, 0.225)),   // B (0,0): -0.9156
        (3, want(102.0, 0.485, 0.229)),  // R (1,1): -0.3712
        (7, want(204.0, 0.456, 0.224)),  // G (1,1): 1.5357
        (11, want(153.0, 0.406, 0.225)), // B (1,1): 0.8622
    ];
    for (i, v) in cases {
        assert!((images[i] - v).abs() < 1e-5, "{i}: {} vs {v}", images[i]);
    }
    assert!((images[0] - 2.2489).abs() < 1e-3);
    assert!((images[4] + 2.0357).abs() < 1e-3);
}

/// A CIFAR-100-layout binary dataset (`train.bin`, `test.bin`): `per_class` 32x32 images for
/// each of 3 labels, each label its own colour plus noise.
fn cifar_folder(root: &Path, per_class: usize) {
    std::fs::create_dir_all(root).unwrap();
    for name in ["train.bin", "test.bin"] {
        let mut bytes = Vec::new();
        for label in 0..3u8 {
            for i in 0..per_class {
                bytes.extend([0, label]); // coarse, fine label
                for c in 0..3usize {
                    let base = if c == label as usize { 200u8 } else { 40 };
                    bytes.extend((0..1024usize).map(|p| base + ((p * 7 + i * 31 + c) % 40) as u8));
                }
            }
        }
        std::fs::write(root.join(name), bytes).unwrap();
    }
}

/// A small CIFAR-shaped classifier: conv 3x3 (3 -> 8) -> Relu -> GlobalAveragePool ->
/// Flatten -> Gemm (8 -> 10), input [N, 3, 32, 32], seeded random weights.
fn cifar_model(path: &Path) {
    use compress::ir::{Activation, Dim, Graph, ModelMeta, Node, Op, Tensor, ValueInfo, Window};
    let node = |name: &str, op: Op, inputs: &[&str], out: &str| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
    };
    let dims = |d: &[usize]| {
        std::iter::once(Dim::Batch("N".into()))
            .chain(d.iter().map(|&n| Dim::Fixed(n)))
            .collect()
    };
    let mut g = Graph {
        name: "cifar_tiny".into(),
        inputs: vec![ValueInfo {
            name: "input".into(),
            dims: dims(&[3, 32, 32]),
        }],
        outputs: vec![ValueInfo {
            name: "logits".into(),
            dims: dims(&[10]),
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
        Tensor::f32(shape, t.to_f32_vec())
    };
    g.initializers
        .insert("w1".into(), random(vec![8, 3, 3, 3], 1));
    g.initializers.insert("b1".into(), random(vec![8], 2));
    g.initializers.insert("w2".into(), random(vec![10, 8], 3));
    g.initializers.insert("b2".into(), random(vec![10], 4));
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![1, 1],
    };
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    g.nodes = vec![
        node(
            "conv",
            Op::Conv { window, group: 1 },
            &["input", "w1", "b1"],
            "h1",
        ),
        node("relu", Op::Activation(Activation::Relu), &["h1"], "h2"),
        node("gap", Op::GlobalAveragePool, &["h2"], "h3"),
        node("flat", Op::Flatten { axis: 1 }, &["h3"], "h4"),
        node("fc", gemm, &["h4", "w2", "b2"], "logits"),
    ];
    g.validate().expect("a valid graph");
    std::fs::write(path, compress::onnx::export(&g)).unwrap();
}

#[test]
fn cifar_data_records_its_format_default_and_a_preset_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    cifar_folder(&data, 4);
    let tiny = dir.path().join("tiny.onnx");
    cifar_model(&tiny);
    let run20 = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.onnx"));
        let o = compress()
            .args([tiny.to_str().unwrap(), "--method", "l0-hc"])
            .args([
                "--data",
                data.to_str().unwrap(),
                "--epochs",
                "1",
                "--max-steps",
                "2",
            ])
            .args(["--batch-size", "6", "--latency-runs", "0", "--quiet"])
            .args(["-o", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.report.json")));
        let report: Value = serde_json::from_str(&text.unwrap()).unwrap();
        (report, out)
    };
    let (report, model) = run20("default", &[]);
    assert_eq!(
        report["settings"]["preprocessing"],
        json!({"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616],
               "source": "format-default"})
    );
    assert_eq!(
        prop(&metadata(&model), "compress.mean"),
        Some("0.4914,0.4822,0.4465")
    );
    let acc = eval(&model, &data, &[]);
    assert_eq!(acc["accuracy"], report["pruned"]["accuracy"]);

    let (report, model) = run20("raw", &["--normalize", "none"]);
    assert_eq!(
        report["settings"]["preprocessing"],
        json!({"mean": [0.0], "std": [1.0], "source": "preset"})
    );
    let props = metadata(&model);
    assert_eq!(
        (prop(&props, "compress.mean"), prop(&props, "compress.std")),
        (Some("0"), Some("1"))
    );
    // Without options eval reads the pruned model's "none", not CIFAR's default.
    let acc = eval(&model, &data, &[]);
    assert_eq!(acc["correct"], report["pruned"]["correct"]);
    let dense_raw = eval(&tiny, &data, &["--mean", "0", "--std", "1"]);
    assert_eq!(dense_raw["correct"], report["dense"]["correct"]);
}

#[test]
fn sweeps_and_dry_runs_prepare_inputs_and_a_pruned_model_passes_its_preparation_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    rgb_folder(&data, 2);
    let out = dir.path().join("swept.onnx");
    let o = compress()
        .args([
            &resnet18(),
            "--method",
            "l0-hc",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--epochs", "1", "--max-steps", "1", "--batch-size", "6"])
        .args([
            "--latency-runs",
            "0",
            "--quiet",
            "-o",
            out.to_str().unwrap(),
        ])
        .args(["--sweep", "lambda=0.5,2", "--normalize", "imagenet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.path().join("swept.sweep.json")).unwrap();
    let sweep: Value = serde_json::from_str(&text).unwrap();
    let runs = sweep["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert_eq!(r["report"]["settings"]["preprocessing"]["source"], "preset");
    }

    // Pruning a pruned model again: its metadata is the source, and is passed on.
    let first = dir.path().join("swept.lambda-0.5.onnx");
    let out2 = dir.path().join("again2.onnx");
    let o = compress()
        .args([
            first.to_str().unwrap(),
            "--method",
            "l0-hc",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--epochs", "1", "--max-steps", "1", "--batch-size", "6"])
        .args([
            "--latency-runs",
            "0",
            "--quiet",
            "-o",
            out2.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(dir.path().join("again2.report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        report["settings"]["preprocessing"],
        json!({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "source": "model"})
    );
    assert_eq!(
        prop(&metadata(&out2), "compress.std"),
        Some("0.229,0.224,0.225")
    );

    // Dry runs take the options too, and refuse bad ones before probing.
    let dry = |extra: &[&str]| {
        compress()
            .args([
                &resnet18(),
                "--method",
                "dep-l0",
                "--dry-run",
                "--batch-size",
                "2",
            ])
            .args(["--data", data.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = dry(&["--normalize", "imagenet", "--resize", "70,70"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = dry(&["--mean", "1,2", "--std", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
}

#[test]
fn eval_reads_only_the_split_it_scores() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cifar");
    cifar_folder(&data, 4);
    // A dataset that ships only its test split is enough for `eval`.
    std::fs::remove_file(data.join("train.bin")).unwrap();
    let tiny = dir.path().join("tiny.onnx");
    cifar_model(&tiny);
    let acc = eval(&tiny, &data, &[]);
    assert_eq!(acc["samples"], 12);
    // Asking for the missing split names what is missing.
    let o = compress()
        .args([
            "eval",
            tiny.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--split", "train"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train.bin"), "{err}");
}
