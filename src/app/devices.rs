//! `compress devices [--json]`: which backends this binary can train on, here; and the check
//! `--device` makes before any work, so a missing feature, driver or GPU is a one-line usage
//! error (exit 2) instead of a panic inside the GPU runtime.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "wgpu")]
mod wgpu;

use serde::Serialize;

use super::options::{Device, name_of};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one `--device` value can do in this binary on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// The `--device` spelling.
    pub device: String,
    /// Whether this binary was built with the backend.
    pub compiled: bool,
    /// Whether a run with `--device` would start here.
    pub usable: bool,
    /// What was found (adapters, driver, GPUs), or what is missing and how to get it.
    pub detail: String,
}

/// The `devices` listing (`--json` prints this object).
#[derive(Debug, Serialize)]
pub struct Devices {
    pub devices: Vec<DeviceStatus>,
}

/// Prints every `--device` value with whether it is usable here and why (not).
pub fn devices(a: DevicesArgs) -> Result<()> {
    let list = Devices {
        devices: [Device::Cpu, Device::Wgpu, Device::Cuda]
            .into_iter()
            .map(probe)
            .collect(),
    };
    if a.json {
        println!("{}", super::to_json(&list)?);
    } else {
        for d in &list.devices {
            let state = match (d.compiled, d.usable) {
                (true, true) => "usable",
                (true, false) => "not usable",
                (false, _) => "not compiled in",
            };
            println!("{:<5} {:<16} {}", d.device, state, d.detail);
        }
    }
    Ok(())
}

/// Refuses a `--device` this binary cannot use here, naming what is missing and what to
/// install; called before any model or data is read.
pub fn require(device: Device) -> Result<()> {
    let status = probe(device);
    if status.usable {
        return Ok(());
    }
    let flag = format!("--device {}", status.device);
    Err(Error::Usage(if status.compiled {
        format!("{flag}: {}", status.detail)
    } else {
        format!(
            "{flag}: this binary was built without it; {}",
            status.detail
        )
    }))
}

/// How to build a binary with `device`'s backend (the README's "GPU" section has the details).
fn build_hint(device: Device) -> String {
    match device {
        Device::Cpu => String::new(),
        Device::Wgpu => "rebuild with `cargo build --release --features wgpu`".into(),
        Device::Cuda => "rebuild with `bash scripts/setup-cuda-build.sh && \
                         CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda`"
            .into(),
    }
}

/// Probes one backend: the CPU always works; a GPU backend needs its feature, then a driver
/// and a device it can open.
pub fn probe(device: Device) -> DeviceStatus {
    let (compiled, found): (bool, std::result::Result<String, String>) = match device {
        Device::Cpu => (true, Ok("burn flex backend (always compiled in)".into())),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => (true, wgpu::probe()),
        #[cfg(feature = "cuda")]
        Device::Cuda => (true, cuda::probe()),
        #[allow(unreachable_patterns)]
        other => (false, Err(build_hint(other))),
    };
    let usable = compiled && found.is_ok();
    DeviceStatus {
        device: name_of(device),
        compiled,
        usable,
        detail: found.unwrap_or_else(|reason| reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_usable() {
        let cpu = probe(Device::Cpu);
        assert!(cpu.compiled && cpu.usable);
        assert!(require(Device::Cpu).is_ok());
    }

    /// A backend left out of the build is refused with the feature to build it with.
    #[test]
    fn backends_not_compiled_in_name_their_feature() {
        for (device, feature, compiled) in [
            (Device::Wgpu, "--features wgpu", cfg!(feature = "wgpu")),
            (Device::Cuda, "--features cuda", cfg!(feature = "cuda")),
        ] {
            let status = probe(device);
            assert_eq!(status.compiled, compiled);
            if !compiled {
                assert!(!status.usable);
                let err = require(device).unwrap_err();
                assert_eq!(err.exit_code(), crate::error::exit_code::BAD_INPUT);
                let text = err.to_string();
                assert!(text.contains(feature), "{text}");
                assert!(!text.contains('\n'), "{text}");
            }
        }
    }
}
