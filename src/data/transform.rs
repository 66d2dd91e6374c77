//! Input transforms: per-channel normalisation and CIFAR-style training augmentation.
//!
//! Defaults:
//!
//! * CIFAR-10/100 models: normalise with mean ([`CIFAR_MEAN`]) `(0.4914, 0.4822, 0.4465)` and
//!   std ([`CIFAR_STD`]) `(0.2470, 0.2435, 0.2616)`; augment training batches with
//!   [`Augment::CIFAR`] (zero-pad 4, random 32x32 crop, random horizontal flip).
//! * MNIST-style data (IDX) and image folders: no normalisation (pixels stay in [0, 1]) and no
//!   augmentation. See [`Normalize::default_for`]; options and a model's metadata override these
//!   defaults (`super::preprocess`).
//!
//! Order: augment first, then normalise, so that the padding is black (0 in [0, 1] pixel
//! space) exactly as in torchvision's `RandomCrop(32, padding=4)` followed by `Normalize`.
//!
//! Every batch buffer is NCHW: `n * c * h * w` f32 values, sample after sample.

use crate::error::{Error, Result};
use crate::rng::{Rng, RngExt};

use super::{Dataset, Format};

/// Per-channel mean of the CIFAR-10 training set (R, G, B).
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of the CIFAR-10 training set (R, G, B).
pub const CIFAR_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Per-channel normalisation `x' = (x - mean[c]) / std[c]`.
///
/// A mean/std of length 1 applies to every channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalize {
    /// Checks that `mean` and `std` have the same non-zero length, are finite, and `std > 0`.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::Usage(format!(
                "normalisation needs as many means as stds, at least one ({} means, {} stds)",
                mean.len(),
                std.len()
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Usage(format!(
                "normalisation means must be finite and stds finite and positive \
                 (mean {mean:?}, std {std:?})"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// The CIFAR-10 statistics ([`CIFAR_MEAN`], [`CIFAR_STD`]).
    pub fn cifar() -> Self {
        Normalize {
            mean: CIFAR_MEAN.to_vec(),
            std: CIFAR_STD.to_vec(),
        }
    }

    /// The default for a dataset format: CIFAR statistics for CIFAR, none for IDX (MNIST-style)
    /// and image folders.
    pub fn default_for(format: Format) -> Option<Self> {
        match format {
            Format::Cifar => Some(Self::cifar()),
            Format::Idx | Format::Folder => None,
        }
    }

    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// (mean, std) of channel `c`, broadcasting length-1 statistics.
    fn stats(&self, c: usize) -> (f32, f32) {
        let i = if self.mean.len() == 1 { 0 } else { c };
        (self.mean[i], self.std[i])
    }

    /// Checks that the statistics fit images of `channels` channels of `plane` pixels.
    pub fn check_fits(&self, channels: usize, plane: usize) -> Result<()> {
        self.check(channels * plane, channels, plane)
    }

    fn check(&self, len: usize, channels: usize, plane: usize) -> Result<()> {
        if self.mean.len() != 1 && self.mean.len() != channels {
            return Err(Error::Usage(format!(
                "normalisation has {} channel statistics but the images have {channels} channels",
                self.mean.len()
            )));
        }
        let sample = channels * plane;
        if sample == 0 || !len.is_multiple_of(sample) {
            return Err(Error::Internal(format!(
                "normalise: buffer of {len} values is not a whole number of \
                 {channels}x{plane}-value samples"
            )));
        }
        Ok(())
    }

    /// Calls `f(plane values, mean, std)` for every channel plane of every sample of an NCHW
    /// buffer, after checking that the buffer and the statistics fit.
    fn per_channel(
        &self,
        batch: &mut [f32],
        channels: usize,
        plane: usize,
        f: impl Fn(&mut [f32], f32, f32),
    ) -> Result<()> {
        self.check(batch.len(), channels, plane)?;
        for sample in batch.chunks_exact_mut(channels * plane) {
            for (c, values) in sample.chunks_exact_mut(plane).enumerate() {
                let (m, s) = self.stats(c);
                f(values, m, s);
            }
        }
        Ok(())
    }

    /// Normalises an NCHW buffer in place; `plane` is `h * w`.
    pub fn apply(&self, batch: &mut [f32], channels: usize, plane: usize) -> Result<()> {
        self.per_channel(batch, channels, plane, |values, m, s| {
            let inv = 1.0 / s;
            values.iter_mut().for_each(|v| *v = (*v - m) * inv);
        })
    }

    /// Undoes [`Normalize::apply`] in place.
    pub fn invert(&self, batch: &mut [f32], channels: usize, plane: usize) -> Result<()> {
        self.per_channel(batch, channels, plane, |values, m, s| {
            values.iter_mut().for_each(|v| *v = *v * s + m);
        })
    }

    /// Normalises every image of `ds`: every batch read from it from now on.
    pub fn apply_dataset(&self, ds: &mut Dataset) -> Result<()> {
        ds.push_normalize(self.clone())
    }
}

/// Per-channel (mean, population std) of a dataset's pixels, e.g. to build a [`Normalize`] for
/// an image folder. Empty datasets give zeros. Reads the dataset a batch at a time.
pub fn channel_stats(ds: &Dataset) -> Result<(Vec<f32>, Vec<f32>)> {
    let (c, plane) = (ds.channels, ds.height * ds.width);
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    if c * plane > 0 {
        for start in (0..ds.len()).step_by(256) {
            let batch = ds.batch(start..(start + 256).min(ds.len()))?;
            for sample in batch.chunks_exact(c * plane) {
                for (ch, values) in sample.chunks_exact(plane).enumerate() {
                    for &v in values {
                        sum[ch] += v as f64;
                        sq[ch] += (v as f64) * (v as f64);
                    }
                }
            }
        }
    }
    let count = (ds.len() * plane) as f64;
    if count == 0.0 {
        return Ok((vec![0.0; c], vec![0.0; c]));
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| ((q / count - m * m).max(0.0)).sqrt() as f32)
        .collect();
    Ok((mean.into_iter().map(|m| m as f32).collect(), std))
}

/// Training augmentation: zero-pad by `pad`, crop back to the original size at a random
/// offset, then flip horizontally with probability 1/2 when `flip` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    pub pad: usize,
    pub flip: bool,
}

