//! `compress`: structured pruning of ONNX models with L0 gates.
//!
//! The pipeline is a chain of plain functions over the project's own graph IR:
//! [`onnx::import_file`] -> [`ir::Graph`] -> [`exec::Network`] (burn, any device) ->
//! [`onnx::export`] -> [`verify::run_tract`].
//!
//! ```no_run
//! let graph = compress::onnx::import_file("models/lenet5/model.onnx".as_ref())?;
//! let cost = compress::ir::cost::graph_cost(&graph, 1)?;
//! println!("{} params, {} MACs", cost.params, cost.macs);
//! let bytes = compress::onnx::export(&graph);
//! # Ok::<(), compress::Error>(())
//! ```

pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod fsutil;
pub mod gates;
pub mod groups;
pub mod ir;
pub mod onnx;
pub mod pipeline;
pub mod prune;
pub mod report;
pub mod rng;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
