//! The input-preparation options shared by `run` and `eval` (`--mean/--std`, `--normalize`,
//! `--resize`), flattened into both commands' options.

use super::options::{name_of, named};
use crate::data::preprocess::{self, Asked, Request, Source};
use crate::error::{Error, Result};

/// Preset mean/std (`--normalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormalizePreset {
    /// ImageNet: mean 0.485,0.456,0.406, std 0.229,0.224,0.225.
    Imagenet,
    /// CIFAR-10: mean 0.4914,0.4822,0.4465, std 0.2470,0.2435,0.2616.
    Cifar10,
    /// No normalisation: [0, 1] pixels (mean 0, std 1).
    None,
}

#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Input preparation")]
pub struct PreprocessArgs {
    /// Per-channel mean subtracted from the [0, 1] pixels, comma-separated (one value: every
    /// channel); with --std. Default: the model's compress.mean metadata, else per data format:
    /// CIFAR binary 0.4914,0.4822,0.4465 (CIFAR-10), IDX and image folders none.
    #[arg(long, value_name = "M1,M2,..", allow_hyphen_values = true)]
    pub mean: Option<String>,
    /// Per-channel std the centred pixels are divided by, comma-separated, each > 0; with
    /// --mean (`--mean 0 --std 1`: none). Default: the model's compress.std metadata, else per
    /// data format: CIFAR binary 0.2470,0.2435,0.2616, IDX and image folders none.
    #[arg(long, value_name = "S1,S2,..", allow_hyphen_values = true)]
    pub std: Option<String>,
    /// Preset mean and std instead of --mean/--std.
    #[arg(long, value_parser = named::<NormalizePreset>(), conflicts_with_all = ["mean", "std"])]
    pub normalize: Option<NormalizePreset>,
    /// Image folders: resize every image to H,W (bilinear), then centre-crop it to the model's
    /// input size. Default: the model's compress.resize metadata, else the model's input size.
    #[arg(long, value_name = "H,W")]
    pub resize: Option<String>,
}

impl PreprocessArgs {
    /// What the options ask for; a malformed value is a usage error naming the option.
    pub fn request(&self) -> Result<Request> {
        let usage = |option: &str, value: &str, why: String| {
            Error::Usage(format!("--{option} {value}: {why}"))
        };
        let normalize = match (&self.mean, &self.std, self.normalize) {
            (Some(mean), Some(std), _) => Some(Asked {
                mean: preprocess::parse_values(mean).map_err(|e| usage("mean", mean, e))?,
                std: preprocess::parse_stds(std).map_err(|e| usage("std", std, e))?,
                source: Source::Option,
                mean_name: format!("--mean {mean}"),
                std_name: format!("--std {std}"),
            }),
            (Some(_), None, _) => return Err(Error::Usage("--mean needs --std".into())),
            (None, Some(_), _) => return Err(Error::Usage("--std needs --mean".into())),
            (None, None, Some(p)) => {
                let name = name_of(p);
                let (mean, std) = preprocess::preset(&name).ok_or_else(|| {
                    Error::Internal(format!("--normalize {name}: no preset statistics"))
                })?;
                Some(Asked {
                    mean,
                    std,
                    source: Source::Preset,
                    mean_name: format!("--normalize {name}"),
                    std_name: format!("--normalize {name}"),
                })
            }
            (None, None, None) => None,
        };
        let resize = self
            .resize
            .as_deref()
            .map(|r| preprocess::parse_size(r).map_err(|e| usage("resize", r, e)))
            .transpose()?;
        Ok(Request { normalize, resize })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(mean: Option<&str>, std: Option<&str>, resize: Option<&str>) -> PreprocessArgs {
        PreprocessArgs {
            mean: mean.map(str::to_string),
            std: std.map(str::to_string),
            normalize: None,
            resize: resize.map(str::to_string),
        }
    }

    #[test]
    fn options_become_a_request_or_a_one_line_error() {
        let r = args(Some("0.5,0.4,0.3"), Some("0.2"), Some("72,72"))
            .request()
            .unwrap();
        let asked = r.normalize.unwrap();
        assert_eq!((asked.mean, asked.std), (vec![0.5, 0.4, 0.3], vec![0.2]));
        assert_eq!(r.resize, Some((72, 72)));
        for (a, want) in [
            (
                args(Some("0.5,a"), Some("1"), None),
                "--mean 0.5,a: 'a' is not a finite number",
            ),
            (
                args(Some("0.5"), Some("0"), None),
                "--std 0: a std must be > 0, not 0",
            ),
            (args(Some("0.5"), None, None), "--mean needs --std"),
            (args(None, None, Some("0,4")), "--resize 0,4: expected H,W"),
        ] {
            let e = a.request().unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        for (preset, name) in [
            (NormalizePreset::Imagenet, "imagenet"),
            (NormalizePreset::Cifar10, "cifar10"),
            (NormalizePreset::None, "none"),
        ] {
            assert_eq!(name_of(preset), name);
            let a = PreprocessArgs {
                normalize: Some(preset),
                ..Default::default()
            };
            let asked = a.request().unwrap().normalize.unwrap();
            assert_eq!(asked.source, Source::Preset);
        }
    }
}
