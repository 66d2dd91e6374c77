//! Enumerated command-line options as clap `ValueEnum`s, and the parser that words a bad value
//! the way every other option error is worded (`--method magic: expected l0-hc, ...`).

use std::ffi::OsStr;
use std::marker::PhantomData;

use clap::ValueEnum;
use clap::builder::{PossibleValue, TypedValueParser};

use crate::error::{Error, Result};
pub use crate::report::settings::{DepChain, Device};

/// Optimiser of the weights (`--optimizer`); gate parameters always use Adam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    Adam,
    Sgd,
}

/// What the gates are penalised for (`--penalty`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PenaltyName {
    /// Expected MACs.
    Macs,
    /// METHODS' expected L0.
    L0,
}

/// Which split `eval` reads (`--split`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitName {
    Test,
    Train,
}

impl From<SplitName> for crate::data::Split {
    fn from(s: SplitName) -> Self {
        match s {
            SplitName::Test => crate::data::Split::Test,
            SplitName::Train => crate::data::Split::Train,
        }
    }
}

/// The burn device of `--device`; wgpu and cuda exist only when compiled in, and are probed
/// first (driver, adapter) so that a missing one is a usage error, not a panic in the runtime.
pub fn burn_device(device: Device) -> Result<burn::prelude::Device> {
    super::devices::require(device)?;
    match device {
        Device::Cpu => Ok(crate::exec::default_device()),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => Ok(burn::prelude::Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        Device::Cuda => Ok(burn::prelude::Device::cuda(0)),
        #[allow(unreachable_patterns)]
        other => Err(Error::Usage(format!(
            "--device {}: not available in this build (compiled: cpu{}{})",
            name_of(other),
            if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
            if cfg!(feature = "cuda") { ", cuda" } else { "" }
        ))),
    }
}

/// The command-line spelling of a value.
pub fn name_of<E: ValueEnum>(value: E) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

/// "a, b or c".
fn or_list(names: &[String]) -> String {
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// A `ValueEnum` parser whose error names the option, the value and the accepted spellings on
/// one line; help and completions still list the values.
#[derive(Clone)]
pub struct Named<E>(PhantomData<E>);

/// The parser of a `ValueEnum` option: `#[arg(value_parser = named::<E>())]`.
pub fn named<E>() -> Named<E> {
    Named(PhantomData)
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Named<E> {
    type Value = E;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> std::result::Result<E, clap::Error> {
        let text = value.to_string_lossy();
        E::from_str(&text, false).map_err(|_| {
            let names: Vec<String> = E::value_variants().iter().cloned().map(name_of).collect();
            let flag = arg
                .and_then(|a| a.get_long())
                .map_or_else(String::new, |l| format!("--{l} "));
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{flag}{text}: expected {}\n", or_list(&names)),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            E::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Method;

    /// The spellings the options always accepted.
    #[test]
    fn option_values_keep_their_spellings() {
        let methods: Vec<String> = Method::value_variants()
            .iter()
            .map(|m| name_of(*m))
            .collect();
        assert_eq!(methods, ["l0-hc", "l0-arm", "l0-ar", "dep-l0", "swp"]);
        for m in Method::value_variants() {
            assert_eq!(name_of(*m), m.name());
        }
        let devices: Vec<String> = Device::value_variants()
            .iter()
            .map(|d| name_of(*d))
            .collect();
        assert_eq!(devices, ["cpu", "wgpu", "cuda"]);
        assert_eq!(name_of(DepChain::Backward), "backward");
        assert_eq!(name_of(OptimizerName::Sgd), "sgd");
        assert_eq!(name_of(PenaltyName::L0), "l0");
        assert_eq!(name_of(SplitName::Train), "train");
        assert_eq!(or_list(&["a".into(), "b".into(), "c".into()]), "a, b or c");
    }
}
