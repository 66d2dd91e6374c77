//! Position tables: embedding Gathers whose indices are computed from an input's shape
//! (`arange(seq)`, or a slice of a position-id buffer by the sequence length), not read from
//! the data. They bound the sequence length a model runs at, and the import folds them to
//! the rows of the length it was sized at.

use std::collections::HashSet;

use super::pb;

/// A Gather from a table (an initializer of rank 2 or more) at indices computed from shapes.
#[derive(Debug, Clone)]
pub struct PositionGather<'a> {
    pub node: String,
    pub table: &'a pb::TensorProto,
    pub axis: usize,
}

impl PositionGather<'_> {
    /// The table's row count along the gathered axis.
    pub fn rows(&self) -> usize {
        self.table
            .dims
            .get(self.axis)
            .map_or(0, |&r| r.max(0) as usize)
    }
}

/// Every position Gather of `g`, in node order.
pub fn gathers(g: &pb::GraphProto) -> Vec<PositionGather<'_>> {
    let mut constant: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut from_shape: HashSet<&str> = HashSet::new();
    let mut found = Vec::new();
    for n in &g.node {
        let ins: Vec<&str> = n
            .input
            .iter()
            .map(String::as_str)
            .filter(|i| !i.is_empty())
            .collect();
        let shaped = ins.iter().any(|i| from_shape.contains(i));
        let all_known = ins
            .iter()
            .all(|i| constant.contains(i) || from_shape.contains(i));
        if n.op_type == "Gather"
            && let (Some(data), Some(idx)) = (ins.first(), ins.get(1))
            && from_shape.contains(idx)
            && let Some(table) = g
                .initializer
                .iter()
                .find(|t| t.name == *data && t.dims.len() >= 2)
            && let Some(axis) = gather_axis(n, table.dims.len())
        {
            found.push(PositionGather {
                node: if n.name.is_empty() {
                    n.output.first().cloned().unwrap_or_default()
                } else {
                    n.name.clone()
                },
                table,
                axis,
            });
        }
        let outs = n.output.iter().map(String::as_str);
        if n.op_type == "Shape" || n.op_type == "Size" || (shaped && all_known) {
            from_shape.extend(outs);
        } else if n.op_type == "Constant" || (all_known && !ins.is_empty()) {
            constant.extend(outs);
        }
    }
    found
}

fn gather_axis(n: &pb::NodeProto, rank: usize) -> Option<usize> {
    let axis = n
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .map_or(0, |a| a.i);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(axis).ok().filter(|&a| a < rank)
}
