//! Where does tract spend its time, dense vs pruned? Evaluates tract's optimised plan node by
//! node and prints the median time per op kind (or per node with PER_NODE=1), for a model and a
//! random keep plan. Used to explain the `prune_speed` benchmark (BENCHMARKS.md).
//!
//!     cargo run --release --example tract_profile -- MODEL.onnx [KEEP=0.5] [BATCH=64] [ROUND_TO]

use std::collections::BTreeMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};

const RUNS: usize = 7;

/// Median milliseconds per op kind (or node) over `RUNS` runs after a warm-up.
fn profile(bytes: &[u8], shape: &[usize], per_node: bool) -> TractResult<BTreeMap<String, f64>> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact(shape).into())?;
    let plan = model.into_optimized()?.into_runnable()?;
    let x: TValue = Tensor::zero::<f32>(shape)?.into();
    let mut state = SimpleState::new(&plan)?;
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..=RUNS {
        let mut this_run: BTreeMap<String, f64> = BTreeMap::new();
        state.run_plan_with_eval(tvec![x.clone()], |session, op_state, node, inputs| {
            let start = std::time::Instant::now();
            let out = eval(session, op_state, node, inputs);
            let key = if per_node {
                format!("{} {}", node.op.name(), node.name)
            } else {
                node.op.name().to_string()
            };
            *this_run.entry(key).or_default() += start.elapsed().as_secs_f64() * 1e3;
            out
        })?;
        if run > 0 {
            for (k, v) in this_run {
                samples.entry(k).or_default().push(v);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: tract_profile MODEL.onnx [KEEP] [BATCH] [ROUND_TO]")?;
    let keep: f64 = args.get(2).map_or(Ok(0.5), |s| s.parse())?;
    let batch: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let round_to: Option<usize> = args.get(4).map(|s| s.parse()).transpose()?;
    let per_node = std::env::var_os("PER_NODE").is_some();

    let graph = compress::onnx::import_file(std::path::Path::new(path))?;
    let groups = compress::groups::analyse(&graph)?;
    let plan = compress::prune::plan::random(&groups, keep, 1);
    let pruned = compress::prune::prune(&graph, &plan, round_to)?;
    let shape = graph.inputs[0].shape(batch);
    let dense = profile(&compress::onnx::export(&graph), &shape, per_node)?;
    let small = profile(&compress::onnx::export(&pruned.graph), &shape, per_node)?;

    let (mut total_dense, mut total_small) = (0.0, 0.0);
    for (key, d) in &dense {
        let s = small.get(key).copied().unwrap_or(0.0);
        total_dense += d;
        total_small += s;
        println!(
            "{key:48} dense {d:9.2} ms  pruned {s:9.2} ms  x{:.2}",
            d / s.max(1e-9)
        );
    }
    let macs = |g: &compress::ir::Graph| compress::ir::cost::graph_cost(g, 1).map(|c| c.macs);
    println!(
        "total dense {total_dense:.1} ms, pruned {total_small:.1} ms: speedup {:.2}x for {:.2}x fewer MACs",
        total_dense / total_small,
        macs(&graph)? as f64 / macs(&pruned.graph)? as f64
    );
    Ok(())
}
