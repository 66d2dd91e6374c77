//! Pruning runs on token data: the tiny BERT-style encoders of `converters/export_bert.py`
//! (random weights; TorchScript and dynamo exports, and the bool-mask variant) trained with
//! gates on `fixtures/transformers/keywords.jsonl` (`converters/make_token_data.py`: the label
//! is which keyword id the sequence holds, so the encoder must learn to attend to it). A run
//! holds every fifth line out as its test split.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use compress::data::TokenData;
use compress::data::jsonl::{self, TokenField};
use compress::exec::default_device;
use compress::ir::ElemType;
use compress::onnx::{InputShapes, import_sized};
use compress::pipeline;
use compress::train::{Method, TrainConfig};

const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
/// The longest sequence of the keyword fixture: the length runs import the models at.
const SEQ: usize = 16;

fn dirs() -> Vec<PathBuf> {
    common::bert_dirs()
}

fn keywords() -> PathBuf {
    common::repo().join("fixtures/transformers/keywords.jsonl")
}

fn sized(seq: usize) -> InputShapes {
    let given: Vec<String> = INPUTS.iter().map(|n| format!("{n}=1x{seq}")).collect();
    InputShapes::parse(&given).unwrap()
}

/// `compress MODEL --data DATA -o OUT --json ARGS...`.
fn run(model: &Path, data: &Path, out: &Path, args: &[&str]) -> Output {
    common::compress()
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("-o")
        .arg(out)
        .args(["--json", "--latency-runs", "2"])
        .args(args)
        .output()
        .unwrap()
}

fn report(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runtimes the export was verified in: tract, and ONNX Runtime with the `ort` feature.
fn runtimes(r: &serde_json::Value) -> Vec<String> {
    let v = &r["verification"];
    std::iter::once(v)
        .chain(v["also"].as_array().unwrap())
        .map(|c| c["runtime"].as_str().unwrap().to_string())
        .collect()
}

/// `dir` made a directory of splits holding the single file's own split: train.jsonl every line
/// but each fifth, test.jsonl each fifth.
fn split_dir(dir: &Path) {
    let text = std::fs::read_to_string(keywords()).unwrap();
    let (mut train, mut test) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        let to = if (i + 1) % 5 == 0 {
            &mut test
        } else {
            &mut train
        };
        to.push_str(line);
        to.push('\n');
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    std::fs::write(dir.join("test.jsonl"), test).unwrap();
}

/// The command on each export: the encoder learns the keyword task while its gates
/// close to the MACs budget; the export keeps its integer inputs, is verified against the
/// gated network in tract (and ONNX Runtime), and scores in `eval` what the report says.
#[test]
fn a_gated_run_on_token_data_learns_prunes_and_keeps_the_integer_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let splits = tmp.path().join("splits");
    split_dir(&splits);
    for dir in dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.onnx"));
        let args = [
            "--method",
            "l0-hc",
            "--target-macs",
            "0.7",
            "--epochs",
            "12",
            "--batch-size",
            "32",
            "--lr",
            "3e-3",
        ];
        let r = report(
            &run(&dir.join("model.onnx"), &keywords(), &out, &args),
            &name,
        );
        let (dense, pruned) = (
            r["dense"]["accuracy"].as_f64().unwrap(),
            r["pruned"]["accuracy"].as_f64().unwrap(),
        );
        println!(
            "{name}: accuracy {dense:.4} -> {pruned:.4}, MACs {:.3}",
            r["macs_ratio"]
        );
        assert_eq!(
            r["pruned"]["samples"], 80,
            "{name}: every fifth of 400 lines"
        );
        // Random weights score near chance (4 classes); the trained, pruned model learnt.
        assert!(dense < 0.4, "{name}: dense {dense}");
        assert!(pruned >= 0.9, "{name}: pruned {pruned}");
        let macs = r["macs_ratio"].as_f64().unwrap();
        assert!(macs <= 0.7 + 1e-6, "{name}: MACs {macs}");
        assert!(r["params_ratio"].as_f64().unwrap() < 1.0, "{name}");
        let mut want = vec!["tract".to_string()];
        if cfg!(feature = "ort") {
            want.push("onnxruntime".into());
        }
        assert_eq!(runtimes(&r), want, "{name}");
        for side in ["dense", "pruned"] {
            let l = &r[side]["latency_ms"];
            assert!(l["batch_1"].as_f64().unwrap() > 0.0, "{name} {side}: {l}");
            assert!(l["batch_64"].as_f64().unwrap() > 0.0, "{name} {side}: {l}");
        }
        let bytes = std::fs::read(&out).unwrap();
        let graph = import_sized(&bytes, &name, &sized(SEQ)).unwrap().graph;
        for input in INPUTS {
            let want = if name.contains("bool") && input == "attention_mask" {
                ElemType::Bool
            } else {
                ElemType::I64
            };
            assert_eq!(graph.input_type(input), want, "{name} {input}");
        }
        // `eval` on the test split of a directory of splits scores the written model as the
        // run's report did.
        let eval = common::compress()
            .arg("eval")
            .arg(&out)
            .arg("--data")
            .arg(&splits)
            .arg("--json")
            .output()
            .unwrap();
        let e = report(&eval, &format!("{name} eval"));
        assert_eq!(e["correct"], r["pruned"]["correct"], "{name}");
    }
    // A directory of splits is the same run as the single file split the same way.
    let dir = &dirs()[0];
    let args = ["--method", "l0-hc", "--target-macs", "0.7", "--epochs", "2"];
    let from_file = tmp.path().join("file.onnx");
    let from_dir = tmp.path().join("dir.onnx");
    report(
        &run(&dir.join("model.onnx"), &keywords(), &from_file, &args),
        "file",
    );
    report(
        &run(&dir.join("model.onnx"), &splits, &from_dir, &args),
        "dir",
    );
    assert_eq!(
        std::fs::read(&from_file).unwrap(),
        std::fs::read(&from_dir).unwrap()
    );
}

