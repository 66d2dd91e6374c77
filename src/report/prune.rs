//! The pruning report: what changed, measured on the exported files.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ir::{Graph, cost::graph_cost};
use crate::prune::Pruned;
pub use crate::verify::Latency;
use crate::verify::Verification;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub params: u64,
    pub macs: u64,
    pub file_bytes: usize,
    /// Median milliseconds per batch in tract; absent when not measured.
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupWidth {
    pub id: usize,
    pub producers: Vec<String>,
    pub width_before: usize,
    pub width_after: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LayerWidth {
    pub name: String,
    pub op: String,
    /// Output channels / neurons.
    pub width_before: usize,
    pub width_after: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub schema_version: u32,
    pub model: String,
    pub output: String,
    pub dense: ModelFigures,
    pub pruned: ModelFigures,
    /// pruned MACs / dense MACs.
    pub macs_ratio: f64,
    /// Widths of the prunable groups in graph order, e.g. "20-50-500" -> "9-18-25".
    pub widths_before: String,
    pub widths_after: String,
    pub groups: Vec<GroupWidth>,
    pub layers: Vec<LayerWidth>,
    pub verification: Verification,
    pub notes: Vec<String>,
}

/// Output widths (axis 1 at batch 1) of every Conv/Gemm/MatMul, by node name.
fn layer_widths(g: &Graph) -> Result<Vec<(String, String, usize)>> {
    let shapes = g.infer_shapes(1)?;
    Ok(g.nodes
        .iter()
        .filter(|n| crate::ops::output_kernel(&n.op).is_some())
        .map(|n| {
            (
                n.name.clone(),
                n.op.onnx_type().to_string(),
                shapes[&n.outputs[0]].get(1).copied().unwrap_or(1),
            )
        })
        .collect())
}

pub struct ReportInput<'a> {
    pub model: &'a str,
    pub output: &'a str,
    pub original: &'a Graph,
    pub original_bytes: &'a [u8],
    pub pruned: &'a Pruned,
    pub pruned_bytes: &'a [u8],
    pub verification: Verification,
    /// Dense and pruned latencies, measured by [`crate::verify::latency::before_after`]
    /// (`None` when not measured).
    pub latency: (Option<Latency>, Option<Latency>),
}

pub fn prune_report(r: ReportInput) -> Result<PruneReport> {
    let (dense_ms, pruned_ms) = r.latency;
    let figures = |g: &Graph, bytes: &[u8], latency_ms| -> Result<ModelFigures> {
        let c = graph_cost(g, 1)?;
        Ok(ModelFigures {
            params: c.params,
            macs: c.macs,
            file_bytes: bytes.len(),
            latency_ms,
        })
    };
    let dense = figures(r.original, r.original_bytes, dense_ms)?;
    let pruned = figures(&r.pruned.graph, r.pruned_bytes, pruned_ms)?;
    let groups: Vec<GroupWidth> = r
        .pruned
        .analysis
        .groups
        .iter()
        .filter(|g| g.prunable)
        .map(|g| GroupWidth {
            id: g.id,
            producers: g.producers.clone(),
            width_before: g.width,
            width_after: r.pruned.keep.get(&g.id).map_or(g.width, |k| k.len()),
        })
        .collect();
    let join = |f: &dyn Fn(&GroupWidth) -> usize| {
        groups
            .iter()
            .map(|g| f(g).to_string())
            .collect::<Vec<_>>()
            .join("-")
    };
    let after: std::collections::HashMap<String, usize> = layer_widths(&r.pruned.graph)?
        .into_iter()
        .map(|(n, _, w)| (n, w))
        .collect();
    let layers = layer_widths(r.original)?
        .into_iter()
        .map(|(name, op, w)| LayerWidth {
            width_after: after.get(&name).copied().unwrap_or(w),
            name,
            op,
            width_before: w,
        })
        .collect();
    Ok(PruneReport {
        schema_version: SCHEMA_VERSION,
        model: r.model.to_string(),
        output: r.output.to_string(),
        macs_ratio: if dense.macs == 0 {
            1.0
        } else {
            pruned.macs as f64 / dense.macs as f64
        },
        widths_before: join(&|g| g.width_before),
        widths_after: join(&|g| g.width_after),
        dense,
        pruned,
        groups,
        layers,
        verification: r.verification,
        notes: r.pruned.notes.clone(),
    })
}

pub fn render(r: &PruneReport) -> String {
    use super::human;
    use std::fmt::Write;
    let mut s = String::new();
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    let _ = writeln!(s, "{} -> {}", r.model, r.output);
    let _ = writeln!(s, "  widths  {} -> {}", r.widths_before, r.widths_after);
    let _ = writeln!(
        s,
        "  params  {} -> {} ({:.1}%)",
        human(r.dense.params),
        human(r.pruned.params),
        pct(r.pruned.params, r.dense.params)
    );
    let _ = writeln!(
        s,
        "  MACs    {} -> {} ({:.1}%)",
        human(r.dense.macs),
        human(r.pruned.macs),
        pct(r.pruned.macs, r.dense.macs)
    );
    let _ = writeln!(
        s,
        "  file    {} -> {} bytes",
        human(r.dense.file_bytes as u64),
        human(r.pruned.file_bytes as u64)
    );
    if let (Some(a), Some(b)) = (&r.dense.latency_ms, &r.pruned.latency_ms) {
        let _ = writeln!(
            s,
            "  latency batch 1:  {:.3} -> {:.3} ms; batch 64: {:.2} -> {:.2} ms (tract, median of {})",
            a.batch_1, b.batch_1, a.batch_64, b.batch_64, a.runs
        );
    }
    let _ = writeln!(s, "  verified in {}", r.verification.summary());
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    s
}
