//! Dataset readers. Every reader produces the same in-memory `Dataset`: NCHW f32 pixels in
//! [0, 1] (before any normalisation) and integer labels.

pub mod idx;

pub use idx::Split;

/// A labelled image set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row-major CHW pixels of every sample, `len * channels * height * width` values.
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Dataset {
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

    /// Pixels of samples `range`.
    pub fn batch(&self, range: std::ops::Range<usize>) -> &[f32] {
        let n = self.sample_len();
        &self.images[range.start * n..range.end * n]
    }

    /// The samples at `indices`, in that order (for shuffled minibatches and splits).
    pub fn gather(&self, indices: &[usize]) -> Dataset {
        let n = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }
}
