//! Models with token inputs (BERT-style: `input_ids`, `attention_mask`, `token_type_ids`) fed
//! from a JSONL token file (`crate::data::jsonl`): the import at the data's sequence length,
//! the checks that the data fits the model, top-1 accuracy, and a run's train and test splits.

use std::path::Path;

use prost::Message;

use super::input_shape::InputShapeArgs;
use crate::data::TokenData;
use crate::data::jsonl::{self, TokenField, TokenSet};
use crate::error::{Error, Result};
use crate::eval::Accuracy;
use crate::exec::Network;
use crate::ir::{Dim, Graph, Op};
use crate::onnx::{self, InputShapes, pb};

mod positions;
use crate::verify::sizes::ExportDims;

/// A model imported at one sequence length, with the token field each input is fed from.
pub struct TokenModel {
    pub graph: Graph,
    pub seq_len: usize,
    pub fields: Vec<TokenField>,
    /// The model file's bytes and what its import resolved for this length only (for
    /// [`ExportDims::decide`]).
    pub bytes: Vec<u8>,
    pub size_dependent: Vec<String>,
}

impl TokenModel {
    /// `set` as this model's inputs read it.
    pub fn data(&self, set: TokenSet) -> TokenData {
        TokenData {
            set,
            fields: self.fields.clone(),
            seq_len: self.seq_len,
        }
    }
}

/// Whether `data` names token data (a `.jsonl` file, or a directory holding `train.jsonl`)
/// rather than an image dataset.
pub fn is_token_data(data: Option<&Path>) -> bool {
    data.is_some_and(|d| d.extension().is_some_and(|e| e == "jsonl") || split_dir(d))
}

/// Whether `dir` is a directory of token splits (`train.jsonl` beside `test.jsonl`).
fn split_dir(dir: &Path) -> bool {
    dir.join("train.jsonl").is_file()
}

/// The test split's file in a directory of token splits: `test.jsonl`, else `validation.jsonl`
/// or `val.jsonl` (the names data sets ship their held-out split under).
fn test_file(dir: &Path) -> Result<std::path::PathBuf> {
    ["test.jsonl", "validation.jsonl", "val.jsonl"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Data {
            path: dir.display().to_string(),
            reason: "train.jsonl has no test split beside it (test.jsonl, validation.jsonl or \
                     val.jsonl)"
                .into(),
        })
}

/// Every fifth example of a single token file is its test split (see
/// [`TokenSet::split_every`]).
pub const TEST_EVERY: usize = 5;

/// A run's (train, test) token sets: a directory's `train.jsonl` and `test.jsonl`, or one file
/// split, every [`TEST_EVERY`]-th example held out for testing.
pub fn read_splits(data: &Path) -> Result<(TokenSet, TokenSet)> {
    if data.is_dir() {
        let train = jsonl::read(&data.join("train.jsonl"))?;
        let test = jsonl::read(&test_file(data)?)?;
        return Ok((train, test));
    }
    let all = jsonl::read(data)?;
    if all.len() < TEST_EVERY {
        return Err(Error::Data {
            path: all.path.clone(),
            reason: format!(
                "{} examples; a run holds every {TEST_EVERY}th out for testing, so it needs at \
                 least {TEST_EVERY}",
                all.len()
            ),
        });
    }
    Ok(all.split_every(TEST_EVERY))
}

/// One split of token data for `eval`: a file is read whole, a directory of splits gives
/// `train.jsonl` or its test file.
pub fn read_split(data: &Path, split: crate::data::Split) -> Result<TokenSet> {
    if !data.is_dir() {
        return jsonl::read(data);
    }
    match split {
        crate::data::Split::Train => jsonl::read(&data.join("train.jsonl")),
        crate::data::Split::Test => jsonl::read(&test_file(data)?),
    }
}