/// Every gate method (and SWP) runs on token data, and `--dry-run` estimates a token run.
#[test]
fn every_method_and_the_dry_run_work_on_token_data() {
    let tmp = tempfile::tempdir().unwrap();
    let model = dirs()[1].join("model.onnx");
    for method in ["l0-arm", "l0-ar", "dep-l0", "swp"] {
        let out = tmp.path().join(format!("{method}.onnx"));
        let mut args = vec!["--method", method, "--epochs", "2", "--batch-size", "32"];
        if method != "swp" {
            args.extend(["--target-macs", "0.7"]);
        }
        let r = report(&run(&model, &keywords(), &out, &args), method);
        let macs = r["macs_ratio"].as_f64().unwrap();
        if method == "swp" {
            assert!(macs <= 1.0, "{method}: {macs}");
        } else {
            assert!(macs <= 0.7 + 1e-6, "{method}: {macs}");
        }
        assert!(out.is_file(), "{method}");
    }
    let dry = common::compress()
        .arg(&model)
        .arg("--data")
        .arg(keywords())
        .args(["--method", "l0-hc", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(!text.is_empty());
}

/// `--finetune-epochs`: the pruned token model trains on, and its export is checked against
/// burn on integer ids inside the embedding tables (tract, and ONNX Runtime).
#[test]
fn the_fine_tune_phase_trains_the_pruned_token_model() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft.onnx");
    let args = [
        "--method",
        "l0-hc",
        "--target-macs",
        "0.7",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--finetune-epochs",
        "2",
    ];
    let r = report(
        &run(&dirs()[2].join("model.onnx"), &keywords(), &out, &args),
        "finetune",
    );
    let phase = &r["finetune"];
    assert_eq!(phase["epochs"], 2, "{phase}");
    assert_eq!(phase["history"].as_array().unwrap().len(), 2, "{phase}");
    assert_eq!(
        phase["accuracy_after"], r["pruned"]["accuracy"],
        "the report's pruned accuracy is the fine-tuned model's"
    );
    assert!(r["verification"]["max_abs_diff"].as_f64().unwrap() <= 1e-4);
    assert_eq!(
        r["verification"]["also"].as_array().unwrap().len(),
        usize::from(cfg!(feature = "ort"))
    );
    let graph = import_sized(&std::fs::read(&out).unwrap(), "ft", &sized(SEQ))
        .unwrap()
        .graph;
    assert_eq!(graph.input_type("attention_mask"), ElemType::Bool);
    // `check` reads a token run's report like any other.
    let check = common::compress()
        .arg("check")
        .arg(out.with_extension("report.json"))
        .args(["--min-macs-reduction", "0.25"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let fail = common::compress()
        .arg("check")
        .arg(out.with_extension("report.json"))
        .args(["--min-macs-reduction", "0.5"])
        .output()
        .unwrap();
    assert_eq!(fail.status.code(), Some(1));
}

/// Bad token data in a run is one line naming `FILE:LINE` (or the option), exit 2, and nothing
/// is written.
#[test]
fn bad_token_data_in_a_run_is_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let good: Vec<String> = std::fs::read_to_string(keywords())
        .unwrap()
        .lines()
        .take(20)
        .map(String::from)
        .collect();
    let model = dirs()[0].join("model.onnx");
    let cases = [
        ("{\"input_ids\": [1, 2,", ":7: not a token example"),
        (
            "{\"input_ids\": [1, 2], \"label\": 9}",
            ":7: label 9, but the model has 4 outputs",
        ),
        (
            "{\"input_ids\": [1, 1000], \"label\": 0}",
            ":7: input_ids holds 1000, outside the model's embedding table of 1000 rows",
        ),
    ];
    for (i, (line, want)) in cases.iter().enumerate() {
        let mut lines = good.clone();
        lines.insert(6, line.to_string());
        let data = tmp.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&data, lines.join("\n")).unwrap();
        let out = tmp.path().join(format!("bad{i}.onnx"));
        let r = run(&model, &data, &out, &["--epochs", "1"]);
        let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
        assert_eq!(r.status.code(), Some(2), "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{}{want}", data.display())),
            "{line}: {err}"
        );
        assert!(!out.exists());
    }
    let data = tmp.path().join("ok.jsonl");
    std::fs::write(&data, good.join("\n")).unwrap();
    let only_train = tmp.path().join("only-train");
    std::fs::create_dir(&only_train).unwrap();
    std::fs::write(only_train.join("train.jsonl"), good.join("\n")).unwrap();
    for (data, args, want) in [
        (&data, &["--augment"][..], "--augment does not apply"),
        (&data, &["--normalize", "imagenet"][..], "do not apply"),
        (&only_train, &[][..], "no test split beside it"),
    ] {
        let out = tmp.path().join("x.onnx");
        let r = run(&model, data, &out, args);
        let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
        assert_eq!(r.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

/// A line longer than the model's position table (64 rows) is refused in one line that names
/// the sequence length the data asked for, exit 2, nothing written.
#[test]
fn a_line_longer_than_the_position_table_names_the_sequence_length() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(keywords())
        .unwrap()
        .lines()
        .take(20)
        .map(String::from)
        .collect();
    let ids = vec!["1"; 100].join(", ");
    lines.push(format!("{{\"input_ids\": [{ids}], \"label\": 0}}"));
    let data = tmp.path().join("long.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = tmp.path().join("long.onnx");
    let r = run(
        &dirs()[0].join("model.onnx"),
        &data,
        &out,
        &["--epochs", "1"],
    );
    let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("sequence length 100"), "{err}");
    assert!(err.contains("--seq-len"), "{err}");
    assert!(!out.exists());
}

/// A token run stopped after its first epoch and resumed from the checkpoint ends where the
/// uninterrupted run does, budget multipliers included.
#[test]
fn a_resumed_token_run_equals_the_uninterrupted_one() {
    let bytes = std::fs::read(dirs()[1].join("model.onnx")).unwrap();
    let graph = import_sized(&bytes, "bert", &sized(SEQ)).unwrap().graph;
    let set = jsonl::read(&keywords()).unwrap();
    let data = TokenData {
        set,
        fields: vec![
            TokenField::InputIds,
            TokenField::AttentionMask,
            TokenField::TokenTypeIds,
        ],
        seq_len: SEQ,
    };
    let dir = tempfile::tempdir().unwrap();
    let dev = default_device();
    let mut cfg = TrainConfig::new(Method::L0Hc);
    cfg.quiet = true;
    cfg.epochs = 2;
    cfg.batch_size = 32;
    cfg.target_macs = Some(0.7);
    cfg.checkpoint_dir = Some(dir.path().to_path_buf());
    let full = pipeline::train(&graph, &data, 0.1, &cfg, &dev).unwrap();
    // Stopped after epoch 1: its checkpoint is the newest.
    std::fs::remove_dir_all(dir.path().join("epoch-2")).unwrap();
    cfg.resume = true;
    let resumed = pipeline::train(&graph, &data, 0.1, &cfg, &dev).unwrap();
    assert_eq!(
        full.net.trained_graph().initializers,
        resumed.net.trained_graph().initializers
    );
    assert_eq!(full.gate_params, resumed.gate_params);
    assert_eq!(full.history.len(), 2);
    assert_eq!(resumed.history.len(), 2);
    assert_eq!(full.history[1].lambda, resumed.history[1].lambda);
}