impl Default for Augment {
    /// [`Augment::CIFAR`].
    fn default() -> Self {
        Augment::CIFAR
    }
}

impl Augment {
    /// The standard CIFAR recipe: pad 4, random crop, random horizontal flip.
    pub const CIFAR: Augment = Augment { pad: 4, flip: true };
    /// No augmentation.
    pub const NONE: Augment = Augment {
        pad: 0,
        flip: false,
    };

    /// Augments every sample of an NCHW batch in place.
    ///
    /// Per sample, exactly three draws are taken from `rng` whatever the settings (crop row
    /// offset `below(2 * pad + 1)`, crop column offset `below(2 * pad + 1)`, flip
    /// `uniform() < 0.5`), so a fixed seed gives the same batch on every platform.
    pub fn apply(
        &self,
        batch: &mut [f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        rng: &mut Rng,
    ) -> Result<()> {
        let len = c * h * w;
        if batch.len() != n * len {
            return Err(Error::Internal(format!(
                "augment: buffer of {} values is not {n}x{c}x{h}x{w}",
                batch.len()
            )));
        }
        if len == 0 {
            return Ok(());
        }
        let mut scratch = vec![0f32; len];
        for sample in batch.chunks_exact_mut(len) {
            let oy = rng.random_range(0..2 * self.pad + 1);
            let ox = rng.random_range(0..2 * self.pad + 1);
            let flip = rng.random::<f32>() < 0.5;
            if oy != self.pad || ox != self.pad {
                scratch.copy_from_slice(sample);
                crop_into(&scratch, sample, c, h, w, self.pad, oy, ox);
            }
            if self.flip && flip {
                hflip(sample, c, h, w);
            }
        }
        Ok(())
    }
}

/// `dst` = the `h x w` window at (`oy`, `ox`) of `src` zero-padded by `pad` on every side.
#[allow(clippy::too_many_arguments)]
fn crop_into(
    src: &[f32],
    dst: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    oy: usize,
    ox: usize,
) {
    // Output (y, x) reads input (y + dy, x + dx).
    let dy = oy as isize - pad as isize;
    let dx = ox as isize - pad as isize;
    let (hi, wi) = (h as isize, w as isize);
    // Output columns whose source column is inside the image.
    let x0 = (-dx).clamp(0, wi) as usize;
    let x1 = (wi - dx).clamp(0, wi) as usize;
    for ch in 0..c {
        let base = ch * h * w;
        for y in 0..h {
            let row = &mut dst[base + y * w..base + (y + 1) * w];
            let sy = y as isize + dy;
            if sy < 0 || sy >= hi || x0 >= x1 {
                row.fill(0.0);
                continue;
            }
            let src_row = base + sy as usize * w;
            row[..x0].fill(0.0);
            row[x1..].fill(0.0);
            let sx0 = (x0 as isize + dx) as usize;
            row[x0..x1].copy_from_slice(&src[src_row + sx0..src_row + sx0 + (x1 - x0)]);
        }
    }
}

/// Crops one CHW sample in place: zero-pad by `pad`, take the `h x w` window whose top-left
/// corner is at (`oy`, `ox`) in the padded image (`0..=2 * pad` each; `pad, pad` is the
/// identity).
pub fn crop_padded(
    sample: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    oy: usize,
    ox: usize,
) {
    debug_assert_eq!(sample.len(), c * h * w);
    let src = sample.to_vec();
    crop_into(&src, sample, c, h, w, pad, oy, ox);
}

/// Mirrors one CHW sample left-right in place.
pub fn hflip(sample: &mut [f32], c: usize, h: usize, w: usize) {
    if w == 0 {
        return;
    }
    for row in sample[..c * h * w].chunks_exact_mut(w) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 + 1.0).collect()
    }

    #[test]
    fn flip_twice_is_identity() {
        let (c, h, w) = (3, 4, 5);
        let orig = ramp(c * h * w);
        let mut s = orig.clone();
        hflip(&mut s, c, h, w);
        assert_ne!(s, orig);
        // First row of channel 0 mirrored.
        assert_eq!(&s[..5], &[5.0, 4.0, 3.0, 2.0, 1.0]);
        hflip(&mut s, c, h, w);
        assert_eq!(s, orig);
    }

    #[test]
    fn crop_at_pad_is_identity_and_shifts_otherwise() {
        let (c, h, w) = (2, 6, 6);
        let orig = ramp(c * h * w);
        let mut s = orig.clone();
        crop_padded(&mut s, c, h, w, 4, 4, 4);
        assert_eq!(s, orig);

        // Offset (5, 3): output (y, x) = input (y + 1, x - 1), zero outside.
        let mut s = orig.clone();
        crop_padded(&mut s, c, h, w, 4, 5, 3);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let (sy, sx) = (y as isize + 1, x as isize - 1);
                    let want = if sy < h as isize && sx >= 0 {
                        orig[ch * 36 + sy as usize * w + sx as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(s[ch * 36 + y * w + x], want, "{ch} {y} {x}");
                }
            }
        }

        // Offsets at the extremes with pad >= size: everything is padding.
        let mut s = orig.clone();
        crop_padded(&mut s, c, h, w, 8, 0, 16);
        assert!(s.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn augment_is_deterministic_and_none_is_identity() {
        let (n, c, h, w) = (8, 3, 32, 32);
        let orig = ramp(n * c * h * w);
        let run = |aug: Augment, seed| {
            let mut b = orig.clone();
            aug.apply(&mut b, n, c, h, w, &mut crate::rng::seeded(seed))
                .unwrap();
            b
        };
        let a = run(Augment::CIFAR, 7);
        assert_eq!(a, run(Augment::CIFAR, 7));
        assert_ne!(a, orig);
        assert_ne!(a, run(Augment::CIFAR, 8));
        assert_eq!(run(Augment::NONE, 7), orig);
        assert_eq!(Augment::default(), Augment::CIFAR);

        // Each sample is a crop (then maybe a flip) of its own original, from the same draws.
        let mut rng = crate::rng::seeded(7);
        for i in 0..n {
            let oy = rng.random_range(0..9);
            let ox = rng.random_range(0..9);
            let flip = rng.random::<f32>() < 0.5;
            let len = c * h * w;
            let mut s = orig[i * len..(i + 1) * len].to_vec();
            crop_padded(&mut s, c, h, w, 4, oy, ox);
            if flip {
                hflip(&mut s, c, h, w);
            }
            assert_eq!(&a[i * len..(i + 1) * len], &s[..], "sample {i}");
        }

        let mut short = vec![0.0; 10];
        assert!(
            Augment::CIFAR
                .apply(&mut short, 1, 3, 2, 2, &mut crate::rng::seeded(0))
                .is_err()
        );
    }

    #[test]
    fn normalisation_math() {
        let norm = Normalize::new(vec![0.5, 0.25], vec![0.5, 2.0]).unwrap();
        // 2 samples, 2 channels, 2 pixels.
        let mut b = vec![0.0, 1.0, 0.25, 4.25, 1.0, 0.5, 2.25, 0.25];
        norm.apply(&mut b, 2, 2).unwrap();
        assert_eq!(b, vec![-1.0, 1.0, 0.0, 2.0, 1.0, 0.0, 1.0, 0.0]);
        norm.invert(&mut b, 2, 2).unwrap();
        assert_eq!(b, vec![0.0, 1.0, 0.25, 4.25, 1.0, 0.5, 2.25, 0.25]);
        assert!(norm.apply(&mut b, 3, 2).is_err());
        assert!(norm.apply(&mut b[..6], 2, 2).is_err());

        // Length-1 statistics broadcast.
        let one = Normalize::new(vec![0.5], vec![0.25]).unwrap();
        let mut b = vec![0.0, 0.5, 1.0, 0.75];
        one.apply(&mut b, 2, 2).unwrap();
        assert_eq!(b, vec![-2.0, 0.0, 2.0, 1.0]);

        assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalize::new(vec![0.5, 0.5], vec![1.0]).is_err());
        assert!(Normalize::new(vec![], vec![]).is_err());

        // CIFAR defaults on a dataset: channel c of value mean[c] becomes 0.
        let mut ds = Dataset::from_f32(
            [CIFAR_MEAN[0], CIFAR_MEAN[1], CIFAR_MEAN[2]]
                .iter()
                .flat_map(|&m| [m, m + CIFAR_STD[0]])
                .collect(),
            vec![0],
            (3, 1, 2),
        )
        .unwrap();
        Normalize::default_for(Format::Cifar)
            .unwrap()
            .apply_dataset(&mut ds)
            .unwrap();
        let images = ds.images().unwrap();
        assert_eq!([images[0], images[2], images[4]], [0.0; 3]);
        assert!((images[1] - 1.0).abs() < 1e-6);
        assert!(Normalize::default_for(Format::Idx).is_none());

        let ds = Dataset::from_f32(vec![0.0, 1.0, 0.5, 0.5], vec![0, 1], (1, 1, 2)).unwrap();
        let (m, s) = channel_stats(&ds).unwrap();
        assert_eq!(m, vec![0.5]);
        assert!((s[0] - (0.125f32).sqrt()).abs() < 1e-6);
    }
}