/// The `--input-shape` values that size the model's token inputs at `len`: each symbolic
/// sequence dim (axis 1) bound by its name, an unnamed one through its input. Inputs whose
/// length is fixed are left as they are (the data is checked against it after the import).
fn sizes_at(graph: &pb::GraphProto, len: usize) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for v in data_inputs(graph) {
        let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let dims = t.shape.as_ref().map_or(&[][..], |s| s.dim.as_slice());
        let symbolic = |d: &pb::tensor_shape_proto::Dimension| match &d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n > 0 => None,
            Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => Some(p.clone()),
            _ => Some(String::new()),
        };
        let value = match dims.get(1).and_then(symbolic) {
            None => continue,
            Some(p) if p.is_empty() || p == v.name => format!("{}=1x{len}", v.name),
            Some(p) => format!("{p}={len}"),
        };
        if !values.contains(&value) {
            values.push(value);
        }
    }
    values
}

/// The model's data inputs (graph inputs that are not initializers).
fn data_inputs(g: &pb::GraphProto) -> impl Iterator<Item = &pb::ValueInfoProto> {
    g.input
        .iter()
        .filter(|v| !g.initializer.iter().any(|t| t.name == v.name))
}

/// The token field each input of `names` is fed from; an error names an input that is none.
fn fields_of(names: &[String], model: &Path) -> Result<Vec<TokenField>> {
    names
        .iter()
        .map(|n| {
            TokenField::for_input(n).ok_or_else(|| Error::Usage(format!(
                "{}: input '{n}' is not a token input (input_ids, attention_mask, token_type_ids); \
                 token data (JSONL) feeds only those",
                model.display()
            )))
        })
        .collect()
}

/// Imports `model` at the sequence length of `sets` (`seq_len`, else the longest sequence),
/// unless `--input-shape` sizes the inputs itself, and checks that the data fits it.
pub fn import(
    model: &Path,
    shapes: &InputShapeArgs,
    sets: &[&TokenSet],
    seq_len: Option<usize>,
) -> Result<TokenModel> {
    let bytes = onnx::read_model(model)?;
    let source = model.display().to_string();
    if seq_len == Some(0) {
        return Err(Error::Usage(
            "--seq-len 0: a sequence holds at least 1 token".into(),
        ));
    }
    let want = seq_len.unwrap_or_else(|| sets.iter().map(|s| s.longest()).max().unwrap_or(1));
    let sizes = if shapes.input_shape.is_empty() {
        // Decoded here only for the input dims and the position table, and dropped before the
        // import decodes the model again, so a large model is not held twice.
        let proto = pb::ModelProto::decode(bytes.as_slice())
            .ok()
            .and_then(|m| m.graph)
            .unwrap_or_default();
        if let Some(table) = positions::table(&proto) {
            table.check(sets, seq_len)?;
        }
        InputShapes::parse(&sizes_at(&proto, want))?
    } else {
        shapes.shapes()?
    };
    let from_data = shapes.input_shape.is_empty() && seq_len.is_none();
    let imported = onnx::import_sized(&bytes, &source, &sizes).map_err(|e| match e {
        // A node that cannot run at the data's longest line (a position table shorter than
        // it) is the data's length at fault, not the model.
        Error::Node {
            node,
            op_type,
            reason,
        } if from_data => Error::Node {
            node,
            op_type,
            reason: format!(
                "{reason} (imported at sequence length {want}, the data's longest line; \
                 shorten the lines or give --seq-len)"
            ),
        },
        e => e,
    })?;
    let graph = imported.graph;
    let names: Vec<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let fields = fields_of(&names, model)?;
    let mut lengths = graph.inputs.iter().map(|i| match i.dims.as_slice() {
        [Dim::Batch(_), Dim::Fixed(n) | Dim::Sized { size: n, .. }] => Ok(*n),
        _ => Err(Error::Usage(format!(
            "{source}: input '{}' has shape {}; token inputs are [batch, sequence]",
            i.name,
            crate::ir::Dims(&i.dims)
        ))),
    });
    let len = lengths.next().unwrap_or(Ok(want))?;
    if let Some(other) = lengths.find(|l| l.as_ref().map_or(true, |&l| l != len)) {
        other?;
        return Err(Error::Usage(format!(
            "{source}: the token inputs have different sequence lengths"
        )));
    }
    if seq_len.is_some_and(|s| s != len) {
        return Err(Error::Usage(format!(
            "--seq-len {want}: the model's sequence length is fixed at {len}"
        )));
    }
    let rows = embedding_rows(&graph, &fields);
    let unfed: Vec<TokenField> = [
        TokenField::InputIds,
        TokenField::AttentionMask,
        TokenField::TokenTypeIds,
    ]
    .into_iter()
    .filter(|f| !fields.contains(f))
    .collect();
    for set in sets {
        for &f in &unfed {
            set.check_fed(f, &names.join(", "))?;
        }
        set.check_fits(len)?;
        for &(field, rows) in &rows {
            set.check_ids_below(field, rows)?;
        }
    }
    Ok(TokenModel {
        graph,
        seq_len: len,
        fields,
        bytes,
        size_dependent: imported.size_dependent,
    })
}

