//! Typed access to a NodeProto's attributes, with errors naming the node.

use super::pb::{AttributeProto, NodeProto, TensorProto};
use crate::error::{Error, Result};

pub struct Attrs<'a> {
    node: &'a NodeProto,
    name: &'a str,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto, name: &'a str) -> Self {
        Attrs { node, name }
    }

    fn get(&self, key: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == key)
    }

    pub fn err(&self, reason: impl Into<String>) -> Error {
        Error::node(self.name, &self.node.op_type, reason)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn int(&self, key: &str, default: i64) -> i64 {
        self.get(key).map(|a| a.i).unwrap_or(default)
    }

    pub fn float(&self, key: &str, default: f32) -> f32 {
        self.get(key).map(|a| a.f).unwrap_or(default)
    }

    pub fn ints(&self, key: &str) -> Option<Vec<i64>> {
        self.get(key).map(|a| a.ints.clone())
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }

    pub fn tensor(&self, key: &str) -> Option<&'a TensorProto> {
        self.get(key).and_then(|a| a.t.as_ref())
    }

    /// Non-negative integer list attribute (kernel sizes, strides...).
    pub fn usizes(&self, key: &str) -> Result<Option<Vec<usize>>> {
        match self.ints(key) {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x)
                        .map_err(|_| self.err(format!("{key} has negative value {x}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }
}
