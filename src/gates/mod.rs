//! Gate families: hard concrete (L0-HC, Dep-L0), binary gates with ARM/AR estimators
//! (L0-ARM, L0-AR), the Dep-L0 generator, and expected-cost penalties. See ../shared/METHODS.md.
//!
//! - [`hard_concrete`]: the stretched-and-clamped concrete gate of L0-HC and Dep-L0 (§1):
//!   scalar `f64` reference functions and differentiable burn-tensor versions.
//! - [`arm`]: exactly binary gates `p = G(phi)` with the ARM / AR gradient estimators (§2).
//! - [`dep_l0`]: the Dep-L0 logit generator, a burn [`Module`](burn::module::Module) (§3).
//! - [`penalty`]: expected-L0 costs (AMLab / l0-arm form and Dep-L0 form), scalar and tensor,
//!   plus the weight-count formulas of §7 ([`penalty::arch_weights`]).
//!
//! Every number of METHODS §10 items 1 to 11 is pinned by a unit test in these files; the
//! functions training runs (in [`crate::methods`] and the `*_t` tensor functions here) are
//! pinned by their own tests as well.

pub mod arm;
pub mod dep_l0;
pub mod hard_concrete;
pub mod penalty;

pub use dep_l0::DepGenerator;

/// Logistic sigmoid in `f64`.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(p / (1 - p))`.
pub fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert!((sigmoid(-800.0)).abs() < 1e-300);
        assert!((sigmoid(800.0) - 1.0).abs() < 1e-15);
        assert!((logit(sigmoid(1.3)) - 1.3).abs() < 1e-12);
        use crate::rng::RngExt;
        let mut rng = crate::rng::seeded(7);
        for _ in 0..1000 {
            let u = rng.random::<f64>();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
