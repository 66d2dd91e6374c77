//! What a BERT user meets at the command line with token models: `--input-shape` binding the
//! shared `sequence` dim once for every input, exports that keep the symbolic sequence length
//! (run at lengths other than the import's in tract and ONNX Runtime), and data checked
//! against the model's position table and inputs before anything runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use compress::ir::Tensor;
use compress::onnx::pb;
use compress::verify::run_tract;
use prost::Message;

/// The longest sequence of the keyword fixture: the length runs import the models at.
const SEQ: usize = 16;
/// The BERT fixtures' position table (`MAX_POS` of `converters/export_bert.py`).
const POSITIONS: usize = 64;

fn dirs() -> Vec<PathBuf> {
    common::bert_dirs()
}

fn bert() -> PathBuf {
    dirs()[0].join("model.onnx")
}

fn keywords() -> PathBuf {
    common::repo().join("fixtures/transformers/keywords.jsonl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Asserts a one-line usage or data error (exit 2) that says each of `says`.
fn assert_refused(out: &Output, says: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for s in says {
        assert!(err.contains(s), "want '{s}' in: {err}");
    }
}

fn inspect(model: &Path, shapes: &[&str]) -> Output {
    let mut cmd = common::compress();
    cmd.arg("inspect").arg(model).arg("--json");
    for s in shapes {
        cmd.args(["--input-shape", s]);
    }
    cmd.output().unwrap()
}

/// The dims of a model file's graph inputs, as written (`dim_param` or the size).
fn written_dims(bytes: &[u8]) -> Vec<Vec<String>> {
    let g = pb::ModelProto::decode(bytes).unwrap().graph.unwrap();
    g.input
        .iter()
        .map(|v| match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(pb::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => p.clone(),
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) => n.to_string(),
                    None => "?".into(),
                })
                .collect(),
            _ => panic!("input {} has no tensor type", v.name),
        })
        .collect()
}

/// `--input-shape sequence=N` sizes every input that has the dim, exactly as one value per
/// input does.
#[test]
fn a_dim_bound_by_name_sizes_every_input_that_has_it() {
    let by_name = inspect(&bert(), &["sequence=24"]);
    assert!(by_name.status.success(), "{}", stderr(&by_name));
    let per_input = inspect(
        &bert(),
        &[
            "input_ids=1x24",
            "attention_mask=1x24",
            "token_type_ids=1x24",
        ],
    );
    assert!(per_input.status.success(), "{}", stderr(&per_input));
    assert_eq!(by_name.stdout, per_input.stdout);
    let text = String::from_utf8_lossy(&by_name.stdout);
    assert_eq!(text.matches("sequence=24").count(), 3, "{text}");
    // The batch dim may be named too; it stays the batch. Both forms may be mixed if they agree.
    for extra in [
        ["batch=4", "sequence=24"],
        ["sequence=24", "input_ids=1x24"],
    ] {
        let out = inspect(&bert(), &extra);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        assert_eq!(out.stdout, per_input.stdout, "{extra:?}");
    }
    // Without a size, the message offers the binding by name.
    let out = common::compress()
        .arg("inspect")
        .arg(bert())
        .output()
        .unwrap();
    assert_refused(&out, &["--input-shape sequence=N"]);
}

/// Bad `--input-shape` values: one line naming the value, exit 2, never an allocation.
#[test]
fn bad_input_shapes_are_one_line_errors() {
    let cases: [(&[&str], &[&str]); 9] = [
        (
            &["seq=24"],
            &[
                "--input-shape seq=24",
                "no input 'seq'",
                "no symbolic dim of that name (dims: batch, sequence)",
            ],
        ),
        (&["sequence=1x24"], &["'sequence' is a symbolic dim"]),
        (&["sequence=24", "sequence=32"], &["bound twice"]),
        (
            &["sequence=24", "attention_mask=1x32"],
            &["--input-shape attention_mask=1x32", "binds to 24, not 32"],
        ),
        (&["sequence=0"], &["positive sizes"]),
        (&["sequence=-8"], &["positive sizes"]),
        (&["sequence=99999999999"], &["elements (the limit"]),
        (&["pixels=1x3x8x8"], &["no input 'pixels'"]),
        (
            &["sequence=100"],
            &["/position/Gather", "position table of 64 rows"],
        ),
    ];
    for (values, says) in cases {
        assert_refused(&inspect(&bert(), values), says);
    }
    // LeNet-5's only symbolic dim is its batch.
    assert_refused(
        &inspect(Path::new(&common::lenet5()), &["height=32"]),
        &["no symbolic dim of that name (dims: batch)"],
    );
}

