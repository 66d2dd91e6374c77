//! `compress`: structured pruning of ONNX models with L0 gates.
//!
//! The pipeline is a chain of plain functions over the project's own graph IR:
//! [`onnx::import_file`] -> [`ir::Graph`] -> [`exec::Network`] (burn, any device) ->
//! [`onnx::export`] -> [`verify::run_tract`].
//!
//! ```
//! let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/lenet5/model.onnx");
//! let graph = compress::onnx::import_file(&path)?;
//! let cost = compress::ir::cost::graph_cost(&graph, 1)?;
//! assert_eq!((cost.params, cost.macs), (431_080, 2_293_000));
//! let bytes = compress::onnx::export(&graph);
//! assert_eq!(compress::onnx::import(&bytes)?.nodes, graph.nodes);
//! # Ok::<(), compress::Error>(())
//! ```
//!
//! The whole job (what `compress MODEL --method M` runs) as library calls; see [`pipeline`].

pub mod app;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod fsutil;
pub mod fuzz;
pub mod gates;
pub mod groups;
pub mod ir;
pub mod methods;
pub mod onnx;
pub mod ops;
pub mod pipeline;
pub mod prune;
pub mod report;
pub mod rng;
pub mod train;
pub mod verify;

pub use error::{Error, Result};
