//! Dataset readers.

pub mod idx;

pub use idx::{Dataset, Split};
