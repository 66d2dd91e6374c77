//! Human and JSON renderings of what `inspect`, `eval` and `prune` find, and the run report
//! (the typed JSON contract: [`run::RunReport`], its schema, `check` and the plots).

pub mod check;
pub mod plot;
pub mod prune;
pub mod run;
pub mod schema;
pub mod settings;
pub mod sweep;

use serde::Serialize;

use crate::error::Result;
use crate::groups::ChannelGroup;
use crate::ir::{Dim, Graph, Op};

pub fn dims_string(dims: &[Dim]) -> String {
    crate::ir::Dims(dims).to_string()
}

#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub op: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Output shape at batch 1.
    pub shape: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

#[derive(Debug, Serialize)]
pub struct IoRow {
    pub name: String,
    pub shape: String,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub opset: i64,
    pub producer: String,
    pub inputs: Vec<IoRow>,
    pub outputs: Vec<IoRow>,
    /// Learnable parameters (PyTorch's count: BN running statistics excluded).
    pub params: u64,
    /// Multiply-accumulates of Conv, Gemm and MatMul at batch 1; FLOPs = 2 x MACs.
    pub macs: u64,
    pub nodes: Vec<NodeRow>,
    pub groups: Vec<ChannelGroup>,
}

pub fn inspect(graph: &Graph) -> Result<Inspection> {
    let cost = crate::ir::cost::graph_cost(graph, 1)?;
    let nodes = graph
        .nodes
        .iter()
        .zip(&cost.per_node)
        .zip(&cost.out_shapes)
        .map(|((n, c), shape)| NodeRow {
            name: n.name.clone(),
            op: n.op.onnx_type().to_string(),
            inputs: n.inputs.clone(),
            outputs: n.outputs.clone(),
            shape: shape.clone(),
            params: c.params,
            macs: c.macs,
        })
        .collect();
    let io = |v: &[crate::ir::ValueInfo]| {
        v.iter()
            .map(|i| IoRow {
                name: i.name.clone(),
                shape: dims_string(&i.dims),
            })
            .collect()
    };
    Ok(Inspection {
        opset: graph.meta.opset(),
        producer: format!(
            "{} {}",
            graph.meta.producer_name, graph.meta.producer_version
        )
        .trim()
        .to_string(),
        inputs: io(&graph.inputs),
        outputs: io(&graph.outputs),
        params: cost.params,
        macs: cost.macs,
        nodes,
        groups: crate::groups::analyse(graph)?,
    })
}

/// Thousands separators for readability in the text report.
pub fn human(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn render_inspection(r: &Inspection) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "opset {}, producer {}", r.opset, r.producer);
    for i in &r.inputs {
        let _ = writeln!(s, "input  {} {}", i.name, i.shape);
    }
    for o in &r.outputs {
        let _ = writeln!(s, "output {} {}", o.name, o.shape);
    }
    let name_w = r
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let _ = writeln!(
        s,
        "\n{:<name_w$}  {:<18} {:<20} {:>12} {:>14}",
        "node", "op", "output shape", "params", "MACs"
    );
    for n in &r.nodes {
        let shape = format!("{:?}", n.shape);
        let _ = writeln!(
            s,
            "{:<name_w$}  {:<18} {:<20} {:>12} {:>14}",
            n.name,
            n.op,
            shape,
            human(n.params),
            human(n.macs)
        );
    }
    let _ = writeln!(
        s,
        "\ntotal: {} params, {} MACs at batch 1 ({} FLOPs = 2 x MACs), {} nodes",
        human(r.params),
        human(r.macs),
        human(2 * r.macs),
        r.nodes.len()
    );
    let prunable = r.groups.iter().filter(|g| g.prunable).count();
    let _ = writeln!(
        s,
        "\nchannel groups: {} ({} prunable)",
        r.groups.len(),
        prunable
    );
    for g in &r.groups {
        let status = match &g.reason {
            None => "prunable".to_string(),
            Some(why) => format!("fixed: {why}"),
        };
        let _ = writeln!(
            s,
            "  #{:<3} width {:<5} from {}  -> read by {}  [{}]",
            g.id,
            g.width,
            g.producers.join(", "),
            if g.consumers.is_empty() {
                "-".to_string()
            } else {
                g.consumers.join(", ")
            },
            status
        );
        if !g.normalised_by.is_empty() {
            let _ = writeln!(s, "       normalised by {}", g.normalised_by.join(", "));
        }
    }
    s
}

/// Op types a graph uses, sorted, for cards and summaries.
pub fn op_types(graph: &Graph) -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = graph.nodes.iter().map(|n| Op::onnx_type(&n.op)).collect();
    ops.sort();
    ops.dedup();
    ops
}
