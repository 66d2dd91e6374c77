//! How pixels are prepared before they reach the model: the per-channel normalisation
//! `x' = (x - mean[c]) / std[c]` of [0, 1] pixels and, for image folders, the size images are
//! resized to before they are centre-cropped to the model's input size.
//!
//! Each is taken from the first of:
//!
//! 1. what the user asked for ([`Request`]: `--mean/--std`, `--normalize PRESET`, `--resize`);
//! 2. the model's ONNX `metadata_props` ([`MEAN_KEY`], [`STD_KEY`], [`RESIZE_KEY`]), which
//!    `compress run` writes into the models it prunes, so a pruned model is read back as it was
//!    trained;
//! 3. the data format's default: CIFAR binary is normalised with CIFAR-10's statistics, IDX and
//!    image folders are not normalised; image folders are resized to the model's input size.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Format;
use super::transform::{CIFAR_MEAN, CIFAR_STD, Normalize};
use crate::error::{Error, Result};

/// Metadata key of the per-channel mean (comma-separated numbers).
pub const MEAN_KEY: &str = "compress.mean";
/// Metadata key of the per-channel std (comma-separated numbers).
pub const STD_KEY: &str = "compress.std";
/// Metadata key of the image-folder resize (`H,W`).
pub const RESIZE_KEY: &str = "compress.resize";

/// ImageNet's per-channel mean (R, G, B), as torchvision's models use it.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel std (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Where the applied mean and std came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `--mean` and `--std`.
    Option,
    /// `--normalize PRESET`.
    Preset,
    /// The model's `compress.mean` / `compress.std` metadata.
    Model,
    /// The data format's default (CIFAR: CIFAR-10 statistics; IDX, image folders: none).
    FormatDefault,
}

/// A mean and std asked for, with the words that name each in an error
/// (e.g. `--mean 0.5,0.5`, `--normalize imagenet`).
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub source: Source,
    pub mean_name: String,
    pub std_name: String,
}

/// What the user asked for; empty: the model's metadata, else the format's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub normalize: Option<Asked>,
    /// `--resize H,W` (image folders).
    pub resize: Option<(usize, usize)>,
}

/// The model input the data is prepared for.
#[derive(Debug, Clone, Copy)]
pub struct ModelInput<'a> {
    /// (channels, height, width) of an image input; None for other inputs (e.g. flat vectors).
    pub chw: Option<(usize, usize, usize)>,
    /// The model's ONNX metadata.
    pub props: &'a [(String, String)],
}

/// The preprocessing a run or an evaluation used (report `settings.preprocessing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Preprocessing {
    /// Per-channel mean subtracted from [0, 1] pixels (one value: every channel).
    pub mean: Vec<f32>,
    /// Per-channel std the centred pixels are divided by (one value: every channel).
    pub std: Vec<f32>,
    /// Where `mean` and `std` came from.
    pub source: Source,
    /// Image folders: [height, width] every image was resized to before the centre crop to the
    /// model's input size; absent: resized straight to the input size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[usize; 2]>,
}

impl Preprocessing {
    /// Whether pixels stay as read (mean 0 and std 1 on every channel).
    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }

    /// The format default that changes nothing: what runs did before preprocessing options
    /// existed on IDX data and image folders. Such runs record nothing (report and model stay
    /// as they were).
    pub fn is_plain_default(&self) -> bool {
        self.source == Source::FormatDefault && self.is_identity() && self.resize.is_none()
    }

    /// The normalisation to apply; None when it changes nothing.
    pub fn normalize(&self) -> Result<Option<Normalize>> {
        if self.is_identity() {
            return Ok(None);
        }
        let n = self.mean.len().max(self.std.len());
        let widen = |v: &[f32]| {
            if v.len() == 1 {
                vec![v[0]; n]
            } else {
                v.to_vec()
            }
        };
        Normalize::new(widen(&self.mean), widen(&self.std)).map(Some)
    }

    /// Writes the mean, std and (when used) resize into ONNX metadata `props`, replacing what
    /// was there under the same keys.
    pub fn write_metadata(&self, props: &mut Vec<(String, String)>) {
        let mut set = |key: &str, value: String| match props.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => props.push((key.to_string(), value)),
        };
        set(MEAN_KEY, join(&self.mean));
        set(STD_KEY, join(&self.std));
        if let Some([h, w]) = self.resize {
            set(RESIZE_KEY, format!("{h},{w}"));
        }
    }
}

/// `0.485,0.456,0.406`: the shortest text that reads back as the same f32.
fn join(values: &[f32]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Comma-separated numbers (`0.485,0.456,0.406`); the error says which item is wrong.
pub fn parse_values(text: &str) -> std::result::Result<Vec<f32>, String> {
    text.split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ if item.is_empty() => Err("expected comma-separated numbers".to_string()),
                _ => Err(format!("'{item}' is not a finite number")),
            }
        })
        .collect()
}

