//! Models with token inputs (BERT-style: `input_ids`, `attention_mask`, `token_type_ids`) fed
//! from a JSONL token file (`crate::data::jsonl`): the import at the data's sequence length,
//! the checks that the data fits the model, and top-1 accuracy.

use std::path::Path;

use prost::Message;

use super::input_shape::InputShapeArgs;
use crate::data::jsonl::{TokenField, TokenSet};
use crate::error::{Error, Result};
use crate::eval::{Accuracy, argmax};
use crate::exec::{Network, Val};
use crate::ir::{Dim, Graph, Op};
use crate::onnx::{self, InputShapes, pb};

/// A model imported at one sequence length, with the token field each input is fed from.
pub struct TokenModel {
    pub graph: Graph,
    pub seq_len: usize,
    pub fields: Vec<TokenField>,
}

/// Whether `data` names token data (a `.jsonl` file) rather than an image dataset.
pub fn is_token_data(data: Option<&Path>) -> bool {
    data.is_some_and(|d| d.extension().is_some_and(|e| e == "jsonl"))
}

/// The model's data inputs (graph inputs that are not initializers), by name.
fn input_names(bytes: &[u8]) -> Vec<String> {
    let Ok(model) = pb::ModelProto::decode(bytes) else {
        return Vec::new();
    };
    let Some(g) = model.graph else {
        return Vec::new();
    };
    g.input
        .iter()
        .filter(|v| !g.initializer.iter().any(|t| t.name == v.name))
        .map(|v| v.name.clone())
        .collect()
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

/// Imports `model` at the sequence length of `set` (`seq_len`, else the longest sequence),
/// unless `--input-shape` sizes the inputs itself, and checks that the data fits it.
pub fn import(
    model: &Path,
    shapes: &InputShapeArgs,
    set: &TokenSet,
    seq_len: Option<usize>,
) -> Result<TokenModel> {
    let bytes = onnx::read_model(model)?;
    let source = model.display().to_string();
    let names = input_names(&bytes);
    let want = seq_len.unwrap_or_else(|| set.longest());
    let sizes = if shapes.input_shape.is_empty() {
        let given: Vec<String> = names.iter().map(|n| format!("{n}=1x{want}")).collect();
        InputShapes::parse(&given)?
    } else {
        shapes.shapes()?
    };
    let graph = onnx::import_sized(&bytes, &source, &sizes)?.graph;
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
    set.check_fits(len)?;
    for (field, rows) in embedding_rows(&graph, &fields) {
        set.check_ids_below(field, rows)?;
    }
    Ok(TokenModel {
        graph,
        seq_len: len,
        fields,
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
    let mut correct = 0;
    let all: Vec<usize> = (0..set.len()).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let b = set.batch(chunk, model.seq_len);
        let inputs = model
            .fields
            .iter()
            .map(|&f| {
                let v = b.field(f).iter().map(|&x| x as f32).collect();
                Val::from_f32(v, &[b.batch, b.seq_len], net.device())
            })
            .collect();
        let logits = net.forward(inputs)?.remove(0).to_host();
        let [rows, classes] = logits.shape[..] else {
            return Err(Error::Usage(format!(
                "eval needs a (batch, classes) output; output '{}' has shape {:?}",
                net.graph().outputs[0].name,
                logits.shape
            )));
        };
        if let Some((&i, _)) = chunk
            .iter()
            .zip(&b.labels)
            .find(|&(_, &l)| l as usize >= classes)
        {
            let e = &set.examples[i];
            return Err(Error::Data {
                path: format!("{}:{}", set.path, e.line),
                reason: format!("label {} but the model has {classes} outputs", e.label),
            });
        }
        let values = logits.to_f32_vec();
        for (row, &label) in values.chunks(classes).zip(&b.labels).take(rows) {
            if argmax(row) == label as usize {
                correct += 1;
            }
        }
    }
    let samples = set.len();
    Ok(Accuracy {
        accuracy: correct as f64 / samples.max(1) as f64,
        correct,
        samples,
    })
}

/// `compress MODEL --data FILE.jsonl`: the training run does not read token data yet (its
/// pipeline feeds one image input). Reads the data and the model as `eval` does, so that bad
/// data is named first, then says in one line why the run stops: no prunable channel group
/// (with the first group's reason), or training on token data missing.
pub fn refuse_run(model: &Path, shapes: &InputShapeArgs, data: &Path) -> Result<()> {
    let set = crate::data::jsonl::read(data)?;
    let imported = import(model, shapes, &set, None)?;
    let groups = crate::groups::analyse(&imported.graph)?;
    if !groups.iter().any(|g| g.prunable) {
        let why = groups
            .iter()
            .find_map(|g| g.reason.clone())
            .map(|r| format!(" (e.g. {r})"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "{}: no prunable channel group among {}{why}; nothing for --method to prune",
            model.display(),
            groups.len()
        )));
    }
    Err(Error::Usage(format!(
        "{}: training on token data ({}) is not supported yet; `compress eval` reads it",
        model.display(),
        data.display()
    )))
}
