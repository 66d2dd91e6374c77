//! Token data for BERT-style models: a JSONL file, one labelled sequence per line:
//!
//! ```text
//! {"input_ids": [101, 2023, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "label": 1}
//! ```
//!
//! `attention_mask` (default all ones) and `token_type_ids` (default all zeros) are optional;
//! when given they have one entry per id. Other keys (e.g. the text) are ignored. Blank lines
//! are skipped. Every sequence is padded at the end to one fixed length (`--seq-len`, default
//! the longest sequence in the file) with id 0, mask 0 and type 0, so a model imported at that
//! length runs every batch; a longer sequence is an error, not truncated.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One line as written in the file.
#[derive(Deserialize)]
struct Line {
    input_ids: Vec<i64>,
    attention_mask: Option<Vec<i64>>,
    token_type_ids: Option<Vec<i64>>,
    label: i64,
}

/// One labelled sequence (mask and types filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenExample {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub label: u32,
    /// 1-based line in the file, for messages.
    pub line: usize,
}

/// A token data set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    /// The file it was read from, for messages.
    pub path: String,
    pub examples: Vec<TokenExample>,
}

/// A padded batch: `batch x seq_len` values per field, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub labels: Vec<u32>,
}

/// Whether `path` names a token data file (by its `.jsonl` extension).
pub fn looks_like(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl") && path.is_file()
}

/// Reads and checks a token data file.
pub fn read(path: &Path) -> Result<TokenSet> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, &path.display().to_string())
}

/// Parses token data; `source` names the file in errors (`file:line: reason`).
pub fn parse(text: &str, source: &str) -> Result<TokenSet> {
    let mut examples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let at = |reason: String| Error::Data {
            path: format!("{source}:{}", i + 1),
            reason,
        };
        let line: Line = serde_json::from_str(raw).map_err(|e| {
            at(format!(
                "not a token example ({e}); expected {{\"input_ids\": [...], \"label\": N}}"
            ))
        })?;
        examples.push(example(line, i + 1).map_err(at)?);
    }
    if examples.is_empty() {
        return Err(Error::Data {
            path: source.into(),
            reason: "no examples (one JSON object per line expected)".into(),
        });
    }
    Ok(TokenSet {
        path: source.into(),
        examples,
    })
}

/// Checks one line's fields and fills in the optional ones.
fn example(line: Line, number: usize) -> std::result::Result<TokenExample, String> {
    let n = line.input_ids.len();
    if n == 0 {
        return Err("input_ids is empty".into());
    }
    if let Some(id) = line.input_ids.iter().find(|&&id| id < 0) {
        return Err(format!("input_ids holds the negative id {id}"));
    }
    let filled = |field: Option<Vec<i64>>, name: &str, default: i64| match field {
        Some(v) if v.len() != n => {
            Err(format!("{name} has {} entries, input_ids has {n}", v.len()))
        }
        Some(v) => Ok(v),
        None => Ok(vec![default; n]),
    };
    let attention_mask = filled(line.attention_mask, "attention_mask", 1)?;
    if let Some(m) = attention_mask.iter().find(|&&m| m != 0 && m != 1) {
        return Err(format!("attention_mask holds {m}; it must be 0 or 1"));
    }
    let token_type_ids = filled(line.token_type_ids, "token_type_ids", 0)?;
    if let Some(t) = token_type_ids.iter().find(|&&t| t < 0) {
        return Err(format!("token_type_ids holds the negative id {t}"));
    }
    let label = u32::try_from(line.label)
        .map_err(|_| format!("label {} is not a class index", line.label))?;
    Ok(TokenExample {
        input_ids: line.input_ids,
        attention_mask,
        token_type_ids,
        label,
        line: number,
    })
}

impl TokenSet {
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Length of the longest sequence.
    pub fn longest(&self) -> usize {
        self.examples
            .iter()
            .map(|e| e.input_ids.len())
            .max()
            .unwrap_or(0)
    }

    pub fn labels(&self) -> Vec<u32> {
        self.examples.iter().map(|e| e.label).collect()
    }

    /// Splits one file into (train, test): every `every`-th example (the `every`-th, the
    /// `2 * every`-th, ...) is a test example. Fixed, not seeded, so that every run on a file
    /// is tested on the same examples; interleaved, so that a file sorted by label still gives
    /// a test split with every label.
    pub fn split_every(&self, every: usize) -> (TokenSet, TokenSet) {
        let every = every.max(2);
        let (test, train): (Vec<_>, Vec<_>) = self
            .examples
            .iter()
            .enumerate()
            .partition(|(i, _)| (i + 1) % every == 0);
        let keep = |part: Vec<(usize, &TokenExample)>| TokenSet {
            path: self.path.clone(),
            examples: part.into_iter().map(|(_, e)| e.clone()).collect(),
        };
        (keep(train), keep(test))
    }

