//! A BERT-style encoder with token inputs as PyTorch's two exporters write it
//! (`converters/export_bert.py`): int64 `input_ids`, `attention_mask` and `token_type_ids`,
//! word/position/token-type embeddings (Gather from weight tables), the additive attention mask
//! built in the graph (Unsqueeze/Cast/Sub/Mul), and the first token pooled. TorchScript exporter
//! (opset 17) in fixtures/transformers/bert_ts, dynamo exporter (opset 18) in bert_dynamo, and
//! bert_bool_dynamo with a bool mask turned into the additive mask by Where; the token data
//! fixtures/transformers/bert_tokens.jsonl is labelled with the model's own argmax.

mod common;

use std::path::{Path, PathBuf};

use compress::exec::{Network, default_device};
use compress::ir::{ElemType, Tensor};
use compress::onnx::{InputShapes, import_sized};
use compress::verify::run_tract;

const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];

fn dirs() -> Vec<PathBuf> {
    common::bert_dirs()
}

fn jsonl() -> PathBuf {
    common::repo().join("fixtures/transformers/bert_tokens.jsonl")
}

/// Every token input sized to `seq` tokens (the batch stays symbolic).
fn sized(seq: usize) -> InputShapes {
    let given: Vec<String> = INPUTS.iter().map(|n| format!("{n}=1x{seq}")).collect();
    InputShapes::parse(&given).unwrap()
}

#[test]
fn burn_matches_pytorch_and_tract_at_two_sequence_lengths_for_both_exporters() {
    for dir in dirs() {
        let name = dir.join("model.onnx").display().to_string();
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        for set in ["test_data_set_0", "test_data_set_1"] {
            let (inputs, expected) = common::load_data_set(&dir.join(set));
            let (batch, seq) = (inputs[0].shape[0], inputs[0].shape[1]);
            let graph = import_sized(&bytes, &name, &sized(seq))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .graph;
            for input in INPUTS {
                let bool_mask = name.contains("bool") && input == "attention_mask";
                let want = if bool_mask {
                    ElemType::Bool
                } else {
                    ElemType::I64
                };
                assert_eq!(graph.input_type(input), want, "{name} {input}");
            }
            let net = Network::new(&graph, &default_device()).unwrap();
            let burn = net.run(&inputs).unwrap();
            let tract = run_tract(&bytes, &inputs).unwrap();
            // The export writes the int64 inputs back: tract runs it on the same int64 data.
            let again = run_tract(&compress::onnx::export(&graph), &inputs).unwrap();
            let d_torch = common::max_diff(&burn[0], &expected[0]);
            let d_tract = common::max_diff(&burn[0], &tract[0]);
            let d_export = common::max_diff(&again[0], &tract[0]);
            println!(
                "{name} {batch}x{seq}: burn-pytorch {d_torch:.2e}, burn-tract {d_tract:.2e}, \
                 re-export {d_export:.2e}"
            );
            assert_eq!(burn[0].shape, expected[0].shape, "{name} {batch}x{seq}");
            assert!(
                d_torch <= 1e-4,
                "{name} {batch}x{seq}: burn vs PyTorch {d_torch}"
            );
            assert!(
                d_tract <= 1e-4,
                "{name} {batch}x{seq}: burn vs tract {d_tract}"
            );
            assert!(
                d_export <= 1e-5,
                "{name} {batch}x{seq}: re-export {d_export}"
            );
        }
    }
}

/// The padding really is masked: a padded row gives the logits of the same tokens unpadded.
#[test]
fn padding_behind_the_attention_mask_does_not_change_the_logits() {
    let dir = &dirs()[0];
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let (inputs, expected) = common::load_data_set(&dir.join("test_data_set_1"));
    let (batch, seq) = (inputs[0].shape[0], inputs[0].shape[1]);
    // Row batch-1 of the reference set has batch-1 padded tokens at its end.
    let real = seq - (batch - 1);
    let row = |t: &Tensor| {
        let v = t.to_i64_vec();
        let start = (batch - 1) * seq;
        Tensor::i64(vec![1, real], v[start..start + real].to_vec())
    };
    let unpadded: Vec<Tensor> = inputs.iter().map(row).collect();
    let graph = import_sized(&bytes, "bert_ts", &sized(real)).unwrap().graph;
    let got = Network::new(&graph, &default_device())
        .unwrap()
        .run(&unpadded)
        .unwrap();
    let classes = expected[0].shape[1];
    let want = &expected[0].to_f32_vec()[(batch - 1) * classes..];
    let diff = got[0]
        .to_f32_vec()
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-4, "padded vs unpadded logits differ by {diff}");
}