/// A batch of 2 rows at `len` (ids inside the vocabulary, the bool mask fed as its declared
/// type): row 1 is row 0's first `len / 2` tokens followed by padding (mask 0).
fn batch(len: usize) -> Vec<Tensor> {
    let ids: Vec<i64> = (0..len as i64).map(|i| 7 + 37 * i % 990).collect();
    let half = len / 2;
    let mut all_ids = ids.clone();
    all_ids.extend((0..len).map(|i| if i < half { ids[i] } else { 0 }));
    let mut mask = vec![1; len];
    mask.extend((0..len).map(|i| i64::from(i < half)));
    let types: Vec<i64> = (0..2 * len).map(|i| i64::from(i % len >= half)).collect();
    vec![
        Tensor::i64(vec![2, len], all_ids),
        Tensor::i64(vec![2, len], mask),
        Tensor::i64(vec![2, len], types),
    ]
}

/// The same rows cut to `len` tokens: row 1's padding removed is row 1 alone at `len / 2`.
fn row_alone(inputs: &[Tensor], row: usize, len: usize) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| {
            let full = t.shape[1];
            let v = t.to_i64_vec()[row * full..row * full + len].to_vec();
            Tensor::i64(vec![1, len], v)
        })
        .collect()
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| common::max_diff(x, y))
        .fold(0.0, f32::max)
}

/// Runs `bytes` at `len` in tract and (with the `ort` feature) ONNX Runtime; the two agree.
fn run_both(bytes: &[u8], inputs: &[Tensor], what: &str) -> Vec<Tensor> {
    let tract = run_tract(bytes, inputs).unwrap_or_else(|e| panic!("{what}: tract: {e}"));
    #[cfg(feature = "ort")]
    {
        let ort = compress::verify::onnxruntime::run_ort(bytes, inputs)
            .unwrap_or_else(|e| panic!("{what}: ORT: {e}"));
        let d = max_diff(&tract, &ort);
        assert!(d <= 1e-4, "{what}: tract vs ORT {d}");
    }
    tract
}

/// A token run imports the model at the data's length (16) and trains there; its export keeps
/// the symbolic `sequence` dim and runs at 8 and 48 in tract and ONNX Runtime, where padding
/// changes nothing (as in the original: the mask hides it).
#[test]
fn token_run_exports_keep_the_symbolic_sequence_length() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.onnx"));
        let run = common::compress()
            .arg(dir.join("model.onnx"))
            .arg("--data")
            .arg(keywords())
            .arg("-o")
            .arg(&out)
            .args(["--method", "l0-hc", "--target-macs", "0.7", "--epochs", "3"])
            .args(["--lr", "3e-3", "--batch-size", "32", "--latency-runs", "2"])
            .output()
            .unwrap();
        let err = stderr(&run);
        assert!(run.status.success(), "{name}: {err}");
        assert!(
            err.contains("the export keeps the model's symbolic dims: at 1x17"),
            "{name}: {err}"
        );
        let bytes = std::fs::read(&out).unwrap();
        for dims in written_dims(&bytes) {
            assert_eq!(dims, ["batch", "sequence"], "{name}");
        }
        for len in [8, 48] {
            assert_ne!(len, SEQ);
            let inputs = batch(len);
            let both = run_both(&bytes, &inputs, &format!("{name} at {len}"));
            let alone = run_both(&bytes, &row_alone(&inputs, 1, len / 2), &name);
            let d = max_diff(&[row_of(&both[0], 1)], &alone);
            assert!(d <= 1e-4, "{name} at {len}: padded vs alone {d}");
        }
    }
}

fn row_of(t: &Tensor, row: usize) -> Tensor {
    let w = t.shape[1];
    Tensor::f32(
        vec![1, w],
        t.as_f32().unwrap()[row * w..(row + 1) * w].to_vec(),
    )
}

/// `convert` at `sequence=16` writes a file equal to the original at 8 and 48 tokens, in
/// tract and ONNX Runtime: the folded head-split Reshapes and the position embedding follow
/// the input's length.
#[test]
fn a_converted_token_model_equals_the_original_at_other_lengths() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let model = dir.join("model.onnx");
        let out = tmp.path().join(format!("{name}.onnx"));
        let run = common::compress()
            .arg("convert")
            .arg(&model)
            .args(["--input-shape", &format!("sequence={SEQ}"), "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let converted = std::fs::read(&out).unwrap();
        let original = std::fs::read(&model).unwrap();
        for len in [8, 48, POSITIONS] {
            let inputs = batch(len);
            let want = run_both(&original, &inputs, &format!("{name} original at {len}"));
            let got = run_both(&converted, &inputs, &format!("{name} converted at {len}"));
            let d = max_diff(&want, &got);
            assert!(d <= 1e-4, "{name} at {len}: {d}");
        }
    }
}

