//! Top-1 accuracy of a graph on a labelled image dataset or on token data.

use serde::Serialize;

use crate::data::loader::{Loader, Prefetch};
use crate::data::{Dataset, Examples, TokenData};
use crate::error::{Error, Result};
use crate::exec::{Network, Val};
use crate::ir::Dim;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accuracy {
    /// Fraction in [0, 1].
    pub accuracy: f64,
    pub correct: usize,
    pub samples: usize,
}

/// Shape of one sample as the model wants it, or an error saying why the data does not fit.
pub fn sample_shape(net: &Network, data: &Dataset, data_name: &str) -> Result<Vec<usize>> {
    let g = net.graph();
    let input = &g.inputs[0];
    if g.inputs.len() != 1 {
        return Err(Error::Usage(format!(
            "the model has {} inputs; eval needs exactly one",
            g.inputs.len()
        )));
    }
    if !matches!(input.dims.first(), Some(Dim::Batch(_))) {
        return Err(Error::Usage(format!(
            "input '{}' has no batch dimension (shape {}); eval needs a symbolic first dim",
            input.name,
            crate::ir::Dims(&input.dims)
        )));
    }
    let want: Vec<usize> = input.shape(1)[1..].to_vec();
    let have = data.sample_len();
    // Accept (C, H, W) with the data's own channel count, (H, W) for one channel, and flat
    // (C*H*W) inputs; anything else does not fit.
    let fits = want == [data.channels, data.height, data.width]
        || (data.channels == 1 && want == [data.height, data.width])
        || want == [have];
    if !fits {
        return Err(Error::Data {
            path: data_name.to_string(),
            reason: format!(
                "samples are {}x{}x{} (CxHxW) images, but model input '{}' expects {} per sample",
                data.channels,
                data.height,
                data.width,
                input.name,
                crate::ir::Dims(&input.dims[1..])
            ),
        });
    }
    Ok(want)
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// Runs the whole dataset through the network in batches and counts top-1 hits.
pub fn accuracy(
    net: &Network,
    data: &Dataset,
    data_name: &str,
    batch_size: usize,
) -> Result<Accuracy> {
    let sample = sample_shape(net, data, data_name)?;
    let mut correct = 0;
    let batch_size = batch_size.max(1);
    // Batches are read (decoded, normalised) ahead on worker threads while the network runs.
    let batches = Loader::new(
        data,
        (0..data.len()).collect(),
        batch_size,
        Prefetch::for_data(data),
    );
    for (start, batch) in (0..data.len()).step_by(batch_size).zip(batches) {
        let end = (start + batch_size).min(data.len());
        let mut shape = vec![end - start];
        shape.extend(&sample);
        let x = Val::from_f32(batch?, &shape, net.device());
        let logits = net.forward(vec![x])?.remove(0).to_host();
        if logits.shape.len() != 2 {
            return Err(Error::Usage(format!(
                "eval needs a (batch, classes) output; output '{}' has shape {:?}",
                net.graph().outputs[0].name,
                logits.shape
            )));
        }
        let classes = logits.shape[1];
        let values = logits.to_f32_vec();
        for (i, row) in values.chunks(classes).enumerate() {
            let label = data.labels[start + i] as usize;
            // A label the model has no output for is a data error, not a miss: counting it as
            // wrong would report an accuracy for a dataset that does not fit the model.
            if label >= classes {
                return Err(Error::Data {
                    path: data_name.to_string(),
                    reason: format!(
                        "sample {} has label {label}, but the model has {classes} outputs \
                         (labels 0..{})",
                        start + i,
                        classes - 1
                    ),
                });
            }
            if argmax(row) == label {
                correct += 1;
            }
        }
    }
    let samples = data.len();
    Ok(Accuracy {
        accuracy: if samples == 0 {
            0.0
        } else {
            correct as f64 / samples as f64
        },
        correct,
        samples,
    })
}

/// Checks that `data` feeds `net`: one token field per graph input, each input
/// `[batch, data.seq_len]`.
pub fn check_token_inputs(net: &Network, data: &TokenData) -> Result<()> {
    let g = net.graph();
    if g.inputs.len() != data.fields.len() {
        return Err(Error::Usage(format!(
            "the model has {} inputs; the token data feeds {}",
            g.inputs.len(),
            data.fields.len()
        )));
    }
    for input in &g.inputs {
        let fits = matches!(input.dims.first(), Some(Dim::Batch(_)))
            && input.dims.len() == 2
            && input.shape(1)[1] == data.seq_len;
        if !fits {
            return Err(Error::Usage(format!(
                "input '{}' has shape {}; token data of {} tokens feeds [batch, {}] inputs",
                input.name,
                crate::ir::Dims(&input.dims),
                data.seq_len,
                data.seq_len
            )));
        }
    }
    Ok(())
}

/// Top-1 accuracy of `net` on every example of token data, in batches of `batch_size`; a
/// label without an output names its `FILE:LINE`.
pub fn token_accuracy(net: &Network, data: &TokenData, batch_size: usize) -> Result<Accuracy> {
    check_token_inputs(net, data)?;
    let mut correct = 0;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(batch_size.max(1)) {
        let (values, labels) = data.read(chunk);
        let inputs = values
            .into_iter()
            .map(|v| Val::from_f32(v, &[chunk.len(), data.seq_len], net.device()))
            .collect();
        let logits = net.forward(inputs)?.remove(0).to_host();
        let [_, classes] = logits.shape[..] else {
            return Err(Error::Usage(format!(
                "eval needs a (batch, classes) output; output '{}' has shape {:?}",
                net.graph().outputs[0].name,
                logits.shape
            )));
        };
        if let Some((&i, l)) = chunk
            .iter()
            .zip(&labels)
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(Error::Data {
                path: data.place(i),
                reason: format!("label {l} but the model has {classes} outputs"),
            });
        }
        let values = logits.to_f32_vec();
        correct += values
            .chunks(classes)
            .zip(&labels)
            .filter(|&(row, &label)| argmax(row) == label as usize)
            .count();
    }
    let samples = data.len();
    Ok(Accuracy {
        accuracy: correct as f64 / samples.max(1) as f64,
        correct,
        samples,
    })
}

/// Top-1 accuracy on images or token data.
pub fn accuracy_on(
    net: &Network,
    data: Examples<'_>,
    data_name: &str,
    batch_size: usize,
) -> Result<Accuracy> {
    match data {
        Examples::Images(d) => accuracy(net, d, data_name, batch_size),
        Examples::Tokens(t) => token_accuracy(net, t, batch_size),
    }
}