fn eval(model: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    common::compress()
        .arg("eval")
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
}

/// `compress eval` on the JSONL fixture: every line's label is the model's own argmax on the
/// unpadded tokens, so both exports score 64 of 64 at the longest length and at a longer one.
#[test]
fn eval_on_the_token_fixture_scores_every_line() {
    for dir in dirs() {
        for extra in [
            &["--json"][..],
            &["--json", "--seq-len", "24", "--batch-size", "7"],
        ] {
            let out = eval(&dir.join("model.onnx"), &jsonl(), extra);
            assert!(
                out.status.success(),
                "{}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["samples"], 64, "{}", dir.display());
            assert_eq!(v["correct"], 64, "{} {extra:?}", dir.display());
        }
    }
}

/// Malformed token data: one line naming the file and line, exit 2.
#[test]
fn malformed_token_data_is_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = dirs()[0].join("model.onnx");
    let good = "{\"input_ids\": [5, 6, 7], \"label\": 1}\n";
    let cases = [
        (
            "{\"input_ids\": [5, 6], \"label\": \"x\"}",
            ":2: not a token example",
        ),
        (
            "{\"input_ids\": [5, 6], \"attention_mask\": [1], \"label\": 0}",
            ":2: attention_mask has 1 entries, input_ids has 2",
        ),
        (
            "{\"input_ids\": [5, 1000], \"label\": 0}",
            ":2: input_ids holds 1000, outside the model's embedding table of 1000 rows",
        ),
        (
            "{\"input_ids\": [5], \"token_type_ids\": [2], \"label\": 0}",
            ":2: token_type_ids holds 2, outside the model's embedding table of 2 rows",
        ),
    ];
    for (k, (line, want)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad{k}.jsonl"));
        std::fs::write(&path, format!("{good}{line}\n")).unwrap();
        let out = eval(&model, &path, &[]);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(
            err.contains(&format!("bad{k}.jsonl{want}")),
            "{line}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A sequence longer than --seq-len is refused, not cut.
    let out = eval(&model, &jsonl(), &["--seq-len", "8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("more than the sequence length 8"), "{err}");
}

/// `prune --random-keep` on a token model: verified on int64 ids inside the embedding tables
/// (tract, and ONNX Runtime with the `ort` feature), the export keeps the int64 inputs and
/// reproduces the pruned graph's logits on the reference tokens.
#[test]
fn random_keep_prune_verifies_on_token_inputs_and_exports_int64_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.onnx"));
        let mut cmd = common::compress();
        cmd.arg("prune").arg(dir.join("model.onnx"));
        for n in INPUTS {
            cmd.args(["--input-shape", &format!("{n}=1x8")]);
        }
        let run = cmd
            .args(["--random-keep", "0.5", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(text.contains("verified in tract"), "{text}");
        // Every prunable group keeps half: the parameter count goes down.
        let params: Vec<u64> = text
            .lines()
            .find(|l| l.trim_start().starts_with("params"))
            .unwrap_or_else(|| panic!("{text}"))
            .split_whitespace()
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect();
        assert!(params.len() >= 2 && params[1] < params[0], "{text}");
        let bytes = std::fs::read(&out).unwrap();
        let graph = import_sized(&bytes, "pruned", &sized(8)).unwrap().graph;
        assert_eq!(graph.input_type("input_ids"), ElemType::I64);
        let (inputs, _) = common::load_data_set(&dir.join("test_data_set_0"));
        let burn = Network::new(&graph, &default_device())
            .unwrap()
            .run(&inputs)
            .unwrap();
        let tract = run_tract(&bytes, &inputs).unwrap();
        let d = common::max_diff(&burn[0], &tract[0]);
        assert!(d <= 1e-4, "{}: pruned burn vs tract {d}", dir.display());
    }
}

/// A pruning run on the token fixture trains (runs on token data: tests/bert_train.rs); one
/// whose data has too few lines for a test split stops with one clear line (exit 2).
#[test]
fn a_pruning_run_on_too_little_token_data_stops_with_a_clear_message() {
    let model = dirs()[0].join("model.onnx");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("four.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(jsonl())
        .unwrap()
        .lines()
        .take(4)
        .map(String::from)
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = common::compress()
        .arg(&model)
        .args(["--method", "l0-hc", "--epochs", "1", "--data"])
        .arg(&data)
        .arg("-o")
        .arg(tmp.path().join("out.onnx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("4 examples; a run holds every 5th out"),
        "{err}"
    );
}
