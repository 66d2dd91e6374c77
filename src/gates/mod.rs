//! Gate families: hard concrete (L0-HC, Dep-L0), binary gates with ARM/AR estimators
//! (L0-ARM, L0-AR), the Dep-L0 generator, and expected-cost penalties. See ../shared/METHODS.md.
