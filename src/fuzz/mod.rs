//! A fuzz harness that runs on stable Rust: seeded mutations of real models ([`mutate`]) fed
//! through the library's whole path in-process ([`case`]), one case per seed so that any case
//! is reproduced from `(seed, index)` alone. Drivers: `tests/fuzz.rs` (a short run with a fixed
//! seed, and the saved regression cases) and `examples/fuzz.rs` (long runs, `scripts/fuzz.sh`).

pub mod case;
pub mod mutate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use case::Outcome;

/// Which mutations a case gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Valid protobuf with hostile contents.
    Structured,
    /// Corrupted bytes.
    Bytes,
}

/// The models mutated: small real exports shipped in the repository.
pub fn seed_models(repo: &Path) -> crate::error::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut paths = Vec::new();
    for root in ["fixtures/patterns", "models"] {
        let dir = repo.join(root);
        let entries = std::fs::read_dir(&dir).map_err(|e| crate::error::Error::io(&dir, e))?;
        for e in entries.flatten() {
            let p = e.path().join("model.onnx");
            if p.is_file() {
                paths.push(p);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| crate::error::Error::io(&p, e))?;
            Ok((p, bytes))
        })
        .collect()
}

/// One generated case.
pub struct Case {
    /// Index of the model in [`seed_models`]' list.
    pub model: usize,
    pub bytes: Vec<u8>,
    /// The mutations applied, in words.
    pub mutations: Vec<String>,
    /// Seed of the keep plan.
    pub plan_seed: u64,
}

/// The case number `index` of the run seeded `seed`.
pub fn generate(models: &[(PathBuf, Vec<u8>)], kind: Kind, seed: u64, index: u64) -> Case {
    use crate::rng::RngExt;
    use prost::Message;
    let mut rng = crate::rng::seeded(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let model = rng.random_range(0..models.len());
    let original = &models[model].1;
    let plan_seed = rng.random();
    let (bytes, mutations) = match kind {
        Kind::Structured => match crate::onnx::pb::ModelProto::decode(&original[..]) {
            Ok(mut proto) => {
                let done = mutate::structured(&mut proto, &mut rng);
                (proto.encode_to_vec(), done)
            }
            Err(e) => (
                original.clone(),
                vec![format!("seed model undecodable: {e}")],
            ),
        },
        Kind::Bytes => {
            let mut bytes = original.clone();
            let done = mutate::bytes(&mut bytes, &mut rng);
            (bytes, done)
        }
    };
    Case {
        model,
        bytes,
        mutations,
        plan_seed,
    }
}