/// Standard deviations: numbers, each > 0.
pub fn parse_stds(text: &str) -> std::result::Result<Vec<f32>, String> {
    let values = parse_values(text)?;
    match values.iter().find(|&&s| s <= 0.0) {
        Some(s) => Err(format!("a std must be > 0, not {s}")),
        None => Ok(values),
    }
}

/// `H,W` (also `HxW`), both > 0.
pub fn parse_size(text: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected H,W (two positive integers, e.g. 72,72), not '{text}'");
    let (h, w) = text
        .split_once(',')
        .or_else(|| text.split_once('x'))
        .ok_or_else(bad)?;
    let size = |s: &str| s.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match (size(h), size(w)) {
        (Some(h), Some(w)) if h <= u32::MAX as usize && w <= u32::MAX as usize => Ok((h, w)),
        _ => Err(bad()),
    }
}

/// `count` statistics fit `channels` when there is one (broadcast) or one per channel.
fn check_count(name: &str, count: usize, channels: usize) -> Result<()> {
    if count == 1 || count == channels {
        return Ok(());
    }
    let s = if channels == 1 { "" } else { "s" };
    Err(Error::Usage(format!(
        "{name}: {count} values, but the model's input has {channels} channel{s} \
         (give 1 value or {channels})"
    )))
}