/// For each token input read as the indices of an embedding Gather: its field and the
/// table's row count.
fn embedding_rows(graph: &Graph, fields: &[TokenField]) -> Vec<(TokenField, usize)> {
    let mut out = Vec::new();
    for n in &graph.nodes {
        let Op::Gather(g) = &n.op else { continue };
        let (Some(table), Some(idx)) = (graph.initializers.get(&n.inputs[0]), n.inputs.get(1))
        else {
            continue;
        };
        if let Some(k) = graph.inputs.iter().position(|i| &i.name == idx) {
            out.push((fields[k], table.shape[g.axis]));
        }
    }
    out
}

/// Top-1 accuracy of the model on every example of `set`, in batches of `batch_size`.
pub fn accuracy(
    net: &Network,
    model: &TokenModel,
    set: &TokenSet,
    batch_size: usize,
) -> Result<Accuracy> {
    crate::eval::token_accuracy(net, &model.data(set.clone()), batch_size)
}

/// What a pruning run on token data reads: the model at the data's sequence length, how its
/// exports write dims, and the train and test splits.
pub struct TokenRun {
    pub graph: Graph,
    pub original: Vec<u8>,
    pub dims: ExportDims,
    pub train: TokenData,
    pub test: TokenData,
}

/// Reads the splits of `data` and the model at their length, and checks that the data fits
/// it (ids inside the embedding tables, labels inside the outputs), naming `FILE:LINE`.
pub fn prepare_run(
    model: &Path,
    shapes: &InputShapeArgs,
    data: &Path,
    seq_len: Option<usize>,
) -> Result<TokenRun> {
    let (train, test) = read_splits(data)?;
    let m = import(model, shapes, &[&train, &test], seq_len)?;
    for set in [&train, &test] {
        check_labels(&m.graph, set)?;
    }
    let dims = ExportDims::decide(&m.graph, &m.bytes, &m.size_dependent);
    Ok(TokenRun {
        train: m.data(train),
        test: m.data(test),
        dims,
        graph: m.graph,
        original: m.bytes,
    })
}

/// Refuses a label the model has no output for (the loss would index past the logits).
fn check_labels(graph: &Graph, set: &TokenSet) -> Result<()> {
    let Some(classes) = graph
        .outputs
        .first()
        .map(|o| o.shape(1))
        .filter(|s| s.len() == 2)
        .map(|s| s[1])
        .filter(|&c| c > 0)
    else {
        return Ok(());
    };
    match set.examples.iter().find(|e| e.label as usize >= classes) {
        Some(e) => Err(Error::Data {
            path: format!("{}:{}", set.path, e.line),
            reason: format!(
                "label {}, but the model has {classes} outputs (labels 0..{})",
                e.label,
                classes - 1
            ),
        }),
        None => Ok(()),
    }
}