    /// Checks that every sequence fits `seq_len` tokens, naming the first line that does not.
    pub fn check_fits(&self, seq_len: usize) -> Result<()> {
        match self.examples.iter().find(|e| e.input_ids.len() > seq_len) {
            Some(e) => Err(Error::Data {
                path: format!("{}:{}", self.path, e.line),
                reason: format!(
                    "{} tokens, more than the sequence length {seq_len}",
                    e.input_ids.len()
                ),
            }),
            None => Ok(()),
        }
    }

    /// Checks that every id of `field` is below `rows` (an embedding table's size).
    pub fn check_ids_below(&self, field: TokenField, rows: usize) -> Result<()> {
        for e in &self.examples {
            if let Some(id) = e.field(field).iter().find(|&&id| id >= rows as i64) {
                return Err(Error::Data {
                    path: format!("{}:{}", self.path, e.line),
                    reason: format!(
                        "{} holds {id}, outside the model's embedding table of {rows} rows",
                        field.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses a line whose `field` holds other than that field's default when the model has
    /// no input for it (`inputs` names those it has): the values would be dropped unread.
    pub fn check_fed(&self, field: TokenField, inputs: &str) -> Result<()> {
        for e in &self.examples {
            let values = e.field(field);
            if let Some(v) = values.iter().find(|&&v| Some(v) != field.default()) {
                return Err(Error::Data {
                    path: format!("{}:{}", self.path, e.line),
                    reason: format!(
                        "{} holds {v}, but the model has no {} input (inputs: {inputs}), so it \
                         would be dropped; remove the field or use a model that reads it",
                        field.name(),
                        field.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The examples at `indices`, padded at the end to `seq_len` (which they must fit, see
    /// [`TokenSet::check_fits`]).
    pub fn batch(&self, indices: &[usize], seq_len: usize) -> TokenBatch {
        let size = indices.len() * seq_len;
        let mut b = TokenBatch {
            batch: indices.len(),
            seq_len,
            input_ids: Vec::with_capacity(size),
            attention_mask: Vec::with_capacity(size),
            token_type_ids: Vec::with_capacity(size),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            let e = &self.examples[i];
            let pad = seq_len.saturating_sub(e.input_ids.len());
            for (out, field) in [
                (&mut b.input_ids, &e.input_ids),
                (&mut b.attention_mask, &e.attention_mask),
                (&mut b.token_type_ids, &e.token_type_ids),
            ] {
                out.extend(field.iter().take(seq_len));
                out.extend(std::iter::repeat_n(0, pad));
            }
            b.labels.push(e.label);
        }
        b
    }
}

/// The per-token fields of an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl TokenField {
    pub fn name(self) -> &'static str {
        match self {
            TokenField::InputIds => "input_ids",
            TokenField::AttentionMask => "attention_mask",
            TokenField::TokenTypeIds => "token_type_ids",
        }
    }

    /// The value a line without the field is filled with (`None`: the field is required).
    pub fn default(self) -> Option<i64> {
        match self {
            TokenField::InputIds => None,
            TokenField::AttentionMask => Some(1),
            TokenField::TokenTypeIds => Some(0),
        }
    }

    /// The field a model input is fed from, by the input's name (Hugging Face's names, or
    /// names containing "mask" / "type"); `None` for an input that is not a token field.
    pub fn for_input(name: &str) -> Option<TokenField> {
        let lower = name.to_ascii_lowercase();
        if lower.contains("mask") {
            Some(TokenField::AttentionMask)
        } else if lower.contains("type") || lower.contains("segment") {
            Some(TokenField::TokenTypeIds)
        } else if lower.contains("ids") || lower.contains("token") || lower.contains("input") {
            Some(TokenField::InputIds)
        } else {
            None
        }
    }
}

impl TokenExample {
    pub fn field(&self, f: TokenField) -> &[i64] {
        match f {
            TokenField::InputIds => &self.input_ids,
            TokenField::AttentionMask => &self.attention_mask,
            TokenField::TokenTypeIds => &self.token_type_ids,
        }
    }
}

impl TokenBatch {
    pub fn field(&self, f: TokenField) -> &[i64] {
        match f {
            TokenField::InputIds => &self.input_ids,
            TokenField::AttentionMask => &self.attention_mask,
            TokenField::TokenTypeIds => &self.token_type_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "t.jsonl").unwrap_err().to_string()
    }

    #[test]
    fn optional_fields_default_and_batches_pad_to_the_length() {
        let text = "{\"input_ids\": [5, 6, 7], \"label\": 2}\n\n\
                    {\"input_ids\": [8], \"attention_mask\": [1], \"token_type_ids\": [1], \
                    \"label\": 0, \"text\": \"ignored\"}\n";
        let set = parse(text, "t.jsonl").unwrap();
        assert_eq!((set.len(), set.longest()), (2, 3));
        assert_eq!(set.examples[0].attention_mask, vec![1, 1, 1]);
        assert_eq!(set.examples[0].token_type_ids, vec![0, 0, 0]);
        assert_eq!(set.examples[1].line, 3);
        let b = set.batch(&[1, 0], 4);
        assert_eq!(b.input_ids, vec![8, 0, 0, 0, 5, 6, 7, 0]);
        assert_eq!(b.attention_mask, vec![1, 0, 0, 0, 1, 1, 1, 0]);
        assert_eq!(b.token_type_ids, vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b.labels, vec![0, 2]);
        let fits = set.check_fits(2).unwrap_err().to_string();
        assert_eq!(fits, "t.jsonl:1: 3 tokens, more than the sequence length 2");
        let rows = set
            .check_ids_below(TokenField::InputIds, 8)
            .unwrap_err()
            .to_string();
        assert!(rows.starts_with("t.jsonl:3: input_ids holds 8"), "{rows}");
    }

    #[test]
    fn one_file_splits_every_fifth_example_into_the_test_split() {
        let text: String = (0..12)
            .map(|i| format!("{{\"input_ids\": [{}], \"label\": {}}}\n", i + 1, i % 3))
            .collect();
        let set = parse(&text, "t.jsonl").unwrap();
        let (train, test) = set.split_every(5);
        let ids =
            |s: &TokenSet| -> Vec<i64> { s.examples.iter().map(|e| e.input_ids[0]).collect() };
        assert_eq!(ids(&test), vec![5, 10]);
        assert_eq!(ids(&train), vec![1, 2, 3, 4, 6, 7, 8, 9, 11, 12]);
        assert_eq!(test.examples[1].line, 10, "lines are kept for messages");
    }

    #[test]
    fn malformed_lines_are_named_by_line() {
        let ok = "{\"input_ids\": [1], \"label\": 0}\n";
        let cases = [
            ("not json", "t.jsonl:2: not a token example"),
            (
                "{\"label\": 1}",
                "t.jsonl:2: not a token example (missing field `input_ids`",
            ),
            (
                "{\"input_ids\": [], \"label\": 1}",
                "t.jsonl:2: input_ids is empty",
            ),
            (
                "{\"input_ids\": [1, -2], \"label\": 1}",
                "t.jsonl:2: input_ids holds",
            ),
            (
                "{\"input_ids\": [1, 2], \"attention_mask\": [1], \"label\": 1}",
                "t.jsonl:2: attention_mask has 1 entries, input_ids has 2",
            ),
            (
                "{\"input_ids\": [1], \"attention_mask\": [2], \"label\": 1}",
                "t.jsonl:2: attention_mask holds 2",
            ),
            ("{\"input_ids\": [1], \"label\": -1}", "t.jsonl:2: label -1"),
            (
                "{\"input_ids\": [1.5], \"label\": 1}",
                "t.jsonl:2: not a token example",
            ),
        ];
        for (line, want) in cases {
            let got = err(&format!("{ok}{line}\n"));
            assert!(got.starts_with(want), "{line}: {got}");
            assert!(!got.contains('\n'), "{got}");
        }
        assert!(err("\n\n").contains("no examples"));
    }

    #[test]
    fn inputs_are_matched_to_fields_by_name() {
        assert_eq!(
            TokenField::for_input("input_ids"),
            Some(TokenField::InputIds)
        );
        assert_eq!(
            TokenField::for_input("attention_mask"),
            Some(TokenField::AttentionMask)
        );
        assert_eq!(
            TokenField::for_input("token_type_ids"),
            Some(TokenField::TokenTypeIds)
        );
        assert_eq!(TokenField::for_input("pixel_values"), None);
    }
}