/// The mean and std in the model's metadata, when it has both.
fn from_metadata(props: &[(String, String)]) -> Result<Option<Asked>> {
    let get = |key: &str| {
        props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let (Some(mean), Some(std)) = (get(MEAN_KEY), get(STD_KEY)) else {
        return Ok(None);
    };
    let bad = |key: &str, value: &str, why: String| {
        Error::Usage(format!("model metadata {key} '{value}': {why}"))
    };
    Ok(Some(Asked {
        mean: parse_values(mean).map_err(|e| bad(MEAN_KEY, mean, e))?,
        std: parse_stds(std).map_err(|e| bad(STD_KEY, std, e))?,
        source: Source::Model,
        mean_name: format!("model metadata {MEAN_KEY}"),
        std_name: format!("model metadata {STD_KEY}"),
    }))
}

/// The image-folder resize in the model's metadata.
fn resize_metadata(props: &[(String, String)]) -> Result<Option<(usize, usize)>> {
    props
        .iter()
        .find(|(k, _)| k == RESIZE_KEY)
        .map(|(_, v)| {
            parse_size(v).map_err(|e| Error::Usage(format!("model metadata {RESIZE_KEY}: {e}")))
        })
        .transpose()
}

impl Request {
    /// The preprocessing for data of `format` fed to `model`, checked against the model's
    /// channel count and input size (an error names the option or metadata key at fault).
    pub fn resolve(&self, format: Format, model: &ModelInput) -> Result<Preprocessing> {
        let asked = match &self.normalize {
            Some(asked) => Some(asked.clone()),
            None => from_metadata(model.props)?,
        };
        let channels = model.chw.map(|(c, _, _)| c).or(match format {
            Format::Idx => Some(1),
            Format::Cifar => Some(3),
            Format::Folder => None,
        });
        let (mean, std, source) = match asked {
            Some(a) => {
                if let Some(c) = channels {
                    check_count(&a.mean_name, a.mean.len(), c)?;
                    check_count(&a.std_name, a.std.len(), c)?;
                }
                (a.mean, a.std, a.source)
            }
            None => match Normalize::default_for(format) {
                Some(n) => (n.mean().to_vec(), n.std().to_vec(), Source::FormatDefault),
                None => (vec![0.0], vec![1.0], Source::FormatDefault),
            },
        };
        let resize = match (self.resize, format) {
            (Some((h, w)), Format::Folder) => {
                check_resize(&format!("--resize {h},{w}"), (h, w), model.chw)?;
                Some([h, w])
            }
            (Some((h, w)), Format::Idx | Format::Cifar) => {
                return Err(Error::Usage(format!(
                    "--resize {h},{w}: applies to image folders, not to {} data",
                    format.name()
                )));
            }
            (None, Format::Folder) => match resize_metadata(model.props)? {
                Some((h, w)) => {
                    check_resize(&format!("model metadata {RESIZE_KEY}"), (h, w), model.chw)?;
                    Some([h, w])
                }
                None => None,
            },
            // Only image folders are resized; a model's recorded resize says nothing here.
            (None, Format::Idx | Format::Cifar) => None,
        };
        Ok(Preprocessing {
            mean,
            std,
            source,
            resize,
        })
    }
}

/// A resize must cover the model's input, which is then centre-cropped out of it.
fn check_resize(
    name: &str,
    (h, w): (usize, usize),
    chw: Option<(usize, usize, usize)>,
) -> Result<()> {
    match chw {
        Some((_, mh, mw)) if h < mh || w < mw => Err(Error::Usage(format!(
            "{name}: smaller than the model's {mh}x{mw} input (images are resized to H,W, then \
             centre-cropped to the input size)"
        ))),
        _ => Ok(()),
    }
}

/// The preset mean/std of `--normalize`.
pub fn preset(name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
    match name {
        "imagenet" => Some((IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec())),
        "cifar10" => Some((CIFAR_MEAN.to_vec(), CIFAR_STD.to_vec())),
        "none" => Some((vec![0.0], vec![1.0])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn asked(mean: &[f32], std: &[f32]) -> Request {
        Request {
            normalize: Some(Asked {
                mean: mean.to_vec(),
                std: std.to_vec(),
                source: Source::Option,
                mean_name: "--mean".into(),
                std_name: "--std".into(),
            }),
            resize: None,
        }
    }

    #[test]
    fn parsing_numbers_and_sizes() {
        assert_eq!(parse_values("0.5, 1,2e-1").unwrap(), vec![0.5, 1.0, 0.2]);
        assert!(parse_values("0.5,x").unwrap_err().contains("'x'"));
        assert!(parse_values("0.5,").is_err());
        assert!(parse_values("nan").is_err());
        assert!(parse_stds("0.2,0").unwrap_err().contains("> 0"));
        assert!(parse_stds("-1").is_err());
        assert_eq!(parse_size("72,64").unwrap(), (72, 64));
        assert_eq!(parse_size("72x64").unwrap(), (72, 64));
        for bad in ["0,4", "4", "4,", "a,b", "4,4,4", "-1,4"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_then_metadata_then_format_default() {
        let rgb = ModelInput {
            chw: Some((3, 64, 64)),
            props: &[],
        };
        // Nothing asked, nothing recorded: the format's default.
        let r = Request::default().resolve(Format::Folder, &rgb).unwrap();
        assert!(r.is_plain_default());
        assert_eq!(r.normalize().unwrap(), None);
        let r = Request::default().resolve(Format::Cifar, &rgb).unwrap();
        assert_eq!(
            (r.mean.as_slice(), r.source),
            (&CIFAR_MEAN[..], Source::FormatDefault)
        );
        assert!(!r.is_plain_default());

        // Metadata beats the default; an option beats metadata.
        let meta = props(&[(MEAN_KEY, "0.5"), (STD_KEY, "0.25"), (RESIZE_KEY, "72,70")]);
        let model = ModelInput {
            chw: Some((3, 64, 64)),
            props: &meta,
        };
        let r = Request::default().resolve(Format::Folder, &model).unwrap();
        assert_eq!(
            (r.mean, r.std, r.source),
            (vec![0.5], vec![0.25], Source::Model)
        );
        assert_eq!(r.resize, Some([72, 70]));
        let r = asked(&[0.1, 0.2, 0.3], &[1.0])
            .resolve(Format::Folder, &model)
            .unwrap();
        assert_eq!(r.source, Source::Option);
        let norm = r.normalize().unwrap().unwrap();
        assert_eq!(
            (norm.mean(), norm.std()),
            (&[0.1, 0.2, 0.3][..], &[1.0; 3][..])
        );

        // Metadata round trip.
        let mut written = props(&[("other", "x"), (MEAN_KEY, "9")]);
        r.write_metadata(&mut written);
        assert_eq!(
            written,
            props(&[
                ("other", "x"),
                (MEAN_KEY, "0.1,0.2,0.3"),
                (STD_KEY, "1"),
                (RESIZE_KEY, "72,70")
            ])
        );
        let back = Request::default()
            .resolve(
                Format::Folder,
                &ModelInput {
                    chw: Some((3, 64, 64)),
                    props: &written,
                },
            )
            .unwrap();
        assert_eq!(
            (back.mean, back.std, back.resize),
            (r.mean, r.std, r.resize)
        );
    }

    #[test]
    fn counts_and_sizes_are_checked() {
        let rgb = ModelInput {
            chw: Some((3, 64, 64)),
            props: &[],
        };
        let e = asked(&[0.1, 0.2], &[1.0])
            .resolve(Format::Folder, &rgb)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--mean: 2 values, but the model's input has 3 channels (give 1 value or 3)"
        );
        // A flat model on IDX data: one channel.
        let flat = ModelInput {
            chw: None,
            props: &[],
        };
        assert!(
            asked(&[0.1, 0.2], &[1.0])
                .resolve(Format::Idx, &flat)
                .is_err()
        );
        assert!(asked(&[0.1], &[1.0]).resolve(Format::Idx, &flat).is_ok());

        let resize = |h, w| Request {
            normalize: None,
            resize: Some((h, w)),
        };
        assert!(resize(64, 80).resolve(Format::Folder, &rgb).is_ok());
        let e = resize(32, 80)
            .resolve(Format::Folder, &rgb)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--resize 32,80: smaller than"), "{e}");
        let e = resize(64, 64)
            .resolve(Format::Idx, &rgb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("applies to image folders"), "{e}");

        let meta = props(&[(MEAN_KEY, "0.5,x"), (STD_KEY, "1")]);
        let e = Request::default()
            .resolve(
                Format::Folder,
                &ModelInput {
                    chw: Some((3, 8, 8)),
                    props: &meta,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("model metadata compress.mean '0.5,x'"), "{e}");
    }
}
