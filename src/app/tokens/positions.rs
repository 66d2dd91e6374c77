//! A token model's position table (`crate::onnx::positions`) bounds its sequence length: a
//! sequence longer than its row count has no position embedding, so the data's lengths are
//! checked against it before the import, which would otherwise fail inside that node.

use crate::data::jsonl::TokenSet;
use crate::error::{Error, Result};
use crate::onnx::pb;

/// The smallest position table of a model: its Gather node and row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionTable {
    pub node: String,
    pub rows: usize,
}

/// The model's smallest position table, if it has one.
pub fn table(g: &pb::GraphProto) -> Option<PositionTable> {
    crate::onnx::positions::gathers(g)
        .into_iter()
        .filter(|p| p.rows() > 0)
        .min_by_key(|p| p.rows())
        .map(|p| PositionTable {
            rows: p.rows(),
            node: p.node,
        })
}

impl PositionTable {
    /// Refuses a `--seq-len`, or else a line of `sets`, longer than the table.
    pub fn check(&self, sets: &[&TokenSet], seq_len: Option<usize>) -> Result<()> {
        let rows = self.rows;
        if let Some(s) = seq_len.filter(|&s| s > rows) {
            return Err(Error::Usage(format!(
                "--seq-len {s}: the model's position table (node '{}') has {rows} rows, so a \
                 sequence holds at most {rows} tokens",
                self.node
            )));
        }
        if seq_len.is_some() {
            // Lines longer than --seq-len are refused after the import, naming the option.
            return Ok(());
        }
        for set in sets {
            if let Some(e) = set.examples.iter().find(|e| e.input_ids.len() > rows) {
                return Err(Error::Data {
                    path: format!("{}:{}", set.path, e.line),
                    reason: format!(
                        "sequence length {} is more than the model's position table holds \
                         ({rows} rows, node '{}'); lines are padded to the longest, not cut: \
                         shorten the line, or give --seq-len N (at most {rows}) with every \
                         line within N",
                        e.input_ids.len(),
                        self.node
                    ),
                });
            }
        }
        Ok(())
    }
}
