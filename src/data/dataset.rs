//! A labelled image set whose pixels are read per batch: u8 pixels held in memory (IDX, CIFAR),
//! image files decoded on demand (image folders), or f32 pixels given by a caller. Labels are
//! always in memory; pixels become f32 in [0, 1], then normalised, only for the samples a batch
//! asks for, so memory does not grow with the dataset's f32 size.

use std::sync::Arc;

use super::folder::FolderIndex;
use super::transform::Normalize;
use crate::error::{Error, Result};

/// Where a dataset's pixels come from.
#[derive(Debug, Clone, PartialEq)]
enum Pixels {
    /// CHW f32 pixels of every sample, already in the dataset's value space.
    F32(Arc<Vec<f32>>),
    /// CHW bytes of every sample (IDX and CIFAR store bytes): value = byte / 255.
    U8(Arc<Vec<u8>>),
    /// Image files, decoded (and resized, cropped) when a batch needs them.
    Files(Arc<FolderIndex>),
}

/// A labelled image set (NCHW samples, integer labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pixels: Pixels,
    /// Sample numbers into `pixels` (a gathered subset); None: sample i is stored sample i.
    rows: Option<Arc<Vec<usize>>>,
    /// Normalisations applied, in order, to every batch read.
    normalize: Vec<Normalize>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Dataset {
    /// A dataset of f32 CHW pixels, `labels.len() * channels * height * width` values.
    pub fn from_f32(
        images: Vec<f32>,
        labels: Vec<u32>,
        (channels, height, width): (usize, usize, usize),
    ) -> Result<Dataset> {
        let stored = images.len();
        Self::new(
            Pixels::F32(Arc::new(images)),
            stored,
            labels,
            (channels, height, width),
        )
    }

    /// A dataset of byte CHW pixels (value = byte / 255), as IDX and CIFAR files store them.
    pub fn from_u8(
        images: Vec<u8>,
        labels: Vec<u32>,
        (channels, height, width): (usize, usize, usize),
    ) -> Result<Dataset> {
        let stored = images.len();
        Self::new(
            Pixels::U8(Arc::new(images)),
            stored,
            labels,
            (channels, height, width),
        )
    }

    /// A dataset of image files, one label each, decoded per batch.
    pub(super) fn from_files(index: FolderIndex, labels: Vec<u32>) -> Dataset {
        let (channels, height, width) = index.sample_shape();
        Dataset {
            pixels: Pixels::Files(Arc::new(index)),
            rows: None,
            normalize: Vec::new(),
            labels,
            channels,
            height,
            width,
        }
    }

    fn new(
        pixels: Pixels,
        stored: usize,
        labels: Vec<u32>,
        chw: (usize, usize, usize),
    ) -> Result<Dataset> {
        if stored != labels.len() * chw.0 * chw.1 * chw.2 {
            return Err(Error::Internal(format!(
                "dataset of {} labels of {chw:?} samples holds {stored} pixel values",
                labels.len()
            )));
        }
        Ok(Dataset {
            pixels,
            rows: None,
            normalize: Vec::new(),
            labels,
            channels: chw.0,
            height: chw.1,
            width: chw.2,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample (C x H x W).
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether reading a sample decodes a file (image folders), rather than copying memory.
    pub fn decodes_files(&self) -> bool {
        matches!(self.pixels, Pixels::Files(_))
    }

    /// Adds `norm` to the normalisations every read applies (after those already added),
    /// after checking that its statistics fit the channel count.
    pub fn push_normalize(&mut self, norm: Normalize) -> Result<()> {
        norm.check_fits(self.channels, self.height * self.width)?;
        self.normalize.push(norm);
        Ok(())
    }

    /// The samples at `indices`, in that order (for shuffled minibatches and splits). Pixels
    /// are shared, not copied.
    pub fn gather(&self, indices: &[usize]) -> Dataset {
        let rows = indices.iter().map(|&i| self.row(i)).collect();
        Dataset {
            pixels: self.pixels.clone(),
            rows: Some(Arc::new(rows)),
            normalize: self.normalize.clone(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    fn row(&self, i: usize) -> usize {
        self.rows.as_ref().map_or(i, |rows| rows[i])
    }

    /// NCHW f32 pixels of the samples at `indices`, normalised: one batch.
    pub fn read(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let n = self.sample_len();
        let mut out = vec![0f32; indices.len() * n];
        if n == 0 {
            return Ok(out);
        }
        for (&i, dst) in indices.iter().zip(out.chunks_exact_mut(n)) {
            if i >= self.len() {
                return Err(Error::Internal(format!(
                    "sample {i} of a dataset of {}",
                    self.len()
                )));
            }
            let r = self.row(i);
            match &self.pixels {
                Pixels::F32(v) => dst.copy_from_slice(&v[r * n..(r + 1) * n]),
                Pixels::U8(v) => {
                    for (d, &b) in dst.iter_mut().zip(&v[r * n..(r + 1) * n]) {
                        *d = b as f32 / 255.0;
                    }
                }
                Pixels::Files(index) => index.read_into(r, dst)?,
            }
        }
        for norm in &self.normalize {
            norm.apply(&mut out, self.channels, self.height * self.width)?;
        }
        Ok(out)
    }

    /// Pixels of samples `range`, normalised.
    pub fn batch(&self, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        self.read(&range.collect::<Vec<_>>())
    }

    /// Every sample's pixels, normalised (decodes the whole dataset: for small sets and tests).
    pub fn images(&self) -> Result<Vec<f32>> {
        self.batch(0..self.len())
    }
}
