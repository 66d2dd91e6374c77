//! What training and evaluation read: an image [`Dataset`] for a model with one image input, or
//! token sequences ([`TokenData`]) for a model with token inputs, fed one value per input.

use super::Dataset;
use super::jsonl::{TokenField, TokenSet};

/// A token set fed to a model's token inputs: the field each input reads, every sequence
/// padded to `seq_len` (the length the model was imported at).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenData {
    pub set: TokenSet,
    /// The field each graph input is fed from, in graph input order.
    pub fields: Vec<TokenField>,
    pub seq_len: usize,
}

impl TokenData {
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The examples `indices` as one `[batch, seq_len]` array per graph input, as f32 (the
    /// interpreter holds integer inputs as f32; ids are exact below 2^24), and their labels.
    pub fn read(&self, indices: &[usize]) -> (Vec<Vec<f32>>, Vec<u32>) {
        let b = self.set.batch(indices, self.seq_len);
        let inputs = self
            .fields
            .iter()
            .map(|&f| b.field(f).iter().map(|&x| x as f32).collect())
            .collect();
        (inputs, b.labels)
    }

    /// Where example `i` is in its file (`FILE:LINE`), for messages.
    pub fn place(&self, i: usize) -> String {
        format!("{}:{}", self.set.path, self.set.examples[i].line)
    }
}

/// A labelled set as training and evaluation read it (borrowed).
#[derive(Debug, Clone, Copy)]
pub enum Examples<'a> {
    Images(&'a Dataset),
    Tokens(&'a TokenData),
}

impl<'a> From<&'a Dataset> for Examples<'a> {
    fn from(d: &'a Dataset) -> Self {
        Examples::Images(d)
    }
}

impl<'a> From<&'a TokenData> for Examples<'a> {
    fn from(t: &'a TokenData) -> Self {
        Examples::Tokens(t)
    }
}

impl Examples<'_> {
    pub fn len(&self) -> usize {
        match self {
            Examples::Images(d) => d.len(),
            Examples::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of example `i`.
    pub fn label(&self, i: usize) -> u32 {
        match self {
            Examples::Images(d) => d.labels[i],
            Examples::Tokens(t) => t.set.examples[i].label,
        }
    }
}

/// An owned labelled set (a run's train or test split).
#[derive(Debug, Clone)]
pub enum ExampleSet {
    Images(Dataset),
    Tokens(TokenData),
}

impl ExampleSet {
    pub fn examples(&self) -> Examples<'_> {
        match self {
            ExampleSet::Images(d) => Examples::Images(d),
            ExampleSet::Tokens(t) => Examples::Tokens(t),
        }
    }

    pub fn len(&self) -> usize {
        self.examples().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> From<&'a ExampleSet> for Examples<'a> {
    fn from(s: &'a ExampleSet) -> Self {
        s.examples()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::jsonl::parse;

    #[test]
    fn token_batches_feed_each_input_its_field_in_graph_order() {
        let text = "{\"input_ids\": [5, 6], \"token_type_ids\": [0, 1], \"label\": 2}\n\
                    {\"input_ids\": [7], \"label\": 1}\n";
        let data = TokenData {
            set: parse(text, "t.jsonl").unwrap(),
            fields: vec![
                TokenField::TokenTypeIds,
                TokenField::InputIds,
                TokenField::AttentionMask,
            ],
            seq_len: 3,
        };
        let (inputs, labels) = data.read(&[1, 0]);
        assert_eq!(inputs[0], vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(inputs[1], vec![7.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
        assert_eq!(inputs[2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        assert_eq!(labels, vec![1, 2]);
        let examples = Examples::from(&data);
        assert_eq!((examples.len(), examples.label(0)), (2, 2));
        assert_eq!(data.place(1), "t.jsonl:2");
    }
}