/// A line longer than the model's position table, or a `--seq-len` beyond it, is refused
/// before the import, naming the line, the length, the table's rows and `--seq-len`.
#[test]
fn lengths_are_checked_against_the_position_table() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(keywords())
        .unwrap()
        .lines()
        .take(20)
        .map(String::from)
        .collect();
    let ids = vec!["1"; POSITIONS + 1].join(", ");
    lines.insert(6, format!("{{\"input_ids\": [{ids}], \"label\": 0}}"));
    let data = tmp.path().join("long.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = tmp.path().join("o.onnx");
    let run = |args: &[&str], data: &Path| {
        common::compress()
            .arg(bert())
            .arg("--data")
            .arg(data)
            .arg("-o")
            .arg(&out)
            .args(["--epochs", "1"])
            .args(args)
            .output()
            .unwrap()
    };
    let long = data.display().to_string();
    assert_refused(
        &run(&[], &data),
        &[
            &format!("{long}:7"),
            "sequence length 65",
            "64 rows",
            "/position/Gather",
            "--seq-len",
        ],
    );
    for (seq, says) in [
        ("65", "--seq-len 65: the model's position table"),
        ("99999999999", "--seq-len 99999999999"),
        ("0", "--seq-len 0"),
    ] {
        assert_refused(&run(&["--seq-len", seq], &keywords()), &[says]);
    }
    // At the table's length exactly, the run is fine to start (the dry run imports it).
    let ok = run(&["--seq-len", "64", "--dry-run"], &keywords());
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!out.exists());
}

/// `bert_ts` without its `token_type_ids` input (the type ids read as input_ids x 0): a JSONL
/// line whose `token_type_ids` would be dropped is refused by FILE:LINE, all-zero ones (what a
/// tokenizer writes for one segment) are fine, and a line without `input_ids` is refused.
#[test]
fn jsonl_fields_must_match_the_model_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = pb::ModelProto::decode(&std::fs::read(bert()).unwrap()[..]).unwrap();
    let g = model.graph.as_mut().unwrap();
    g.input.retain(|v| v.name != "token_type_ids");
    g.initializer.push(pb::TensorProto {
        name: "zero_type".into(),
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: vec![0],
        ..Default::default()
    });
    g.node.insert(
        0,
        pb::NodeProto {
            input: vec!["input_ids".into(), "zero_type".into()],
            output: vec!["token_type_ids".into()],
            name: "types".into(),
            op_type: "Mul".into(),
            ..Default::default()
        },
    );
    let two_inputs = tmp.path().join("two_inputs.onnx");
    std::fs::write(&two_inputs, model.encode_to_vec()).unwrap();
    let eval = |data: &str| {
        let path = tmp.path().join("d.jsonl");
        std::fs::write(&path, data).unwrap();
        let out = common::compress()
            .arg("eval")
            .arg(&two_inputs)
            .arg("--data")
            .arg(&path)
            .output()
            .unwrap();
        (out, path.display().to_string())
    };
    let line = |types: &str| {
        format!("{{\"input_ids\": [1, 5, 9], \"token_type_ids\": [{types}], \"label\": 1}}\n")
    };
    let (out, _) = eval(&format!("{}{}", line("0, 0, 0"), line("0, 0, 0")));
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, path) = eval(&format!("{}{}", line("0, 0, 0"), line("0, 1, 1")));
    assert_refused(
        &out,
        &[
            &format!("{path}:2"),
            "token_type_ids holds 1",
            "no token_type_ids input (inputs: input_ids, attention_mask)",
        ],
    );
    let (out, path) = eval(&format!(
        "{}{{\"ids\": [1, 2], \"label\": 0}}\n",
        line("0, 0, 0")
    ));
    assert_refused(&out, &[&format!("{path}:2"), "input_ids"]);
}

/// A NaN in a weight is the same constant in both of the importer's passes: the BERT export
/// with a NaN in its word-embedding table imports (it used to be refused as "depends on the
/// batch size", since NaN != NaN).
#[test]
fn a_nan_weight_is_not_taken_for_a_batch_dependent_constant() {
    let mut model = pb::ModelProto::decode(&std::fs::read(bert()).unwrap()[..]).unwrap();
    let g = model.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "word.weight")
        .unwrap();
    let mut values: Vec<f32> = if w.raw_data.is_empty() {
        w.float_data.clone()
    } else {
        w.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    values[0] = f32::NAN;
    w.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.float_data.clear();
    let bytes = model.encode_to_vec();
    let sizes = compress::onnx::InputShapes::parse(&["sequence=16"]).unwrap();
    let imported = compress::onnx::import_sized(&bytes, "nan-bert", &sizes);
    assert!(imported.is_ok(), "{:?}", imported.err());
}
