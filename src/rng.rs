//! The project's one random source: a seeded Xoshiro256++ generator from `rand` (the same
//! numbers for a seed on every platform; its state serialises into checkpoints). Values are
//! drawn through `rand` / `rand_distr` distributions at the call sites.

use rand::SeedableRng;

pub use rand::RngExt;
pub use rand::seq::SliceRandom;

/// The generator every random draw of the project comes from.
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// A generator seeded from `seed`.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}
